// Autoregressive generation through the KV cache: one prefill of the prompt, then one-token
// decode steps.
#pragma once
#include <functional>
#include <vector>

#include "infer/sampler.h"
#include "model/transformer.h"

namespace whale {

struct GenerateOptions {
  int max_new_tokens = 32;
  SamplingParams sampling;
  bool stop_at_eos = true;
  // Speculative decoding only: drafts per verification pass (the MTP module chained on its own
  // outputs after the first), 1 … kMaxDraftTokens.
  int draft_tokens = 1;
};
constexpr int kMaxDraftTokens = 6;

struct GenerateStats {
  int prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  // Speculative decoding: drafts proposed and accepted, main-model verification passes, and
  // the time spent in those passes and in the MTP module (the rest of decode is sampling).
  int drafted = 0, accepted = 0, verify_passes = 0;
  double verify_seconds = 0, draft_seconds = 0;
  // By position in the chain: drafts checked at depth j (all before it accepted) and accepted.
  std::vector<int> checked_at, accepted_at;
};

// Calls on_token for each new token as soon as it is chosen (return false to stop).
std::vector<int> generate(const Model& model, const std::vector<int>& prompt,
                          const GenerateOptions& options,
                          const std::function<bool(int)>& on_token = nullptr,
                          GenerateStats* stats = nullptr);

}  // namespace whale
