// Continuous batching: one thread runs the model for every request at once. At each step the
// running sequences (each decoding one token, or prefilling a chunk of its prompt) go through
// one forward_batch; new sequences join and finished or cancelled ones leave between steps.
// Their KV caches are blocks of a shared PagedCache: a sequence is admitted when the pool has
// room for its prompt, grows a block at a time, and when the pool runs dry the most recently
// admitted sequence is preempted (its blocks freed, recomputed later from its tokens so far).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "infer/sampler.h"
#include "model/transformer.h"
#include "serve/metrics.h"
#include "serve/paged_cache.h"
#include "text/tokenizer.h"

namespace whale::serve {

using Clock = std::chrono::steady_clock;

// Text the scheduler produced for one choice of a job.
struct ChoiceEvent {
  int choice = 0;
  std::string text;
  bool finished = false;
  std::string finish_reason;  // "stop" or "length" (or "cancelled" at shutdown)
};

struct ChoiceStats {
  int prompt_tokens = 0, cache_hit_tokens = 0, completion_tokens = 0;
};

// One API request: a sequence per choice; the HTTP thread reads its events.
struct Job {
  struct Choice {
    std::vector<int> prompt;
    SamplingParams sampling;
  };
  std::vector<Choice> choices;
  int max_tokens = 16;
  std::vector<std::string> stop;
  Clock::time_point arrival = Clock::now();

  // Set by the reader when its client went away: the scheduler drops the job's sequences.
  std::atomic<bool> cancelled{false};

  // Waits up to `timeout` for events; returns them (empty on timeout).
  std::vector<ChoiceEvent> wait(std::chrono::milliseconds timeout);
  ChoiceStats stats(int choice) const;

  // Scheduler side.
  void post(ChoiceEvent event, const ChoiceStats& stats);
  std::vector<ChoiceStats> stats_;  // guarded by mutex_

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<ChoiceEvent> events_;
};

struct SchedulerOptions {
  int max_batch = 16;             // most sequences in a forward pass
  size_t cache_bytes = 1u << 30;  // the KV block pool's budget
  int block_tokens = 16;          // positions per cache block
  int step_tokens = 256;          // most prompt tokens prefilled per step (all sequences)
  bool prefix_caching = true;
  int threads = 0;  // OpenMP threads of the forward pass (0: default)
};

class Scheduler {
 public:
  Scheduler(const Model& model, const text::Tokenizer& tokenizer, std::vector<int> eos,
            const SchedulerOptions& options, Metrics& metrics);
  ~Scheduler();

  void submit(std::shared_ptr<Job> job);
  // Ends every sequence now (their readers get finish_reason "cancelled"); for shutdown.
  void cancel_all();
  // Longest sequence (prompt + generated tokens) the block pool can hold on its own.
  int capacity_tokens() const;
  int in_flight() const;  // sequences waiting or running

 private:
  struct Sequence;
  void run();
  void step();
  void admit();
  void finish(Sequence& s, const std::string& reason);
  void preempt(Sequence& s);
  void publish_state();

  const Model& model_;
  const text::Tokenizer& tokenizer_;
  std::vector<int> eos_;
  SchedulerOptions options_;
  Metrics& metrics_;
  PagedCache cache_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Job>> submitted_;  // guarded by mutex_
  bool stopping_ = false, cancel_all_ = false;
  std::atomic<int> in_flight_{0};

  // Scheduler thread only.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::thread thread_;
};

}  // namespace whale::serve
