#include "ops/group_lanes.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "base/error.h"
#include "ops/kernels.h"
#include "ops/precision.h"
#include "ops/vnni_target.h"

namespace whale {

// GCC 12's _mm512_reduce_add_ps reads an uninitialized register on purpose (ops/int8_gemm.cc).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace {

constexpr int kGroup = 32;
constexpr int kSlices = kGroup / 4;  // 4-byte slices of a group: one vpdpbusd lane each
constexpr int kBlockValues = kLaneBlockGroups * kGroup;

// Groups in the block that holds group g of a row of `groups` groups.
int block_groups(int groups, int g) {
  return std::min(kLaneBlockGroups, groups - g / kLaneBlockGroups * kLaneBlockGroups);
}

}  // namespace

size_t q8_lane_index(int cols, int i) {
  const int g = i / kGroup, j = i % kGroup, G = block_groups(cols / kGroup, g);
  return static_cast<size_t>(g / kLaneBlockGroups) * kBlockValues + (j / 4) * 4 * G +
         (g % kLaneBlockGroups) * 4 + j % 4;
}

namespace {
// A full block (G = 16) by AVX-512 gathers, 16 dwords a vector (the reordering at load touches
// every weight of the model).
template <int kGroupBytes, bool kToLanes>
WHALE_VNNI_TARGET void reorder_full_block(const uint8_t* from, uint8_t* to) {
  constexpr int kGroupSlices = kGroupBytes / 4;
#pragma GCC unroll 8
  for (int v = 0; v < kGroupSlices; ++v) {
    alignas(64) int32_t source[16];  // the dword of `from` that output dword 16v + j takes
    for (int j = 0; j < 16; ++j) {
      const int o = 16 * v + j;
      source[j] =
          kToLanes ? kGroupSlices * (o % 16) + o / 16 : 16 * (o % kGroupSlices) + o / kGroupSlices;
    }
    _mm512_storeu_si512(to + 64 * v, _mm512_i32gather_epi32(_mm512_load_si512(source), from, 4));
  }
}

// A 4-byte slice at a time: slice k of group i moves between dword kGroupSlices · i + k of the
// block in the stored order and dword G · k + i in the reordered one (a transpose of G × slices
// dwords). q8 groups are 32 bytes (8 slices), q4 groups 16 packed bytes (4 slices).
template <int kGroupBytes, bool kToLanes>
void reorder_row(const uint8_t* in, int cols, uint8_t* out) {
  constexpr int kGroupSlices = kGroupBytes / 4;
  const int groups = cols / kGroup;
  const bool gathers = vnni_available();
  for (int g0 = 0; g0 < groups; g0 += kLaneBlockGroups) {
    const int G = std::min(kLaneBlockGroups, groups - g0);
    const uint8_t* from = in + static_cast<size_t>(g0) * kGroupBytes;
    uint8_t* to = out + static_cast<size_t>(g0) * kGroupBytes;
    if (G == kLaneBlockGroups && gathers) {
      reorder_full_block<kGroupBytes, kToLanes>(from, to);
      continue;
    }
    for (int i = 0; i < G; ++i)
      for (int k = 0; k < kGroupSlices; ++k) {
        const int stored = 4 * (kGroupSlices * i + k), reordered = 4 * (G * k + i);
        std::memcpy(to + (kToLanes ? reordered : stored), from + (kToLanes ? stored : reordered),
                    4);
      }
  }
}
}  // namespace

void q8_row_to_lanes(const int8_t* codes, int cols, int8_t* out) {
  reorder_row<kGroup, true>(reinterpret_cast<const uint8_t*>(codes), cols,
                            reinterpret_cast<uint8_t*>(out));
}
void q8_row_from_lanes(const int8_t* lanes, int cols, int8_t* out) {
  reorder_row<kGroup, false>(reinterpret_cast<const uint8_t*>(lanes), cols,
                             reinterpret_cast<uint8_t*>(out));
}
void q4_row_to_lanes(const uint8_t* packed, int cols, uint8_t* out) {
  reorder_row<kGroup / 2, true>(packed, cols, out);
}
void q4_row_from_lanes(const uint8_t* lanes, int cols, uint8_t* out) {
  reorder_row<kGroup / 2, false>(lanes, cols, out);
}
size_t q4_lane_index(int cols, int b) {
  const int g = b / 16, j = b % 16, G = block_groups(cols / kGroup, g);
  return static_cast<size_t>(g / kLaneBlockGroups) * kLaneBlockGroups * 16 + (j / 4) * 4 * G +
         (g % kLaneBlockGroups) * 4 + j % 4;
}

