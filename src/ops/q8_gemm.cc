#include "ops/q8_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "ops/linear.h"
#include "ops/precision.h"
#include "tensor/dtype.h"

namespace whale {

// GCC 12's _mm512_reduce_add_ps reads an uninitialized register on purpose (its upper half is
// discarded); its header then warns at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Highway 1.0 has no VNNI-specific target to dispatch on, so these functions carry the
// instruction set themselves and run only after the CPU check below.
#define WHALE_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")))

namespace {

constexpr int kChunk = 64;        // bytes of codes per vpdpbusd: two groups of 32
constexpr int kLanes = 16;        // int32 sums per vpdpbusd, 8 per group
constexpr int kTileRows = 4;      // weight rows in one tile of 4 × 4 sums
constexpr int kTileTokens = 4;    // activation rows in one tile
constexpr int kPanelRows = 64;    // weight rows one thread takes at a time
constexpr int kBlockTokens = 64;  // activation rows kept in L2 while a panel passes over them
constexpr int kBlockCols = 4096;  // bytes of codes per pass: a panel's slice is 256 KiB

static_assert(kBlockCols % kChunk == 0, "only the last column block may be partial");

int groups_of(int cols) {
  return (cols + 31) / 32;
}
int padded_cols(int cols) {
  return (cols + kChunk - 1) / kChunk * kChunk;
}
__mmask64 chunk_mask(int valid) {
  return valid >= kChunk ? ~__mmask64{0} : (__mmask64{1} << valid) - 1;
}

// Lanes 0–7 take element 2k of a vector of 8 group scales, lanes 8–15 element 2k + 1: the scale
// of each int32 sum of the k-th 64-byte chunk.
WHALE_VNNI_TARGET __m512i pair_index(int k) {
  return _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(2 * k), _mm512_set1_epi32(2 * k + 1));
}

// The lane scales of chunk c of a weight row (groups 2c and 2c + 1; a missing last group reads 0).
WHALE_VNNI_TARGET __m512 chunk_weight_scales(const uint16_t* scales, int c, int groups) {
  const __mmask8 valid = groups - 2 * c >= 2 ? 0x3 : 0x1;
  const __m128 s = _mm_cvtph_ps(_mm_maskz_loadu_epi16(valid, scales + 2 * c));
  return _mm512_permutexvar_ps(pair_index(0), _mm512_castps128_ps512(s));
}

// −128 · Σ w over each group of a weight chunk, in vpdpbusd's lanes: the accumulator the
// activation products start from, cancelling the +128 offset of the activation codes.
WHALE_VNNI_TARGET __m512i offset_correction(__m512i w) {
  const __m512i zero = _mm512_setzero_si512();
  return _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, _mm512_set1_epi8(-128), w));
}

// out[t] = Σ over chunks of scale · (Σ w · x̂) for R activation rows: two partial sums per row (even
// and odd chunks of the 4-chunk steps), single masked chunks after them into the first, one
// reduction — the same for every R.
template <int R>
WHALE_VNNI_TARGET void dot_rows(const int8_t* w, const uint16_t* scales, int cols, const uint8_t* x,
                                int ldx, const float* xs, int ldxs, float* out) {
  __m512 sum[R][2];
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) sum[t][0] = sum[t][1] = _mm512_setzero_ps();
  const int groups = groups_of(cols), full_chunks = cols / kChunk;
  int c = 0;
  for (; c + 4 <= full_chunks; c += 4) {
    // The 8 groups' scales of these 4 chunks, converted once.
    const __m512 s8 = _mm512_castps256_ps512(
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 2 * c))));
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const int i = (c + k) * kChunk;
      const __m512 ws = _mm512_permutexvar_ps(pair_index(k), s8);
      const __m512i wv = _mm512_loadu_si512(w + i);
      const __m512i start = offset_correction(wv);
