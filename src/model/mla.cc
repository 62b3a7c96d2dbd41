// Multi-head Latent Attention (DeepSeek-V2 §2.1, MISSION §1), over a batch of segments.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "model/attention.h"
#include "ops/kernels.h"

namespace whale {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}

RowMap::RowMap(const std::vector<Segment>& segments) {
  for (size_t i = 0; i < segments.size(); ++i)
    for (int t = 0; t < segments[i].rows; ++t) {
      segment.push_back(static_cast<int>(i));
      position.push_back(segments[i].pos0 + t);
    }
  rows = static_cast<int>(segment.size());
}

void mla_forward(const ModelConfig& c, const MlaWeights& w, const Rope& rope, const float* h,
                 const std::vector<Segment>& segments, const ForwardOptions& options, float* out) {
  const int heads = c.num_attention_heads;
  const int nope = c.qk_nope_head_dim, rope_dim = c.qk_rope_head_dim, vdim = c.v_head_dim;
  const int qk = c.qk_head_dim(), kvr = c.kv_lora_rank, width = kvr + rope_dim;
  const float scale = static_cast<float>(c.softmax_scale());
  const RowMap map(segments);
  const int N = map.rows;

  // Queries: q = W_UQ RMSNorm(W_DQ h) with q-LoRA, else q = W_Q h. Each head is [nope ; rope].
  std::vector<float> c_q, q(static_cast<size_t>(N) * heads * qk);
  if (c.q_lora_rank > 0) {
    c_q.resize(static_cast<size_t>(N) * c.q_lora_rank);
    linear_forward(w.q_a_proj, h, N, c_q.data());
    for (int r = 0; r < N; ++r) {
      float* row = c_q.data() + static_cast<size_t>(r) * c.q_lora_rank;
      rms_norm(row, w.q_a_layernorm.data(), c.q_lora_rank, c.rms_norm_eps, row);
    }
    linear_forward(w.q_b_proj, c_q.data(), N, q.data());
  } else {
    linear_forward(w.q_proj, h, N, q.data());
  }
  for (int r = 0; r < N; ++r)
    for (int hd = 0; hd < heads; ++hd)
      rope.apply_interleaved(q.data() + (static_cast<size_t>(r) * heads + hd) * qk + nope,
                             map.position[r]);

  // Keys and values: [c_KV ; k_rope] = W_DKV h; c_KV is normed, k_rope rotated; both cached.
  std::vector<float> kv_a(static_cast<size_t>(N) * width);
  linear_forward(w.kv_a_proj_with_mqa, h, N, kv_a.data());
  for (int r = 0; r < N; ++r) {
    float* row = kv_a.data() + static_cast<size_t>(r) * width;
    rms_norm(row, w.kv_a_layernorm.data(), kvr, c.rms_norm_eps, row);
    rope.apply_interleaved(row + kvr, map.position[r]);
  }
  // Per segment: append to its cache, choose the visible positions (V3.2), and for the naive
  // form expand its latents to per-head keys and values.
  const AttentionPath path = options.attention;
  const int kv_b_rows_per_head = nope + vdim;
  std::vector<AttentionMask> allowed(segments.size());
  std::vector<std::vector<float>> expanded(segments.size());
  std::vector<int> first_row(segments.size());
  for (size_t i = 0, row0 = 0; i < segments.size(); row0 += segments[i].rows, ++i) {
    const Segment& seg = segments[i];
    first_row[i] = static_cast<int>(row0);
    seg.cache->store(kv_a.data() + row0 * width, seg.rows, seg.pos0, width);
    if (c.has_indexer()) {
      allowed[i] =
          indexer_select(c, w.indexer, rope, h + row0 * c.hidden_size,
                         c_q.data() + row0 * c.q_lora_rank, seg.rows, seg.pos0, *seg.cache);
      if (!options.sparse_attention) allowed[i].clear();
    }
    const bool absorbed_here = path == AttentionPath::kAbsorbed ||
                               (path == AttentionPath::kAuto && seg.rows < kAbsorbedMaxRows);
    if (!absorbed_here) {
      // Naive: k_nope and v of every position from W_UKV c_KV.
      const int L = seg.pos0 + seg.rows;
      std::vector<float> latent_only(static_cast<size_t>(L) * kvr);
      for (int s = 0; s < L; ++s)
        std::copy_n(seg.cache->entry(s, width), kvr,
                    latent_only.data() + static_cast<size_t>(s) * kvr);
      expanded[i].resize(static_cast<size_t>(L) * heads * kv_b_rows_per_head);
      linear_forward(w.kv_b_proj, latent_only.data(), L, expanded[i].data());
    }
  }

  int max_len = 0;
  for (const Segment& seg : segments) max_len = std::max(max_len, seg.pos0 + seg.rows);
  std::vector<float> attn(static_cast<size_t>(N) * heads * vdim);

  // Naive segments: per head and block of rows by sgemm (attention_block), the scores
  // q_nope · k_nope + q_rope · k_rope, the values from the expanded latents.
  for (size_t i = 0; i < segments.size(); ++i) {
    if (expanded[i].empty()) continue;
    const Segment& seg = segments[i];
    const int L = seg.pos0 + seg.rows, row0 = first_row[i];
    std::vector<float> rope_keys(static_cast<size_t>(L) * rope_dim);
    for (int s = 0; s < L; ++s)
      std::copy_n(seg.cache->entry(s, width) + kvr, rope_dim,
                  rope_keys.data() + static_cast<size_t>(s) * rope_dim);
    const int ld_q = heads * qk, ld_kv = heads * kv_b_rows_per_head;
    const int block = attention_block_rows(L), blocks = (seg.rows + block - 1) / block;
#pragma omp parallel
    {
      std::vector<float> scores(static_cast<size_t>(block) * L);
#pragma omp for schedule(dynamic)
      for (int item = 0; item < heads * blocks; ++item) {
        const int hd = item % heads, t0 = item / heads * block;
        const float* qh = q.data() + (static_cast<size_t>(row0 + t0) * heads + hd) * qk;
        const float* kv = expanded[i].data() + static_cast<size_t>(hd) * kv_b_rows_per_head;
        attention_block(
            {{qh, ld_q, kv, ld_kv, nope}, {qh + nope, ld_q, rope_keys.data(), rope_dim, rope_dim}},
            scale, kv + nope, ld_kv, vdim, seg.pos0, t0, std::min(block, seg.rows - t0), allowed[i],
            scores.data(), attn.data() + (static_cast<size_t>(row0 + t0) * heads + hd) * vdim,
            heads * vdim);
      }
    }
  }

  // Work items: a row and a group of its heads. The absorbed form reads each cached latent once
  // for the whole group (MQA: every head attends to the same latents); a row's heads are split
  // into several groups only when there are too few rows to keep every thread busy (decode).
  const int groups = std::clamp((4 * omp_get_max_threads() + N - 1) / N, 1, heads);
  const int group_size = (heads + groups - 1) / groups;
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(group_size) * max_len);
    std::vector<float> queries(static_cast<size_t>(group_size) * width);
    std::vector<float> o_latent(static_cast<size_t>(group_size) * kvr), row(kvr);
    float part[8];
