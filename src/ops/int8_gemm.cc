#include "ops/int8_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "tensor/dtype.h"

namespace whale {

// GCC 12's _mm512_reduce_add_ps reads an uninitialized register on purpose (its upper half is
// discarded); its header then warns at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Highway 1.0 has no VNNI-specific target to dispatch on, so these functions carry the
// instruction set themselves and run only after the CPU check (ops/precision.cc).
#define WHALE_VNNI_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

namespace {

constexpr int kGroup = 32;        // values per quantization group
constexpr int kChunk = 64;        // values per vpdpbusd: two groups
constexpr int kStep = 4;          // chunks per step of the row loops: 8 groups' scales at once
constexpr int kTileRows = 4;      // weight rows in one tile of 4 × 4 sums
constexpr int kTileTokens = 4;    // activation rows in one tile
constexpr int kPanelRows = 64;    // weight rows one thread takes at a time
constexpr int kBlockTokens = 64;  // activation rows kept in L2 while a panel passes over them
constexpr int kBlockCols = 4096;  // values per pass: a q8 panel's slice is 256 KiB

static_assert(kBlockCols % (kStep * kChunk) == 0, "only the last column block may be partial");

int groups_of(int cols) {
  return (cols + kGroup - 1) / kGroup;
}
int chunks_of(int cols) {
  return (cols + kChunk - 1) / kChunk;
}

// The two weight formats. Rows are addressed as bytes: q8 one code per value, q4 16 bytes per
// group; scales: q8 one f16 per group, q4 an f16 (scale, min) pair per group.
template <bool Q4>
struct Format {
  static constexpr int kScalesPerGroup = Q4 ? 2 : 1;
  static size_t row_bytes(int cols) {
    return Q4 ? static_cast<size_t>(groups_of(cols)) * 16 : cols;
  }
  static int byte_of_chunk(int c) { return Q4 ? c * kChunk / 2 : c * kChunk; }
  // Chunks that can be loaded without a mask.
  static int full_chunks(int cols) { return Q4 ? groups_of(cols) / 2 : cols / kChunk; }
};

// The chunk's 64 weights as unsigned bytes in the activations' order: q8's codes + 128 (the sign
// bit flipped; the activations' lane offsets take the 128s back); q4's nibbles (group 2c's bytes
// hold its values j and 16 + j in their low and high nibbles, so the 32 bytes are spread to [group
// 2c's bytes twice, group 2c + 1's bytes twice] and the second copy of each shifted down by 4).
// Bytes past the row's end meet activation codes 0.
template <bool Q4, bool kMasked>
WHALE_VNNI_TARGET __m512i weight_chunk(const uint8_t* row, int c, int cols) {
  const uint8_t* p = row + Format<Q4>::byte_of_chunk(c);
  if constexpr (Q4) {
    __m256i bytes;
    if constexpr (kMasked) {
      const int valid = std::min(32, (groups_of(cols) - 2 * c) * 16);
      bytes = _mm256_maskz_loadu_epi8(static_cast<__mmask32>((1ull << valid) - 1), p);
    } else {
      bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    }
    const __m512i spread = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3),
                                                    _mm512_castsi256_si512(bytes));
    const __m512i shifted = _mm512_srlv_epi64(spread, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
    return _mm512_and_si512(shifted, _mm512_set1_epi8(0x0F));
  } else {
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    if constexpr (kMasked) {
      const int valid = cols - c * kChunk;
      return _mm512_xor_si512(
          _mm512_maskz_loadu_epi8(valid >= kChunk ? ~__mmask64{0} : (__mmask64{1} << valid) - 1, p),
          flip);
    }
    return _mm512_xor_si512(_mm512_loadu_si512(p), flip);
  }
}

// Lanes 0–7 take element a of v, lanes 8–15 element b.
WHALE_VNNI_TARGET __m512 spread_pair(__m512 v, int a, int b) {
  return _mm512_permutexvar_ps(
      _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(a), _mm512_set1_epi32(b)), v);
}

