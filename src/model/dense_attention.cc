// Grouped-query attention of the R1-distilled dense students (Qwen2, Llama): RoPE with
// rotate_half on every head, num_key_value_heads shared K/V heads, optional q/k/v bias.
#include <cmath>

#include "model/attention.h"
#include "ops/kernels.h"

namespace whale {

static void add_bias(float* x, const Vector& bias, int T, int n) {
  if (bias.empty()) return;
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < n; ++i) x[static_cast<size_t>(t) * n + i] += bias[i];
}

void dense_attention_forward(const ModelConfig& c, const DenseAttentionWeights& w, const Rope& rope,
                             const float* h, int T, int pos0, LayerCache& cache, float* out) {
  const int heads = c.num_attention_heads, kv_heads = c.num_key_value_heads;
  const int hd = c.dense_head_dim(), group = heads / kv_heads;
  const int q_dim = heads * hd, kv_dim = kv_heads * hd;
  const float scale = static_cast<float>(c.softmax_scale());

  std::vector<float> q(static_cast<size_t>(T) * q_dim), k(static_cast<size_t>(T) * kv_dim),
      v(static_cast<size_t>(T) * kv_dim);
  linear_forward(w.q_proj, h, T, q.data());
  linear_forward(w.k_proj, h, T, k.data());
  linear_forward(w.v_proj, h, T, v.data());
  add_bias(q.data(), w.q_bias, T, q_dim);
  add_bias(k.data(), w.k_bias, T, kv_dim);
  add_bias(v.data(), w.v_bias, T, kv_dim);
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < heads; ++i)
      rope.apply_halves(q.data() + static_cast<size_t>(t) * q_dim + i * hd, pos0 + t);
    for (int i = 0; i < kv_heads; ++i)
      rope.apply_halves(k.data() + static_cast<size_t>(t) * kv_dim + i * hd, pos0 + t);
    // Cache entry per token: [k ; v].
    cache.kv.insert(cache.kv.end(), k.begin() + static_cast<size_t>(t) * kv_dim,
                    k.begin() + static_cast<size_t>(t + 1) * kv_dim);
    cache.kv.insert(cache.kv.end(), v.begin() + static_cast<size_t>(t) * kv_dim,
                    v.begin() + static_cast<size_t>(t + 1) * kv_dim);
  }
  const float* entries = cache.kv.data();
  const int width = 2 * kv_dim;
  const int L = pos0 + T;

  std::vector<float> attn(static_cast<size_t>(T) * q_dim);
#pragma omp parallel
  {
    std::vector<float> scores(L);
#pragma omp for collapse(2) schedule(static)
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < heads; ++i) {
        const int kvh = i / group;
        const float* qi = q.data() + static_cast<size_t>(t) * q_dim + i * hd;
        const int visible = pos0 + t + 1;
        for (int s = 0; s < visible; ++s)
          scores[s] = dot_f32(qi, entries + static_cast<size_t>(s) * width + kvh * hd, hd) * scale;
        softmax(scores.data(), visible);
        float* o = attn.data() + static_cast<size_t>(t) * q_dim + i * hd;
        std::fill(o, o + hd, 0.0f);
        for (int s = 0; s < visible; ++s)
          axpy(scores[s], entries + static_cast<size_t>(s) * width + kv_dim + kvh * hd, o, hd);
      }
  }
  linear_forward(w.o_proj, attn.data(), T, out);
  add_bias(out, w.o_bias, T, c.hidden_size);
  (void)L;
}

}  // namespace whale
