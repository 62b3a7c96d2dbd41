// Multi-head latent attention for training: the naive form over whole sequences, forward and
// backward. RoPE is a rotation, so its backward is the rotation by the opposite angle
// (Rope::apply_*(x, -position)).
#include <cmath>
#include <limits>

#include "ops/gemm.h"
#include "train/layers.h"

namespace whale {

void mla_train_forward(const ModelConfig& c, const MlaWeights& w, const Rope& rope, const float* x,
                       int B, int T, MlaCache& m, float* out) {
  const int n = B * T, heads = c.num_attention_heads;
  const int nope = c.qk_nope_head_dim, rd = c.qk_rope_head_dim, vd = c.v_head_dim;
  const int qk = nope + rd, kvr = c.kv_lora_rank, kvw = nope + vd;
  const float scale = static_cast<float>(c.softmax_scale());

  m.q.resize(static_cast<size_t>(n) * heads * qk);
  if (c.q_lora_rank > 0) {
    const int qr = c.q_lora_rank;
    m.c_q_raw.resize(static_cast<size_t>(n) * qr);
    m.c_q.resize(m.c_q_raw.size());
    m.c_q_rstd.resize(n);
    linear_train_forward(w.q_a_proj, x, n, m.c_q_raw.data());
    rmsnorm_train_forward(m.c_q_raw.data(), w.q_a_layernorm, n, qr, c.rms_norm_eps, m.c_q.data(),
                          m.c_q_rstd.data());
    linear_train_forward(w.q_b_proj, m.c_q.data(), n, m.q.data());
  } else {
    linear_train_forward(w.q_proj, x, n, m.q.data());
  }
  std::vector<float> kv_a(static_cast<size_t>(n) * (kvr + rd));
  linear_train_forward(w.kv_a_proj_with_mqa, x, n, kv_a.data());
  m.latent_raw.resize(static_cast<size_t>(n) * kvr);
  m.latent.resize(m.latent_raw.size());
  m.latent_rstd.resize(n);
  m.k_rope.resize(static_cast<size_t>(n) * rd);
  for (int i = 0; i < n; ++i) {
    const float* row = kv_a.data() + static_cast<size_t>(i) * (kvr + rd);
    std::copy(row, row + kvr, m.latent_raw.data() + static_cast<size_t>(i) * kvr);
    std::copy(row + kvr, row + kvr + rd, m.k_rope.data() + static_cast<size_t>(i) * rd);
    const Rope::Rotation rotation = rope.rotation(i % T);
    rope.apply_interleaved(m.k_rope.data() + static_cast<size_t>(i) * rd, rotation);
    for (int h = 0; h < heads; ++h)
      rope.apply_interleaved(m.q.data() + (static_cast<size_t>(i) * heads + h) * qk + nope,
                             rotation);
  }
  rmsnorm_train_forward(m.latent_raw.data(), w.kv_a_layernorm, n, kvr, c.rms_norm_eps,
                        m.latent.data(), m.latent_rstd.data());
  m.kv.resize(static_cast<size_t>(n) * heads * kvw);
  linear_train_forward(w.kv_b_proj, m.latent.data(), n, m.kv.data());

  m.probs.resize(static_cast<size_t>(B) * heads * T * T);
  m.attn.assign(static_cast<size_t>(n) * heads * vd, 0.0f);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < heads; ++h) {
      const size_t row0 = static_cast<size_t>(b) * T;
      float* S = m.probs.data() + (static_cast<size_t>(b) * heads + h) * T * T;
      const float* Q = m.q.data() + row0 * heads * qk + h * qk;
      const float* K = m.kv.data() + row0 * heads * kvw + h * kvw;
      // S = (Q_nope K_noseᵀ + Q_rope K_ropeᵀ) · scale
      gemm(false, true, T, T, nope, scale, Q, heads * qk, K, heads * kvw, 0.0f, S, T);
      gemm(false, true, T, T, rd, scale, Q + nope, heads * qk, m.k_rope.data() + row0 * rd, rd,
           1.0f, S, T);
      causal_softmax(S, T);
      gemm(false, false, T, vd, T, 1.0f, S, T, K + nope, heads * kvw, 0.0f,
           m.attn.data() + row0 * heads * vd + h * vd, heads * vd);
    }
  linear_train_forward(w.o_proj, m.attn.data(), n, out);
}