// The scales of the kStep · 2 groups of a step starting at chunk c, as f32: q8 8 scales, q4 8
// (scale, min) pairs. Masked where the row has fewer groups left (the tails use it too).
template <bool Q4>
WHALE_VNNI_TARGET __m512 step_scales(const uint16_t* scales, int c, int groups) {
  const int left = std::min(2 * kStep, groups - 2 * c) * Format<Q4>::kScalesPerGroup;
  const __mmask16 mask = static_cast<__mmask16>((1u << left) - 1);
  const uint16_t* p = scales + 2 * c * Format<Q4>::kScalesPerGroup;
  if constexpr (Q4) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
  return _mm512_zextps256_ps512(_mm256_cvtph_ps(_mm_maskz_loadu_epi16(mask, p)));
}
// The weight scales of step_scales' groups in lanes 0–7 (q4: the even lanes of its pairs).
template <bool Q4>
WHALE_VNNI_TARGET __m512 group_weight_scales(__m512 step) {
  if constexpr (Q4)
    return _mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0), step);
  return step;
}
// weight scale × activation scale for `groups` groups (≤ 8) of a block, in lanes 0–7: the lane
// scales of chunk k of the block are spread_pair(products, 2k, 2k + 1).
WHALE_VNNI_TARGET __m512 scale_products(__m512 weight_scales, const uint8_t* group_scales,
                                        int groups) {
  return _mm512_mul_ps(weight_scales,
                       _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << groups) - 1),
                                             reinterpret_cast<const float*>(group_scales)));
}

// Σ over one chunk of one activation row (its codes and lane offsets at x): lane_scales ·
// (Σ w · x̂) added to sum, the weights (weight_chunk's unsigned bytes) against the signed
// activation codes. q8's lane sums start from the chunk's lane offsets (−128 · Σ x̂ of the lane),
// so they come out as Σ w · x̂ exactly.
template <bool Q4>
WHALE_VNNI_TARGET __m512 chunk_product(__m512i weights, __m512 lane_scales, const uint8_t* x,
                                       __m512 sum) {
  const __m512i start =
      Q4 ? _mm512_setzero_si512() : _mm512_loadu_si512(x + Int8Activations::kLaneOffsetsOffset);
  const __m512i acc = _mm512_dpbusd_epi32(start, weights, _mm512_loadu_si512(x));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), lane_scales, sum);
}

// q4's min · Σ x̂ for `groups` groups (≤ 8) of a block: their (scale, min) pairs against the
// activation row's (0, scale · Σ codes) pairs at terms.
WHALE_VNNI_TARGET __m512 min_product(__m512 pairs, const uint8_t* terms, int groups, __m512 sum) {
  const __m512 t = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (2 * groups)) - 1),
                                         reinterpret_cast<const float*>(terms));
  return _mm512_fmadd_ps(pairs, t, sum);
}