int LaneActivations::code(int t, int i) const {
  const int g = i / kGroup, j = i % kGroup;
  return static_cast<int8_t>(row(t)[static_cast<size_t>(g / kLaneBlockGroups) * kBlockBytes +
                                    (j / 4) * 64 + (g % kLaneBlockGroups) * 4 + j % 4]);
}
namespace {
// Group g's 4-byte value in the array at `offset` of its block (scales or sum starts).
template <class T>
T block_lane(const uint8_t* row, int g, int offset) {
  T v;
  std::memcpy(&v,
              row + static_cast<size_t>(g / kLaneBlockGroups) * LaneActivations::kBlockBytes +
                  offset + (g % kLaneBlockGroups) * 4,
              4);
  return v;
}
}  // namespace

float LaneActivations::scale(int t, int g) const {
  return block_lane<float>(row(t), g, kScalesOffset);
}
int LaneActivations::sum_start(int t, int g) const {
  return block_lane<int32_t>(row(t), g, kStartsOffset);
}

namespace {

// One row, group by group as int8_gemm.cc's quantize_row (vnni_target.h's quantize_group).
WHALE_VNNI_TARGET void quantize_lane_row(const float* x, int cols, uint8_t* row) {
  for (int g = 0; g < cols / kGroup; ++g) {
    __m512i q0, q1;
    const float scale = quantize_group(x + g * kGroup, kGroup, &q0, &q1);
    alignas(32) int8_t codes[kGroup];
    _mm_store_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(q0));
    _mm_store_si128(reinterpret_cast<__m128i*>(codes + 16), _mm512_cvtepi32_epi8(q1));
    uint8_t* block = row + static_cast<size_t>(g / kLaneBlockGroups) * LaneActivations::kBlockBytes;
    const int lane = g % kLaneBlockGroups;
    for (int k = 0; k < kSlices; ++k) std::memcpy(block + k * 64 + lane * 4, codes + 4 * k, 4);
    const int32_t start = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    std::memcpy(block + LaneActivations::kScalesOffset + lane * 4, &scale, 4);
    std::memcpy(block + LaneActivations::kStartsOffset + lane * 4, &start, 4);
  }
}

// One block of G groups (kShort: G < 16, its slices 4G bytes apart and loaded under a mask; the
// activations' lanes past G are zeros) into the R rows' sums: per row two vpdpbusd chains (even
// and odd slices) from the row's sum starts, then one conversion and FMA by the weight ×
// activation scales.
template <int R, bool kShort, bool kOverread = false>
WHALE_VNNI_TARGET __attribute__((always_inline)) inline void block_sums(
    const uint8_t* w, const uint16_t* block_scales, int G, const uint8_t* const* xr, size_t at,
    __m512* sum) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __mmask64 bytes = kShort ? (__mmask64{1} << (4 * G)) - 1 : ~__mmask64{0};
  const __m512 weight_scales = _mm512_cvtph_ps(
      kShort ? _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << G) - 1), block_scales)
             : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block_scales)));
  __m512i acc[R][2];
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) {
    acc[t][0] = _mm512_load_si512(xr[t] + at + LaneActivations::kStartsOffset);
    acc[t][1] = _mm512_setzero_si512();
  }
#pragma GCC unroll 8
  for (int k = 0; k < kSlices; ++k) {
    const __m512i slice = !kShort     ? _mm512_loadu_si512(w + 64 * k)
                          : kOverread ? _mm512_loadu_si512(w + 4 * G * k)
                                      : _mm512_maskz_loadu_epi8(bytes, w + 4 * G * k);
    const __m512i wv = _mm512_xor_si512(slice, flip);
#pragma GCC unroll 6
    for (int t = 0; t < R; ++t)
      acc[t][k & 1] =
          _mm512_dpbusd_epi32(acc[t][k & 1], wv, _mm512_load_si512(xr[t] + at + 64 * k));
  }
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) {
    const __m512 activation_scales =
        _mm512_load_ps(reinterpret_cast<const float*>(xr[t] + at + LaneActivations::kScalesOffset));
    sum[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[t][0], acc[t][1])),
                             _mm512_mul_ps(weight_scales, activation_scales), sum[t]);
  }
}

