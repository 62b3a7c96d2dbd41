#include "ops/int8_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "ops/group_lanes.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "ops/token_lanes.h"
#include "ops/vnni_target.h"
#include "tensor/dtype.h"

namespace whale {

// GCC 12's _mm512_reduce_add_ps reads an uninitialized register on purpose (its upper half is
// discarded); its header then warns at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace {

constexpr int kGroup = 32;  // values per quantization group
constexpr int kChunk = 64;  // values per vpdpbusd: two groups
constexpr int kStep = 4;    // chunks per step of the row loops: 8 groups' scales at once

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

// step_scales of a step whose 8 groups all exist (no mask to compute).
template <bool Q4>
WHALE_VNNI_TARGET __m512 full_step_scales(const uint16_t* scales, int c) {
  const uint16_t* p = scales + 2 * c * Format<Q4>::kScalesPerGroup;
  if constexpr (Q4) return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_zextps256_ps512(
      _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
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
    prefetch_weights_ahead(w + Format<Q4>::byte_of_chunk(c),
                           Format<Q4>::byte_of_chunk(kStep));  // (kernels.h)
    const __m512 step = full_step_scales<Q4>(scales, c);
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

// Prefill's products, tokens across the lanes: the activation codes of 16 tokens are interleaved
// group by group — vector k of a group holds in int32 lane i token i's codes 4k … 4k + 3 — and one
// vpdpbusd multiplies them by 4 weights of one row broadcast to every lane. A group's 8
// instructions add into the same 16 int32 sums, one per token, converted and scaled once per
// group: 8 vpdpbusd per 2 FMA-unit operations (scale product, FMA), where decode's layout — lanes
// are positions in one row, two groups per vector — needs 3 per vpdpbusd. The interleaving is one
// pass over the activations, shared by all the weight rows; each thread copies its panel of
// weight rows once as unsigned bytes (q8: code + 128, q4: one nibble per byte, zero-padded to
// whole groups) with their scales as f32, so that the inner loop only loads and broadcasts them.
constexpr size_t kPanelBytes = 256 << 10;  // bytes of the copy of a thread's weight rows
constexpr int kMaxPanelRows = 64;

// The activations of a GEMM as blocks of 16 tokens, group by group: 8 × 64 bytes of codes
// (interleaved as above), then the 16 tokens' scales (f32), group offsets (int32 −128 · Σ codes,
// where q8's sums start) and min terms (f32 scale · Σ codes, q4's). Tokens past T are zeros.
struct TokenBlocks {
  static constexpr int kScalesOffset = 8 * 64;
  static constexpr int kOffsetsOffset = kScalesOffset + kLaneTokens * 4;
  static constexpr int kMinTermsOffset = kOffsetsOffset + kLaneTokens * 4;
  static constexpr int kGroupBytes = kMinTermsOffset + kLaneTokens * 4;
  int blocks = 0, groups = 0;
  AlignedVector<uint8_t> storage;
  const uint8_t* group(int b, int g) const {
    return storage.data() + (static_cast<size_t>(b) * groups + g) * kGroupBytes;
  }
};

// x's rows interleaved into out, by gathers from Int8Activations' layout.
WHALE_VNNI_TARGET void interleave_tokens(const Int8Activations& x, TokenBlocks* out) {
  out->groups = groups_of(x.cols);
  out->blocks = (x.T + kLaneTokens - 1) / kLaneTokens;
  out->storage.assign(static_cast<size_t>(out->blocks) * out->groups * TokenBlocks::kGroupBytes, 0);
  const int row_bytes = x.blocks * Int8Activations::kBlockBytes;
  for (int b = 0; b < out->blocks; ++b) {
    const int tokens = std::min(kLaneTokens, x.T - b * kLaneTokens);
    const __mmask16 valid = static_cast<__mmask16>((1u << tokens) - 1);
    const __m512i rows =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32(row_bytes));
    const uint8_t* first = x.row(b * kLaneTokens);
    for (int g = 0; g < out->groups; ++g) {
      uint8_t* o = out->storage.data() +
                   (static_cast<size_t>(b) * out->groups + g) * TokenBlocks::kGroupBytes;
      // Where each of the 11 vectors of the group comes from in a row of x.
      const size_t from[11] = {Int8Activations::code_offset(g * kGroup),
                               Int8Activations::code_offset(g * kGroup + 4),
                               Int8Activations::code_offset(g * kGroup + 8),
                               Int8Activations::code_offset(g * kGroup + 12),
                               Int8Activations::code_offset(g * kGroup + 16),
                               Int8Activations::code_offset(g * kGroup + 20),
                               Int8Activations::code_offset(g * kGroup + 24),
                               Int8Activations::code_offset(g * kGroup + 28),
                               Int8Activations::scale_offset(g),
                               Int8Activations::group_offset_offset(g),
                               Int8Activations::min_term_offset(g)};
      static_assert(TokenBlocks::kGroupBytes == 11 * 64, "8 code vectors and 3 of 16 values");
      for (int v = 0; v < 11; ++v)
        _mm512_store_si512(o + 64 * v, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid,
                                                                   rows, first + from[v], 1));
    }
  }
}

// A thread's panel of weight rows as the tiles read them: per row, its groups' 32 values as
// unsigned bytes (q8 code + 128, q4 nibble; zeros past the row's end, where the activation codes
// are zeros too), and per row and group the weight scale (and q4's minimum) as f32. Rows in
// decode's group-lane order (group_lanes.h) stay in that order, values 4k … 4k + 3 of a group a
// dword among its block's: copying them back in order cost as much as the products (a transpose
// by gathers: 21% of a 128-token prefill against the tiles' 29%).
struct PanelCopy {
  std::vector<uint8_t> values;
  std::vector<float> scales, mins;
  int groups = 0;
  int lanes = 0;       // as q8_gemm's
  int super_rows = 1;  // rows per lane row (lanes > 1: super rows)
  const uint8_t* row(int r) const {
    return values.data() + static_cast<size_t>(r) * groups * kGroup;
  }
  // Where values 4k … 4k + 3 of group g sit in row r: at place(r, g).first + k · step from
  // row(r) (a table per panel, per row of a super row: the tiles' inner loop only reads it). A
  // super row's rows are each a row's length apart, so a row's values lie in its super row
  // relative to where it would start, before it as well as after.
  struct Place {
    int first, step;
  };
  std::vector<Place> places;
  const Place& place(int r, int g) const { return places[(r % super_rows) * groups + g]; }
  void locate_groups() {  // the order is group_lanes.h's q8_lane_index (q4's values alike)
    super_rows = lanes > 1 ? lanes : 1;
    places.resize(static_cast<size_t>(super_rows) * groups);
    const int cols = groups * kGroup, lane_cols = super_rows * cols;
    for (int k = 0; k < super_rows; ++k)
      for (int g = 0; g < groups; ++g) {
        const int i = k * cols + g * kGroup;  // the group's first value in its lane row
        const int first = lanes ? static_cast<int>(q8_lane_index(lane_cols, i)) : i;
        const int second = lanes ? static_cast<int>(q8_lane_index(lane_cols, i + 4)) : i + 4;
        places[k * groups + g] = {first - k * cols, second - first};
      }
  }
};

template <bool Q4>
WHALE_VNNI_TARGET void copy_panel(const uint8_t* w, const uint16_t* scales, int cols, int rows,
                                  int lanes, PanelCopy* out) {
  const int groups = groups_of(cols);
  const size_t row_bytes = Format<Q4>::row_bytes(cols);
  const size_t row_scales = static_cast<size_t>(groups) * Format<Q4>::kScalesPerGroup;
  out->groups = groups;
  out->values.resize(static_cast<size_t>(rows) * groups * kGroup);
  out->scales.resize(static_cast<size_t>(rows) * groups);
  if (Q4) out->mins.resize(out->scales.size());
  out->lanes = lanes;
  out->locate_groups();
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int r = 0; r < rows; ++r) {
    const uint8_t* src = w + r * row_bytes;
    uint8_t* dst = out->values.data() + static_cast<size_t>(r) * groups * kGroup;
    if (Q4 && lanes) {
      // Per block of G groups, packed slice k (4G bytes): its low nibbles are value slice k,
      // its high nibbles value slice 4 + k.
      for (int g0 = 0; g0 < groups; g0 += kLaneBlockGroups) {
        const int G = std::min(kLaneBlockGroups, groups - g0);
        const __mmask64 m = G == kLaneBlockGroups ? ~__mmask64{0} : (__mmask64{1} << (4 * G)) - 1;
        for (int k = 0; k < 4; ++k) {
          const __m512i packed = _mm512_maskz_loadu_epi8(m, src + g0 * 16 + 4 * G * k);
          uint8_t* block = dst + g0 * kGroup;
          _mm512_mask_storeu_epi8(block + 4 * G * k, m,
                                  _mm512_and_si512(packed, _mm512_set1_epi8(0x0F)));
          _mm512_mask_storeu_epi8(
              block + 4 * G * (4 + k), m,
              _mm512_and_si512(_mm512_srli_epi16(packed, 4), _mm512_set1_epi8(0x0F)));
        }
      }
    } else if constexpr (Q4) {
      // A group's 16 bytes hold its values i and 16 + i in byte i's low and high nibbles.
      for (int g = 0; g < groups; ++g) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + g * 16));
        const __m256i both =
            _mm256_inserti128_si256(_mm256_castsi128_si256(bytes), _mm_srli_epi16(bytes, 4), 1);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + g * kGroup),
                            _mm256_and_si256(both, _mm256_set1_epi8(0x0F)));
      }
    } else {
      int c = 0;
      for (; c + 64 <= cols; c += 64)
        _mm512_storeu_si512(dst + c, _mm512_xor_si512(_mm512_loadu_si512(src + c), flip));
      // The last values and the zeros that pad them to a whole group (at most 64 bytes).
      const auto mask = [](int n) { return n >= 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1; };
      const __mmask64 valid = mask(cols - c);
      _mm512_mask_storeu_epi8(dst + c, mask(groups * kGroup - c),
                              _mm512_xor_si512(_mm512_maskz_loadu_epi8(valid, src + c),
                                               _mm512_maskz_mov_epi8(valid, flip)));
    }
    // The f16 scales (q4: (scale, min) pairs, one int32 each) to f32, 16 groups at a time.
    const uint16_t* s = scales + r * row_scales;
    float* fs = out->scales.data() + static_cast<size_t>(r) * groups;
    for (int g = 0; g < groups; g += 16) {
      const __mmask16 m = static_cast<__mmask16>((1u << std::min(16, groups - g)) - 1);
      if constexpr (Q4) {
        const __m512i pairs = _mm512_maskz_loadu_epi32(m, s + 2 * g);
        _mm512_mask_storeu_ps(fs + g, m, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(pairs)));
        _mm512_mask_storeu_ps(out->mins.data() + static_cast<size_t>(r) * groups + g, m,
                              _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(pairs, 16))));
      } else {
        _mm512_mask_storeu_ps(fs + g, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s + g)));
      }
    }
  }
}

