// safetensors: memory-mapped reading (single files and sharded checkpoints) and atomic writing.
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end)}, "__metadata__": {str: str}}, then the data buffer.
// Every field is checked; a bad file is an Error naming the file and the tensor, never a crash.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/file.h"
#include "tensor/dtype.h"

namespace whale {

struct TensorView {
  std::string name;
  std::string file;  // where it lives, for error messages
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping; not necessarily aligned
  size_t nbytes = 0;

  int64_t numel() const;
  std::string shape_string() const;  // "[4, 8]"
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Anything that holds named tensors: a checkpoint on disk, or training's parameter store.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const TensorView* find(const std::string& name) const = 0;
  virtual std::string where() const = 0;                 // for error messages
  const TensorView& get(const std::string& name) const;  // Error if missing
  // Error if missing or if the shape is not `shape`.
  const TensorView& get(const std::string& name, const std::vector<int64_t>& shape) const;
};

// A model folder's weights: model.safetensors, or the shards named by
// model.safetensors.index.json. Nothing is copied: views point into the mappings.
class Checkpoint : public TensorSource {
 public:
  explicit Checkpoint(const std::string& dir);

  const TensorView* find(const std::string& name) const override;
  std::string where() const override { return dir_; }
  const std::map<std::string, const TensorView*>& tensors() const { return index_; }
  size_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

// Streaming writer: the header is fixed up front, then each tensor's bytes are appended in
// the declared order. Written to a temp file and renamed by finish().
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t nbytes() const;
};

class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::string& path, std::vector<TensorSpec> specs,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  // Appends the bytes of the next declared tensor (size must match its spec).
  void write_next(const void* data, size_t nbytes);
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Convenience: a whole file from in-memory tensors.
struct TensorData {
  TensorSpec spec;
  std::vector<uint8_t> bytes;
};
void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace whale
