#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "base/error.h"
#include "base/file.h"

namespace whale {

using json = nlohmann::json;
namespace fs = std::filesystem;

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

static std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string TensorView::shape_string() const {
  return shape_to_string(shape);
}

static constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // as the reference library

SafetensorsFile::SafetensorsFile(const std::string& path)
    : path_(path), file_(path, "safetensors", 8, "the 8-byte header length") {
  const size_t mapped_size = file_.size();
  const uint8_t* base = file_.data();
  uint64_t header_len;
  std::memcpy(&header_len, base, 8);
  check(header_len <= kMaxHeaderBytes,
        path + ": header length " + std::to_string(header_len) + " is absurd");
  check(header_len <= mapped_size - 8, path + ": header length " + std::to_string(header_len) +
                                           " runs past the end of the file (" +
                                           std::to_string(mapped_size) + " bytes)");
  json header;
  try {
    header = json::parse(base + 8, base + 8 + header_len);
  } catch (const json::exception& e) {
    throw Error(path + ": header is not valid JSON (" + e.what() + ")");
  }
  check(header.is_object(), path + ": header is not a JSON object");
  const uint8_t* data = base + 8 + header_len;
  size_t data_size = mapped_size - 8 - header_len;
  std::vector<std::pair<size_t, size_t>> ranges;
  for (auto& [name, entry] : header.items()) {
    std::string where = path + ": tensor '" + name + "'";
    if (name == "__metadata__") {
      check(entry.is_object(), path + ": __metadata__ is not an object");
      for (auto& [k, v] : entry.items()) {
        check(v.is_string(), path + ": __metadata__ value for '" + k + "' is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    check(entry.is_object(), where + " is not an object");
    check(entry.contains("dtype") && entry["dtype"].is_string(), where + " has no dtype");
    check(entry.contains("shape") && entry["shape"].is_array(), where + " has no shape");
    check(entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
              entry["data_offsets"].size() == 2,
          where + " has no [begin, end] data_offsets");
    TensorView view;
    view.name = name;
    view.file = path;
    std::string dtype = entry["dtype"].get<std::string>();
    check(parse_dtype(dtype, &view.dtype), where + " has unsupported dtype " + dtype);
    unsigned __int128 count = 1;
    for (auto& d : entry["shape"]) {
      check(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
            where + " has a shape entry that is not a non-negative integer");
      view.shape.push_back(d.get<int64_t>());
      count *= static_cast<uint64_t>(view.shape.back());
      check(count < (static_cast<unsigned __int128>(1) << 62), where + " shape is absurd");
    }
    for (auto& o : entry["data_offsets"])
      check(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0),
            where + " has a data offset that is not a non-negative integer");
    uint64_t begin = entry["data_offsets"][0].get<uint64_t>();
    uint64_t end = entry["data_offsets"][1].get<uint64_t>();
    check(begin <= end, where + " has data_offsets with begin > end");
    check(end <= data_size, where + " data_offsets [" + std::to_string(begin) + ", " +
                                std::to_string(end) + ") run past the data (" +
                                std::to_string(data_size) + " bytes)");
    uint64_t expected = static_cast<uint64_t>(count) * dtype_size(view.dtype);
    check(end - begin == expected, where + " shape " + view.shape_string() + " x " + dtype +
                                       " needs " + std::to_string(expected) +
                                       " bytes but data_offsets give " +
                                       std::to_string(end - begin));
    view.data = data + begin;
    view.nbytes = end - begin;
    ranges.push_back({begin, end});
    tensors_.emplace(name, std::move(view));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      std::string a, b;
      for (auto& [n, v] : tensors_) {
        size_t off = static_cast<size_t>(v.data - data);
        if (off == ranges[i - 1].first && v.nbytes == ranges[i - 1].second - off) a = n;
        if (off == ranges[i].first && v.nbytes == ranges[i].second - off) b = n;
      }
      throw Error(path + ": tensors '" + a + "' and '" + b + "' overlap in the data buffer");
    }
  }
}

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  check(fs::is_directory(dir), dir + ": not a directory");
  fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(index_path)) {
    json index;
    try {
      index = json::parse(read_file(index_path.string()));
    } catch (const json::exception& e) {
      throw Error(index_path.string() + ": not valid JSON (" + e.what() + ")");
    }
    check(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
          index_path.string() + ": has no weight_map object");
    std::map<std::string, SafetensorsFile*> opened;
    for (auto& [name, file] : index["weight_map"].items()) {
      check(file.is_string(), index_path.string() + ": weight_map['" + name + "'] is not a string");
      std::string fname = file.get<std::string>();
      check(fname.find('/') == std::string::npos && fname != ".." && !fname.empty(),
            index_path.string() + ": weight_map['" + name + "'] names a path outside the folder");
      if (!opened.count(fname)) {
        files_.push_back(std::make_unique<SafetensorsFile>((fs::path(dir) / fname).string()));
        opened[fname] = files_.back().get();
      }
      auto& tensors = opened[fname]->tensors();
      auto it = tensors.find(name);
      check(it != tensors.end(), index_path.string() + " says tensor '" + name + "' is in " +
                                     fname + ", but that file has no such tensor");
      index_[name] = &it->second;
    }
    // Tensors present in shards but not in the map are still usable.
    for (auto& f : files_)
      for (auto& [name, view] : f->tensors()) index_.emplace(name, &view);
  } else {
    check(fs::exists(single), dir + ": no model.safetensors or model.safetensors.index.json");
    files_.push_back(std::make_unique<SafetensorsFile>(single.string()));
    for (auto& [name, view] : files_.back()->tensors()) index_[name] = &view;
  }
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorView& TensorSource::get(const std::string& name) const {
  const TensorView* view = find(name);
  check(view != nullptr, where() + ": missing tensor '" + name + "'");
  return *view;
}

const TensorView& TensorSource::get(const std::string& name,
                                    const std::vector<int64_t>& shape) const {
  const TensorView& view = get(name);
  check(view.shape == shape, view.file + ": tensor '" + name + "' has shape " +
                                 view.shape_string() + " but the config implies " +
                                 shape_to_string(shape));
  return view;
}

size_t Checkpoint::total_bytes() const {
  size_t total = 0;
  for (auto& [name, view] : index_) total += view->nbytes;
  return total;
}

size_t TensorSpec::nbytes() const {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

struct SafetensorsWriter::Impl {
  AtomicFileWriter file;
  std::vector<TensorSpec> specs;
  size_t next = 0;
  explicit Impl(const std::string& path) : file(path) {}
};

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<TensorSpec> specs,
                                     const std::map<std::string, std::string>& metadata)
    : impl_(std::make_unique<Impl>(path)) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  std::set<std::string> seen;
  for (auto& s : specs) {
    check(seen.insert(s.name).second, path + ": tensor '" + s.name + "' written twice");
    header[s.name] = {{"dtype", dtype_name(s.dtype)},
                      {"shape", s.shape},
                      {"data_offsets", {offset, offset + s.nbytes()}}};
    offset += s.nbytes();
  }
  std::string text = header.dump();
  // The data 32 bytes past a 64-byte boundary of the file (the header padded with spaces; the
  // format asks for 8): where a file's weights sit relative to cache lines changed decode speed
  // by 10–15% (the same 85M model with its data at 0, 32 and 40 bytes past a line: q8 282–343
  // tok/s at 0, 344–381 at 32 or 40), so whale's files no longer leave it to the header length.
  text.append((64 + 32 - (8 + text.size()) % 64) % 64, ' ');
  uint64_t len = text.size();
  impl_->file.write(&len, 8);
  impl_->file.write(text.data(), text.size());
  impl_->specs = std::move(specs);
}

SafetensorsWriter::~SafetensorsWriter() = default;

void SafetensorsWriter::write_next(const void* data, size_t nbytes) {
  check(impl_->next < impl_->specs.size(), "safetensors writer: more tensors than declared");
  const TensorSpec& spec = impl_->specs[impl_->next++];
  check(nbytes == spec.nbytes(), "safetensors writer: tensor '" + spec.name + "' has " +
                                     std::to_string(nbytes) + " bytes, expected " +
                                     std::to_string(spec.nbytes()));
  impl_->file.write(data, nbytes);
}

void SafetensorsWriter::finish() {
  check(impl_->next == impl_->specs.size(), "safetensors writer: fewer tensors than declared");
  impl_->file.commit();
}

void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  for (auto& t : tensors) specs.push_back(t.spec);
  SafetensorsWriter writer(path, specs, metadata);
  for (auto& t : tensors) writer.write_next(t.bytes.data(), t.bytes.size());
  writer.finish();
}

}  // namespace whale
