// Multi-head Latent Attention (DeepSeek-V2 §2.1, MISSION §1), over a batch of segments.

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "base/aligned.h"
#include "base/error.h"
#include "model/attention.h"
#include "ops/kernels.h"
#include "ops/precision.h"
#include "ops/team.h"

namespace whale {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Keys and values: [c_KV ; k_rope] = W_DKV h for each row; c_KV is normed, k_rope rotated at
// the row's position. What the cache keeps. The rows of W_DKV h in, the entries out.
void finish_latent_entries(const ModelConfig& c, const MlaWeights& w, const Rope& rope, float* kv_a,
                           int N, const int* positions) {
  const int kvr = c.kv_lora_rank, width = kvr + c.qk_rope_head_dim;
  for (int r = 0; r < N; ++r) {
    float* row = kv_a + static_cast<size_t>(r) * width;
    rms_norm(row, w.kv_a_layernorm.data(), kvr, c.rms_norm_eps, row);
    rope.apply_interleaved(row + kvr, positions[r]);
  }
}
std::vector<float> latent_entries(const ModelConfig& c, const MlaWeights& w, const Rope& rope,
                                  const float* h, int N, const int* positions) {
  std::vector<float> kv_a(static_cast<size_t>(N) * (c.kv_lora_rank + c.qk_rope_head_dim));
  linear_forward(w.kv_a_proj_with_mqa, h, N, kv_a.data());
  finish_latent_entries(c, w, rope, kv_a.data(), N, positions);
  return kv_a;
}

// Absorbed attention's buffers, kept between layers (base/aligned.h's grown).
struct DecodeScratch {  // the calling thread's, shared with the team
  AlignedVector<float> absorbed;
  std::vector<float> partials, head_values;
};
thread_local DecodeScratch decode_scratch;
struct ThreadScratch {  // each thread's own
  AlignedVector<float> group_queries;
  std::vector<float> scores_t, scores;
};

}  // namespace

RowMap::RowMap(const std::vector<Segment>& segments) {
  for (size_t i = 0; i < segments.size(); ++i)
    for (int t = 0; t < segments[i].rows; ++t) {
      segment.push_back(static_cast<int>(i));
      position.push_back(segments[i].pos0 + t);
    }
  rows = static_cast<int>(segment.size());
}

