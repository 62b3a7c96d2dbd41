#include "io/gguf.h"

#include <cmath>
#include <cstring>
#include <set>

#include "base/error.h"
#include "io/quantize.h"
#include "tensor/dtype.h"

namespace whale {

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
      return "f32";
    case GgmlType::kF16:
      return "f16";
    case GgmlType::kQ8_0:
      return "q8_0";
    case GgmlType::kQ4_1:
      return "q4_1";
    case GgmlType::kBF16:
      return "bf16";
  }
  return "?";
}

size_t ggml_row_bytes(GgmlType t, int64_t n) {
  switch (t) {
    case GgmlType::kF32:
      return static_cast<size_t>(n) * 4;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      return static_cast<size_t>(n) * 2;
    case GgmlType::kQ8_0:
      return static_cast<size_t>(n) / 32 * 34;
    case GgmlType::kQ4_1:
      return static_cast<size_t>(n) / 32 * 20;
  }
  return 0;
}

static bool known_ggml_type(uint32_t t) {
  return t == 0 || t == 1 || t == 3 || t == 8 || t == 30;
}

bool ggml_is_block_type(GgmlType t) {
  return t == GgmlType::kQ8_0 || t == GgmlType::kQ4_1;
}

GgufValue GgufValue::u32(uint64_t v) {
  GgufValue x;
  x.type = GgufType::kU32;
  x.numbers = {static_cast<double>(v)};
  return x;
}
GgufValue GgufValue::i32(int64_t v) {
  GgufValue x;
  x.type = GgufType::kI32;
  x.numbers = {static_cast<double>(v)};
  return x;
}
GgufValue GgufValue::f32(double v) {
  GgufValue x;
  x.type = GgufType::kF32;
  x.numbers = {static_cast<double>(static_cast<float>(v))};
  return x;
}
GgufValue GgufValue::boolean(bool v) {
  GgufValue x;
  x.type = GgufType::kBool;
  x.numbers = {v ? 1.0 : 0.0};
  return x;
}
GgufValue GgufValue::str(std::string v) {
  GgufValue x;
  x.type = GgufType::kString;
  x.strings = {std::move(v)};
  return x;
}
GgufValue GgufValue::str_array(std::vector<std::string> v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.element = GgufType::kString;
  x.strings = std::move(v);
  return x;
}
GgufValue GgufValue::i32_array(const std::vector<int>& v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.element = GgufType::kI32;
  x.numbers.assign(v.begin(), v.end());
  return x;
}
GgufValue GgufValue::f32_array(const std::vector<float>& v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.element = GgufType::kF32;
  x.numbers.assign(v.begin(), v.end());
  return x;
}

double GgufValue::number() const {
  check(type != GgufType::kArray && type != GgufType::kString && numbers.size() == 1,
        "GGUF value is not a number");
  return numbers[0];
}

const std::string& GgufValue::text() const {
  check(type == GgufType::kString && strings.size() == 1, "GGUF value is not a string");
  return strings[0];
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

size_t GgufTensorInfo::nbytes() const {
  if (ne.empty()) return ggml_row_bytes(type, 1);
  return ggml_row_bytes(type, ne[0]) * static_cast<size_t>(numel() / std::max<int64_t>(ne[0], 1));
}

// ---------------------------------------------------------------------------------------------
// Reading.

namespace {

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    default:
      return 0;  // strings and arrays have no fixed size
  }
}

// A bounds-checked cursor over the mapped bytes.
struct Cursor {
  const uint8_t* base;
  size_t size, pos = 0;
  const std::string& path;

  size_t remaining() const { return size - pos; }
  void need(size_t n, const std::string& what) const {
    check(n <= remaining(), path + ": truncated while reading " + what + " (needs " +
                                std::to_string(n) + " bytes at offset " + std::to_string(pos) +
                                ", " + std::to_string(remaining()) + " left)");
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    uint64_t n = read<uint64_t>(what + " length");
    check(n <= remaining(),
          path + ": " + what + " length " + std::to_string(n) + " runs past the end of the file");
    std::string s(reinterpret_cast<const char*>(base + pos), n);
    pos += n;
    return s;
  }
  double number(GgufType t, const std::string& what) {
    switch (t) {
      case GgufType::kU8:
        return read<uint8_t>(what);
      case GgufType::kI8:
        return read<int8_t>(what);
      case GgufType::kBool: {
        uint8_t b = read<uint8_t>(what);
        check(b <= 1, path + ": " + what + " is a bool of value " + std::to_string(b));
        return b;
      }
      case GgufType::kU16:
        return read<uint16_t>(what);
      case GgufType::kI16:
        return read<int16_t>(what);
      case GgufType::kU32:
        return read<uint32_t>(what);
      case GgufType::kI32:
        return read<int32_t>(what);
      case GgufType::kF32:
        return read<float>(what);
      case GgufType::kU64:
        return static_cast<double>(read<uint64_t>(what));
      case GgufType::kI64:
        return static_cast<double>(read<int64_t>(what));
      case GgufType::kF64:
        return read<double>(what);
      default:
        throw Error(path + ": " + what + " has no numeric type");
    }
  }
};