#pragma omp for schedule(dynamic)
    for (int item = 0; item < N * groups; ++item) {
      const int r = item / groups, h0 = (item % groups) * group_size;
      const int h1 = std::min(heads, h0 + group_size), G = h1 - h0;
      if (G <= 0) continue;
      const int si = map.segment[r], t = r - first_row[si];
      if (!expanded[si].empty()) continue;  // naive: above
      const LayerCache& cache = *segments[si].cache;
      const AttentionMask& mask = allowed[si];
      const int visible = map.position[r] + 1;
      const auto query = [&](int hd) {
        return q.data() + (static_cast<size_t>(r) * heads + hd) * qk;
      };
      const auto output = [&](int hd) {
        return attn.data() + (static_cast<size_t>(r) * heads + hd) * vdim;
      };
      // Absorbed: each head's query against the latents is [W_UKᵀ q_nope ; q_rope], so
      // score = query · [c_KV ; k_rope] and out = W_UV (Σ p c_KV).
      for (int g = 0; g < G; ++g) {
        const float* qh = query(h0 + g);
        float* qg = queries.data() + static_cast<size_t>(g) * width;
        std::fill(qg, qg + kvr, 0.0f);
        for (int d = 0; d < nope; ++d) {
          w.kv_b_proj.row_to_f32((h0 + g) * kv_b_rows_per_head + d, row.data());
          axpy(qh[d], row.data(), qg, kvr);
        }
        std::copy_n(qh + nope, rope_dim, qg + kvr);
      }
      for (int s = 0; s < visible; ++s) {
        if (!mask.empty() && !mask[t][s]) {
          for (int g = 0; g < G; ++g) scores[static_cast<size_t>(g) * max_len + s] = kNegInf;
          continue;
        }
        // One cached entry against every query of the group (read once, up to 8 at a time).
        for (int g0 = 0; g0 < G; g0 += 8) {
          const int n = std::min(8, G - g0);
          dot_f32_rows(cache.entry(s, width), queries.data() + static_cast<size_t>(g0) * width,
                       width, n, width, part);
          for (int g = 0; g < n; ++g)
            scores[static_cast<size_t>(g0 + g) * max_len + s] = part[g] * scale;
        }
      }
      for (int g = 0; g < G; ++g)
        softmax(scores.data() + static_cast<size_t>(g) * max_len, visible);
      std::fill(o_latent.begin(), o_latent.begin() + static_cast<size_t>(G) * kvr, 0.0f);
      for (int s = 0; s < visible; ++s) {
        const float* latent = cache.entry(s, width);
        for (int g = 0; g < G; ++g) {
          const float p = scores[static_cast<size_t>(g) * max_len + s];
          if (p != 0.0f) axpy(p, latent, o_latent.data() + static_cast<size_t>(g) * kvr, kvr);
        }
      }
      for (int g = 0; g < G; ++g) {
        float* o = output(h0 + g);
        for (int d = 0; d < vdim; ++d)
          o[d] = w.kv_b_proj.row_dot((h0 + g) * kv_b_rows_per_head + nope + d,
                                     o_latent.data() + static_cast<size_t>(g) * kvr);
      }
    }
  }
  linear_forward(w.o_proj, attn.data(), N, out);
}

}  // namespace whale
