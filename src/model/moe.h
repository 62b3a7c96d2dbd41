// Feed-forward layers: the SwiGLU FFN and DeepSeekMoE (shared experts + routed experts).
#pragma once
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace whale {

// out[T, hidden] = down(silu(gate(x)) · up(x)).
void ffn_forward(const FeedForward& f, const float* x, int T, float* out);

// The router's choice for T tokens: experts[t·K + k] and their gates.
struct Routing {
  std::vector<int> experts;
  std::vector<float> gates;
};
Routing route(const ModelConfig& c, const Router& router, const float* u, int T);
// The two halves of route(): s = softmax or sigmoid of the router logits [T, n_routed] ...
std::vector<float> router_scores(const ModelConfig& c, const Router& router, const float* u, int T);
// ... and the choice from them: groups, top-k on s + bias, gates from the unbiased s.
Routing choose_experts(const ModelConfig& c, const Router& router, const float* scores, int T);

// out = Σ_shared FFN_s(u) + Σ_{i ∈ TopK} g_i FFN_i(u); tokens routed to the same expert run
// together. If `routing` is non-null it receives the router's choice.
void moe_forward(const ModelConfig& c, const Moe& moe, const float* u, int T, float* out,
                 Routing* routing = nullptr);

}  // namespace whale
