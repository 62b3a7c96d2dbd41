// DeepSeek Sparse Attention's lightning indexer (V3.2, MISSION §1 conventions):
//   I[t,s] = Σ_j w_{t,j} · ReLU(q_{t,j} · k_s), computed on FP8-quantized, Hadamard-rotated
//   q and k exactly as the published model, and each query keeps its top index_topk positions.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/attention.h"
#include "ops/team.h"

namespace whale {

namespace {

// Rope part first ([rope ; nope], non-interleaved halves), then the Hadamard rotation, then
// FP8 quantization in blocks.
void rotate_and_quantize(const ModelConfig& c, const Rope& rope, float* x, int position,
                         uint8_t* codes, float* scales) {
  rope.apply_halves(x, position);
  hadamard_transform(x, c.index_head_dim);
  quantize_e4m3_blocks(x, c.index_head_dim, index_block_size(c), c.scale_fmt == "ue8m0", codes,
                       scales);
}

// Σ_b scale_q[b]·scale_k[b]·(q_b · k_b) over the FP8 blocks of one head.
float fp8_head_dot(const ModelConfig& c, const uint8_t* q, const float* q_scales, const uint8_t* k,
                   const float* k_scales) {
  const int block = index_block_size(c);
  float total = 0;
  for (int b = 0; b < index_blocks(c); ++b) {
    float sum = 0;
    for (int d = b * block; d < (b + 1) * block; ++d) sum += e4m3_to_f32(q[d]) * e4m3_to_f32(k[d]);
    total += sum * q_scales[b] * k_scales[b];
  }
  return total;
}

}  // namespace

AttentionMask indexer_select(const ModelConfig& c, const Indexer& w, const Rope& rope,
                             const float* h, const float* c_q, int T, int pos0, LayerCache& cache) {
  const int heads = c.index_n_heads, dim = c.index_head_dim, blocks = index_blocks(c);
  const int H = c.hidden_size;

  // Keys: k = LayerNorm(W_k h), one per token, shared by all indexer heads; cached in FP8.
  std::vector<float> k(static_cast<size_t>(T) * dim);
  linear_forward(w.wk, h, T, k.data());
  size_t old_keys = cache.index_keys.size();
  cache.index_keys.resize(old_keys + static_cast<size_t>(T) * dim);
  cache.index_key_scales.resize(cache.index_key_scales.size() + static_cast<size_t>(T) * blocks);
  for (int t = 0; t < T; ++t) {
    float* kt = k.data() + static_cast<size_t>(t) * dim;
    layer_norm(kt, w.k_norm_weight.data(), w.k_norm_bias.data(), dim, 1e-6f, kt);
    size_t slot = static_cast<size_t>(pos0 + t);
    rotate_and_quantize(c, rope, kt, pos0 + t, cache.index_keys.data() + slot * dim,
                        cache.index_key_scales.data() + slot * blocks);
  }

  // Queries: q = W_qb c_Q per head; head weights w = W_w h · heads^-½ · dim^-½.
  std::vector<float> q(static_cast<size_t>(T) * heads * dim),
      head_weights(static_cast<size_t>(T) * heads);
  linear_forward(w.wq_b, c_q, T, q.data());
  linear_forward(w.weights_proj, h, T, head_weights.data());
  const float weight_scale =
      1.0f / std::sqrt(static_cast<float>(heads)) / std::sqrt(static_cast<float>(dim));

  AttentionMask allowed(T);
  parallel_region(true, [&](int rank, int threads) {
    std::vector<uint8_t> q_codes(static_cast<size_t>(heads) * dim);
    std::vector<float> q_scales(static_cast<size_t>(heads) * blocks), scores;
    std::vector<int> order;
    region_static(T, rank, threads, [&](int t) {
      const int visible = pos0 + t + 1;
      allowed[t].assign(visible, 1);
      if (visible <= c.index_topk) return;  // every causal position fits in the top-k
      for (int j = 0; j < heads; ++j) {
        float* qj = q.data() + (static_cast<size_t>(t) * heads + j) * dim;
        rotate_and_quantize(c, rope, qj, pos0 + t, q_codes.data() + j * dim,
                            q_scales.data() + j * blocks);
      }
      scores.assign(visible, 0.0f);
      for (int s = 0; s < visible; ++s) {
        const uint8_t* ks = cache.index_keys.data() + static_cast<size_t>(s) * dim;
        const float* ks_scales = cache.index_key_scales.data() + static_cast<size_t>(s) * blocks;
        float score = 0;
        for (int j = 0; j < heads; ++j) {
          float dot = fp8_head_dot(c, q_codes.data() + j * dim, q_scales.data() + j * blocks, ks,
                                   ks_scales);
          score +=
              head_weights[static_cast<size_t>(t) * heads + j] * weight_scale * std::max(dot, 0.0f);
        }
        scores[s] = score;
      }
      order.resize(visible);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(
          order.begin(), order.begin() + c.index_topk, order.end(),
          [&](int a, int b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); });
      allowed[t].assign(visible, 0);
      for (int i = 0; i < c.index_topk; ++i) allowed[t][order[i]] = 1;
    });
  });
  (void)H;
  return allowed;
}

}  // namespace whale