bool valid_value_type(uint32_t t) {
  return t <= static_cast<uint32_t>(GgufType::kF64);
}

}  // namespace

GgufFile::GgufFile(const std::string& path)
    : path_(path), file_(path, "GGUF", 24, "the 24-byte header") {
  Cursor in{file_.data(), file_.size(), 0, path};
  check(std::memcmp(in.base, "GGUF", 4) == 0, path + ": not a GGUF file (bad magic)");
  in.pos = 4;
  version_ = in.read<uint32_t>("version");
  check(version_ == 2 || version_ == 3,
        path + ": GGUF version " + std::to_string(version_) + " is not supported (2 or 3)");
  const uint64_t n_tensors = in.read<uint64_t>("tensor count");
  const uint64_t n_kv = in.read<uint64_t>("metadata count");
  // Each entry takes at least a few bytes, so a count beyond the file's size is absurd.
  check(n_kv <= in.remaining() / 13,
        path + ": metadata count " + std::to_string(n_kv) + " is absurd for the file size");
  check(n_tensors <= in.remaining() / 28,
        path + ": tensor count " + std::to_string(n_tensors) + " is absurd for the file size");
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string where = "metadata entry " + std::to_string(i);
    std::string key = in.string(where + " key");
    const std::string what = "metadata '" + key + "'";
    uint32_t type = in.read<uint32_t>(what + " type");
    check(valid_value_type(type), path + ": " + what + " has unknown type " + std::to_string(type));
    GgufValue v;
    v.type = static_cast<GgufType>(type);
    if (v.type == GgufType::kString) {
      v.strings.push_back(in.string(what));
    } else if (v.type == GgufType::kArray) {
      uint32_t element = in.read<uint32_t>(what + " element type");
      check(valid_value_type(element) && element != static_cast<uint32_t>(GgufType::kArray),
            path + ": " + what + " has unsupported element type " + std::to_string(element));
      v.element = static_cast<GgufType>(element);
      uint64_t count = in.read<uint64_t>(what + " count");
      const size_t least = v.element == GgufType::kString ? 8 : scalar_size(v.element);
      check(count <= in.remaining() / least, path + ": " + what + " count " +
                                                 std::to_string(count) +
                                                 " runs past the end of the file");
      if (v.element == GgufType::kString) {
        v.strings.reserve(count);
        for (uint64_t k = 0; k < count; ++k) v.strings.push_back(in.string(what + " element"));
      } else {
        v.numbers.reserve(count);
        for (uint64_t k = 0; k < count; ++k) v.numbers.push_back(in.number(v.element, what));
      }
    } else {
      v.numbers.push_back(in.number(v.type, what));
    }
    check(metadata_.emplace(key, std::move(v)).second,
          path + ": metadata key '" + key + "' appears twice");
  }
  uint64_t alignment = kGgufAlignment;
  if (auto it = metadata_.find("general.alignment"); it != metadata_.end()) {
    check(it->second.type == GgufType::kU32, path + ": general.alignment is not a u32");
    alignment = static_cast<uint64_t>(it->second.numbers[0]);
    check(alignment > 0 && (alignment & (alignment - 1)) == 0,
          path + ": general.alignment " + std::to_string(alignment) + " is not a power of two");
  }
  std::set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = in.string("tensor " + std::to_string(i) + " name");
    const std::string what = "tensor '" + t.name + "'";
    check(names.insert(t.name).second, path + ": " + what + " appears twice");
    uint32_t n_dims = in.read<uint32_t>(what + " dimension count");
    check(n_dims >= 1 && n_dims <= 4,
          path + ": " + what + " has " + std::to_string(n_dims) + " dimensions (1 to 4)");
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      int64_t n = in.read<int64_t>(what + " shape");
      check(n >= 0 && (n == 0 || numel <= (int64_t{1} << 60) / n),
            path + ": " + what + " has an absurd shape");
      numel *= n;
      t.ne.push_back(n);
    }
    uint32_t type = in.read<uint32_t>(what + " type");
    check(known_ggml_type(type), path + ": " + what + " has ggml type " + std::to_string(type) +
                                     ", which whale does not read (f32, f16, bf16, q8_0, q4_1)");
    t.type = static_cast<GgmlType>(type);
    check(!ggml_is_block_type(t.type) || t.ne[0] % 32 == 0,
          path + ": " + what + " is " + ggml_type_name(t.type) +
              " with a row length not a multiple of 32");
    t.offset = in.read<uint64_t>(what + " offset");
    check(t.offset % alignment == 0, path + ": " + what + " offset " + std::to_string(t.offset) +
                                         " is not aligned to " + std::to_string(alignment));
    tensors_.push_back(std::move(t));
  }
  size_t data_start = (in.pos + alignment - 1) / alignment * alignment;
  check(data_start <= file_.size(), path + ": truncated before the tensor data");
  data_ = in.base + data_start;
  const uint64_t data_size = file_.size() - data_start;
  for (const GgufTensorInfo& t : tensors_)
    check(t.offset <= data_size && t.nbytes() <= data_size - t.offset,
          path + ": tensor '" + t.name + "' (" + std::to_string(t.nbytes()) + " bytes at " +
              std::to_string(t.offset) + ") runs past the end of the data (" +
              std::to_string(data_size) + " bytes)");
}

