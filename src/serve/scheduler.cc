#include "serve/scheduler.h"

#include <omp.h>

#include <algorithm>

#include "text/stream_filters.h"

namespace whale::serve {

std::vector<ChoiceEvent> Job::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
  std::vector<ChoiceEvent> out(std::make_move_iterator(events_.begin()),
                               std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

ChoiceStats Job::stats(int choice) const {
  std::lock_guard lock(mutex_);
  return choice < static_cast<int>(stats_.size()) ? stats_[choice] : ChoiceStats();
}

void Job::post(ChoiceEvent event, const ChoiceStats& stats) {
  {
    std::lock_guard lock(mutex_);
    if (static_cast<int>(stats_.size()) <= event.choice) stats_.resize(event.choice + 1);
    stats_[event.choice] = stats;
    events_.push_back(std::move(event));
  }
  cv_.notify_all();
}

struct Scheduler::Sequence {
  Sequence(std::shared_ptr<Job> j, int c, const text::Tokenizer& tokenizer)
      : job(std::move(j)),
        choice(c),
        tokens(job->choices[c].prompt),
        prompt_tokens(static_cast<int>(tokens.size())),
        sampler(job->choices[c].sampling),
        decoder(tokenizer, true),
        stop(job->stop) {}
  std::shared_ptr<Job> job;
  int choice;
  std::vector<int> tokens;  // the prompt, then every generated token
  int prompt_tokens;
  SequenceBlocks blocks;  // blocks.cache.length: positions computed
  Sampler sampler;
  text::StreamDecoder decoder;
  StopFilter stop;
  ChoiceStats stats;
  bool admitted_before = false, done = false;
  int rows = 0;  // tokens it feeds to this step's forward pass
  Clock::time_point last_token;
};

Scheduler::Scheduler(const Model& model, const text::Tokenizer& tokenizer, std::vector<int> eos,
                     const SchedulerOptions& options, Metrics& metrics)
    : model_(model),
      tokenizer_(tokenizer),
      eos_(std::move(eos)),
      options_(options),
      metrics_(metrics),
      // The V3.2 indexer's keys are kept per sequence, outside the shared blocks.
      cache_(model.config(), options.cache_bytes, options.block_tokens,
             options.prefix_caching && !model.config().has_indexer()) {
  publish_state();
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Scheduler::submit(std::shared_ptr<Job> job) {
  in_flight_ += static_cast<int>(job->choices.size());
  {
    std::lock_guard lock(mutex_);
    submitted_.push_back(std::move(job));
  }
  cv_.notify_all();
}

void Scheduler::cancel_all() {
  {
    std::lock_guard lock(mutex_);
    cancel_all_ = true;
  }
  cv_.notify_all();
}

int Scheduler::capacity_tokens() const {
  return cache_.total_blocks() * cache_.block_tokens();
}

int Scheduler::in_flight() const {
  return in_flight_.load();
}

void Scheduler::run() {
  if (options_.threads > 0) omp_set_num_threads(options_.threads);
  for (;;) {
    bool cancel = false, stopping = false;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] {
        return stopping_ || cancel_all_ || !submitted_.empty() || !running_.empty() ||
               !waiting_.empty();
      });
      for (auto& job : submitted_)
        for (int c = 0; c < static_cast<int>(job->choices.size()); ++c)
          waiting_.push_back(std::make_unique<Sequence>(job, c, tokenizer_));
      submitted_.clear();
      cancel = std::exchange(cancel_all_, false);
      stopping = stopping_;
    }
    // Cancelled by their clients: drop them and free their blocks.
    auto gone = [&](std::unique_ptr<Sequence>& s) {
      if (!s->job->cancelled.load() && !cancel && !stopping) return false;
      if (s->job->cancelled.load()) {
        if (s->choice == 0) metrics_.cancelled();
      } else {
        s->job->post({s->choice, "", true, "cancelled"}, s->stats);
      }
      cache_.release(s->blocks);
      --in_flight_;
      return true;
    };
    std::erase_if(running_, gone);
    std::erase_if(waiting_, gone);
    if (stopping) {
      publish_state();
      return;
    }
    admit();
    if (!running_.empty()) step();
    publish_state();
  }
}

