// GGUF (version 3), the file format of llama.cpp: reading (memory-mapped, every field checked)
// and streaming, atomic writing.
// Layout, all little-endian: "GGUF", u32 version, u64 tensor count, u64 metadata count; the
// metadata as (string key, u32 type, value); the tensor infos as (string name, u32 n_dims,
// u64 ne[n_dims] innermost first, u32 ggml type, u64 offset); padding to the alignment
// (general.alignment, default 32); then the data, each tensor at its offset from the data start
// (a multiple of the alignment). A string is a u64 length and that many bytes; an array is a
// u32 element type, a u64 count and the elements.
// A malformed file (truncated, bad magic, absurd counts or lengths, offsets out of range) is an
// Error naming the file and the field, never a crash or a huge allocation.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/file.h"

namespace whale {

enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// The ggml tensor types whale writes (and reads back).
enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ4_1 = 3, kQ8_0 = 8, kBF16 = 30 };
const char* ggml_type_name(GgmlType t);
// Whether the type stores blocks of 32 elements (q4_1, q8_0): rows must be multiples of 32.
bool ggml_is_block_type(GgmlType t);
// Bytes of a row of n elements (q8_0: 34 bytes per 32; q4_1: 20).
size_t ggml_row_bytes(GgmlType t, int64_t n);

// One metadata value: a scalar, a string, or an array of either. Numbers are held as double
// (every count and id whale writes is far below 2^53) with their GGUF type.
struct GgufValue {
  GgufType type = GgufType::kU32;
  GgufType element = GgufType::kU32;  // arrays only
  std::vector<double> numbers;        // scalars: one; numeric arrays: the elements
  std::vector<std::string> strings;   // strings: one; string arrays: the elements

  static GgufValue u32(uint64_t v);
  static GgufValue i32(int64_t v);
  static GgufValue f32(double v);
  static GgufValue boolean(bool v);
  static GgufValue str(std::string v);
  static GgufValue str_array(std::vector<std::string> v);
  static GgufValue i32_array(const std::vector<int>& v);
  static GgufValue f32_array(const std::vector<float>& v);

  bool is_array() const { return type == GgufType::kArray; }
  double number() const;            // scalar numbers and bools; Error otherwise
  const std::string& text() const;  // scalar strings; Error otherwise
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // innermost first (the reverse of a Hugging Face shape)
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;  // from the start of the data section
  size_t nbytes() const;
  int64_t numel() const;
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufValue& get(const std::string& key) const;           // Error if absent
  const GgufTensorInfo& tensor(const std::string& name) const;  // Error if absent
  const uint8_t* data(const GgufTensorInfo& t) const { return data_ + t.offset; }
  // The tensor's elements as f32 (f32, f16, bf16 and q8_0 dequantized).
  std::vector<float> to_f32(const GgufTensorInfo& t) const;

 private:
  std::string path_;
  MappedFile file_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  const uint8_t* data_ = nullptr;
};

// Streams a GGUF file: declare the metadata and every tensor, then write each tensor's bytes in
// the declared order; finish() pads, syncs and renames the temp file onto the path.
class GgufWriter {
 public:
  explicit GgufWriter(const std::string& path);
  void add(const std::string& key, GgufValue value);
  void add_tensor(const std::string& name, std::vector<int64_t> ne, GgmlType type);
  // The next declared tensor's bytes (the first call writes the header).
  void write_next(const void* data, size_t nbytes);
  void finish();

 private:
  void write_header();
  AtomicFileWriter file_;
  std::string path_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  size_t next_ = 0;
  uint64_t written_ = 0;  // bytes of the data section so far
  bool header_written_ = false;
};

// Quantizes one row to q8_0 (blocks of 32: f16 scale amax/127, then 32 int8 codes);
// n must be a multiple of 32.
void quantize_row_q8_0(const float* x, int64_t n, uint8_t* out);
// Quantizes one row to q4_1 (blocks of 32: f16 scale d and minimum m, then 16 bytes whose low
// nibbles are elements 0–15 and high nibbles 16–31; x = nibble · d + m): whale's q4
// (io/quantize.h) in llama.cpp's block layout, so a whale q4 matrix exports exactly.
void quantize_row_q4_1(const float* x, int64_t n, uint8_t* out);

constexpr uint32_t kGgufAlignment = 32;

}  // namespace whale
