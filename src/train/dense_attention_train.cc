// Grouped-query attention (Qwen2, Llama) for training, forward and backward.
#include <cmath>

#include "ops/gemm.h"
#include "train/layers.h"

namespace whale {

void dense_attention_train_forward(const ModelConfig& c, const DenseAttentionWeights& w,
                                   const Rope& rope, const float* x, int B, int T,
                                   DenseAttentionCache& a, float* out) {
  const int n = B * T, heads = c.num_attention_heads, kvh = c.num_key_value_heads;
  const int hd = c.dense_head_dim(), group = heads / kvh;
  const float scale = static_cast<float>(c.softmax_scale());
  a.q.resize(static_cast<size_t>(n) * heads * hd);
  a.k.resize(static_cast<size_t>(n) * kvh * hd);
  a.v.resize(a.k.size());
  linear_train_forward(w.q_proj, x, n, a.q.data());
  linear_train_forward(w.k_proj, x, n, a.k.data());
  linear_train_forward(w.v_proj, x, n, a.v.data());
  add_bias_rows(a.q.data(), w.q_bias, n, heads * hd);
  add_bias_rows(a.k.data(), w.k_bias, n, kvh * hd);
  add_bias_rows(a.v.data(), w.v_bias, n, kvh * hd);
  for (int i = 0; i < n; ++i) {
    const Rope::Rotation rotation = rope.rotation(i % T);
    for (int h = 0; h < heads; ++h)
      rope.apply_halves(a.q.data() + (static_cast<size_t>(i) * heads + h) * hd, rotation);
    for (int h = 0; h < kvh; ++h)
      rope.apply_halves(a.k.data() + (static_cast<size_t>(i) * kvh + h) * hd, rotation);
  }
  a.probs.resize(static_cast<size_t>(B) * heads * T * T);
  a.attn.assign(static_cast<size_t>(n) * heads * hd, 0.0f);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < heads; ++h) {
      const size_t row0 = static_cast<size_t>(b) * T;
      const int g = h / group;
      float* S = a.probs.data() + (static_cast<size_t>(b) * heads + h) * T * T;
      gemm(false, true, T, T, hd, scale, a.q.data() + row0 * heads * hd + h * hd, heads * hd,
           a.k.data() + row0 * kvh * hd + g * hd, kvh * hd, 0.0f, S, T);
      causal_softmax(S, T);
      gemm(false, false, T, hd, T, 1.0f, S, T, a.v.data() + row0 * kvh * hd + g * hd, kvh * hd,
           0.0f, a.attn.data() + row0 * heads * hd + h * hd, heads * hd);
    }
  linear_train_forward(w.o_proj, a.attn.data(), n, out);
  add_bias_rows(out, w.o_bias, n, c.hidden_size);
}

void dense_attention_train_backward(const ModelConfig& c, const DenseAttentionWeights& w,
                                    const Rope& rope, ParamStore& store, const float* x, int B,
                                    int T, const DenseAttentionCache& a, const float* dout,
                                    float* dx) {
  const int n = B * T, heads = c.num_attention_heads, kvh = c.num_key_value_heads;
  const int hd = c.dense_head_dim(), group = heads / kvh;
  const float scale = static_cast<float>(c.softmax_scale());
  bias_train_backward(w.o_bias, store, dout, n, c.hidden_size);
  std::vector<float> dattn(a.attn.size(), 0.0f);
  linear_train_backward(w.o_proj, store, a.attn.data(), dout, n, dattn.data());
  std::vector<float> dq(a.q.size(), 0.0f), dk(a.k.size(), 0.0f), dv(a.v.size(), 0.0f);
  // One task per (sequence, kv head): the heads of a group add into the same dK, dV.
#pragma omp parallel
  {
    std::vector<float> dS(static_cast<size_t>(T) * T);
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int g = 0; g < kvh; ++g)
        for (int h = g * group; h < (g + 1) * group; ++h) {
          const size_t row0 = static_cast<size_t>(b) * T;
          const float* P = a.probs.data() + (static_cast<size_t>(b) * heads + h) * T * T;
          const float* Q = a.q.data() + row0 * heads * hd + h * hd;
          const float* K = a.k.data() + row0 * kvh * hd + g * hd;
          const float* V = a.v.data() + row0 * kvh * hd + g * hd;
          const float* dO = dattn.data() + row0 * heads * hd + h * hd;
          gemm(false, true, T, T, hd, 1.0f, dO, heads * hd, V, kvh * hd, 0.0f, dS.data(), T);
          gemm(true, false, T, hd, T, 1.0f, P, T, dO, heads * hd, 1.0f,
               dv.data() + row0 * kvh * hd + g * hd, kvh * hd);
          causal_softmax_backward(P, dS.data(), T, scale);
          gemm(false, false, T, hd, T, 1.0f, dS.data(), T, K, kvh * hd, 0.0f,
               dq.data() + row0 * heads * hd + h * hd, heads * hd);
          gemm(true, false, T, hd, T, 1.0f, dS.data(), T, Q, heads * hd, 1.0f,
               dk.data() + row0 * kvh * hd + g * hd, kvh * hd);
        }
  }
  for (int i = 0; i < n; ++i) {
    const Rope::Rotation inverse = rope.rotation(-(i % T));
    for (int h = 0; h < heads; ++h)
      rope.apply_halves(dq.data() + (static_cast<size_t>(i) * heads + h) * hd, inverse);
    for (int h = 0; h < kvh; ++h)
      rope.apply_halves(dk.data() + (static_cast<size_t>(i) * kvh + h) * hd, inverse);
  }
  bias_train_backward(w.q_bias, store, dq.data(), n, heads * hd);
  bias_train_backward(w.k_bias, store, dk.data(), n, kvh * hd);
  bias_train_backward(w.v_bias, store, dv.data(), n, kvh * hd);
  linear_train_backward(w.q_proj, store, x, dq.data(), n, dx);
  linear_train_backward(w.k_proj, store, x, dk.data(), n, dx);
  linear_train_backward(w.v_proj, store, x, dv.data(), n, dx);
}

}  // namespace whale