// The q4 block: slice k (4G packed bytes) holds in its low nibbles values 4k … 4k + 3 of each
// group (activation slice k) and in its high nibbles values 16 + 4k … (slice 4 + k); the sums
// start at 0 (nibbles are unsigned already), and each group adds min · Σ x̂ = min · scale · Σ
// codes, with Σ codes = −start / 128 from the activations' sum starts (exact in f32).
template <int R, bool kShort, bool kOverread = false>
WHALE_VNNI_TARGET __attribute__((always_inline)) inline void q4_block_sums(
    const uint8_t* w, const uint16_t* block_pairs, int G, const uint8_t* const* xr, size_t at,
    __m512* sum) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __mmask64 bytes = kShort ? (__mmask64{1} << (4 * G)) - 1 : ~__mmask64{0};
  // 16 (scale, min) pairs: f16 → f32 halves, then the scales and the minimums apart.
  const __m512i pairs =
      kShort ? _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << G) - 1), block_pairs)
             : _mm512_loadu_si512(block_pairs);
  const __m512 first = _mm512_cvtph_ps(_mm512_castsi512_si256(pairs));
  const __m512 second = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(pairs, 1));
  const __m512i evens =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512 weight_scales = _mm512_permutex2var_ps(first, evens, second);
  const __m512 weight_mins =
      _mm512_permutex2var_ps(first, _mm512_add_epi32(evens, _mm512_set1_epi32(1)), second);
  __m512i acc[R][2];
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_si512();
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m512i slice = !kShort     ? _mm512_loadu_si512(w + 64 * k)
                          : kOverread ? _mm512_loadu_si512(w + 4 * G * k)
                                      : _mm512_maskz_loadu_epi8(bytes, w + 4 * G * k);
    const __m512i lo = _mm512_and_si512(slice, low);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(slice, 4), low);
#pragma GCC unroll 6
    for (int t = 0; t < R; ++t) {
      acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], lo, _mm512_load_si512(xr[t] + at + 64 * k));
      acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], hi, _mm512_load_si512(xr[t] + at + 64 * (4 + k)));
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) {
    const __m512 activation_scales =
        _mm512_load_ps(reinterpret_cast<const float*>(xr[t] + at + LaneActivations::kScalesOffset));
    const __m512 code_sums = _mm512_mul_ps(
        _mm512_cvtepi32_ps(_mm512_load_si512(xr[t] + at + LaneActivations::kStartsOffset)),
        _mm512_set1_ps(-1.0f / 128));
    sum[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[t][0], acc[t][1])),
                             _mm512_mul_ps(weight_scales, activation_scales), sum[t]);
    sum[t] = _mm512_fmadd_ps(weight_mins, _mm512_mul_ps(activation_scales, code_sums), sum[t]);
  }
}

// out[t] for R activation rows from t0, the weight row read once (q8: a block is 512 code bytes
// and 16 scales; q4: 256 packed bytes and 16 (scale, min) pairs).
template <bool Q4, int R, bool kOverread>
WHALE_VNNI_TARGET __attribute__((always_inline)) inline void lane_dot_rows(const uint8_t* w,
                                                                           const uint16_t* scales,
                                                                           int cols,
                                                                           const LaneActivations& x,
                                                                           int t0, float* out) {
  constexpr int kBlockBytes = Q4 ? kBlockValues / 2 : kBlockValues;
  constexpr int kBlockScales = Q4 ? 2 * kLaneBlockGroups : kLaneBlockGroups;
  const uint8_t* xr[R];
  __m512 sum[R];
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) {
    xr[t] = x.row(t0 + t);
    sum[t] = _mm512_setzero_ps();
  }
  const int groups = cols / kGroup, full = groups / kLaneBlockGroups;
  for (int b = 0; b < full; ++b) {
    const uint8_t* block = w + static_cast<size_t>(b) * kBlockBytes;
    prefetch_page_ahead(block, kBlockBytes);  // (kernels.h)
    const size_t at = static_cast<size_t>(b) * LaneActivations::kBlockBytes;
    if constexpr (Q4)
      q4_block_sums<R, false>(block, scales + b * kBlockScales, kLaneBlockGroups, xr, at, sum);
    else
      block_sums<R, false>(block, scales + b * kBlockScales, kLaneBlockGroups, xr, at, sum);
  }
  if (const int G = groups - full * kLaneBlockGroups; G > 0) {
    const uint8_t* block = w + static_cast<size_t>(full) * kBlockBytes;
    // The short block is a step of its own length, the next row's first block follows it: every
    // page start falls in exactly one step (prefetch_page_ahead; prefetch_weights_ahead assumes
    // steps of one size, and rows of 1408 columns left some pages without a prefetch).
    prefetch_page_ahead(block, G * (Q4 ? kGroup / 2 : kGroup));  // (kernels.h)
    const size_t at = static_cast<size_t>(full) * LaneActivations::kBlockBytes;
    if constexpr (Q4)
      q4_block_sums<R, true, kOverread>(block, scales + full * kBlockScales, G, xr, at, sum);
    else
      block_sums<R, true, kOverread>(block, scales + full * kBlockScales, G, xr, at, sum);
  }
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) out[t] = _mm512_reduce_add_ps(sum[t]);
}

}  // namespace

