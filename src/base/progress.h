// A progress bar on stderr: "label [#####.....] 52% 1.2 GB/s ETA 3s". Redrawn at most ten
// times a second on a terminal, every 10% otherwise; silent when the label is empty.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>

namespace whale {

class Progress {
 public:
  Progress(std::string label, size_t total, std::string unit);
  void advance(size_t amount);
  void set_status(std::string status) { status_ = std::move(status); }
  void set_total(size_t total) { total_ = total; }
  // For work bounded by time rather than a count (a training loop with a time budget): the bar
  // and the ETA follow the fraction of `seconds` elapsed; the rate stays per unit of work.
  void set_time_budget(double seconds) { time_budget_ = seconds; }
  void finish();
  ~Progress();

 private:
  void draw(bool final);
  std::string label_, unit_, status_;
  size_t total_, done_ = 0;
  bool tty_, finished_ = false;
  int last_decile_ = -1;
  double time_budget_ = 0;  // seconds; 0: the bar follows done / total
  double fraction(double seconds) const;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1.50 G", "320 k": a count with an SI prefix.
std::string si(double value);

}  // namespace whale