#pragma GCC unroll 6
      for (int t = 0; t < R; ++t) {
        const __m512i acc = _mm512_dpbusd_epi32(
            start, _mm512_loadu_si512(x + static_cast<size_t>(t) * ldx + i), wv);
        const __m512 scale = _mm512_mul_ps(
            ws, _mm512_loadu_ps(xs + static_cast<size_t>(t) * ldxs + (c + k) * kLanes));
        sum[t][k & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale, sum[t][k & 1]);
      }
    }
  }
  for (; c * kChunk < cols; ++c) {
    const int i = c * kChunk;
    const __m512 ws = chunk_weight_scales(scales, c, groups);
    const __m512i wv = _mm512_maskz_loadu_epi8(chunk_mask(cols - i), w + i);
    const __m512i start = offset_correction(wv);
#pragma GCC unroll 6
    for (int t = 0; t < R; ++t) {
      const __m512i acc =
          _mm512_dpbusd_epi32(start, _mm512_loadu_si512(x + static_cast<size_t>(t) * ldx + i), wv);
      const __m512 scale =
          _mm512_mul_ps(ws, _mm512_loadu_ps(xs + static_cast<size_t>(t) * ldxs + c * kLanes));
      sum[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale, sum[t][0]);
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t) out[t] = _mm512_reduce_add_ps(_mm512_add_ps(sum[t][0], sum[t][1]));
}

// out[a][b] = Σ_{chunks [c0, c1)} of kTileRows weight rows against RX activation rows; the
// sums stay in registers. prefetch: the next tile's weight rows, a line each per chunk.
template <int RX>
WHALE_VNNI_TARGET void tile_sums(const int8_t* const (&w)[kTileRows],
                                 const uint16_t* const (&ws)[kTileRows], int cols, const uint8_t* x,
                                 int ldx, const float* xs, int ldxs, int c0, int c1,
                                 float (&out)[kTileRows][kTileTokens], const int8_t* prefetch) {
  const int groups = groups_of(cols);
  __m512 sum[kTileRows][RX];
#pragma GCC unroll 4
  for (int a = 0; a < kTileRows; ++a)
#pragma GCC unroll 4
    for (int b = 0; b < RX; ++b) sum[a][b] = _mm512_setzero_ps();
  for (int c = c0; c < c1; ++c) {
    const int i = c * kChunk;
    const __mmask64 mask = chunk_mask(cols - i);
    __m512i wv[kTileRows], start[kTileRows];
    __m512 wscale[kTileRows];
    if (prefetch)
      for (int a = 0; a < kTileRows; ++a)
        _mm_prefetch(reinterpret_cast<const char*>(prefetch + static_cast<size_t>(a) * cols + i),
                     _MM_HINT_T0);
#pragma GCC unroll 4
    for (int a = 0; a < kTileRows; ++a) {
      wv[a] = _mm512_maskz_loadu_epi8(mask, w[a] + i);
      start[a] = offset_correction(wv[a]);
      wscale[a] = chunk_weight_scales(ws[a], c, groups);
    }
#pragma GCC unroll 4
    for (int b = 0; b < RX; ++b) {
      const __m512i xv = _mm512_loadu_si512(x + static_cast<size_t>(b) * ldx + i);
      const __m512 xscale = _mm512_loadu_ps(xs + static_cast<size_t>(b) * ldxs + c * kLanes);
#pragma GCC unroll 4
      for (int a = 0; a < kTileRows; ++a) {
        const __m512i acc = _mm512_dpbusd_epi32(start[a], xv, wv[a]);
        sum[a][b] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(wscale[a], xscale), sum[a][b]);
      }
    }
  }
#pragma GCC unroll 4
  for (int a = 0; a < kTileRows; ++a)
#pragma GCC unroll 4
    for (int b = 0; b < RX; ++b) out[a][b] = _mm512_reduce_add_ps(sum[a][b]);
}

