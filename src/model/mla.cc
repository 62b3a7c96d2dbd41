// Multi-head Latent Attention (DeepSeek-V2 §2.1, MISSION §1).
#include <cmath>
#include <limits>

#include "model/attention.h"
#include "ops/kernels.h"

namespace whale {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}

void mla_forward(const ModelConfig& c, const MlaWeights& w, const Rope& rope, const float* h, int T,
                 int pos0, LayerCache& cache, const ForwardOptions& options, float* out) {
  const int H = c.hidden_size, heads = c.num_attention_heads;
  const int nope = c.qk_nope_head_dim, rope_dim = c.qk_rope_head_dim, vdim = c.v_head_dim;
  const int qk = c.qk_head_dim(), kvr = c.kv_lora_rank, width = kvr + rope_dim;
  const float scale = static_cast<float>(c.softmax_scale());

  // Queries: q = W_UQ RMSNorm(W_DQ h) with q-LoRA, else q = W_Q h. Each head is [nope ; rope].
  std::vector<float> c_q, q(static_cast<size_t>(T) * heads * qk);
  if (c.q_lora_rank > 0) {
    c_q.resize(static_cast<size_t>(T) * c.q_lora_rank);
    linear_forward(w.q_a_proj, h, T, c_q.data());
    for (int t = 0; t < T; ++t) {
      float* row = c_q.data() + static_cast<size_t>(t) * c.q_lora_rank;
      rms_norm(row, w.q_a_layernorm.data(), c.q_lora_rank, c.rms_norm_eps, row);
    }
    linear_forward(w.q_b_proj, c_q.data(), T, q.data());
  } else {
    linear_forward(w.q_proj, h, T, q.data());
  }
  for (int t = 0; t < T; ++t)
    for (int hd = 0; hd < heads; ++hd)
      rope.apply_interleaved(q.data() + (static_cast<size_t>(t) * heads + hd) * qk + nope,
                             pos0 + t);

  // Keys and values: [c_KV ; k_rope] = W_DKV h; c_KV is normed, k_rope rotated; both cached.
  std::vector<float> kv_a(static_cast<size_t>(T) * width);
  linear_forward(w.kv_a_proj_with_mqa, h, T, kv_a.data());
  for (int t = 0; t < T; ++t) {
    float* row = kv_a.data() + static_cast<size_t>(t) * width;
    rms_norm(row, w.kv_a_layernorm.data(), kvr, c.rms_norm_eps, row);
    rope.apply_interleaved(row + kvr, pos0 + t);
  }
  cache.kv.insert(cache.kv.end(), kv_a.begin(), kv_a.end());
  const int L = pos0 + T;
  const float* latents = cache.kv.data();  // [L, width]

  AttentionMask allowed;
  if (c.has_indexer()) {
    allowed = indexer_select(c, w.indexer, rope, h, c_q.data(), T, pos0, cache);
    if (!options.sparse_attention) allowed.clear();
  }

  const AttentionPath path = options.attention;
  bool absorbed = path == AttentionPath::kAbsorbed || (path == AttentionPath::kAuto && T == 1);
  const int kv_b_rows_per_head = nope + vdim;
  std::vector<float> attn(static_cast<size_t>(T) * heads * vdim);

  if (!absorbed) {
    // Naive: k_nope and v of every position from W_UKV c_KV.
    std::vector<float> latent_only(static_cast<size_t>(L) * kvr);
    for (int s = 0; s < L; ++s)
      std::copy(latents + static_cast<size_t>(s) * width,
                latents + static_cast<size_t>(s) * width + kvr,
                latent_only.data() + static_cast<size_t>(s) * kvr);
    std::vector<float> kv(static_cast<size_t>(L) * heads * kv_b_rows_per_head);
    linear_forward(w.kv_b_proj, latent_only.data(), L, kv.data());
#pragma omp parallel
    {
      std::vector<float> scores(L);
#pragma omp for collapse(2) schedule(static)
      for (int t = 0; t < T; ++t)
        for (int hd = 0; hd < heads; ++hd) {
          const float* qh = q.data() + (static_cast<size_t>(t) * heads + hd) * qk;
          const int visible = pos0 + t + 1;
          for (int s = 0; s < visible; ++s) {
            if (!allowed.empty() && !allowed[t][s]) {
              scores[s] = kNegInf;
              continue;
            }
            const float* ks =
                kv.data() + (static_cast<size_t>(s) * heads + hd) * kv_b_rows_per_head;
            const float* kr = latents + static_cast<size_t>(s) * width + kvr;
            scores[s] = (dot_f32(qh, ks, nope) + dot_f32(qh + nope, kr, rope_dim)) * scale;
          }
          softmax(scores.data(), visible);
          float* o = attn.data() + (static_cast<size_t>(t) * heads + hd) * vdim;
          std::fill(o, o + vdim, 0.0f);
          for (int s = 0; s < visible; ++s)
            if (scores[s] != 0.0f)
              axpy(scores[s],
                   kv.data() + (static_cast<size_t>(s) * heads + hd) * kv_b_rows_per_head + nope, o,
                   vdim);
        }
    }
  } else {
    // Absorbed: score = (W_UK^T q_nope)·c_KV + q_rope·k_rope; out = W_UV (Σ p c_KV).
#pragma omp parallel
    {
      std::vector<float> scores(L), q_latent(kvr), o_latent(kvr), row(kvr);
#pragma omp for collapse(2) schedule(static)
      for (int t = 0; t < T; ++t)
        for (int hd = 0; hd < heads; ++hd) {
          const float* qh = q.data() + (static_cast<size_t>(t) * heads + hd) * qk;
          std::fill(q_latent.begin(), q_latent.end(), 0.0f);
          for (int d = 0; d < nope; ++d) {
            w.kv_b_proj.row_to_f32(hd * kv_b_rows_per_head + d, row.data());
            axpy(qh[d], row.data(), q_latent.data(), kvr);
          }
          const int visible = pos0 + t + 1;
          for (int s = 0; s < visible; ++s) {
            if (!allowed.empty() && !allowed[t][s]) {
              scores[s] = kNegInf;
              continue;
            }
            const float* ls = latents + static_cast<size_t>(s) * width;
            scores[s] =
                (dot_f32(q_latent.data(), ls, kvr) + dot_f32(qh + nope, ls + kvr, rope_dim)) *
                scale;
          }
          softmax(scores.data(), visible);
          std::fill(o_latent.begin(), o_latent.end(), 0.0f);
          for (int s = 0; s < visible; ++s)
            if (scores[s] != 0.0f)
              axpy(scores[s], latents + static_cast<size_t>(s) * width, o_latent.data(), kvr);
          float* o = attn.data() + (static_cast<size_t>(t) * heads + hd) * vdim;
          for (int d = 0; d < vdim; ++d)
            o[d] = w.kv_b_proj.row_dot(hd * kv_b_rows_per_head + nope + d, o_latent.data());
        }
    }
  }
  linear_forward(w.o_proj, attn.data(), T, out);
  (void)H;
}

}  // namespace whale