// out[t] for R activation rows from t0: two partial sums per row (even and odd chunks of the
// steps), the tail's chunks and q4's minimum terms into the first, one reduction — the same for
// every R.
template <bool Q4, int R>
WHALE_VNNI_TARGET void dot_rows(const uint8_t* w, const uint16_t* scales, int cols,
                                const Int8Activations& x, int t0, float* out) {
  constexpr int kChunkBytes = Int8Activations::kChunkBytes;
  constexpr int kBlockBytes = Int8Activations::kBlockBytes;
  const uint8_t* xr[R];
  __m512 sum[R][2];
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) {
    xr[t] = x.row(t0 + t);
    sum[t][0] = sum[t][1] = _mm512_setzero_ps();
  }
  const int groups = groups_of(cols), full = Format<Q4>::full_chunks(cols);
  int c = 0;
  for (size_t block = 0; c + kStep <= full; c += kStep, block += kBlockBytes) {
    // The weights ahead into L2, one line per step (kernels.h's kWeightPrefetchBytes): q8 decode
    // 29.3–29.9 → 30.3–30.8 tok/s on v2-lite-8l (alternated, 2 threads).
    _mm_prefetch(
        reinterpret_cast<const char*>(w) + Format<Q4>::byte_of_chunk(c) + kWeightPrefetchBytes,
        _MM_HINT_T1);
    const __m512 step = step_scales<Q4>(scales, c, groups);
    const __m512 weight_scales = group_weight_scales<Q4>(step);
    __m512 products[R];
#pragma GCC unroll 6
    for (int t = 0; t < R; ++t) {
      products[t] =
          scale_products(weight_scales, xr[t] + block + Int8Activations::kGroupScalesOffset, 8);
      if constexpr (Q4)
        sum[t][0] =
            min_product(step, xr[t] + block + Int8Activations::kMinTermsOffset, 8, sum[t][0]);
    }
#pragma GCC unroll 4
    for (int k = 0; k < kStep; ++k) {
      const __m512i wv = weight_chunk<Q4, false>(w, c + k, cols);
#pragma GCC unroll 6
      for (int t = 0; t < R; ++t)
        sum[t][k & 1] = chunk_product<Q4>(wv, spread_pair(products[t], 2 * k, 2 * k + 1),
                                          xr[t] + block + k * kChunkBytes, sum[t][k & 1]);
    }
  }
  for (; c < chunks_of(cols); ++c) {
    const int here = std::min(2, groups - 2 * c);  // groups in this chunk
    const __m512 pair = step_scales<Q4>(scales, c, 2 * c + here);
    const __m512i wv = weight_chunk<Q4, true>(w, c, cols);
    const __m512 weight_scales = group_weight_scales<Q4>(pair);
    const size_t at = Int8Activations::chunk_offset(c);
    const size_t group_scales = Int8Activations::scale_offset(2 * c);
    const size_t terms = static_cast<size_t>(c / kStep) * kBlockBytes +
                         Int8Activations::kMinTermsOffset + (c % kStep) * 16;
#pragma GCC unroll 6
    for (int t = 0; t < R; ++t) {
      const __m512 lane_scales =
          spread_pair(scale_products(weight_scales, xr[t] + group_scales, here), 0, 1);
      sum[t][0] = chunk_product<Q4>(wv, lane_scales, xr[t] + at, sum[t][0]);
      if constexpr (Q4) sum[t][0] = min_product(pair, xr[t] + terms, here, sum[t][0]);
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) out[t] = _mm512_reduce_add_ps(_mm512_add_ps(sum[t][0], sum[t][1]));
}

template <bool Q4>
void dot_rows_all(const uint8_t* w, const uint16_t* scales, int cols, const Int8Activations& x,
                  float* out) {
  constexpr int kPass = 6;  // 6 × 2 sums and the chunk's vectors in the 32 registers
  using Rows = void (*)(const uint8_t*, const uint16_t*, int, const Int8Activations&, int, float*);
  static constexpr Rows kRows[kPass] = {dot_rows<Q4, 1>, dot_rows<Q4, 2>, dot_rows<Q4, 3>,
                                        dot_rows<Q4, 4>, dot_rows<Q4, 5>, dot_rows<Q4, 6>};
  for (int t0 = 0; t0 < x.T; t0 += kPass)
    kRows[std::min(kPass, x.T - t0) - 1](w, scales, cols, x, t0, out + t0);
}