// y[i·ldy + a] = Σ_c W[r + a][c] · x̂[token i of block b][c] for the R rows of the copy from r
// and the block's first `tokens` tokens.
template <bool Q4, int R>
WHALE_VNNI_TARGET void tile_sums(const PanelCopy& w, int r, const TokenBlocks& x, int b, int tokens,
                                 float* y, int ldy) {
  const uint8_t* rows[R];
  const float* scales[R];
  const float* mins[R];
  __m512 sum[R];
#pragma GCC unroll 8
  for (int a = 0; a < R; ++a) {
    rows[a] = w.row(r + a);
    scales[a] = w.scales.data() + static_cast<size_t>(r + a) * w.groups;
    mins[a] = Q4 ? w.mins.data() + static_cast<size_t>(r + a) * w.groups : nullptr;
    sum[a] = _mm512_setzero_ps();
  }
  for (int g = 0; g < w.groups; ++g) {
    const uint8_t* xg = x.group(b, g);
    int first[R], step[R];
#pragma GCC unroll 8
    for (int a = 0; a < R; ++a) {
      const PanelCopy::Place& p = w.place(r + a, g);
      first[a] = p.first;
      step[a] = p.step;
    }
    // q8's codes + 128 against x̂: the sums start from −128 · Σ x̂ of the group, per token.
    const __m512i start =
        Q4 ? _mm512_setzero_si512() : _mm512_load_si512(xg + TokenBlocks::kOffsetsOffset);
    __m512i acc[R];
#pragma GCC unroll 8
    for (int a = 0; a < R; ++a) acc[a] = start;
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      const __m512i codes = _mm512_load_si512(xg + 64 * k);
#pragma GCC unroll 8
      for (int a = 0; a < R; ++a) {
        int32_t four;
        std::memcpy(&four, rows[a] + first[a] + step[a] * k, 4);
        acc[a] = _mm512_dpbusd_epi32(acc[a], _mm512_set1_epi32(four), codes);
      }
    }
    const __m512 token_scales = _mm512_load_ps(xg + TokenBlocks::kScalesOffset);
#pragma GCC unroll 8
    for (int a = 0; a < R; ++a)
      sum[a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[a]),
                               _mm512_mul_ps(token_scales, _mm512_set1_ps(scales[a][g])), sum[a]);
    if constexpr (Q4) {  // min · Σ x̂ = min · (activation scale · Σ codes)
      const __m512 terms = _mm512_load_ps(xg + TokenBlocks::kMinTermsOffset);
#pragma GCC unroll 8
      for (int a = 0; a < R; ++a)
        sum[a] = _mm512_fmadd_ps(terms, _mm512_set1_ps(mins[a][g]), sum[a]);
    }
  }
  store_token_sums(sum, tokens, y, ldy);
}