// Weight rows [r0, r1) against every activation row, in blocks that stay in L2.
void panel(const int8_t* w, const uint16_t* scales, int cols, int r0, int r1,
           const Q8Activations& xq, float* y, int ldy) {
  const int groups = groups_of(cols), chunks = padded_cols(cols) / kChunk, T = xq.T;
  const int ldxs = xq.ld / 4;
  float sums[kTileRows][kTileTokens];
  for (int cb = 0; cb < chunks; cb += kBlockCols / kChunk) {
    const int ce = std::min(chunks, cb + kBlockCols / kChunk);
    for (int t0 = 0; t0 < T; t0 += kBlockTokens) {
      const int t1 = std::min(T, t0 + kBlockTokens);
      for (int r = r0; r < r1; r += kTileRows) {
        const int rows_here = std::min(kTileRows, r1 - r);
        const int8_t* wr[kTileRows];
        const uint16_t* sr[kTileRows];
        // Missing rows of a last partial tile repeat its last row; their sums are not stored.
        for (int a = 0; a < kTileRows; ++a) {
          const int row = r + std::min(a, rows_here - 1);
          wr[a] = w + static_cast<size_t>(row) * cols;
          sr[a] = scales + static_cast<size_t>(row) * groups;
        }
        const int8_t* next =
            r + kTileRows < r1 ? w + static_cast<size_t>(r + kTileRows) * cols : nullptr;
        for (int t = t0; t < t1; t += kTileTokens) {
          const int m = std::min(kTileTokens, t1 - t);
          const uint8_t* xt = xq.codes.data() + static_cast<size_t>(t) * xq.ld;
          const float* st = xq.scales.data() + static_cast<size_t>(t) * ldxs;
          const int8_t* pf = t == t0 ? next : nullptr;
          switch (m) {
            case 1:
              tile_sums<1>(wr, sr, cols, xt, xq.ld, st, ldxs, cb, ce, sums, pf);
              break;
            case 2:
              tile_sums<2>(wr, sr, cols, xt, xq.ld, st, ldxs, cb, ce, sums, pf);
              break;
            case 3:
              tile_sums<3>(wr, sr, cols, xt, xq.ld, st, ldxs, cb, ce, sums, pf);
              break;
            default:
              tile_sums<4>(wr, sr, cols, xt, xq.ld, st, ldxs, cb, ce, sums, pf);
          }
          for (int b = 0; b < m; ++b) {
            float* yt = y + static_cast<size_t>(t + b) * ldy + r;
            for (int a = 0; a < rows_here; ++a) yt[a] = cb == 0 ? sums[a][b] : yt[a] + sums[a][b];
          }
        }
      }
    }
  }
}

// One row's codes and lane scales, by AVX-512: per group, the maximum |x|, then x · (1 / scale)
// rounded to nearest even (the scalar reference's std::nearbyint in the default rounding mode).
WHALE_VNNI_TARGET void quantize_row(const float* x, int cols, uint8_t* codes, float* lane_scales) {
  const int groups = groups_of(cols);
  for (int g = 0; g < groups; ++g) {
    const int i = g * 32, valid = std::min(32, cols - i);
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
    const __m512i offset = _mm512_set1_epi32(128);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i),
                     _mm512_cvtepi32_epi8(_mm512_add_epi32(q0, offset)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i + 16),
                     _mm512_cvtepi32_epi8(_mm512_add_epi32(q1, offset)));
    std::fill_n(lane_scales + (g / 2) * kLanes + (g % 2) * 8, 8, scale);
  }
}

void prepare(int T, int cols, Q8Activations* out) {
  out->T = T;
  out->cols = cols;
  out->ld = padded_cols(cols);
  // Padding: codes 128 (= 0) and scales 0, also for the missing half of an odd last chunk.
  out->codes.assign(static_cast<size_t>(T) * out->ld, 128);
  out->scales.assign(static_cast<size_t>(T) * (out->ld / 4), 0.0f);
}

bool cpu_has_avx512_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

}  // namespace

bool q8_vnni_available() {
  static const bool available = cpu_has_avx512_vnni();
  return available;
}

bool use_q8_vnni() {
  return q8_vnni_available() && !exact_activations();
}

void quantize_activations(const float* x, int T, int cols, Q8Activations* out) {
  prepare(T, cols, out);
  // A partial last group's missing values are loaded as zeros: their codes are 128 too.
#pragma omp parallel for if (static_cast <size_t>(T) * cols > (1 << 20))
  for (int t = 0; t < T; ++t) {
    quantize_row(x + static_cast<size_t>(t) * cols, cols,
                 out->codes.data() + static_cast<size_t>(t) * out->ld,
                 out->scales.data() + static_cast<size_t>(t) * (out->ld / 4));
  }
}

