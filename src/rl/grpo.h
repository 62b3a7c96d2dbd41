// Group Relative Policy Optimization (DeepSeekMath; R1; MISSION §3) with the DeepSeek-V3.2
// refinements as options. For sequences i (prompt + sampled response o_i) in groups of G:
//   A_i = (r_i − mean(r)) / (std(r) + 1e-4)            (sample std, within the group)
//   ρ_t = π_θ(o_t)/π_old(o_t)
//   J = (1/N) Σ_i M_i (1/|o_i|) Σ_t [ min(ρ_t A_i, clip(ρ_t, 1−ε, 1+ε) A_i) − β·KL_t ]
//   KL_t = π_ref/π_θ − log(π_ref/π_θ) − 1 (k3); unbiased_kl: ρ_t·KL_t (V3.2)
//   M_i = 0 for off-policy masking: A_i < 0 and mean_t log(π_old/π_θ) > δ (V3.2)
// keep_sampling_mask: log-probs renormalized over the sampler's kept tokens (V3.2);
// keep_routing: the experts chosen at sampling time replayed in the training forward (V3.2).
// loss = −J.
#pragma once
#include <cmath>
#include <vector>

#include "train/train_model.h"

namespace whale {

struct GrpoOptions {
  int group_size = 8;
  float clip_eps = 0.2f;
  float kl_beta = 0.04f;
  bool unbiased_kl = false;
  float offpolicy_delta = NAN;  // NaN: off
  bool keep_sampling_mask = false;
  bool keep_routing = false;
};

struct GrpoBatch {
  std::vector<std::vector<int>> sequences;  // prompt + response
  std::vector<int> prompt_lengths;
  std::vector<float> rewards;
  std::vector<std::vector<float>> old_logprobs, ref_logprobs;  // per response token (old: may be empty)
  std::vector<std::vector<std::vector<int>>> sampling_masks;   // per response token: allowed ids
  std::vector<std::vector<std::vector<int>>> routing;  // per sequence, per MoE layer [len·K]
};

struct GrpoStats {
  double loss = 0, surrogate = 0, kl = 0, clip_fraction = 0;
  int masked_sequences = 0;
  std::vector<std::vector<float>> logprobs;  // π_old per response token as used (see grpo_step)
};

std::vector<float> group_advantages(const std::vector<float>& rewards, int group_size);

// Per-response-token log-probabilities under `model` (forward only; masks and routing as the
// options ask).
std::vector<std::vector<float>> response_logprobs(TrainModel& model, const GrpoBatch& batch,
                                                  const GrpoOptions& options);

// The objective at the current parameters; with backward, adds ∂loss/∂θ into the store. With
// batch.old_logprobs empty, the current parameters are the sampling policy (the first update
// after sampling): π_old is this forward's log-probabilities, detached, so ρ = 1 — one forward
// saved per batch of rollouts.
GrpoStats grpo_step(TrainModel& model, const GrpoBatch& batch, const GrpoOptions& options,
                    bool backward = true);

}  // namespace whale