template <bool Q4>
void gemm(const uint8_t* w, const uint16_t* scales, int rows, int cols, const float* x, int T,
          float* y, int ldy, int lanes) {
  Int8Activations xq;
  quantize_activations(x, T, cols, &xq);
  TokenBlocks blocks;
  interleave_tokens(xq, &blocks);
  const size_t row_bytes = Format<Q4>::row_bytes(cols);
  const size_t row_scales = static_cast<size_t>(groups_of(cols)) * Format<Q4>::kScalesPerGroup;
  using Tile = void (*)(const PanelCopy&, int, const TokenBlocks&, int, int, float*, int);
  static constexpr Tile kTiles[kTileRows] = {tile_sums<Q4, 1>, tile_sums<Q4, 2>, tile_sums<Q4, 3>,
                                             tile_sums<Q4, 4>, tile_sums<Q4, 5>, tile_sums<Q4, 6>,
                                             tile_sums<Q4, 7>, tile_sums<Q4, 8>};
  const int max_rows =
      std::clamp(static_cast<int>(kPanelBytes / (groups_of(cols) * kGroup)) / kTileRows * kTileRows,
                 kTileRows, kMaxPanelRows);
  for_each_panel(
      rows, static_cast<size_t>(rows) * cols * T, kTileRows, max_rows, [&](int r0, int r1) {
        thread_local PanelCopy panel;  // reused: no allocation per panel
        copy_panel<Q4>(w + r0 * row_bytes, scales + r0 * row_scales, cols, r1 - r0, lanes, &panel);
        // Token blocks outer: a block's codes (45 KiB for 2048 columns) stay near while
        // the panel's tiles pass over them.
        for (int b = 0; b < blocks.blocks; ++b) {
          const int tokens = std::min(kLaneTokens, T - b * kLaneTokens);
          for (int r = r0; r < r1; r += kTileRows) {
            const int here = std::min(kTileRows, r1 - r);
            kTiles[here - 1](panel, r - r0, blocks, b, tokens,
                             y + static_cast<size_t>(b) * kLaneTokens * ldy + r, ldy);
          }
        }
      });
}