void quantize_activations_reference(const float* x, int T, int cols, Q8Activations* out) {
  prepare(T, cols, out);
  for (int t = 0; t < T; ++t)
    for (int g = 0; g < groups_of(cols); ++g) {
      const float* v = x + static_cast<size_t>(t) * cols + g * 32;
      const int n = std::min(32, cols - g * 32);
      float amax = 0;
      for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float scale = amax / 127.0f, inverse = scale > 0 ? 1.0f / scale : 0.0f;
      for (int i = 0; i < n; ++i) {
        const float q = std::nearbyint(std::clamp(v[i] * inverse, -127.0f, 127.0f));
        out->codes[static_cast<size_t>(t) * out->ld + g * 32 + i] = static_cast<uint8_t>(q + 128);
      }
      for (int l = 0; l < 8; ++l)
        out->scales[static_cast<size_t>(t) * (out->ld / 4) + (g / 2) * kLanes + (g % 2) * 8 + l] =
            scale;
    }
}

void q8_dot_rows(const int8_t* w, const uint16_t* scales, int cols, const Q8Activations& x,
                 float* out) {
  constexpr int kPass = 6;  // 6 × 2 sums and the chunk's vectors in the 32 registers
  const int ldxs = x.ld / 4;
  for (int t0 = 0; t0 < x.T; t0 += kPass) {
    const uint8_t* xt = x.codes.data() + static_cast<size_t>(t0) * x.ld;
    const float* st = x.scales.data() + static_cast<size_t>(t0) * ldxs;
    switch (std::min(kPass, x.T - t0)) {
      case 1:
        dot_rows<1>(w, scales, cols, xt, x.ld, st, ldxs, out + t0);
        break;
      case 2:
        dot_rows<2>(w, scales, cols, xt, x.ld, st, ldxs, out + t0);
        break;
      case 3:
        dot_rows<3>(w, scales, cols, xt, x.ld, st, ldxs, out + t0);
        break;
      case 4:
        dot_rows<4>(w, scales, cols, xt, x.ld, st, ldxs, out + t0);
        break;
      case 5:
        dot_rows<5>(w, scales, cols, xt, x.ld, st, ldxs, out + t0);
        break;
      default:
        dot_rows<6>(w, scales, cols, xt, x.ld, st, ldxs, out + t0);
    }
  }
}

void q8_gemm(const int8_t* w, const uint16_t* scales, int rows, int cols, const float* x, int T,
             float* y, int ldy) {
  Q8Activations xq;
  quantize_activations(x, T, cols, &xq);
  const bool threads = static_cast<size_t>(rows) * cols * T > kLinearParallelWork;
  // Panels of up to kPanelRows rows, smaller for small matrices so that every thread gets several.
  const int team = threads ? omp_get_max_threads() : 1;
  const int panel_rows =
      std::clamp(rows / (4 * team) / kTileRows * kTileRows, kTileRows, kPanelRows);
  const int panels = (rows + panel_rows - 1) / panel_rows;
#pragma omp parallel for schedule(dynamic) if (threads)
  for (int p = 0; p < panels; ++p)
    panel(w, scales, cols, p * panel_rows, std::min(rows, (p + 1) * panel_rows), xq, y, ldy);
}

void q8_gemm_reference(const int8_t* w, const uint16_t* scales, int rows, int cols, const float* x,
                       int T, float* y, int ldy) {
  Q8Activations xq;
  quantize_activations_reference(x, T, cols, &xq);
  const int groups = groups_of(cols), ldxs = xq.ld / 4;
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < rows; ++r) {
      double sum = 0;
      for (int c = 0; c < cols; ++c) {
        const int g = c / 32;
        const double wc = static_cast<double>(w[static_cast<size_t>(r) * cols + c]) *
                          f16_to_f32(scales[static_cast<size_t>(r) * groups + g]);
        const double xc = (xq.codes[static_cast<size_t>(t) * xq.ld + c] - 128.0) *
                          xq.scales[static_cast<size_t>(t) * ldxs + (g / 2) * kLanes + (g % 2) * 8];
        sum += wc * xc;
      }
      y[static_cast<size_t>(t) * ldy + r] = static_cast<float>(sum);
    }
}

}  // namespace whale
