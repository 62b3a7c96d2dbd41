#include "rl/grpo.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "rl/responses.h"

namespace whale {

std::vector<float> group_advantages(const std::vector<float>& rewards, int group_size) {
  check(group_size > 0 && rewards.size() % group_size == 0,
        "GRPO: the batch is not a whole number of groups");
  std::vector<float> a(rewards.size());
  for (size_t g = 0; g < rewards.size(); g += group_size) {
    double mean = 0, var = 0;
    for (int i = 0; i < group_size; ++i) mean += rewards[g + i];
    mean /= group_size;
    for (int i = 0; i < group_size; ++i) var += (rewards[g + i] - mean) * (rewards[g + i] - mean);
    double std = group_size > 1 ? std::sqrt(var / (group_size - 1)) : 0.0;
    for (int i = 0; i < group_size; ++i)
      a[g + i] = static_cast<float>((rewards[g + i] - mean) / (std + 1e-4));
  }
  return a;
}

namespace {

// The padded batch with the sampled experts replayed (keep routing).
PaddedBatch pad(const ModelConfig& c, const GrpoBatch& batch, const GrpoOptions& o) {
  PaddedBatch p = pad_sequences(batch.sequences);
  if (o.keep_routing) {
    const int K = c.num_experts_per_tok;
    check(batch.routing.size() == batch.sequences.size(),
          "GRPO: keep-routing needs every sequence's experts");
    const size_t layers = batch.routing[0].size();
    p.forced.assign(layers, std::vector<int>(static_cast<size_t>(p.B) * p.T * K));
    for (size_t l = 0; l < layers; ++l)
      for (int b = 0; b < p.B; ++b)
        for (int t = 0; t < p.T; ++t)
          for (int k = 0; k < K; ++k) {
            const auto& r = batch.routing[b][l];
            const size_t at = static_cast<size_t>(t) * K + k;
            // Padding rows take experts 0..K−1: they feed no log-probability.
            p.forced[l][(static_cast<size_t>(b) * p.T + t) * K + k] = at < r.size() ? r[at] : k;
          }
  }
  return p;
}

const std::vector<int>* allowed_set(const GrpoBatch& batch, const GrpoOptions& o, int b, int t) {
  if (!o.keep_sampling_mask) return nullptr;
  check(batch.sampling_masks.size() == batch.sequences.size(),
        "GRPO: keep-sampling-mask needs every sequence's sampling masks");
  return &batch.sampling_masks[b][t];
}

}  // namespace

std::vector<std::vector<float>> response_logprobs(TrainModel& model, const GrpoBatch& batch,
                                                  const GrpoOptions& o) {
  const ModelConfig& c = model.config();
  PaddedBatch p = pad(c, batch, o);
  forward_padded(model, p);
  std::vector<std::vector<float>> out(p.B);
  for (int b = 0; b < p.B; ++b) {
    const auto& seq = batch.sequences[b];
    for (int pos = batch.prompt_lengths[b]; pos < static_cast<int>(seq.size()); ++pos) {
      const float* row = prediction_row(model, p, b, pos);
      out[b].push_back(static_cast<float>(
          token_log_prob(row, c.vocab_size, seq[pos],
                   allowed_set(batch, o, b, pos - batch.prompt_lengths[b]), nullptr)));
    }
  }
  return out;
}

GrpoStats grpo_step(TrainModel& model, const GrpoBatch& batch, const GrpoOptions& o,
                    bool backward) {
  const ModelConfig& c = model.config();
  const int V = c.vocab_size;
  PaddedBatch p = pad(c, batch, o);
  forward_padded(model, p);
  const std::vector<float> advantages = group_advantages(batch.rewards, o.group_size);
  const double N = p.B;
  GrpoStats stats;
  stats.logprobs.resize(p.B);
  std::vector<float> dlogits(backward ? static_cast<size_t>(p.B) * p.T * V : 0, 0.0f);
  std::vector<double> probs;
  long tokens = 0, clipped = 0;
  for (int b = 0; b < p.B; ++b) {
    const auto& seq = batch.sequences[b];
    const int start = batch.prompt_lengths[b], len = static_cast<int>(seq.size());
    const int n = len - start;
    if (n <= 0) continue;
    const bool on_policy = batch.old_logprobs.empty();
    check((on_policy || static_cast<int>(batch.old_logprobs[b].size()) == n) &&
              static_cast<int>(batch.ref_logprobs[b].size()) == n,
          "GRPO: old/ref log-probs must have one value per response token");
    const double A = advantages[b];
    std::vector<double> logp(n);
    std::vector<std::vector<double>> token_probs(n);
    double drift = 0;
    for (int t = 0; t < n; ++t) {
      const float* row = prediction_row(model, p, b, start + t);
      logp[t] = token_log_prob(row, V, seq[start + t], allowed_set(batch, o, b, t),
                         backward ? &token_probs[t] : nullptr);
    }
    // π_old: given, or (on-policy, the first update after sampling) this very forward.
    std::vector<float>& old = stats.logprobs[b];
    for (int t = 0; t < n; ++t) {
      old.push_back(on_policy ? static_cast<float>(logp[t]) : batch.old_logprobs[b][t]);
      drift += old[t] - logp[t];
    }
    // Off-policy sequence masking (V3.2): a negative-advantage sequence the policy has drifted
    // away from teaches little and destabilizes; drop it.
    if (!std::isnan(o.offpolicy_delta) && A < 0 && drift / n > o.offpolicy_delta) {
      ++stats.masked_sequences;
      continue;
    }
    for (int t = 0; t < n; ++t) {
      const double rho = std::exp(logp[t] - old[t]);
      const double clipped_rho = std::clamp(rho, 1.0 - o.clip_eps, 1.0 + o.clip_eps);
      const bool use_clipped = clipped_rho * A < rho * A;
      const double surrogate = use_clipped ? clipped_rho * A : rho * A;
      const double log_r = batch.ref_logprobs[b][t] - logp[t];  // log(π_ref/π_θ)
      const double k3 = std::exp(log_r) - log_r - 1;
      const double kl = o.unbiased_kl ? rho * k3 : k3;
      stats.surrogate += surrogate / n / N;
      stats.kl += kl / n / N;
      stats.loss -= (surrogate - o.kl_beta * kl) / n / N;
      clipped += use_clipped;
      ++tokens;
      if (!backward) continue;
      // dJ/dlogp: the surrogate gives ρA unless the clipped branch is the min (then 0);
      // −β·dKL/dlogp is β(r − 1) for k3, and −β·ρ·(logp − log p_ref) for ρ·k3.
      double dJ = use_clipped ? 0.0 : rho * A;
      dJ += o.unbiased_kl ? -o.kl_beta * rho * (-log_r) : o.kl_beta * (std::exp(log_r) - 1.0);
      const double g = -dJ / n / N;  // ∂loss/∂logp
      float* drow = dlogits.data() + (static_cast<size_t>(b) * p.T + start + t - 1) * V;
      for (int v = 0; v < V; ++v) drow[v] += static_cast<float>(g * (-token_probs[t][v]));
      drow[seq[start + t]] += static_cast<float>(g);
    }
  }
  stats.clip_fraction = tokens ? static_cast<double>(clipped) / tokens : 0.0;
  if (backward) model.backward(dlogits.data(), nullptr);
  return stats;
}

}  // namespace whale
