// Grouped-query attention of the R1-distilled dense students (Qwen2, Llama): RoPE with
// rotate_half on every head, num_key_value_heads shared K/V heads, optional q/k/v bias.
#include <cmath>

#include "model/attention.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/team.h"

namespace whale {

static void add_bias(float* x, const Vector& bias, int rows, int n) {
  if (bias.empty()) return;
  for (int t = 0; t < rows; ++t)
    for (int i = 0; i < n; ++i) x[static_cast<size_t>(t) * n + i] += bias[i];
}

void dense_attention_forward(const ModelConfig& c, const DenseAttentionWeights& w, const Rope& rope,
                             const float* h, const std::vector<Segment>& segments, float* out) {
  const int heads = c.num_attention_heads, kv_heads = c.num_key_value_heads;
  const int hd = c.dense_head_dim(), group = heads / kv_heads;
  const int q_dim = heads * hd, kv_dim = kv_heads * hd, width = 2 * kv_dim;
  const float scale = static_cast<float>(c.softmax_scale());
  const RowMap map(segments);
  const int N = map.rows;

  std::vector<float> q(static_cast<size_t>(N) * q_dim), k(static_cast<size_t>(N) * kv_dim),
      v(static_cast<size_t>(N) * kv_dim);
  linear_forward(w.q_proj, h, N, q.data());
  linear_forward(w.k_proj, h, N, k.data());
  linear_forward(w.v_proj, h, N, v.data());
  add_bias(q.data(), w.q_bias, N, q_dim);
  add_bias(k.data(), w.k_bias, N, kv_dim);
  add_bias(v.data(), w.v_bias, N, kv_dim);
  for (int r = 0; r < N; ++r) {
    const Rope::Rotation rotation = rope.rotation(map.position[r]);
    for (int i = 0; i < heads; ++i)
      rope.apply_halves(q.data() + static_cast<size_t>(r) * q_dim + i * hd, rotation);
    for (int i = 0; i < kv_heads; ++i)
      rope.apply_halves(k.data() + static_cast<size_t>(r) * kv_dim + i * hd, rotation);
    // Cache entry per token: [k ; v].
    std::vector<float> entry(width);
    std::copy_n(k.data() + static_cast<size_t>(r) * kv_dim, kv_dim, entry.data());
    std::copy_n(v.data() + static_cast<size_t>(r) * kv_dim, kv_dim, entry.data() + kv_dim);
    segments[map.segment[r]].cache->store(entry.data(), 1, map.position[r], width);
  }
  int max_len = 0;
  for (const Segment& seg : segments) max_len = std::max(max_len, seg.pos0 + seg.rows);

  std::vector<float> attn(static_cast<size_t>(N) * q_dim);
  // A prompt (a segment of kGemmMinTokens rows or more): per head and block of rows by sgemm
  // (attention_block) over the segment's keys and values copied out of the cache.
  std::vector<char> by_blocks(segments.size());
  for (size_t si = 0, row0 = 0; si < segments.size(); row0 += segments[si].rows, ++si) {
    const Segment& seg = segments[si];
    if (seg.rows < kGemmMinTokens) continue;
    by_blocks[si] = 1;
    const int L = seg.pos0 + seg.rows;
    std::vector<float> keys(static_cast<size_t>(L) * kv_dim), values(keys.size());
    for (int s = 0; s < L; ++s) {
      const float* entry = seg.cache->entry(s, width);
      std::copy_n(entry, kv_dim, keys.data() + static_cast<size_t>(s) * kv_dim);
      std::copy_n(entry + kv_dim, kv_dim, values.data() + static_cast<size_t>(s) * kv_dim);
    }
    const int block = attention_block_rows(L), blocks = (seg.rows + block - 1) / block;
    RegionItems work(heads * blocks);
    parallel_region(true, [&](int, int) {
      std::vector<float> scores(static_cast<size_t>(block) * L);
      for (int item; (item = work.next()) >= 0;) {
        const int i = item % heads, kvh = i / group, t0 = item / heads * block;
        const size_t first = (row0 + t0) * q_dim + i * hd;
        attention_block({{q.data() + first, q_dim, keys.data() + kvh * hd, kv_dim, hd}}, scale,
                        values.data() + kvh * hd, kv_dim, hd, seg.pos0, t0,
                        std::min(block, seg.rows - t0), {}, scores.data(), attn.data() + first,
                        q_dim);
      }
    });
  }
  parallel_region(true, [&](int rank, int threads) {
    std::vector<float> scores(max_len);
    region_static(N * heads, rank, threads, [&](int item) {
      const int r = item / heads, i = item % heads;
      if (by_blocks[map.segment[r]]) return;
      const LayerCache& cache = *segments[map.segment[r]].cache;
      const int kvh = i / group;
      const float* qi = q.data() + static_cast<size_t>(r) * q_dim + i * hd;
      const int visible = map.position[r] + 1;
      for (int s = 0; s < visible; ++s)
        scores[s] = dot_f32(qi, cache.entry(s, width) + kvh * hd, hd) * scale;
      softmax(scores.data(), visible);
      float* o = attn.data() + static_cast<size_t>(r) * q_dim + i * hd;
      std::fill(o, o + hd, 0.0f);
      for (int s = 0; s < visible; ++s)
        axpy(scores[s], cache.entry(s, width) + kv_dim + kvh * hd, o, hd);
    });
  });
  linear_forward(w.o_proj, attn.data(), N, out);
  add_bias(out, w.o_bias, N, c.hidden_size);
}

}  // namespace whale
