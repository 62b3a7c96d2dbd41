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
  check(options.draft_tokens >= 1 && options.draft_tokens <= kMaxDraftTokens,
        "the drafts per step must be 1 to " + std::to_string(kMaxDraftTokens));
  const ModelConfig& c = model.config();
  const int V = c.vocab_size, H = c.hidden_size, n = static_cast<int>(prompt.size());
  const int K = options.draft_tokens;
  using clock = std::chrono::steady_clock;
  const auto since = [](clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
  };
  Sampler sampler(options.sampling);
  const bool greedy = sampler.greedy();
  KVCache cache = model.new_cache(), mtp_cache = model.new_mtp_cache();
  std::vector<float> logits(static_cast<size_t>(n) * V), hidden(static_cast<size_t>(n) * H);
  GenerateStats s;
  s.prompt_tokens = n;
  s.checked_at.assign(K, 0);
  s.accepted_at.assign(K, 0);
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
  // embedding of token i+1 and predicts token i+2. Over the prompt that is prompt[1..] then x.
  // Each call keeps its last row's logits (the next first draft) and head input (to chain on);
  // the rows before it only extend the MTP cache.
  std::vector<float> draft_logits(V), head_input(H);
  ForwardOptions last_row;
  last_row.last_logits_only = true;
  const auto mtp_rows = [&](const int* tokens, const float* main_hidden, int rows) {
    model.mtp_forward(tokens, main_hidden, rows, mtp_cache, draft_logits.data(), last_row,
                      head_input.data());
  };
  if (!done) {
    std::vector<int> next(prompt.begin() + 1, prompt.end());
    if (!next.empty()) model.mtp_forward(next.data(), hidden.data(), n - 1, mtp_cache, nullptr);
    mtp_rows(&x, hidden.data() + static_cast<size_t>(n - 1) * H, 1);
  }

  // Verification rows are computed as single-token decode computes them (absorbed attention;
  // linear_forward uses row dots below 8 tokens), so greedy choices match plain decoding's.
  ForwardOptions verify;
  verify.attention = AttentionPath::kAbsorbed;
  std::vector<float> verify_logits((kMaxDraftTokens + 1) * static_cast<size_t>(V));
  std::vector<float> verify_hidden((kMaxDraftTokens + 1) * static_cast<size_t>(H));
  std::vector<float> chained(H);
  std::vector<std::vector<double>> q(K);
  std::vector<double> p;
  int tokens[kMaxDraftTokens + 1];
  while (!done) {
    // Draft k tokens: the first from the MTP row of the last verified position; each further
    // one from an MTP row that takes the previous draft's head input in place of the main
    // model's state (the MTP output predicts the token after next, as that state would). Those
    // rows only serve drafting: the cache drops them and the verified states replace them below.
    // No more drafts than tokens still wanted.
    const int k = std::clamp(options.max_new_tokens - static_cast<int>(out.size()) - 1, 1, K);
    const int mtp_committed = mtp_cache.length;
    tokens[0] = x;
    auto m0 = clock::now();
    for (int j = 0; j < k; ++j) {
      if (j > 0) {  // (a copy: the call overwrites head_input while it reads its input)
        std::copy_n(head_input.data(), H, chained.data());
        mtp_rows(&tokens[j], chained.data(), 1);
      }
      if (greedy) {
        tokens[j + 1] = argmax(draft_logits.data(), V);
      } else {
        q[j] = sampler.distribution(draft_logits.data(), V);
        tokens[j + 1] = sampler.draw(q[j]);
      }
    }
    mtp_cache.truncate(mtp_committed);
    s.draft_seconds += since(m0);

    auto v0 = clock::now();
    model.forward(tokens, k + 1, cache, verify_logits.data(), verify_hidden.data(), verify);
    s.verify_seconds += since(v0);
    ++s.verify_passes;
    s.drafted += k;
    // Accept drafts in order until the first rejection, which is replaced from the residual
    // (greedy: the target's choice); when all are accepted the last row gives a bonus token.
    int accepted = 0, y = -1;
    for (int j = 0; j < k && y < 0; ++j) {
      const float* row = verify_logits.data() + static_cast<size_t>(j) * V;
      const int d = tokens[j + 1];
      ++s.checked_at[j];
      bool accept;
      if (greedy) {
        accept = argmax(row, V) == d;
      } else {
        p = sampler.distribution(row, V);
        accept = sampler.uniform() < acceptance_probability(p, q[j], d);
      }
      if (accept) {
        ++accepted;
        ++s.accepted_at[j];
      } else {
        y = greedy ? argmax(row, V) : sampler.draw(residual_distribution(p, q[j]));
      }
    }
    if (y < 0) y = sampler.sample(verify_logits.data() + static_cast<size_t>(k) * V, V);
    s.accepted += accepted;
    cache.truncate(cache.length - (k - accepted));  // forget the rejected drafts' positions
    for (int j = 1; j <= accepted && !done; ++j) emit(tokens[j]);
    if (!done) emit(y);
    if (done) break;
    // The MTP rows of the verified positions: hidden states h_p … h_{p+accepted} with the
    // tokens that follow them (the accepted drafts, then y); the last row drafts next.
    tokens[accepted + 1] = y;
    m0 = clock::now();
    mtp_rows(tokens + 1, verify_hidden.data(), accepted + 1);
    s.draft_seconds += since(m0);
    x = y;
  }
  if (stats) {
    s.generated_tokens = static_cast<int>(out.size());
    s.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    s.decode_seconds = since(t1);
    *stats = s;
  }
  return out;
}

}  // namespace whale