// out[a][b] = Σ over chunks [c0, c1) of kTileRows weight rows against RX activation rows from
// t0; the sums stay in registers. prefetch: the next tile's weight rows, a line each per chunk.
template <bool Q4, int RX>
WHALE_VNNI_TARGET void tile_sums(const uint8_t* const (&w)[kTileRows],
                                 const uint16_t* const (&s)[kTileRows], int cols,
                                 const Int8Activations& x, int t0, int c0, int c1,
                                 float (&out)[kTileRows][kTileTokens], const uint8_t* prefetch) {
  const int groups = groups_of(cols);
  const size_t row_bytes = Format<Q4>::row_bytes(cols);
  const uint8_t* xr[RX];
  __m512 sum[kTileRows][RX];
#pragma GCC unroll 4
  for (int b = 0; b < RX; ++b) xr[b] = x.row(t0 + b);
#pragma GCC unroll 4
  for (int a = 0; a < kTileRows; ++a)
#pragma GCC unroll 4
    for (int b = 0; b < RX; ++b) sum[a][b] = _mm512_setzero_ps();
  for (int c = c0; c < c1; ++c) {
    __m512i wv[kTileRows];
    __m512 ws[kTileRows], xs[RX];
    if (prefetch)
      for (int a = 0; a < kTileRows; ++a)
        _mm_prefetch(
            reinterpret_cast<const char*>(prefetch + a * row_bytes + Format<Q4>::byte_of_chunk(c)),
            _MM_HINT_T0);
    const int here = std::min(2, groups - 2 * c);
#pragma GCC unroll 4
    for (int a = 0; a < kTileRows; ++a) {
      wv[a] = weight_chunk<Q4, true>(w[a], c, cols);
      ws[a] = spread_pair(group_weight_scales<Q4>(step_scales<Q4>(s[a], c, 2 * c + here)), 0, 1);
    }
    const size_t at = Int8Activations::chunk_offset(c);
    const size_t group_scales = Int8Activations::scale_offset(2 * c);
#pragma GCC unroll 4
    for (int b = 0; b < RX; ++b)
      xs[b] = spread_pair(
          _mm512_maskz_loadu_ps(0x3, reinterpret_cast<const float*>(xr[b] + group_scales)), 0, 1);
#pragma GCC unroll 4
    for (int b = 0; b < RX; ++b)
#pragma GCC unroll 4
      for (int a = 0; a < kTileRows; ++a)
        sum[a][b] = chunk_product<Q4>(wv[a], _mm512_mul_ps(ws[a], xs[b]), xr[b] + at, sum[a][b]);
  }
  if constexpr (Q4) {
    // c0 starts a block (kBlockCols is a multiple of the 256-value blocks).
    for (int c = c0; c < c1; c += kStep) {
      const int here = std::min(2 * kStep, std::min(groups, 2 * c1) - 2 * c);
      const size_t terms = static_cast<size_t>(c / kStep) * Int8Activations::kBlockBytes +
                           Int8Activations::kMinTermsOffset;
      __m512 pairs[kTileRows];
#pragma GCC unroll 4
      for (int a = 0; a < kTileRows; ++a) pairs[a] = step_scales<true>(s[a], c, 2 * c + here);
#pragma GCC unroll 4
      for (int b = 0; b < RX; ++b)
#pragma GCC unroll 4
        for (int a = 0; a < kTileRows; ++a)
          sum[a][b] = min_product(pairs[a], xr[b] + terms, here, sum[a][b]);
    }
  }
#pragma GCC unroll 4
  for (int a = 0; a < kTileRows; ++a)
#pragma GCC unroll 4
    for (int b = 0; b < RX; ++b) out[a][b] = _mm512_reduce_add_ps(sum[a][b]);
}

// Weight rows [r0, r1) against every activation row, in blocks that stay in L2.
template <bool Q4>
void panel(const uint8_t* w, const uint16_t* scales, int cols, int r0, int r1,
           const Int8Activations& x, float* y, int ldy) {
  const size_t row_bytes = Format<Q4>::row_bytes(cols);
  const size_t row_scales = static_cast<size_t>(groups_of(cols)) * Format<Q4>::kScalesPerGroup;
  const int chunks = chunks_of(cols);
  using Tile = void (*)(const uint8_t* const(&)[kTileRows], const uint16_t* const(&)[kTileRows],
                        int, const Int8Activations&, int, int, int,
                        float(&)[kTileRows][kTileTokens], const uint8_t*);
  static constexpr Tile kTiles[kTileTokens] = {tile_sums<Q4, 1>, tile_sums<Q4, 2>, tile_sums<Q4, 3>,
                                               tile_sums<Q4, 4>};
  float sums[kTileRows][kTileTokens];
  for (int cb = 0; cb < chunks; cb += kBlockCols / kChunk) {
    const int ce = std::min(chunks, cb + kBlockCols / kChunk);
    for (int t0 = 0; t0 < x.T; t0 += kBlockTokens) {
      const int t1 = std::min(x.T, t0 + kBlockTokens);
      for (int r = r0; r < r1; r += kTileRows) {
        const int rows_here = std::min(kTileRows, r1 - r);
        const uint8_t* wr[kTileRows];
        const uint16_t* sr[kTileRows];
        // Missing rows of a last partial tile repeat its last row; their sums are not stored.
        for (int a = 0; a < kTileRows; ++a) {
          const int row = r + std::min(a, rows_here - 1);
          wr[a] = w + row * row_bytes;
          sr[a] = scales + row * row_scales;
        }
        const uint8_t* next = r + kTileRows < r1 ? w + (r + kTileRows) * row_bytes : nullptr;
        for (int t = t0; t < t1; t += kTileTokens) {
          const int m = std::min(kTileTokens, t1 - t);
          kTiles[m - 1](wr, sr, cols, x, t, cb, ce, sums, t == t0 ? next : nullptr);
          for (int b = 0; b < m; ++b) {
            float* yt = y + static_cast<size_t>(t + b) * ldy + r;
            for (int a = 0; a < rows_here; ++a) yt[a] = cb == 0 ? sums[a][b] : yt[a] + sums[a][b];
          }
        }
      }
    }
  }
}

