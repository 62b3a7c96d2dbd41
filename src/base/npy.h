// NumPy .npy files (format version 1.0), little-endian float32, C order.
#pragma once
#include <string>
#include <vector>

namespace whale {

struct NpyArray {
  std::vector<size_t> shape;
  std::vector<float> data;
};

void write_npy(const std::string& path, const float* data, const std::vector<size_t>& shape);
NpyArray read_npy(const std::string& path);  // '<f4' only; anything else is an Error.

}  // namespace whale
