#include "base/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace whale {

std::string si(double v) {
  const char* prefixes[] = {"", "k", "M", "G", "T"};
  int i = 0;
  while (v >= 1000 && i < 4) {
    v /= 1000;
    ++i;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf,
                v < 10    ? "%.2f %s"
                : v < 100 ? "%.1f %s"
                          : "%.0f %s",
                v, prefixes[i]);
  return buf;
}

Progress::Progress(std::string label, size_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(isatty(2)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  finish();
}

double Progress::fraction(double seconds) const {
  double f = time_budget_ > 0 ? seconds / time_budget_
             : total_         ? static_cast<double>(done_) / total_
                              : 1.0;
  return f > 1 ? 1 : f;
}

void Progress::advance(size_t amount) {
  done_ += amount;
  if (label_.empty()) return;
  auto now = std::chrono::steady_clock::now();
  int decile = static_cast<int>(10 * fraction(std::chrono::duration<double>(now - start_).count()));
  if (tty_ ? now - last_draw_ > std::chrono::milliseconds(100) : decile != last_decile_) {
    last_draw_ = now;
    last_decile_ = decile;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (!label_.empty()) draw(true);
}

void Progress::draw(bool final) {
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double f = final && time_budget_ > 0 ? 1.0 : fraction(seconds);  // time up or work done
  const int width = 30;
  std::string bar(static_cast<int>(f * width), '#');
  bar.resize(width, '.');
  double rate = seconds > 0 ? done_ / seconds : 0;
  double eta = time_budget_ > 0             ? std::max(0.0, time_budget_ - seconds)
               : rate > 0 && total_ > done_ ? (total_ - done_) / rate
                                            : 0;
  std::fprintf(stderr, "%s%s [%s] %3.0f%% %s%s/s %s %.0fs %s%s", tty_ ? "\r" : "", label_.c_str(),
               bar.c_str(), f * 100, si(rate).c_str(), unit_.c_str(), final ? "done in" : "ETA",
               final ? seconds : eta, status_.c_str(), tty_ && !final ? "\x1b[K" : "\n");
  std::fflush(stderr);
}

}  // namespace whale