template <bool Q4>
void gemm(const uint8_t* w, const uint16_t* scales, int rows, int cols, const float* x, int T,
          float* y, int ldy) {
  Int8Activations xq;
  quantize_activations(x, T, cols, &xq);
  for_each_panel(rows, static_cast<size_t>(rows) * cols * T, kTileRows, kPanelRows,
                 [&](int r0, int r1) { panel<Q4>(w, scales, cols, r0, r1, xq, y, ldy); });
}

// Where the quantizers write: value i's code, group g's scale, min term and lane offsets, in a row
// of the activations.
struct RowWriter {
  uint8_t* row;
  uint8_t* code(int i) const { return row + Int8Activations::code_offset(i); }
  float* scale(int g) const {
    return reinterpret_cast<float*>(row + Int8Activations::scale_offset(g));
  }
  float* min_term(int g) const {
    return reinterpret_cast<float*>(row + Int8Activations::min_term_offset(g));
  }
  // Group g's 8 lane offsets (the second half of its chunk's 16).
  int32_t* lane_offsets(int g) const {
    return reinterpret_cast<int32_t*>(row + Int8Activations::lane_offsets_offset(g));
  }
};

// One row by AVX-512: per group, the maximum |x|, then x · (1 / scale) rounded to nearest even
// (the scalar reference's std::nearbyint in the default rounding mode).
WHALE_VNNI_TARGET void quantize_row(const float* x, int cols, const RowWriter& out) {
  for (int g = 0; g < groups_of(cols); ++g) {
    const int i = g * kGroup, valid = std::min(kGroup, cols - i);
    const __mmask16 m0 = static_cast<__mmask16>((1u << std::min(16, valid)) - 1);
    const __mmask16 m1 = static_cast<__mmask16>((1u << std::max(0, valid - 16)) - 1);
    const __m512 v0 = _mm512_maskz_loadu_ps(m0, x + i), v1 = _mm512_maskz_loadu_ps(m1, x + i + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float scale = amax / 127.0f, inverse = scale > 0 ? 1.0f / scale : 0.0f;
    const __m512 inv = _mm512_set1_ps(inverse), lo = _mm512_set1_ps(-127), hi = _mm512_set1_ps(127);
    const __m512i q0 =
        _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v0, inv), lo), hi));
    const __m512i q1 =
        _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v1, inv), lo), hi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out.code(i)), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out.code(i + 16)), _mm512_cvtepi32_epi8(q1));
    *out.scale(g) = scale;
    *out.min_term(g) =
        scale * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)));
    // −128 · (the sum of each lane's 4 codes): the 128s against the codes, as the products do.
    const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(out.code(i)));
    const __m256i zero = _mm256_setzero_si256();
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(out.lane_offsets(g)),
        _mm256_sub_epi32(
            zero, _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(static_cast<char>(0x80)), codes)));
  }
}

// Sizes out for T rows, all zeros: the padding after a row's last group (codes, lane offsets,
// scales and min terms) stays 0, which the kernels rely on.
void prepare(int T, int cols, Int8Activations* out) {
  out->T = T;
  out->cols = cols;
  out->blocks = (cols + kStep * kChunk - 1) / (kStep * kChunk);
  out->data.assign(static_cast<size_t>(T) * out->blocks * Int8Activations::kBlockBytes, 0);
}

RowWriter row_writer(Int8Activations* x, int t) {
  return {x->data.data() + static_cast<size_t>(t) * x->blocks * Int8Activations::kBlockBytes};
}

}  // namespace

void quantize_activations(const float* x, int T, int cols, Int8Activations* out) {
  prepare(T, cols, out);
#pragma omp parallel for if (static_cast <size_t>(T) * cols > (1 << 20))
  for (int t = 0; t < T; ++t) {
    const RowWriter row = row_writer(out, t);
    quantize_row(x + static_cast<size_t>(t) * cols, cols, row);
  }
}

