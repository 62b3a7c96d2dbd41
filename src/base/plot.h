// Line charts written as PNG (no dependencies): axes, ticks, labels, legend. Used for the
// training and RL curves in every run folder.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace whale {

struct Series {
  std::string label;
  std::vector<double> x, y;
  uint32_t color = 0x1f77b4;  // 0xRRGGBB
};

struct PlotOptions {
  std::string title, x_label, y_label;
  int width = 900, height = 520;
  bool log_y = false;
};

// Writes the chart atomically. Points with non-finite y are skipped.
void write_line_plot(const std::string& path, const std::vector<Series>& series,
                     const PlotOptions& options);

// An RGB image and its PNG encoding (stored deflate blocks, so no zlib needed).
struct Image {
  int width, height;
  std::vector<uint8_t> rgb;
  Image(int w, int h) : width(w), height(h), rgb(static_cast<size_t>(w) * h * 3, 255) {}
  void set(int x, int y, uint32_t color);
};
std::string encode_png(const Image& image);

}  // namespace whale