const GgufValue& GgufFile::get(const std::string& key) const {
  auto it = metadata_.find(key);
  check(it != metadata_.end(), path_ + ": no metadata '" + key + "'");
  return it->second;
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  for (const GgufTensorInfo& t : tensors_)
    if (t.name == name) return t;
  throw Error(path_ + ": no tensor '" + name + "'");
}

std::vector<float> GgufFile::to_f32(const GgufTensorInfo& t) const {
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  const uint8_t* p = data(t);
  switch (t.type) {
    case GgmlType::kF32:
      std::memcpy(out.data(), p, n * 4);
      break;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        out[i] = t.type == GgmlType::kF16 ? f16_to_f32(v) : bf16_to_f32(v);
      }
      break;
    case GgmlType::kQ8_0:
      for (size_t b = 0; b < n / 32; ++b) {
        const uint8_t* block = p + b * 34;
        uint16_t d;
        std::memcpy(&d, block, 2);
        const float scale = f16_to_f32(d);
        for (int i = 0; i < 32; ++i)
          out[b * 32 + i] = scale * static_cast<float>(static_cast<int8_t>(block[2 + i]));
      }
      break;
    case GgmlType::kQ4_1:
      for (size_t b = 0; b < n / 32; ++b) {
        const uint8_t* block = p + b * 20;
        uint16_t d, m;
        std::memcpy(&d, block, 2);
        std::memcpy(&m, block + 2, 2);
        const float scale = f16_to_f32(d), min = f16_to_f32(m);
        for (int j = 0; j < 16; ++j) {
          out[b * 32 + j] = static_cast<float>(block[4 + j] & 0x0F) * scale + min;
          out[b * 32 + 16 + j] = static_cast<float>(block[4 + j] >> 4) * scale + min;
        }
      }
      break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing.

namespace {

void append(std::string& out, const void* p, size_t n) {
  out.append(static_cast<const char*>(p), n);
}
template <typename T>
void append(std::string& out, T v) {
  append(out, &v, sizeof v);
}
void append_string(std::string& out, const std::string& s) {
  append<uint64_t>(out, s.size());
  out += s;
}
void append_number(std::string& out, GgufType t, double v) {
  switch (t) {
    case GgufType::kU8:
      append<uint8_t>(out, static_cast<uint8_t>(v));
      break;
    case GgufType::kI8:
      append<int8_t>(out, static_cast<int8_t>(v));
      break;
    case GgufType::kBool:
      append<uint8_t>(out, v != 0);
      break;
    case GgufType::kU16:
      append<uint16_t>(out, static_cast<uint16_t>(v));
      break;
    case GgufType::kI16:
      append<int16_t>(out, static_cast<int16_t>(v));
      break;
    case GgufType::kU32:
      append<uint32_t>(out, static_cast<uint32_t>(v));
      break;
    case GgufType::kI32:
      append<int32_t>(out, static_cast<int32_t>(v));
      break;
    case GgufType::kF32:
      append<float>(out, static_cast<float>(v));
      break;
    case GgufType::kU64:
      append<uint64_t>(out, static_cast<uint64_t>(v));
      break;
    case GgufType::kI64:
      append<int64_t>(out, static_cast<int64_t>(v));
      break;
    case GgufType::kF64:
      append<double>(out, v);
      break;
    default:
      throw Error("GGUF writer: not a numeric type");
  }
}

uint64_t align_up(uint64_t n) {
  return (n + kGgufAlignment - 1) / kGgufAlignment * kGgufAlignment;
}

}  // namespace

GgufWriter::GgufWriter(const std::string& path) : file_(path), path_(path) {}

void GgufWriter::add(const std::string& key, GgufValue value) {
  check(!header_written_, "GGUF writer: metadata after the data started");
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, std::vector<int64_t> ne, GgmlType type) {
  check(!header_written_, "GGUF writer: tensor declared after the data started");
  check(!ne.empty() && ne.size() <= 4, "GGUF writer: " + name + " needs 1 to 4 dimensions");
  check(!ggml_is_block_type(type) || ne[0] % 32 == 0,
        "GGUF writer: " + name + " is " + ggml_type_name(type) +
            " with a row length not a multiple of 32");
  GgufTensorInfo t;
  t.name = name;
  t.ne = std::move(ne);
  t.type = type;
  t.offset = tensors_.empty() ? 0 : align_up(tensors_.back().offset + tensors_.back().nbytes());
  tensors_.push_back(std::move(t));
}

void GgufWriter::write_header() {
  std::string out = "GGUF";
  append<uint32_t>(out, 3);
  append<uint64_t>(out, tensors_.size());
  append<uint64_t>(out, metadata_.size());
  for (const auto& [key, v] : metadata_) {
    append_string(out, key);
    append<uint32_t>(out, static_cast<uint32_t>(v.type));
    if (v.type == GgufType::kString) {
      append_string(out, v.text());
    } else if (v.type == GgufType::kArray) {
      append<uint32_t>(out, static_cast<uint32_t>(v.element));
      if (v.element == GgufType::kString) {
        append<uint64_t>(out, v.strings.size());
        for (const std::string& s : v.strings) append_string(out, s);
      } else {
        append<uint64_t>(out, v.numbers.size());
        for (double x : v.numbers) append_number(out, v.element, x);
      }
    } else {
      append_number(out, v.type, v.number());
    }
  }
  for (const GgufTensorInfo& t : tensors_) {
    append_string(out, t.name);
    append<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) append<int64_t>(out, d);
    append<uint32_t>(out, static_cast<uint32_t>(t.type));
    append<uint64_t>(out, t.offset);
  }
  out.resize(align_up(out.size()), '\0');
  file_.write(out.data(), out.size());
  header_written_ = true;
}