void quantize_activations_reference(const float* x, int T, int cols, Int8Activations* out) {
  prepare(T, cols, out);
  for (int t = 0; t < T; ++t) {
    const RowWriter row = row_writer(out, t);
    for (int g = 0; g < groups_of(cols); ++g) {
      const float* v = x + static_cast<size_t>(t) * cols + g * kGroup;
      const int n = std::min(kGroup, cols - g * kGroup);
      float amax = 0;
      for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float scale = amax / 127.0f, inverse = scale > 0 ? 1.0f / scale : 0.0f;
      int sum = 0;
      for (int i = 0; i < n; ++i) {
        const int q = static_cast<int>(std::nearbyint(std::clamp(v[i] * inverse, -127.0f, 127.0f)));
        *row.code(g * kGroup + i) = static_cast<uint8_t>(static_cast<int8_t>(q));
        row.lane_offsets(g)[i / 4] -= 128 * q;
        sum += q;
      }
      *row.scale(g) = scale;
      *row.min_term(g) = scale * static_cast<float>(sum);
    }
  }
}

int Int8Activations::code(int t, int i) const {
  return static_cast<int8_t>(row(t)[code_offset(i)]);
}
int Int8Activations::lane_offset(int t, int g, int j) const {
  int32_t v;
  std::memcpy(&v, row(t) + lane_offsets_offset(g) + j * 4, 4);
  return v;
}
float Int8Activations::scale(int t, int i) const {
  float s;
  std::memcpy(&s, row(t) + scale_offset(i / kGroup), 4);
  return s;
}
float Int8Activations::min_term(int t, int g) const {
  float s;
  std::memcpy(&s, row(t) + min_term_offset(g), 4);
  return s;
}

void q8_dot_rows(const int8_t* codes, const uint16_t* scales, int cols, const Int8Activations& x,
                 float* out) {
  dot_rows_all<false>(reinterpret_cast<const uint8_t*>(codes), scales, cols, x, out);
}
void q4_dot_rows(const uint8_t* packed, const uint16_t* scale_min, int cols,
                 const Int8Activations& x, float* out) {
  dot_rows_all<true>(packed, scale_min, cols, x, out);
}

void q8_gemm(const int8_t* codes, const uint16_t* scales, int rows, int cols, const float* x, int T,
             float* y, int ldy) {
  gemm<false>(reinterpret_cast<const uint8_t*>(codes), scales, rows, cols, x, T, y, ldy);
}
void q4_gemm(const uint8_t* packed, const uint16_t* scale_min, int rows, int cols, const float* x,
             int T, float* y, int ldy) {
  gemm<true>(packed, scale_min, rows, cols, x, T, y, ldy);
}

namespace {
// Σ_c w(r, c) · x̂[t][c] in double, w given element by element.
template <class Weight>
void reference_products(int rows, int cols, const float* x, int T, float* y, int ldy,
                        const Weight& weight) {
  Int8Activations xq;
  quantize_activations_reference(x, T, cols, &xq);
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < rows; ++r) {
      double sum = 0;
      for (int c = 0; c < cols; ++c)
        sum += weight(r, c) * (static_cast<double>(xq.code(t, c)) * xq.scale(t, c));
      y[static_cast<size_t>(t) * ldy + r] = static_cast<float>(sum);
    }
}
}  // namespace

void q8_gemm_reference(const int8_t* codes, const uint16_t* scales, int rows, int cols,
                       const float* x, int T, float* y, int ldy) {
  const size_t groups = groups_of(cols);
  reference_products(rows, cols, x, T, y, ldy, [&](int r, int c) {
    return static_cast<double>(codes[static_cast<size_t>(r) * cols + c]) *
           f16_to_f32(scales[r * groups + c / kGroup]);
  });
}

void q4_gemm_reference(const uint8_t* packed, const uint16_t* scale_min, int rows, int cols,
                       const float* x, int T, float* y, int ldy) {
  const size_t groups = groups_of(cols);
  reference_products(rows, cols, x, T, y, ldy, [&](int r, int c) {
    const int g = c / kGroup, j = c % kGroup;
    const uint8_t byte = packed[(r * groups + g) * 16 + j % 16];
    const int nibble = j < 16 ? byte & 0x0F : byte >> 4;
    const size_t pair = 2 * (r * groups + g);
    return static_cast<double>(nibble) * f16_to_f32(scale_min[pair]) +
           f16_to_f32(scale_min[pair + 1]);
  });
}

}  // namespace whale
