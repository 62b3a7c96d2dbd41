#include "base/npy.h"

#include <cstring>
#include <regex>

#include "base/error.h"
#include "base/file.h"

namespace whale {

void write_npy(const std::string& path, const float* data, const std::vector<size_t>& shape) {
  std::string dims;
  size_t count = 1;
  for (size_t d : shape) {
    dims += std::to_string(d) + ",";
    count *= d;
  }
  if (shape.size() > 1) dims.pop_back();  // (3,) for 1-D, (3,4) otherwise
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string bytes = "\x93NUMPY\x01";
  bytes += '\0';
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(data), count * sizeof(float));
  write_file_atomic(path, bytes);
}

NpyArray read_npy(const std::string& path) {
  std::string bytes = read_file(path);
  check(bytes.size() >= 10 && bytes.compare(0, 6, "\x93NUMPY") == 0, path + ": not a .npy file");
  size_t header_len, offset;
  if (bytes[6] == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    offset = 10;
  } else {
    check(bytes.size() >= 12, path + ": truncated .npy header");
    uint32_t len;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    offset = 12;
  }
  check(offset + header_len <= bytes.size(), path + ": .npy header runs past the end");
  std::string header = bytes.substr(offset, header_len);
  check(header.find("'<f4'") != std::string::npos, path + ": only little-endian float32 .npy");
  check(header.find("'fortran_order': False") != std::string::npos, path + ": not C order");
  std::smatch m;
  check(std::regex_search(header, m, std::regex("'shape': \\(([0-9, ]*)\\)")),
        path + ": .npy header has no shape");
  NpyArray array;
  std::string dims = m[1];
  size_t count = 1;
  const std::regex number("[0-9]+");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number);
       it != std::sregex_iterator(); ++it) {
    array.shape.push_back(std::stoull(it->str()));
    count *= array.shape.back();
  }
  size_t data_offset = offset + header_len;
  check(bytes.size() - data_offset == count * 4, path + ": data size disagrees with shape");
  array.data.resize(count);
  std::memcpy(array.data.data(), bytes.data() + data_offset, count * 4);
  return array;
}

}  // namespace whale
