#include "serve/metrics.h"

#include <cstdio>

namespace whale::serve {

void Histogram::observe(double v) {
  for (size_t i = 0; i < bounds.size(); ++i)
    if (v <= bounds[i]) ++counts[i];
  sum += v;
  ++count;
}

Metrics::Metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}),
      batch_size_({1, 2, 4, 8, 16, 32, 64, 128}) {}

void Metrics::request_done(const std::string& endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::add_tokens(long prompt, long cache_hit, long generated) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += prompt;
  cache_hit_tokens_ += cache_hit;
  generated_tokens_ += generated;
}

void Metrics::cancelled() {
  std::lock_guard lock(mutex_);
  ++cancelled_;
}

void Metrics::time_to_first_token(double s) {
  std::lock_guard lock(mutex_);
  ttft_.observe(s);
}

void Metrics::inter_token_latency(double s) {
  std::lock_guard lock(mutex_);
  itl_.observe(s);
}

void Metrics::batch(int sequences, int rows) {
  std::lock_guard lock(mutex_);
  batch_size_.observe(sequences);
  last_batch_ = sequences;
  ++steps_;
}

void Metrics::set_state(int waiting, int running, int used, int cached, int total) {
  std::lock_guard lock(mutex_);
  waiting_ = waiting;
  running_ = running;
  blocks_used_ = used;
  blocks_cached_ = cached;
  blocks_total_ = total;
}

namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void metric(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void histogram(std::string& out, const char* name, const char* help, const Histogram& h) {
  metric(out, name, "histogram", help);
  for (size_t i = 0; i < h.bounds.size(); ++i)
    out += std::string(name) + "_bucket{le=\"" + num(h.bounds[i]) + "\"} " +
           std::to_string(h.counts[i]) + "\n";
  out += std::string(name) + "_bucket{le=\"+Inf\"} " + std::to_string(h.count) + "\n";
  out += std::string(name) + "_sum " + num(h.sum) + "\n";
  out += std::string(name) + "_count " + std::to_string(h.count) + "\n";
}

}  // namespace

std::string Metrics::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  metric(out, "whale_requests_total", "counter", "HTTP requests answered, by endpoint and status");
  for (const auto& [key, n] : requests_)
    out += "whale_requests_total{endpoint=\"" + key.first + "\",status=\"" +
           std::to_string(key.second) + "\"} " + std::to_string(n) + "\n";
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    metric(out, name, "counter", help);
    out += std::string(name) + " " + std::to_string(v) + "\n";
  };
  auto gauge = [&](const char* name, const char* help, double v) {
    metric(out, name, "gauge", help);
    out += std::string(name) + " " + num(v) + "\n";
  };
  counter("whale_prompt_tokens_total", "Prompt tokens of admitted sequences", prompt_tokens_);
  counter("whale_generation_tokens_total", "Tokens generated", generated_tokens_);
  counter("whale_prompt_cache_hit_tokens_total", "Prompt tokens served from the prefix cache",
          cache_hit_tokens_);
  counter("whale_prompt_cache_miss_tokens_total", "Prompt tokens computed",
          prompt_tokens_ - cache_hit_tokens_);
  counter("whale_requests_cancelled_total", "Requests whose client went away before the end",
          cancelled_);
  counter("whale_batch_steps_total", "Forward passes of the scheduler", steps_);
  gauge("whale_prefix_cache_hit_rate", "Share of prompt tokens served from the prefix cache",
        prompt_tokens_ ? static_cast<double>(cache_hit_tokens_) / prompt_tokens_ : 0.0);
  gauge("whale_queue_length", "Sequences waiting for admission", waiting_);
  gauge("whale_running_sequences", "Sequences in the running batch", running_);
  gauge("whale_batch_size", "Sequences in the last forward pass", last_batch_);
  gauge("whale_cache_blocks_used", "KV cache blocks referenced by sequences", blocks_used_);
  gauge("whale_cache_blocks_cached", "KV cache blocks held by the prefix cache", blocks_cached_);
  gauge("whale_cache_blocks_total", "KV cache blocks in the pool", blocks_total_);
  histogram(out, "whale_time_to_first_token_seconds", "Arrival to first generated token", ttft_);
  histogram(out, "whale_inter_token_latency_seconds", "Time between a sequence's tokens", itl_);
  histogram(out, "whale_batch_sequences", "Sequences per forward pass", batch_size_);
  return out;
}

}  // namespace whale::serve