// Where the quantizers write: value i's code, group g's scale, min term, lane offsets and group
// offset, in a row of the activations.
struct RowWriter {
  uint8_t* row;
  uint8_t* code(int i) const { return row + Int8Activations::code_offset(i); }
  float* scale(int g) const {
    return reinterpret_cast<float*>(row + Int8Activations::scale_offset(g));
  }
  float* min_term(int g) const {
    return reinterpret_cast<float*>(row + Int8Activations::min_term_offset(g));
  }
  int32_t* group_offset(int g) const {
    return reinterpret_cast<int32_t*>(row + Int8Activations::group_offset_offset(g));
  }
  // Group g's 8 lane offsets (the second half of its chunk's 16).
  int32_t* lane_offsets(int g) const {
    return reinterpret_cast<int32_t*>(row + Int8Activations::lane_offsets_offset(g));
  }
};

// One row by AVX-512, group by group (vnni_target.h's quantize_group).
WHALE_VNNI_TARGET void quantize_row(const float* x, int cols, const RowWriter& out) {
  for (int g = 0; g < groups_of(cols); ++g) {
    const int i = g * kGroup;
    __m512i q0, q1;
    const float scale = quantize_group(x + i, std::min(kGroup, cols - i), &q0, &q1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out.code(i)), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out.code(i + 16)), _mm512_cvtepi32_epi8(q1));
    const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    *out.scale(g) = scale;
    *out.min_term(g) = scale * static_cast<float>(sum);
    *out.group_offset(g) = -128 * sum;
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
// scales, group offsets and min terms) stays 0, which the kernels rely on.
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
      *row.group_offset(g) = -128 * sum;
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
int Int8Activations::group_offset(int t, int g) const {
  int32_t v;
  std::memcpy(&v, row(t) + group_offset_offset(g), 4);
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
             float* y, int ldy, int lanes) {
  // Panels start at multiples of kTileRows: each super row lies whole in one.
  check(lanes <= 1 || (kTileRows % lanes == 0 && rows % lanes == 0),
        "q8_gemm: super rows of " + std::to_string(lanes) + " rows do not tile " +
            std::to_string(rows) + " rows");
  gemm<false>(reinterpret_cast<const uint8_t*>(codes), scales, rows, cols, x, T, y, ldy, lanes);
}
void q4_gemm(const uint8_t* packed, const uint16_t* scale_min, int rows, int cols, const float* x,
             int T, float* y, int ldy, bool lanes) {
  gemm<true>(packed, scale_min, rows, cols, x, T, y, ldy, lanes);
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