void mla_train_backward(const ModelConfig& c, const MlaWeights& w, const Rope& rope,
                        ParamStore& store, const float* x, int B, int T, const MlaCache& m,
                        const float* dout, float* dx) {
  const int n = B * T, heads = c.num_attention_heads;
  const int nope = c.qk_nope_head_dim, rd = c.qk_rope_head_dim, vd = c.v_head_dim;
  const int qk = nope + rd, kvr = c.kv_lora_rank, kvw = nope + vd;
  const float scale = static_cast<float>(c.softmax_scale());

  std::vector<float> dattn(static_cast<size_t>(n) * heads * vd, 0.0f);
  linear_train_backward(w.o_proj, store, m.attn.data(), dout, n, dattn.data());

  std::vector<float> dq(m.q.size(), 0.0f), dkv(m.kv.size(), 0.0f);
  // k_rope is shared by all heads: each head adds into its own buffer, summed after.
  std::vector<float> dk_rope_heads(static_cast<size_t>(heads) * n * rd, 0.0f);
#pragma omp parallel
  {
    std::vector<float> dS(static_cast<size_t>(T) * T);
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < heads; ++h) {
        const size_t row0 = static_cast<size_t>(b) * T;
        const float* P = m.probs.data() + (static_cast<size_t>(b) * heads + h) * T * T;
        const float* Q = m.q.data() + row0 * heads * qk + h * qk;
        const float* K = m.kv.data() + row0 * heads * kvw + h * kvw;
        const float* dO = dattn.data() + row0 * heads * vd + h * vd;
        float* dQ = dq.data() + row0 * heads * qk + h * qk;
        float* dK = dkv.data() + row0 * heads * kvw + h * kvw;
        float* dKr = dk_rope_heads.data() + (static_cast<size_t>(h) * n + row0) * rd;
        // dP = dO Vᵀ; dV = Pᵀ dO
        gemm(false, true, T, T, vd, 1.0f, dO, heads * vd, K + nope, heads * kvw, 0.0f, dS.data(),
             T);
        gemm(true, false, T, vd, T, 1.0f, P, T, dO, heads * vd, 0.0f, dK + nope, heads * kvw);
        causal_softmax_backward(P, dS.data(), T, scale);
        // dQ_nope = dS K_nope; dQ_rope = dS K_rope; dK_nope = dSᵀ Q_nope; dK_rope = dSᵀ Q_rope
        gemm(false, false, T, nope, T, 1.0f, dS.data(), T, K, heads * kvw, 0.0f, dQ, heads * qk);
        gemm(false, false, T, rd, T, 1.0f, dS.data(), T, m.k_rope.data() + row0 * rd, rd, 0.0f,
             dQ + nope, heads * qk);
        gemm(true, false, T, nope, T, 1.0f, dS.data(), T, Q, heads * qk, 0.0f, dK, heads * kvw);
        gemm(true, false, T, rd, T, 1.0f, dS.data(), T, Q + nope, heads * qk, 0.0f, dKr, rd);
      }
  }
  std::vector<float> dlatent(static_cast<size_t>(n) * kvr, 0.0f);
  linear_train_backward(w.kv_b_proj, store, m.latent.data(), dkv.data(), n, dlatent.data());

  // [dc_KV ; dk_rope] → d(kv_a): RMSNorm backward on the latent, inverse rotation on k_rope.
  std::vector<float> dkv_a(static_cast<size_t>(n) * (kvr + rd), 0.0f);
  std::vector<float> dlatent_raw(static_cast<size_t>(n) * kvr, 0.0f);
  rmsnorm_train_backward(m.latent_raw.data(), w.kv_a_layernorm, m.latent_rstd.data(),
                         dlatent.data(), n, kvr, store, dlatent_raw.data());
  for (int i = 0; i < n; ++i) {
    float* row = dkv_a.data() + static_cast<size_t>(i) * (kvr + rd);
    std::copy_n(dlatent_raw.data() + static_cast<size_t>(i) * kvr, kvr, row);
    for (int h = 0; h < heads; ++h)
      for (int d = 0; d < rd; ++d)
        row[kvr + d] += dk_rope_heads[(static_cast<size_t>(h) * n + i) * rd + d];
    const Rope::Rotation inverse = rope.rotation(-(i % T));
    rope.apply_interleaved(row + kvr, inverse);
    for (int h = 0; h < heads; ++h)
      rope.apply_interleaved(dq.data() + (static_cast<size_t>(i) * heads + h) * qk + nope, inverse);
  }
  linear_train_backward(w.kv_a_proj_with_mqa, store, x, dkv_a.data(), n, dx);

  if (c.q_lora_rank > 0) {
    const int qr = c.q_lora_rank;
    std::vector<float> dc_q(static_cast<size_t>(n) * qr, 0.0f), dc_q_raw(dc_q.size(), 0.0f);
    linear_train_backward(w.q_b_proj, store, m.c_q.data(), dq.data(), n, dc_q.data());
    rmsnorm_train_backward(m.c_q_raw.data(), w.q_a_layernorm, m.c_q_rstd.data(), dc_q.data(), n, qr,
                           store, dc_q_raw.data());
    linear_train_backward(w.q_a_proj, store, x, dc_q_raw.data(), n, dx);
  } else {
    linear_train_backward(w.q_proj, store, x, dq.data(), n, dx);
  }
}

}  // namespace whale