void GgufWriter::write_next(const void* data, size_t nbytes) {
  if (!header_written_) write_header();
  check(next_ < tensors_.size(), "GGUF writer: more tensors written than declared");
  const GgufTensorInfo& t = tensors_[next_];
  check(nbytes == t.nbytes(), "GGUF writer: " + t.name + " has " + std::to_string(nbytes) +
                                  " bytes, declared " + std::to_string(t.nbytes()));
  static const char zeros[kGgufAlignment] = {};
  if (written_ < t.offset) file_.write(zeros, t.offset - written_);
  file_.write(data, nbytes);
  written_ = t.offset + nbytes;
  ++next_;
}

void GgufWriter::finish() {
  if (!header_written_) write_header();
  check(next_ == tensors_.size(), "GGUF writer: " + std::to_string(tensors_.size() - next_) +
                                      " declared tensors were not written");
  static const char zeros[kGgufAlignment] = {};
  if (written_ % kGgufAlignment) file_.write(zeros, align_up(written_) - written_);
  file_.commit();
}

void quantize_row_q8_0(const float* x, int64_t n, uint8_t* out) {
  check(n % 32 == 0, "q8_0: row length must be a multiple of 32");
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* v = x + b * 32;
    uint8_t* block = out + b * 34;
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i]));
    // The codes are computed against the scale as stored (f16), so what is decoded is exactly
    // the nearest code times the stored scale.
    const uint16_t d = f32_to_f16(amax / 127.0f);
    const float scale = f16_to_f32(d);
    std::memcpy(block, &d, 2);
    for (int i = 0; i < 32; ++i) {
      float q = scale > 0 ? std::nearbyint(v[i] / scale) : 0.0f;
      q = std::min(127.0f, std::max(-127.0f, q));
      block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
    }
  }
}

void quantize_row_q4_1(const float* x, int64_t n, uint8_t* out) {
  check(n % 32 == 0, "q4_1: row length must be a multiple of 32");
  uint8_t packed[16];
  uint16_t scale_min[2];
  for (int64_t b = 0; b < n / 32; ++b) {
    quantize_row_q4(x + b * 32, 32, packed, scale_min);
    uint8_t* block = out + b * 20;
    std::memcpy(block, scale_min, 4);  // d, then m: the order of whale's (scale, min) pairs
    std::memcpy(block + 4, packed, 16);
  }
}

}  // namespace whale
