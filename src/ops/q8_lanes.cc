#include "ops/q8_lanes.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "ops/kernels.h"
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

// A 4-byte slice at a time: slice k of group i moves between dword 8i + k of the block in the
// stored order and dword G·k + i in the reordered one (a transpose of G × 8 dwords).
template <bool kToLanes>
void reorder_row(const int8_t* in, int cols, int8_t* out) {
  const int groups = cols / kGroup;
  for (int g0 = 0; g0 < groups; g0 += kLaneBlockGroups) {
    const int G = std::min(kLaneBlockGroups, groups - g0);
    const int8_t* from = in + static_cast<size_t>(g0) * kGroup;
    int8_t* to = out + static_cast<size_t>(g0) * kGroup;
    for (int i = 0; i < G; ++i)
      for (int k = 0; k < kSlices; ++k) {
        const int stored = 4 * (kSlices * i + k), reordered = 4 * (G * k + i);
        std::memcpy(to + (kToLanes ? reordered : stored), from + (kToLanes ? stored : reordered),
                    4);
      }
  }
}

void q8_row_to_lanes(const int8_t* codes, int cols, int8_t* out) {
  reorder_row<true>(codes, cols, out);
}
void q8_row_from_lanes(const int8_t* lanes, int cols, int8_t* out) {
  reorder_row<false>(lanes, cols, out);
}

int LaneActivations::code(int t, int i) const {
  const int g = i / kGroup, j = i % kGroup;
  return static_cast<int8_t>(row(t)[static_cast<size_t>(g / kLaneBlockGroups) * kBlockBytes +
                                    (j / 4) * 64 + (g % kLaneBlockGroups) * 4 + j % 4]);
}
float LaneActivations::scale(int t, int g) const {
  float s;
  std::memcpy(&s,
              row(t) + static_cast<size_t>(g / kLaneBlockGroups) * kBlockBytes + kScalesOffset +
                  (g % kLaneBlockGroups) * 4,
              4);
  return s;
}
int LaneActivations::sum_start(int t, int g) const {
  int32_t v;
  std::memcpy(&v,
              row(t) + static_cast<size_t>(g / kLaneBlockGroups) * kBlockBytes + kStartsOffset +
                  (g % kLaneBlockGroups) * 4,
              4);
  return v;
}

namespace {

// One row: per group the maximum |x|, then x · (1 / scale) rounded to nearest even, as
// int8_gemm.cc's quantize_row (the tests hold both to the same scalar reference).
WHALE_VNNI_TARGET void quantize_lane_row(const float* x, int cols, uint8_t* row) {
  for (int g = 0; g < cols / kGroup; ++g) {
    const __m512 v0 = _mm512_loadu_ps(x + g * kGroup), v1 = _mm512_loadu_ps(x + g * kGroup + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float scale = amax / 127.0f, inverse = scale > 0 ? 1.0f / scale : 0.0f;
    const __m512 inv = _mm512_set1_ps(inverse), lo = _mm512_set1_ps(-127), hi = _mm512_set1_ps(127);
    const __m512i q0 =
        _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v0, inv), lo), hi));
    const __m512i q1 =
        _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v1, inv), lo), hi));
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
template <int R, bool kShort>
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
    const __m512i slice =
        kShort ? _mm512_maskz_loadu_epi8(bytes, w + 4 * G * k) : _mm512_loadu_si512(w + 64 * k);
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

// out[t] for R activation rows from t0, the weight row read once.
template <int R>
WHALE_VNNI_TARGET __attribute__((always_inline)) inline void lane_dot_rows(const int8_t* lanes,
                                                                           const uint16_t* scales,
                                                                           int cols,
                                                                           const LaneActivations& x,
                                                                           int t0, float* out) {
  const uint8_t* w = reinterpret_cast<const uint8_t*>(lanes);
  const uint8_t* xr[R];
  __m512 sum[R];
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) {
    xr[t] = x.row(t0 + t);
    sum[t] = _mm512_setzero_ps();
  }
  const int groups = cols / kGroup, full = groups / kLaneBlockGroups;
  for (int b = 0; b < full; ++b) {
    const uint8_t* block = w + static_cast<size_t>(b) * kBlockValues;
    // The weights ahead into L2 (kernels.h's kWeightPrefetchBytes).
    _mm_prefetch(reinterpret_cast<const char*>(block) + kWeightPrefetchBytes, _MM_HINT_T1);
    block_sums<R, false>(block, scales + b * kLaneBlockGroups, kLaneBlockGroups, xr,
                         static_cast<size_t>(b) * LaneActivations::kBlockBytes, sum);
  }
  if (const int G = groups - full * kLaneBlockGroups; G > 0)
    block_sums<R, true>(w + static_cast<size_t>(full) * kBlockValues,
                        scales + full * kLaneBlockGroups, G, xr,
                        static_cast<size_t>(full) * LaneActivations::kBlockBytes, sum);
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) out[t] = _mm512_reduce_add_ps(sum[t]);
}

}  // namespace

void quantize_lane_activations(const float* x, int T, int cols, LaneActivations* out) {
  check(q8_lanes_fit(cols),
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
template <int R>
WHALE_VNNI_TARGET void lane_row_range(const int8_t* lanes, const uint16_t* scales, int rows,
                                      int cols, const LaneActivations& x, int t0, float* y,
                                      size_t ldy) {
  const int groups = cols / kGroup;
  for (int r = 0; r < rows; ++r) {
    float out[R];
    lane_dot_rows<R>(lanes + static_cast<size_t>(r) * cols,
                     scales + static_cast<size_t>(r) * groups, cols, x, t0, out);
#pragma GCC unroll 6
    for (int t = 0; t < R; ++t) y[(t0 + t) * ldy + r] = out[t];
  }
}

constexpr int kPass = 6;  // activation rows per pass over a weight row: 6 × 2 chains + 6 sums
using RowRange = void (*)(const int8_t*, const uint16_t*, int, int, const LaneActivations&, int,
                          float*, size_t);
constexpr RowRange kRowRanges[kPass] = {lane_row_range<1>, lane_row_range<2>, lane_row_range<3>,
                                        lane_row_range<4>, lane_row_range<5>, lane_row_range<6>};

}  // namespace

void q8_lanes_dot_row_range(const int8_t* lanes, const uint16_t* scales, int rows, int cols,
                            const LaneActivations& x, float* y, size_t ldy) {
  for (int t0 = 0; t0 < x.T; t0 += kPass)
    kRowRanges[std::min(kPass, x.T - t0) - 1](lanes, scales, rows, cols, x, t0, y, ldy);
}

void q8_lanes_dot_rows(const int8_t* lanes, const uint16_t* scales, int cols,
                       const LaneActivations& x, float* out) {
  q8_lanes_dot_row_range(lanes, scales, 1, cols, x, out, 1);
}

}  // namespace whale