void quantize_lane_activations(const float* x, int T, int cols, LaneActivations* out) {
  check(group_lanes_fit(cols),
        "group-lane activations need whole groups of 32 values, not " + std::to_string(cols));
  out->T = T;
  out->cols = cols;
  out->blocks = (cols / kGroup + kLaneBlockGroups - 1) / kLaneBlockGroups;
  // Zeros first: the lanes past a short last block must hold code 0, scale 0, start 0.
  out->data.assign(static_cast<size_t>(T) * out->blocks * LaneActivations::kBlockBytes, 0);
  for (int t = 0; t < T; ++t)
    quantize_lane_row(
        x + static_cast<size_t>(t) * cols, cols,
        out->data.data() + static_cast<size_t>(t) * out->blocks * LaneActivations::kBlockBytes);
}

namespace {

// Rows [0, rows) against the R activation rows from t0: y[t · ldy + r].
template <bool Q4, int R>
WHALE_VNNI_TARGET void lane_row_range(const uint8_t* w, const uint16_t* scales, int rows, int cols,
                                      const LaneActivations& x, int t0, float* y, size_t ldy) {
  const size_t row_bytes = Q4 ? cols / 2 : cols, row_scales = (Q4 ? 2 : 1) * (cols / kGroup);
  // A row's short last block (cols not a multiple of 512) is read by whole 64-byte loads at its
  // 4G-byte slice steps, up to 64 − 4G bytes into the next row (lanes past G meet activation
  // codes of zero, so the sums are the same bits), except on the range's last row, whose next
  // bytes may lie past the matrix: there under a mask. Masked, v2-lite-8l's expert down_proj
  // (1408 columns: 2 blocks and 12 groups) read from memory at 49–62% of its gate_proj's rate;
  // with whole loads, which also touch the next row's first line early, at 78–89%, and q8 decode
  // steps ran 1.05–1.06× faster (bench/inference/README.md, session 19). Rows too short to hold
  // the overhang stay masked.
  const int short_groups = cols / kGroup % kLaneBlockGroups;
  // Rows whose next row holds all the overhang (not rows of a group or two of q4).
  const int overread_rows =
      short_groups > 0 && 64 - 4 * short_groups <= static_cast<int>(row_bytes) ? rows - 1 : 0;
  for (int r = 0; r < rows; ++r) {
    float out[R];
    if (r < overread_rows)
      lane_dot_rows<Q4, R, true>(w + r * row_bytes, scales + r * row_scales, cols, x, t0, out);
    else
      lane_dot_rows<Q4, R, false>(w + r * row_bytes, scales + r * row_scales, cols, x, t0, out);
#pragma GCC unroll 6
    for (int t = 0; t < R; ++t) y[(t0 + t) * ldy + r] = out[t];
  }
}

constexpr int kPass = 6;  // activation rows per pass over a weight row: 6 × 2 chains + 6 sums
using RowRange = void (*)(const uint8_t*, const uint16_t*, int, int, const LaneActivations&, int,
                          float*, size_t);
template <bool Q4>
constexpr RowRange kRowRanges[kPass] = {lane_row_range<Q4, 1>, lane_row_range<Q4, 2>,
                                        lane_row_range<Q4, 3>, lane_row_range<Q4, 4>,
                                        lane_row_range<Q4, 5>, lane_row_range<Q4, 6>};

template <bool Q4>
void row_range(const uint8_t* w, const uint16_t* scales, int rows, int cols,
               const LaneActivations& x, float* y, size_t ldy) {
  for (int t0 = 0; t0 < x.T; t0 += kPass)
    kRowRanges<Q4>[std::min(kPass, x.T - t0) - 1](w, scales, rows, cols, x, t0, y, ldy);
}

}  // namespace

int super_rows(int cols) {
  check(group_lanes_fit(cols), "super rows need whole groups of 32 values");
  return kLaneBlockGroups / std::gcd(cols / kGroup, kLaneBlockGroups);
}

