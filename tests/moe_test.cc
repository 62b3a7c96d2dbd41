// DeepSeekMoE's few-token path (every chosen expert in one parallel region) against the plain
// composition — route, the shared FFN, each chosen expert's FFN, the gated sum in expert order —
// bit for bit: decode's results are the same as before the path existed.
#include "model/moe.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "model/config.h"
#include "model/weights.h"
#include "ops/linear.h"

namespace whale {
namespace {

struct Store {
  std::mt19937 rng{7};
  std::vector<std::vector<float>> arrays;
  std::vector<float> random(size_t n, float scale) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng);
    return v;
  }
  Linear linear(int rows, int cols) {
    arrays.push_back(random(static_cast<size_t>(rows) * cols, 0.1f));
    Linear l;
    l.dtype = DType::F32;
    l.rows = rows;
    l.cols = cols;
    l.data = reinterpret_cast<const uint8_t*>(arrays.back().data());
    return l;
  }
  FeedForward ffn(int hidden, int inter) {
    return {linear(inter, hidden), linear(inter, hidden), linear(hidden, inter), {}, {}, {}};
  }
};

// The composition moe_forward had before its few-token path (and still uses from
// kGemmMinTokens tokens on).
std::vector<float> moe_reference(const ModelConfig& c, const Moe& moe, const float* u, int T) {
  const int H = c.hidden_size, K = c.num_experts_per_tok;
  std::vector<float> out(static_cast<size_t>(T) * H, 0.0f);
  const Routing r = route(c, moe.router, u, T);
  if (moe.has_shared) ffn_forward(moe.shared, u, T, out.data());
  for (int e = 0; e < c.n_routed_experts; ++e) {
    std::vector<int> slots;
    for (int i = 0; i < T * K; ++i)
      if (r.experts[i] == e) slots.push_back(i);
    if (slots.empty()) continue;
    const int n = static_cast<int>(slots.size());
    std::vector<float> x(static_cast<size_t>(n) * H), y(x.size());
    for (int i = 0; i < n; ++i)
      std::copy_n(u + static_cast<size_t>(slots[i] / K) * H, H, x.data() + i * H);
    ffn_forward(moe.experts[e], x.data(), n, y.data());
    for (int i = 0; i < n; ++i)
      for (int d = 0; d < H; ++d)
        out[static_cast<size_t>(slots[i] / K) * H + d] += r.gates[slots[i]] * y[i * H + d];
  }
  return out;
}

TEST(Moe, FewTokensAreBitIdenticalToPerExpertFfns) {
  ModelConfig c;
  c.hidden_size = 128;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 3;
  c.moe_intermediate_size = 80;  // not a multiple of the 32-row chunks
  c.n_group = 2;
  c.topk_group = 1;
  c.topk_method = "noaux_tc";
  c.scoring_func = "sigmoid";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  const int H = c.hidden_size, inter = c.moe_intermediate_size;
  Store store;
  Moe moe;
  moe.router.weight = store.linear(c.n_routed_experts, H);
  moe.router.e_score_correction_bias.set_owned(store.random(c.n_routed_experts, 0.01f));
  for (int e = 0; e < c.n_routed_experts; ++e) moe.experts.push_back(store.ffn(H, inter));
  moe.shared = store.ffn(H, 2 * inter);
  for (int variant = 0; variant < 3; ++variant) {
    // 0: shared expert; 1: none; 2: a shared expert with biases (Llama-style mlp_bias).
    moe.has_shared = variant != 1;
    if (variant == 2) {
      moe.shared.gate_bias.set_owned(store.random(2 * inter, 0.1f));
      moe.shared.up_bias.set_owned(store.random(2 * inter, 0.1f));
      moe.shared.down_bias.set_owned(store.random(H, 0.1f));
    }
    for (int T : {1, 2, 3, 5, kGemmMinTokens - 1, kGemmMinTokens + 1}) {
      const auto u = store.random(static_cast<size_t>(T) * H, 1.0f);
      std::vector<float> out(static_cast<size_t>(T) * H, -1.0f);
      Routing routing;
      moe_forward(c, moe, u.data(), T, out.data(), &routing);
      const Routing r = route(c, moe.router, u.data(), T);
      EXPECT_EQ(routing.experts, r.experts);
      const std::vector<float> ref = moe_reference(c, moe, u.data(), T);
      ASSERT_EQ(std::memcmp(out.data(), ref.data(), out.size() * sizeof(float)), 0)
          << "variant " << variant << " T " << T;
    }
  }
}

}  // namespace
}  // namespace whale
