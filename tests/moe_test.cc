// DeepSeekMoE's few-token path (every chosen expert in one parallel region) against the plain
// composition — route, the shared FFN, each chosen expert's FFN, the gated sum in expert order —
// bit for bit: decode's results are the same as before the path existed.
#include "model/moe.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "io/quantize.h"
#include "model/config.h"
#include "model/weights.h"
#include "ops/group_lanes.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "test_util.h"

namespace whale {
namespace {

struct Store {
  std::mt19937 rng{7};
  bool q8 = false;  // experts as q8 rows (in group-lane order where the CPU reads that order)
  std::vector<std::vector<float>> arrays;
  std::vector<std::vector<int8_t>> codes;
  std::vector<std::vector<uint16_t>> scales;
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
  Linear q8_linear(int rows, int cols) {
    const std::vector<float> w = random(static_cast<size_t>(rows) * cols, 0.1f);
    std::vector<int8_t> stored(w.size()), lanes(w.size());
    scales.emplace_back(static_cast<size_t>(rows) * (cols / 32));
    const bool reorder = vnni_available() && group_lanes_fit(cols);
    for (int r = 0; r < rows; ++r) {
      const size_t at = static_cast<size_t>(r) * cols;
      quantize_row_q8(w.data() + at, cols, stored.data() + at,
                      scales.back().data() + static_cast<size_t>(r) * (cols / 32));
      if (reorder) q8_row_to_lanes(stored.data() + at, cols, lanes.data() + at);
    }
    codes.push_back(reorder ? lanes : stored);
    Linear l;
    l.dtype = DType::I8;
    l.rows = rows;
    l.cols = cols;
    l.data = reinterpret_cast<const uint8_t*>(codes.back().data());
    l.qscale = scales.back().data();
    l.group_lanes = reorder;
    return l;
  }
  FeedForward ffn(int hidden, int inter) {
    const auto make = [&](int rows, int cols) {
      return q8 ? q8_linear(rows, cols) : linear(rows, cols);
    };
    return {make(inter, hidden), make(inter, hidden), make(hidden, inter), {}, {}, {}};
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
    for (int i = 0; i < n; ++i)  // gate · y added as moe_forward adds it (one FMA an element)
      axpy(r.gates[slots[i]], y.data() + i * H, out.data() + static_cast<size_t>(slots[i] / K) * H,
           H);
  }
  return out;
}

// Every expert takes the same token in a decode step, prepared once for all of them
// (Linear::same_rows_input): with q8 experts on the fast path that shared preparation must give
// what each expert's own gave.
void few_tokens_are_bit_identical(bool q8) {
  ModelConfig c;
  c.hidden_size = 128;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 3;
  // Each expert's gate/up rows span two of the region's ~128 KiB chunks, the second partial
  // (f32 rows of 128 values: 256 a chunk; q8: 1024), and its down rows two whole ones; q8 groups
  // are 32 wide.
  c.moe_intermediate_size = q8 ? 1056 : 300;
  c.n_group = 2;
  c.topk_group = 1;
  c.topk_method = "noaux_tc";
  c.scoring_func = "sigmoid";
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  const int H = c.hidden_size, inter = c.moe_intermediate_size;
  Store store;
  store.q8 = q8;
  Moe moe;
  moe.router.weight = store.linear(c.n_routed_experts, H);
  moe.router.e_score_correction_bias.set_owned(store.random(c.n_routed_experts, 0.01f));
  for (int e = 0; e < c.n_routed_experts; ++e) moe.experts.push_back(store.ffn(H, inter));
  // With q8 routed experts the shared one stays f32: jobs that take the same token but prepare
  // it differently must not share a preparation.
  store.q8 = false;
  moe.shared = store.ffn(H, 2 * inter);
  store.q8 = q8;
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
          << "variant " << variant << " T " << T << (q8 ? " q8" : " f32");
    }
  }
}

TEST(Moe, FewTokensAreBitIdenticalToPerExpertFfns) {
  few_tokens_are_bit_identical(false);
  testing::FastActivations fast;  // q8's VNNI paths, where the CPU has them
  few_tokens_are_bit_identical(true);
}

TEST(Moe, SameRowsInputOnlyForTheSamePreparation) {
  Store store;
  const Linear a = store.linear(4, 64), b = store.linear(8, 64), wider = store.linear(4, 96);
  EXPECT_TRUE(a.same_rows_input(b));  // rows do not matter
  EXPECT_FALSE(a.same_rows_input(wider));
  const Linear q = store.q8_linear(4, 64);
  EXPECT_FALSE(a.same_rows_input(q));
  EXPECT_TRUE(q.same_rows_input(store.q8_linear(2, 64)));
  Linear stored_order = q;
  stored_order.group_lanes = !q.group_lanes;
  EXPECT_FALSE(q.same_rows_input(stored_order));
  // Plain bf16 rows take their activations 16 bytes off a line when the weights start on 32.
  std::vector<uint16_t> bf16(4 * 64 + 16);
  Linear on32, off32;
  for (Linear* l : {&on32, &off32}) {
    l->dtype = DType::BF16;
    l->rows = 4;
    l->cols = 64;
  }
  const uintptr_t base = reinterpret_cast<uintptr_t>(bf16.data());
  const size_t to32 = ((32 - base % 32) % 32) / 2;  // elements to the first 32-byte boundary
  on32.data = reinterpret_cast<const uint8_t*>(bf16.data() + to32);
  off32.data = reinterpret_cast<const uint8_t*>(bf16.data() + to32 + 4);
  EXPECT_FALSE(on32.same_rows_input(off32));
  EXPECT_TRUE(on32.same_rows_input(on32));
}

}  // namespace
}  // namespace whale