void mla_fill_cache(const ModelConfig& c, const MlaWeights& w, const Rope& rope, const float* h,
                    const Segment& segment) {
  check(!c.has_indexer(), "mla_fill_cache: a V3.2 layer also keeps its indexer's keys");
  std::vector<int> positions(segment.rows);
  for (int t = 0; t < segment.rows; ++t) positions[t] = segment.pos0 + t;
  const std::vector<float> kv_a = latent_entries(c, w, rope, h, segment.rows, positions.data());
  segment.cache->store(kv_a.data(), segment.rows, segment.pos0,
                       c.kv_lora_rank + c.qk_rope_head_dim);
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
  // The latents' projection W_DKV h takes the same h: in the same pass over the rows.
  std::vector<float> c_q, q(static_cast<size_t>(N) * heads * qk),
      kv_a(static_cast<size_t>(N) * width);
  const LinearProduct latents{&w.kv_a_proj_with_mqa, kv_a.data()};
  if (c.q_lora_rank > 0) {
    c_q.resize(static_cast<size_t>(N) * c.q_lora_rank);
    linear_forward_together({{&w.q_a_proj, c_q.data()}, latents}, h, N);
    for (int r = 0; r < N; ++r) {
      float* row = c_q.data() + static_cast<size_t>(r) * c.q_lora_rank;
      rms_norm(row, w.q_a_layernorm.data(), c.q_lora_rank, c.rms_norm_eps, row);
    }
    linear_forward(w.q_b_proj, c_q.data(), N, q.data());
  } else {
    linear_forward_together({{&w.q_proj, q.data()}, latents}, h, N);
  }
  for (int r = 0; r < N; ++r) {
    const Rope::Rotation rotation = rope.rotation(map.position[r]);
    for (int hd = 0; hd < heads; ++hd)
      rope.apply_interleaved(q.data() + (static_cast<size_t>(r) * heads + hd) * qk + nope,
                             rotation);
  }

  finish_latent_entries(c, w, rope, kv_a.data(), N, map.position.data());
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
    RegionItems work(heads * blocks);
    parallel_region(true, [&](int, int) {
      std::vector<float> scores(static_cast<size_t>(block) * L);
      for (int item; (item = work.next()) >= 0;) {
        const int hd = item % heads, t0 = item / heads * block;
        const float* qh = q.data() + (static_cast<size_t>(row0 + t0) * heads + hd) * qk;
        const float* kv = expanded[i].data() + static_cast<size_t>(hd) * kv_b_rows_per_head;
        attention_block(
            {{qh, ld_q, kv, ld_kv, nope}, {qh + nope, ld_q, rope_keys.data(), rope_dim, rope_dim}},
            scale, kv + nope, ld_kv, vdim, seg.pos0, t0, std::min(block, seg.rows - t0), allowed[i],
            scores.data(), attn.data() + (static_cast<size_t>(row0 + t0) * heads + hd) * vdim,
            heads * vdim);
      }
    });
  }

  // Absorbed rows (decode, speculative verification, the MTP rows after it): each head's query
  // against the latents is [W_UKᵀ q_nope ; q_rope], so score = query · [c_KV ; k_rope] and
  // out = W_UV (Σ p c_KV) — MQA over the cached entries. The positions go in chunks, each
  // chunk's softmax kept unnormalized with its own maximum and combined at the end (split-K
  // attention, as flash-decoding does), so that the threads split a long
  // context between them and read every cached entry once for all the heads; splitting by heads
  // instead had each thread read the whole cache (16 reads of 19 MB a layer at 8K positions).
  // Every step is per head and in a fixed order (fixed chunks; transposed_scores and
  // weighted_rows_sum give each head the same bits whatever its group), so a row's result does
  // not depend on the batch: speculative verification reproduces plain decoding.
  // A row's chunk: about an eighth of what it sees (so that even one row keeps the threads
  // busy), a power of two from 32 to max_chunk — a function of the row's position alone, so the
  // same in plain decoding and in a verification pass, whatever the threads. max_chunk grows with
  // the heads (256 for V2-Lite's 16, 2048 for V3's 128), so that the chunks' partial sums
  // (heads × kv_lora_rank floats each) stay about 6% of the cache entries they summarize.
  const int max_chunk = 16 * std::max(16, heads);
  const auto chunk_of = [max_chunk](int visible) {
    return std::clamp(static_cast<int>(std::bit_ceil(static_cast<unsigned>(visible + 7) / 8)), 32,
                      max_chunk);
  };
  const auto chunks_of = [&](int visible) {
    return (visible + chunk_of(visible) - 1) / chunk_of(visible);
  };
  std::vector<int> absorbed_rows, chunk_base;  // row, and its first chunk among all rows' chunks
  int chunks_total = 0;
  for (int r = 0; r < N; ++r) {
    if (!expanded[map.segment[r]].empty()) continue;  // naive: above
    absorbed_rows.push_back(r);
    chunk_base.push_back(chunks_total);
    chunks_total += chunks_of(map.position[r] + 1);
  }
  const int A = static_cast<int>(absorbed_rows.size());
  if (A > 0) {
    // Each row's and head's absorbed query [W_UKᵀ q_nope ; q_rope], on whole cache lines: the
    // threads write neighbouring heads, and lines they shared would move between the cores at
    // every store (the transposed layout the scores take, all heads of a k on one line, did).
    const size_t query_stride = (static_cast<size_t>(width) + 15) / 16 * 16;
    float* absorbed = grown(decode_scratch.absorbed, static_cast<size_t>(A) * heads * query_stride);
    // Per chunk and head: its latent sum Σ e^(score − m) c_KV, then m and Σ e^(score − m).
    const int partial = kvr + 2;
    float* partials =
        grown(decode_scratch.partials, static_cast<size_t>(chunks_total) * heads * partial);
    // Chunk items by groups of 16 heads (a vector of scores).
    const int group_size = std::min(heads, 16), groups = (heads + group_size - 1) / group_size;
    // Where the loader made copies of kv_b_proj (MlaWeights::absorbed_keys / absorbed_values)
    // and their fast row dots are on, the absorption and the values read those.
    const auto fast_rows = [](const Linear& m) {
      return m.bf16_packed() ? use_bf16_gemm() : m.group_lanes && use_vnni();
    };
    const bool key_rows = fast_rows(w.absorbed_keys), value_rows = fast_rows(w.absorbed_values);
    const bool int8_keys = !w.absorbed_keys_int8.empty() && use_vnni();
    float* head_values = grown(decode_scratch.head_values,
                               static_cast<size_t>(A) * heads * vdim);  // [a][head][vdim]
    std::vector<std::pair<int, int>> chunk_items;                       // (absorbed row, chunk)
    for (int a = 0; a < A; ++a)
      for (int c = 0; c < chunks_of(map.position[absorbed_rows[a]] + 1); ++c)
        chunk_items.push_back({a, c});
    RegionItems chunk_work(static_cast<int>(chunk_items.size()) * groups);
    parallel_region(true, [&](int rank, int threads) {
      // This thread's copy of one (row, group of heads)'s queries transposed, [width][16]: the
      // heads across the lanes of transposed_scores, zeros past the group's last head.
      thread_local ThreadScratch mine;
      float* group_queries = grown(mine.group_queries, static_cast<size_t>(width) * 16);
      int group_row = -1, group_h0 = -1;
      float* scores_t =
          grown(mine.scores_t, static_cast<size_t>(max_chunk) * 16);  // [position][head]
      float* scores = grown(mine.scores, static_cast<size_t>(group_size) * max_chunk);
      // Head by head, each head for every row in turn: a static split gives each thread its
      // heads' kv_b rows, in order, read once from memory however many rows there are.
      if (key_rows) {
        // Packed W_UKᵀ: the head's kv_lora_rank rows dotted with every row's q_nope (rounded to
        // bf16 like every other activation a bf16 matrix takes on this path).
        std::vector<float> q_nope(static_cast<size_t>(A) * nope);
        region_static(heads, rank, threads, [&](int hd) {
          for (int a = 0; a < A; ++a)
            std::copy_n(q.data() + (static_cast<size_t>(absorbed_rows[a]) * heads + hd) * qk, nope,
                        q_nope.data() + static_cast<size_t>(a) * nope);
          const Linear::RowsInput in = w.absorbed_keys.prepare_rows(q_nope.data(), A);
          // Row hd · kvr + k lands at entry k of row a's query for the head.
          float* y = absorbed + static_cast<size_t>(hd) * (query_stride - kvr);
          w.absorbed_keys.rows_dot_range(hd * kvr, (hd + 1) * kvr, in, y, heads * query_stride);
          for (int a = 0; a < A; ++a)
            std::copy_n(q.data() + (static_cast<size_t>(absorbed_rows[a]) * heads + hd) * qk + nope,
                        rope_dim,
                        absorbed + (static_cast<size_t>(a) * heads + hd) * query_stride + kvr);
        });
      } else if (int8_keys) {
        // W_UK's int8 copies, head by head: q_nope · each row's scales quantized to int8, the
        // sums by vpdpbusd (ops/transposed_int8.h).
        region_static(A * heads, rank, threads, [&](int item) {
          const int hd = item / A, a = item % A, r = absorbed_rows[a];
          const float* qh = q.data() + (static_cast<size_t>(r) * heads + hd) * qk;
          float* query = absorbed + (static_cast<size_t>(a) * heads + hd) * query_stride;
          transposed_int8_product(w.absorbed_keys_int8[hd], qh, query);
          std::copy_n(qh + nope, rope_dim, query + kvr);
        });
      } else {
        region_static(A * heads, rank, threads, [&](int item) {
          const int hd = item / A, a = item % A, r = absorbed_rows[a];
          // The next head's W_UK rows.
          if (a == 0) w.kv_b_proj.prefetch_rows((hd + 1) % heads * kv_b_rows_per_head, nope);
          const float* qh = q.data() + (static_cast<size_t>(r) * heads + hd) * qk;
          float* query = absorbed + (static_cast<size_t>(a) * heads + hd) * query_stride;
          std::fill_n(query, kvr, 0.0f);
          w.kv_b_proj.weighted_rows_sum(hd * kv_b_rows_per_head, nope, qh, query);
          std::copy_n(qh + nope, rope_dim, query + kvr);
        });
      }
      region_barrier();
      for (int item; (item = chunk_work.next()) >= 0;) {
        const auto [a, c] = chunk_items[item / groups];
        const int h0 = item % groups * group_size, G = std::min(heads, h0 + group_size) - h0;
        const int r = absorbed_rows[a], si = map.segment[r], t = r - first_row[si];
        const LayerCache& cache = *segments[si].cache;
        const AttentionMask& mask = allowed[si];
        const int visible = map.position[r] + 1, chunk = chunk_of(visible), s0 = c * chunk;
        const int n = std::min(chunk, visible - s0);
        if (a != group_row || h0 != group_h0) {
          std::fill_n(group_queries, static_cast<size_t>(width) * 16, 0.0f);
          for (int g = 0; g < G; ++g) {
            const float* query =
                absorbed + (static_cast<size_t>(a) * heads + h0 + g) * query_stride;
            for (int k = 0; k < width; ++k)
              group_queries[static_cast<size_t>(k) * 16 + g] = query[k];
          }
          group_row = a;
          group_h0 = h0;
        }
        // Scores of the group's heads at every position of the chunk, over runs of entries
        // contiguous in the cache (pages), then per head (scaled, masked).
        for (int j = 0; j < n;) {
          const int run = cache.contiguous_entries(s0 + j, n - j);
          transposed_scores(group_queries, 16, G, cache.entry(s0 + j, width), width, run, width,
                            scores_t + static_cast<size_t>(j) * 16, 16);
          j += run;
        }
        for (int g = 0; g < G; ++g)
          for (int j = 0; j < n; ++j)
            scores[static_cast<size_t>(g) * max_chunk + j] =
                !mask.empty() && !mask[t][s0 + j]
                    ? kNegInf
                    : scores_t[static_cast<size_t>(j) * 16 + g] * scale;
        float* out_c = partials + ((static_cast<size_t>(chunk_base[a]) + c) * heads + h0) * partial;
        for (int g = 0; g < G; ++g) {
          float* sg = scores + static_cast<size_t>(g) * max_chunk;
          float* o = out_c + static_cast<size_t>(g) * partial;
          const float m = *std::max_element(sg, sg + n);
          std::fill(o, o + kvr, 0.0f);
          o[kvr] = m;
          // A chunk whose positions are all masked out weighs nothing (e^-inf).
          o[kvr + 1] = m == kNegInf ? 0.0f : exp_shifted(sg, n, m);
          if (m == kNegInf) std::fill(sg, sg + n, 0.0f);
        }
        // Σ_j p[g][j] · c_KV(s0 + j), over the same runs.
        for (int j = 0; j < n;) {
          const int run = cache.contiguous_entries(s0 + j, n - j);
          weighted_rows_sum(scores + j, max_chunk, G, cache.entry(s0 + j, width), width, run, kvr,
                            out_c, partial);
          j += run;
        }
      }
      region_barrier();
      // Each (row, head)'s chunks combined: its normalized latent Σ p c_KV.
      const auto latent_sum = [&](int a, int hd, float* row) {
        const int chunks = chunks_of(map.position[absorbed_rows[a]] + 1);
        const float* first = partials + (static_cast<size_t>(chunk_base[a]) * heads + hd) * partial;
        const size_t stride = static_cast<size_t>(heads) * partial;  // chunk to chunk
        float m = kNegInf;
        for (int c = 0; c < chunks; ++c) m = std::max(m, first[c * stride + kvr]);
        std::fill(row, row + kvr, 0.0f);
        float total = 0;
        for (int c = 0; c < chunks; ++c) {
          const float* o = first + c * stride;
          if (o[kvr + 1] == 0.0f) continue;
          const float weight = std::exp(o[kvr] - m);
          axpy(weight, o, row, kvr);
          total += weight * o[kvr + 1];
        }
        for (int k = 0; k < kvr; ++k) row[k] /= total;
      };
      // The values W_UV (Σ p c_KV), heads split as the absorption's: the latent sums rounded
      // to bf16 (packed copy) or quantized to int8 (q8/q4 copy), as any activation there.
      if (value_rows) {
        std::vector<float> latents(static_cast<size_t>(A) * kvr);
        region_static(heads, rank, threads, [&](int hd) {
          for (int a = 0; a < A; ++a)
            latent_sum(a, hd, latents.data() + static_cast<size_t>(a) * kvr);
          const Linear::RowsInput in = w.absorbed_values.prepare_rows(latents.data(), A);
          w.absorbed_values.rows_dot_range(hd * vdim, (hd + 1) * vdim, in, head_values,
                                           static_cast<size_t>(heads) * vdim);
        });
      } else {
        std::vector<float> row(kvr);
        region_static(A * heads, rank, threads, [&](int item) {
          const int hd = item / A, a = item % A;
          if (a == 0) w.kv_b_proj.prefetch_rows((hd + 1) % heads * kv_b_rows_per_head + nope, vdim);
          latent_sum(a, hd, row.data());
          w.kv_b_proj.row_dots(hd * kv_b_rows_per_head + nope, vdim, row.data(),
                               head_values + (static_cast<size_t>(a) * heads + hd) * vdim);
        });
      }
    });
    for (int a = 0; a < A; ++a)
      std::copy_n(head_values + static_cast<size_t>(a) * heads * vdim, heads * vdim,
                  attn.data() + static_cast<size_t>(absorbed_rows[a]) * heads * vdim);
  }
  linear_forward(w.o_proj, attn.data(), N, out);
}

}  // namespace whale
