// The server's counters, gauges and histograms, rendered in Prometheus' text format for
// GET /metrics. Every method is safe to call from any thread.
#pragma once
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace whale::serve {

struct Histogram {
  std::vector<double> bounds;  // upper bounds of the buckets, ascending (+Inf implied)
  std::vector<uint64_t> counts;
  double sum = 0;
  uint64_t count = 0;
  explicit Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size(), 0) {}
  void observe(double v);
};

class Metrics {
 public:
  Metrics();
  void request_done(const std::string& endpoint, int status);
  void add_tokens(long prompt, long cache_hit, long generated);
  void cancelled();
  void time_to_first_token(double seconds);
  void inter_token_latency(double seconds);
  void batch(int sequences, int rows);
  void set_state(int waiting, int running, int blocks_used, int blocks_cached, int blocks_total);
  std::string render() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0, cache_hit_tokens_ = 0, generated_tokens_ = 0, cancelled_ = 0;
  uint64_t steps_ = 0;
  int waiting_ = 0, running_ = 0, last_batch_ = 0, blocks_used_ = 0, blocks_cached_ = 0,
      blocks_total_ = 0;
  Histogram ttft_, itl_, batch_size_;
};

}  // namespace whale::serve