void Scheduler::admit() {
  const int B = cache_.block_tokens();
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_batch) {
    Sequence& s = *waiting_.front();
    const int len = static_cast<int>(s.tokens.size());
    // The last token is always computed: its logits choose the next one.
    const int matched = cache_.attach_prefix(s.blocks, s.tokens, (len - 1) / B);
    const int need = (len + B - 1) / B - matched;
    // Keep a block of headroom per running sequence, so admitting does not force preemption.
    if (!running_.empty() && need + static_cast<int>(running_.size()) > cache_.available_blocks()) {
      cache_.release(s.blocks);
      break;
    }
    if (!cache_.reserve(s.blocks, len)) {
      cache_.release(s.blocks);
      if (!running_.empty()) break;
      // Alone and still too long for the pool (requests are checked against it; a safeguard).
      finish(s, "length");
      waiting_.pop_front();
      continue;
    }
    if (!s.admitted_before) {
      s.admitted_before = true;
      s.stats.prompt_tokens = s.prompt_tokens;
      s.stats.cache_hit_tokens = std::min(matched * B, s.prompt_tokens);
      metrics_.add_tokens(s.prompt_tokens, s.stats.cache_hit_tokens, 0);
    }
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

void Scheduler::preempt(Sequence& s) {
  cache_.release(s.blocks);
}

void Scheduler::finish(Sequence& s, const std::string& reason) {
  std::string rest;
  if (reason != "stop-string") {
    bool stopped = false;
    rest = s.stop.push(s.decoder.finish(), stopped);
    if (!stopped) rest += s.stop.finish();
  }
  // The blocks go back, and the gauges say so, before the client hears that the request is
  // done: whoever reads /metrics after a response finds its cache freed (the gauges used to be
  // published after the step, and a test reading them right after its last response saw 5
  // blocks still in use).
  cache_.release(s.blocks);
  publish_state();
  s.job->post({s.choice, rest, true, reason == "stop-string" ? "stop" : reason}, s.stats);
  metrics_.add_tokens(0, 0, s.stats.completion_tokens);
  s.done = true;
  --in_flight_;
}

void Scheduler::step() {
  // Plan: a decoding sequence feeds its last token; a prefilling one a chunk of its prompt
  // within the step's token budget (so long prompts do not stall everyone's next token).
  int budget = options_.step_tokens;
  for (auto& s : running_) {
    const int left = static_cast<int>(s->tokens.size()) - s->blocks.cache.length;
    s->rows = left <= 1 ? left : std::min(left, std::max(budget, 0));
    if (left > 1) budget -= s->rows;
  }
  // Memory: blocks for this step's positions; when the pool is dry, preempt the newest.
  for (size_t i = 0; i < running_.size();) {
    Sequence& s = *running_[i];
    if (s.rows == 0 || cache_.reserve(s.blocks, s.blocks.cache.length + s.rows)) {
      ++i;
      continue;
    }
    std::unique_ptr<Sequence> victim = std::move(running_.back());
    running_.pop_back();
    preempt(*victim);
    waiting_.push_front(std::move(victim));
  }
  std::vector<int> tokens, counts;
  std::vector<KVCache*> caches;
  std::vector<Sequence*> batch;
  for (auto& s : running_) {
    if (s->rows == 0) continue;
    const int from = s->blocks.cache.length;
    tokens.insert(tokens.end(), s->tokens.begin() + from, s->tokens.begin() + from + s->rows);
    caches.push_back(&s->blocks.cache);
    counts.push_back(s->rows);
    batch.push_back(s.get());
  }
  if (batch.empty()) return;
  const ModelConfig& c = model_.config();
  const int V = c.vocab_size;
  const int sample_vocab = std::min(V, tokenizer_.vocab_size());
  std::vector<float> logits(batch.size() * static_cast<size_t>(V));
  ForwardOptions forward;
  forward.last_logits_only = true;
  model_.forward_batch(tokens.data(), caches, counts, logits.data(), nullptr, forward);
  metrics_.batch(static_cast<int>(batch.size()), static_cast<int>(tokens.size()));

  const auto now = Clock::now();
  for (size_t i = 0; i < batch.size(); ++i) {
    Sequence& s = *batch[i];
    cache_.publish(s.blocks, s.tokens, s.blocks.cache.length);
    if (s.blocks.cache.length < static_cast<int>(s.tokens.size())) continue;  // prefilling
    const int token = s.sampler.sample(logits.data() + i * static_cast<size_t>(V), sample_vocab);
    if (std::find(eos_.begin(), eos_.end(), token) != eos_.end()) {
      finish(s, "stop");
      continue;
    }
    s.tokens.push_back(token);
    ++s.stats.completion_tokens;
    if (s.stats.completion_tokens == 1)
      metrics_.time_to_first_token(std::chrono::duration<double>(now - s.job->arrival).count());
    else
      metrics_.inter_token_latency(std::chrono::duration<double>(now - s.last_token).count());
    s.last_token = now;
    bool stopped = false;
    std::string text = s.stop.push(s.decoder.push(token), stopped);
    if (stopped) {
      s.job->post({s.choice, text, false, ""}, s.stats);
      finish(s, "stop-string");
    } else if (s.stats.completion_tokens >= s.job->max_tokens ||
               static_cast<int>(s.tokens.size()) >= c.max_position_embeddings) {
      s.job->post({s.choice, text, false, ""}, s.stats);
      finish(s, "length");
    } else if (!text.empty()) {
      s.job->post({s.choice, std::move(text), false, ""}, s.stats);
    }
  }
  std::erase_if(running_, [](const std::unique_ptr<Sequence>& s) { return s->done; });
}

void Scheduler::publish_state() {
  metrics_.set_state(static_cast<int>(waiting_.size()), static_cast<int>(running_.size()),
                     cache_.used_blocks(), cache_.cached_blocks(), cache_.total_blocks());
}

}  // namespace whale::serve
