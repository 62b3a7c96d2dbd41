#include "base/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "base/file.h"

namespace whale {

namespace {

// The classic 5×7 font, ASCII 32–126, one byte per column (bit 0 = top row).
const uint8_t kFont[95][5] = {
    {0x00, 0x00, 0x00, 0x00, 0x00}, {0x00, 0x00, 0x5F, 0x00, 0x00}, {0x00, 0x07, 0x00, 0x07, 0x00},
    {0x14, 0x7F, 0x14, 0x7F, 0x14}, {0x24, 0x2A, 0x7F, 0x2A, 0x12}, {0x23, 0x13, 0x08, 0x64, 0x62},
    {0x36, 0x49, 0x55, 0x22, 0x50}, {0x00, 0x05, 0x03, 0x00, 0x00}, {0x00, 0x1C, 0x22, 0x41, 0x00},
    {0x00, 0x41, 0x22, 0x1C, 0x00}, {0x08, 0x2A, 0x1C, 0x2A, 0x08}, {0x08, 0x08, 0x3E, 0x08, 0x08},
    {0x00, 0x50, 0x30, 0x00, 0x00}, {0x08, 0x08, 0x08, 0x08, 0x08}, {0x00, 0x60, 0x60, 0x00, 0x00},
    {0x20, 0x10, 0x08, 0x04, 0x02}, {0x3E, 0x51, 0x49, 0x45, 0x3E}, {0x00, 0x42, 0x7F, 0x40, 0x00},
    {0x42, 0x61, 0x51, 0x49, 0x46}, {0x21, 0x41, 0x45, 0x4B, 0x31}, {0x18, 0x14, 0x12, 0x7F, 0x10},
    {0x27, 0x45, 0x45, 0x45, 0x39}, {0x3C, 0x4A, 0x49, 0x49, 0x30}, {0x01, 0x71, 0x09, 0x05, 0x03},
    {0x36, 0x49, 0x49, 0x49, 0x36}, {0x06, 0x49, 0x49, 0x29, 0x1E}, {0x00, 0x36, 0x36, 0x00, 0x00},
    {0x00, 0x56, 0x36, 0x00, 0x00}, {0x00, 0x08, 0x14, 0x22, 0x41}, {0x14, 0x14, 0x14, 0x14, 0x14},
    {0x41, 0x22, 0x14, 0x08, 0x00}, {0x02, 0x01, 0x51, 0x09, 0x06}, {0x32, 0x49, 0x79, 0x41, 0x3E},
    {0x7E, 0x11, 0x11, 0x11, 0x7E}, {0x7F, 0x49, 0x49, 0x49, 0x36}, {0x3E, 0x41, 0x41, 0x41, 0x22},
    {0x7F, 0x41, 0x41, 0x22, 0x1C}, {0x7F, 0x49, 0x49, 0x49, 0x41}, {0x7F, 0x09, 0x09, 0x01, 0x01},
    {0x3E, 0x41, 0x41, 0x51, 0x32}, {0x7F, 0x08, 0x08, 0x08, 0x7F}, {0x00, 0x41, 0x7F, 0x41, 0x00},
    {0x20, 0x40, 0x41, 0x3F, 0x01}, {0x7F, 0x08, 0x14, 0x22, 0x41}, {0x7F, 0x40, 0x40, 0x40, 0x40},
    {0x7F, 0x02, 0x04, 0x02, 0x7F}, {0x7F, 0x04, 0x08, 0x10, 0x7F}, {0x3E, 0x41, 0x41, 0x41, 0x3E},
    {0x7F, 0x09, 0x09, 0x09, 0x06}, {0x3E, 0x41, 0x51, 0x21, 0x5E}, {0x7F, 0x09, 0x19, 0x29, 0x46},
    {0x46, 0x49, 0x49, 0x49, 0x31}, {0x01, 0x01, 0x7F, 0x01, 0x01}, {0x3F, 0x40, 0x40, 0x40, 0x3F},
    {0x1F, 0x20, 0x40, 0x20, 0x1F}, {0x7F, 0x20, 0x18, 0x20, 0x7F}, {0x63, 0x14, 0x08, 0x14, 0x63},
    {0x03, 0x04, 0x78, 0x04, 0x03}, {0x61, 0x51, 0x49, 0x45, 0x43}, {0x00, 0x00, 0x7F, 0x41, 0x41},
    {0x02, 0x04, 0x08, 0x10, 0x20}, {0x41, 0x41, 0x7F, 0x00, 0x00}, {0x04, 0x02, 0x01, 0x02, 0x04},
    {0x40, 0x40, 0x40, 0x40, 0x40}, {0x00, 0x01, 0x02, 0x04, 0x00}, {0x20, 0x54, 0x54, 0x54, 0x78},
    {0x7F, 0x48, 0x44, 0x44, 0x38}, {0x38, 0x44, 0x44, 0x44, 0x20}, {0x38, 0x44, 0x44, 0x48, 0x7F},
    {0x38, 0x54, 0x54, 0x54, 0x18}, {0x08, 0x7E, 0x09, 0x01, 0x02}, {0x08, 0x14, 0x54, 0x54, 0x3C},
    {0x7F, 0x08, 0x04, 0x04, 0x78}, {0x00, 0x44, 0x7D, 0x40, 0x00}, {0x20, 0x40, 0x44, 0x3D, 0x00},
    {0x00, 0x7F, 0x10, 0x28, 0x44}, {0x00, 0x41, 0x7F, 0x40, 0x00}, {0x7C, 0x04, 0x18, 0x04, 0x78},
    {0x7C, 0x08, 0x04, 0x04, 0x78}, {0x38, 0x44, 0x44, 0x44, 0x38}, {0x7C, 0x14, 0x14, 0x14, 0x08},
    {0x08, 0x14, 0x14, 0x18, 0x7C}, {0x7C, 0x08, 0x04, 0x04, 0x08}, {0x48, 0x54, 0x54, 0x54, 0x20},
    {0x04, 0x3F, 0x44, 0x40, 0x20}, {0x3C, 0x40, 0x40, 0x20, 0x7C}, {0x1C, 0x20, 0x40, 0x20, 0x1C},
    {0x3C, 0x40, 0x30, 0x40, 0x3C}, {0x44, 0x28, 0x10, 0x28, 0x44}, {0x0C, 0x50, 0x50, 0x50, 0x3C},
    {0x44, 0x64, 0x54, 0x4C, 0x44}, {0x00, 0x08, 0x36, 0x41, 0x00}, {0x00, 0x00, 0x7F, 0x00, 0x00},
    {0x00, 0x41, 0x36, 0x08, 0x00}, {0x08, 0x08, 0x2A, 0x1C, 0x08}};

void draw_text(Image& img, int x, int y, const std::string& text, uint32_t color, bool vertical = false) {
  for (char ch : text) {
    int c = static_cast<unsigned char>(ch);
    if (c < 32 || c > 126) c = '?';
    for (int col = 0; col < 5; ++col)
      for (int row = 0; row < 7; ++row)
        if (kFont[c - 32][col] & (1 << row)) {
          if (vertical) img.set(x + row, y - col, color);
          else img.set(x + col, y + row, color);
        }
    if (vertical) y -= 6;
    else x += 6;
  }
}

void draw_line(Image& img, double x0, double y0, double x1, double y1, uint32_t color, int thick) {
  int steps = static_cast<int>(std::max(std::fabs(x1 - x0), std::fabs(y1 - y0))) + 1;
  for (int i = 0; i <= steps; ++i) {
    double t = static_cast<double>(i) / steps;
    int x = static_cast<int>(std::lround(x0 + (x1 - x0) * t));
    int y = static_cast<int>(std::lround(y0 + (y1 - y0) * t));
    for (int dx = 0; dx < thick; ++dx)
      for (int dy = 0; dy < thick; ++dy) img.set(x + dx - thick / 2, y + dy - thick / 2, color);
  }
}

std::string format_tick(double v) {
  char buf[32];
  double a = std::fabs(v);
  if (a != 0 && (a >= 1e5 || a < 1e-3)) std::snprintf(buf, sizeof buf, "%.0e", v);
  else std::snprintf(buf, sizeof buf, "%g", std::round(v * 1e4) / 1e4);
  return buf;
}

// About n "nice" tick values covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int n) {
  double span = hi - lo;
  if (span <= 0) span = 1;
  double raw = span / n, mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag * (raw / mag < 1.5 ? 1 : raw / mag < 3 ? 2 : raw / mag < 7 ? 5 : 10);
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push_back(t);
  return ticks;
}

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0) {
  static uint32_t table[256];
  static bool ready = false;
  if (!ready) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = true;
  }
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void put32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
}

