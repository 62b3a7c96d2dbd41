#include "infer/speculative.h"

#include <algorithm>
#include <chrono>

#include "base/error.h"

namespace whale {

double acceptance_probability(const std::vector<double>& p, const std::vector<double>& q, int d) {
  check(p.size() == q.size() && d >= 0 && d < static_cast<int>(p.size()),
        "acceptance_probability: mismatched distributions or draft out of range");
  if (q[d] <= 0) return 1.0;
  return std::min(1.0, p[d] / q[d]);
}

std::vector<double> residual_distribution(const std::vector<double>& p,
                                          const std::vector<double>& q) {
  check(p.size() == q.size(), "residual_distribution: mismatched distributions");
  std::vector<double> r(p.size());
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) sum += r[i] = std::max(0.0, p[i] - q[i]);
  if (sum <= 0) return p;
  for (double& v : r) v /= sum;
  return r;
}

std::vector<int> generate_speculative(const Model& model, const std::vector<int>& prompt,
                                      const GenerateOptions& options,
                                      const std::function<bool(int)>& on_token,
                                      GenerateStats* stats) {
  check(!prompt.empty(), "generate needs a non-empty prompt");
  check(options.max_new_tokens >= 0, "the number of tokens to generate must be >= 0");
  check(model.weights().has_mtp,
        "speculative decoding with MTP needs a model with an MTP module "
        "(num_nextn_predict_layers = 1)");
  const ModelConfig& c = model.config();
  const int V = c.vocab_size, H = c.hidden_size, n = static_cast<int>(prompt.size());
  using clock = std::chrono::steady_clock;
  Sampler sampler(options.sampling);
  const bool greedy = sampler.greedy();
  KVCache cache = model.new_cache(), mtp_cache = model.new_mtp_cache();
  std::vector<float> logits(static_cast<size_t>(n) * V), hidden(static_cast<size_t>(n) * H);
  GenerateStats s;
  s.prompt_tokens = n;
  auto t0 = clock::now();
  model.forward(prompt.data(), n, cache, logits.data(), hidden.data());
  std::vector<int> out;
  bool done = options.max_new_tokens == 0;
  auto emit = [&](int token) {
    bool eos =
        std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), token) != c.eos_token_ids.end();
    if (options.stop_at_eos && eos) {
      done = true;
      return;
    }
    out.push_back(token);
    if ((on_token && !on_token(token)) || static_cast<int>(out.size()) == options.max_new_tokens)
      done = true;
  };
  int x = done ? 0 : sampler.sample(logits.data() + static_cast<size_t>(n - 1) * V, V);
  auto t1 = clock::now();
  if (!done) emit(x);

  // The MTP cache follows the main one: its row i combines the main hidden state h_i with the
  // embedding of token i+1 and predicts token i+2. Over the prompt that is prompt[1..] then x;
  // only the last row's logits (the first draft) are needed.
  std::vector<float> draft_logits(2 * static_cast<size_t>(V));
  if (!done) {
    std::vector<int> next(prompt.begin() + 1, prompt.end());
    if (!next.empty()) model.mtp_forward(next.data(), hidden.data(), n - 1, mtp_cache, nullptr);
    model.mtp_forward(&x, hidden.data() + static_cast<size_t>(n - 1) * H, 1, mtp_cache,
                      draft_logits.data());
  }
  const float* draft_row = draft_logits.data();

  // Verification rows are computed as single-token decode computes them (absorbed attention;
  // linear_forward uses row dots below 8 tokens), so greedy choices match plain decoding's.
  ForwardOptions verify;
  verify.attention = AttentionPath::kAbsorbed;
  std::vector<float> verify_logits(2 * static_cast<size_t>(V)), verify_hidden(2 * H);
  std::vector<double> q, p;
  while (!done) {
    int d;
    if (greedy) {
      d = argmax(draft_row, V);
    } else {
      q = sampler.distribution(draft_row, V);
      d = sampler.draw(q);
    }
    const int pair[2] = {x, d};
    auto v0 = clock::now();
    model.forward(pair, 2, cache, verify_logits.data(), verify_hidden.data(), verify);
    s.verify_seconds += std::chrono::duration<double>(clock::now() - v0).count();
    ++s.verify_passes;
    ++s.drafted;
    const float* row0 = verify_logits.data();
    const float* row1 = row0 + V;
    bool accept;
    if (greedy) {
      accept = argmax(row0, V) == d;
    } else {
      p = sampler.distribution(row0, V);
      accept = sampler.uniform() < acceptance_probability(p, q, d);
    }
    int y;
    if (accept) {
      ++s.accepted;
      emit(d);
      if (done) break;
      y = sampler.sample(row1, V);  // the bonus token, from the target's next distribution
      emit(y);
      if (done) break;
      const int next[2] = {d, y};
      auto m0 = clock::now();
      model.mtp_forward(next, verify_hidden.data(), 2, mtp_cache, draft_logits.data());
      s.draft_seconds += std::chrono::duration<double>(clock::now() - m0).count();
      draft_row = draft_logits.data() + V;
    } else {
      cache.truncate(cache.length - 1);  // forget the rejected draft's position
      y = greedy ? argmax(row0, V) : sampler.draw(residual_distribution(p, q));
      emit(y);
      if (done) break;
      auto m0 = clock::now();
      model.mtp_forward(&y, verify_hidden.data(), 1, mtp_cache, draft_logits.data());
      s.draft_seconds += std::chrono::duration<double>(clock::now() - m0).count();
      draft_row = draft_logits.data();
    }
    x = y;
  }
  if (stats) {
    s.generated_tokens = static_cast<int>(out.size());
    s.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    s.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    *stats = s;
  }
  return out;
}

}  // namespace whale