void quantize_super_activations(const float* x, int T, int cols, LaneActivations* out) {
  const int R = super_rows(cols);
  std::vector<float> repeated(static_cast<size_t>(T) * R * cols);
  for (int t = 0; t < T; ++t)
    for (int k = 0; k < R; ++k)
      std::copy_n(x + static_cast<size_t>(t) * cols, cols,
                  repeated.data() + (static_cast<size_t>(t) * R + k) * cols);
  quantize_lane_activations(repeated.data(), T, R * cols, out);
}

namespace {
// A super row of R rows against one activation row: each block's lane sums go to the rows its
// groups belong to — the whole block to one row's sum, or, where the block holds the end of one
// row and the start of the next (or more, for rows shorter than a block), lane masks.
template <int R>
WHALE_VNNI_TARGET __attribute__((always_inline)) inline void super_row_dots(
    const uint8_t* w, const uint16_t* scales, int groups, const uint8_t* xr, float* out) {
  __m512 sum[R];
#pragma GCC unroll 8
  for (int k = 0; k < R; ++k) sum[k] = _mm512_setzero_ps();
  const int blocks = R * groups / kLaneBlockGroups;
  for (int b = 0; b < blocks; ++b) {
    const uint8_t* block = w + static_cast<size_t>(b) * kBlockValues;
    prefetch_page_ahead(block, kBlockValues);  // (kernels.h)
    const size_t at = static_cast<size_t>(b) * LaneActivations::kBlockBytes;
    const int g0 = b * kLaneBlockGroups, first_row = g0 / groups,
              last_row = (g0 + kLaneBlockGroups - 1) / groups;
    __m512 lanes = _mm512_setzero_ps();
    block_sums<1, false>(block, scales + g0, kLaneBlockGroups, &xr, at, &lanes);
    if (first_row == last_row) {
      sum[first_row] = _mm512_add_ps(sum[first_row], lanes);
      continue;
    }
    for (int k = first_row; k <= last_row; ++k) {
      // Lanes i with k · groups ≤ g0 + i < (k + 1) · groups.
      const int lo = std::max(0, k * groups - g0), hi = std::min(16, (k + 1) * groups - g0);
      const __mmask16 mask = static_cast<__mmask16>(((1u << hi) - 1) & ~((1u << lo) - 1));
      sum[k] = _mm512_mask_add_ps(sum[k], mask, sum[k], lanes);
    }
  }
#pragma GCC unroll 8
  for (int k = 0; k < R; ++k) out[k] = _mm512_reduce_add_ps(sum[k]);
}

template <int R>
WHALE_VNNI_TARGET void super_rows_range(const uint8_t* w, const uint16_t* scales, int rows,
                                        int cols, const LaneActivations& xs, float* y, size_t ldy) {
  const int groups = cols / kGroup;
  for (int r = 0; r < rows; r += R)
    // Token by token: the super row (R · cols bytes, a few KiB) stays in L1 for the next token.
    for (int t = 0; t < xs.T; ++t) {
      float out[R];
      super_row_dots<R>(w + static_cast<size_t>(r) * cols, scales + static_cast<size_t>(r) * groups,
                        groups, xs.row(t), out);
      for (int k = 0; k < R; ++k) y[t * ldy + r + k] = out[k];
    }
}
}  // namespace

void q8_super_rows_dot_range(const int8_t* lanes, const uint16_t* scales, int rows, int cols,
                             const LaneActivations& xs, float* y, size_t ldy) {
  const int R = super_rows(cols);
  check(rows % R == 0 && xs.cols == R * cols,
        "super rows: whole super rows, and activations from quantize_super_activations");
  const auto* w = reinterpret_cast<const uint8_t*>(lanes);
  switch (R) {
    case 1:
      return super_rows_range<1>(w, scales, rows, cols, xs, y, ldy);
    case 2:
      return super_rows_range<2>(w, scales, rows, cols, xs, y, ldy);
    case 4:
      return super_rows_range<4>(w, scales, rows, cols, xs, y, ldy);
    case 8:
      return super_rows_range<8>(w, scales, rows, cols, xs, y, ldy);
    default:
      return super_rows_range<16>(w, scales, rows, cols, xs, y, ldy);
  }
}

void q8_lanes_dot_row_range(const int8_t* lanes, const uint16_t* scales, int rows, int cols,
                            const LaneActivations& x, float* y, size_t ldy) {
  row_range<false>(reinterpret_cast<const uint8_t*>(lanes), scales, rows, cols, x, y, ldy);
}
void q4_lanes_dot_row_range(const uint8_t* lanes, const uint16_t* scale_min, int rows, int cols,
                            const LaneActivations& x, float* y, size_t ldy) {
  row_range<true>(lanes, scale_min, rows, cols, x, y, ldy);
}

}  // namespace whale
