// Rollouts: G sampled answers per prompt from the current policy, decoded together — each
// prompt is prefilled once, its cache copied to its G answers, and every step decodes all
// unfinished answers in one batched forward (Model::forward_batch).
#pragma once
#include <cstdint>
#include <vector>

#include "infer/sampler.h"
#include "model/transformer.h"

namespace whale {

struct Rollout {
  int prompt_index = 0;
  std::vector<int> prompt, response;  // the response ends with EOS unless truncated
  bool truncated = false;
  // Keep-sampling-mask: per response token, the sorted ids the sampler drew from.
  std::vector<std::vector<int>> support;
  // Keep-routing: per main MoE layer, the experts of every position [len · K].
  std::vector<std::vector<int>> routing;
};

struct RolloutOptions {
  int group_size = 8;
  int max_new_tokens = 64;
  SamplingParams sampling;  // seed: the base of every answer's own sampler
  bool record_support = false, record_routing = false;
};

struct RolloutStats {
  double seconds = 0;
  long generated_tokens = 0;
};

std::vector<Rollout> sample_rollouts(const Model& model,
                                     const std::vector<std::vector<int>>& prompts,
                                     const RolloutOptions& options, RolloutStats* stats = nullptr);

}  // namespace whale