void chunk(std::string& png, const char* type, const std::string& data) {
  put32(png, static_cast<uint32_t>(data.size()));
  std::string body = std::string(type, 4) + data;
  png += body;
  put32(png, crc32(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
}

}  // namespace

void Image::set(int x, int y, uint32_t color) {
  if (x < 0 || y < 0 || x >= width || y >= height) return;
  uint8_t* p = rgb.data() + (static_cast<size_t>(y) * width + x) * 3;
  p[0] = (color >> 16) & 0xff;
  p[1] = (color >> 8) & 0xff;
  p[2] = color & 0xff;
}

std::string encode_png(const Image& img) {
  std::string raw;  // filter byte 0 + RGB per row
  for (int y = 0; y < img.height; ++y) {
    raw += '\0';
    raw.append(reinterpret_cast<const char*>(img.rgb.data()) + static_cast<size_t>(y) * img.width * 3,
               static_cast<size_t>(img.width) * 3);
  }
  // zlib stream of stored (uncompressed) deflate blocks.
  std::string z = "\x78\x01";
  for (size_t pos = 0; pos < raw.size() || pos == 0;) {
    size_t len = std::min<size_t>(65535, raw.size() - pos);
    bool last = pos + len == raw.size();
    z += static_cast<char>(last ? 1 : 0);
    z += static_cast<char>(len & 0xff);
    z += static_cast<char>(len >> 8);
    z += static_cast<char>(~len & 0xff);
    z += static_cast<char>((~len >> 8) & 0xff);
    z.append(raw, pos, len);
    pos += len;
    if (last) break;
  }
  uint32_t a = 1, b = 0;
  for (unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  put32(z, (b << 16) | a);
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string header;
  put32(header, img.width);
  put32(header, img.height);
  header += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB
  chunk(png, "IHDR", header);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", "");
  return png;
}

void write_line_plot(const std::string& path, const std::vector<Series>& series,
                     const PlotOptions& o) {
  Image img(o.width, o.height);
  const int left = 70, right = 20, top = 40, bottom = 50;
  const int pw = o.width - left - right, ph = o.height - top - bottom;
  auto ty = [&](double y) { return o.log_y ? std::log10(std::max(y, 1e-12)) : y; };
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, ty(s.y[i]));
      y1 = std::max(y1, ty(s.y[i]));
    }
  if (!std::isfinite(x0)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) { y1 += 0.5; y0 -= 0.5; }
  double pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + ph - (ty(y) - y0) / (y1 - y0) * ph; };
  const uint32_t grid = 0xe6e6e6, axis = 0x333333;
  for (double t : nice_ticks(x0, x1, 8)) {
    draw_line(img, px(t), top, px(t), top + ph, grid, 1);
    std::string label = format_tick(t);
    draw_text(img, static_cast<int>(px(t)) - 3 * static_cast<int>(label.size()), top + ph + 6, label, axis);
  }
  for (double t : nice_ticks(y0, y1, 6)) {
    double y = top + ph - (t - y0) / (y1 - y0) * ph;
    draw_line(img, left, y, left + pw, y, grid, 1);
    std::string label = format_tick(o.log_y ? std::pow(10, t) : t);
    draw_text(img, left - 6 - 6 * static_cast<int>(label.size()), static_cast<int>(y) - 3, label, axis);
  }
  draw_line(img, left, top, left, top + ph, axis, 1);
  draw_line(img, left, top + ph, left + pw, top + ph, axis, 1);
  draw_text(img, left, 14, o.title, 0x000000);
  draw_text(img, left + pw / 2 - 3 * static_cast<int>(o.x_label.size()), o.height - 18, o.x_label, axis);
  draw_text(img, 8, top + ph / 2 + 3 * static_cast<int>(o.y_label.size()), o.y_label, axis, true);
  int legend_y = top + 8;
  for (auto& s : series) {
    bool started = false;
    double lx = 0, ly = 0;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      double cx = px(s.x[i]), cy = py(s.y[i]);
      if (started) draw_line(img, lx, ly, cx, cy, s.color, 2);
      else if (s.x.size() == 1) draw_line(img, cx - 2, cy, cx + 2, cy, s.color, 3);
      lx = cx;
      ly = cy;
      started = true;
    }
    if (!s.label.empty()) {
      int lx0 = left + pw - 8 - 6 * static_cast<int>(s.label.size()) - 24;
      draw_line(img, lx0, legend_y + 3, lx0 + 16, legend_y + 3, s.color, 3);
      draw_text(img, lx0 + 22, legend_y, s.label, 0x000000);
      legend_y += 14;
    }
  }
  write_file_atomic(path, encode_png(img));
}

}  // namespace whale
