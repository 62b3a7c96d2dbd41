#include "ops/bf16_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "tensor/dtype.h"

namespace whale {

// GCC 12's _mm512_reduce_add_ps reads an uninitialized register on purpose (its upper half is
// discarded); its header then warns at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Highway 1.0 has no AVX512-BF16 target, so these functions carry the instruction set themselves
// and run only after the CPU check (ops/precision.cc).
#define WHALE_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace {

constexpr int kTileRows = 4;      // weight rows in one tile of 4 × 4 sums (16 registers)
constexpr int kTileTokens = 4;    // activation rows in one tile
constexpr int kPanelRows = 64;    // weight rows one thread takes at a time
constexpr int kBlockTokens = 64;  // activation rows kept in L2 while a panel passes over them
constexpr int kBlockCols = 2048;  // columns per pass: a panel's slice and x's slice are 256 KiB
constexpr int kBf16PerVector = 32;

static_assert(kBlockCols % kBf16PerVector == 0, "only the last column block may be partial");

// out[a][b] = Σ_{i < n} w[a][i] · x[b][i] for kTileRows weight rows and RX activation rows, 32
// columns per step, a last partial step loaded under a mask (zeros). The sums stay in registers:
// kept behind a reference they would be stored at every step (vector types may alias anything).
template <int RX>
WHALE_BF16_TARGET void tile_sums(const uint16_t* const (&w)[kTileRows], const uint16_t* x, int ldx,
                                 int n, float (&out)[kTileRows][kTileTokens],
                                 const uint16_t* prefetch, int ldw) {
  __m512 sum[kTileRows][RX];
#pragma GCC unroll 4
  for (int a = 0; a < kTileRows; ++a)
#pragma GCC unroll 4
    for (int b = 0; b < RX; ++b) sum[a][b] = _mm512_setzero_ps();
  for (int i = 0; i < n; i += kBf16PerVector) {
    const __mmask32 mask =
        n - i >= kBf16PerVector ? ~__mmask32{0} : static_cast<__mmask32>((1ull << (n - i)) - 1);
    __m512bh wv[kTileRows], xv[RX];
    if (prefetch)  // the next tile's weight rows, one line each per step: there when it starts
      for (int a = 0; a < kTileRows; ++a)
        _mm_prefetch(reinterpret_cast<const char*>(prefetch + static_cast<size_t>(a) * ldw + i),
                     _MM_HINT_T0);
#pragma GCC unroll 4
    for (int a = 0; a < kTileRows; ++a)
      wv[a] = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, w[a] + i));
#pragma GCC unroll 4
    for (int b = 0; b < RX; ++b)
      xv[b] = reinterpret_cast<__m512bh>(
          _mm512_maskz_loadu_epi16(mask, x + static_cast<size_t>(b) * ldx + i));
#pragma GCC unroll 4
    for (int a = 0; a < kTileRows; ++a)
#pragma GCC unroll 4
      for (int b = 0; b < RX; ++b) sum[a][b] = _mm512_dpbf16_ps(sum[a][b], wv[a], xv[b]);
  }
#pragma GCC unroll 4
  for (int a = 0; a < kTileRows; ++a)
#pragma GCC unroll 4
    for (int b = 0; b < RX; ++b) out[a][b] = _mm512_reduce_add_ps(sum[a][b]);
}

// out[t] = Σ_{i < n} w[i] · x[t][i] for R activation rows: four partial sums per row (i / 32
// mod 4), a masked last partial step, one reduction — the same for every R.
template <int R>
WHALE_BF16_TARGET void dot_rows(const uint16_t* w, const uint16_t* x, int ldx, int n, float* out) {
  __m512 sum[R][4];
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t)
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) sum[t][k] = _mm512_setzero_ps();
  int i = 0;
  for (; i + 4 * kBf16PerVector <= n; i += 4 * kBf16PerVector) {
    __m512bh wv[4];
    // Several rows: the weights ahead into L2 (kernels.h's kWeightPrefetchBytes; the rows'
    // activations crowd L1 and the hardware prefetcher falls behind).
    if constexpr (R >= 2)
      _mm_prefetch(reinterpret_cast<const char*>(w + i) + kWeightPrefetchBytes, _MM_HINT_T1);
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k)
      wv[k] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + i + k * kBf16PerVector));
#pragma GCC unroll 6
    for (int t = 0; t < R; ++t)
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k)
        sum[t][k] = _mm512_dpbf16_ps(
            sum[t][k], wv[k],
            reinterpret_cast<__m512bh>(
                _mm512_loadu_si512(x + static_cast<size_t>(t) * ldx + i + k * kBf16PerVector)));
  }
  for (; i < n; i += kBf16PerVector) {
    const __mmask32 mask =
        n - i >= kBf16PerVector ? ~__mmask32{0} : static_cast<__mmask32>((1ull << (n - i)) - 1);
    const __m512bh wv = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, w + i));
#pragma GCC unroll 6
    for (int t = 0; t < R; ++t)
      sum[t][0] = _mm512_dpbf16_ps(sum[t][0], wv,
                                   reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(
                                       mask, x + static_cast<size_t>(t) * ldx + i)));
  }
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t)
    out[t] = _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(sum[t][0], sum[t][1]), _mm512_add_ps(sum[t][2], sum[t][3])));
}

// Weight rows [r0, r1) against every activation row, in blocks that stay in L2.
WHALE_BF16_TARGET void panel(const uint16_t* w, int cols, int r0, int r1, const uint16_t* xb,
                             int ldx, int T, float* y, int ldy) {
  using Tile = void (*)(const uint16_t* const(&)[kTileRows], const uint16_t*, int, int,
                        float(&)[kTileRows][kTileTokens], const uint16_t*, int);
  static constexpr Tile kTiles[kTileTokens] = {tile_sums<1>, tile_sums<2>, tile_sums<3>,
                                               tile_sums<4>};
  float sums[kTileRows][kTileTokens];
  for (int c0 = 0; c0 < cols; c0 += kBlockCols) {
    const int n = std::min(kBlockCols, cols - c0);
    for (int t0 = 0; t0 < T; t0 += kBlockTokens) {
      const int t1 = std::min(T, t0 + kBlockTokens);
      for (int r = r0; r < r1; r += kTileRows) {
        const int rows_here = std::min(kTileRows, r1 - r);
        const uint16_t* wr[kTileRows];
        // Missing rows of a last partial tile repeat its last row; their sums are not stored.
        for (int a = 0; a < kTileRows; ++a)
          wr[a] = w + static_cast<size_t>(r + std::min(a, rows_here - 1)) * cols + c0;
        // While the first activation tile passes over this tile's weights, the next tile's are
        // prefetched (from memory they would otherwise stall the first pass of every tile).
        const uint16_t* next =
            r + kTileRows < r1 ? wr[0] + static_cast<size_t>(kTileRows) * cols : nullptr;
        for (int t = t0; t < t1; t += kTileTokens) {
          const int m = std::min(kTileTokens, t1 - t);
          const uint16_t* xt = xb + static_cast<size_t>(t) * ldx + c0;
          kTiles[m - 1](wr, xt, ldx, n, sums, t == t0 ? next : nullptr, cols);
          for (int b = 0; b < m; ++b) {
            float* yt = y + static_cast<size_t>(t + b) * ldy + r;
            for (int a = 0; a < rows_here; ++a) {
              yt[a] = c0 == 0 ? sums[a][b] : yt[a] + sums[a][b];
            }
          }
        }
      }
    }
  }
}

}  // namespace

void bf16_gemm(const uint16_t* w, int rows, int cols, const float* x, int T, float* y, int ldy) {
  const int ldx = bf16_row_stride(cols);
  std::vector<uint16_t> xb(static_cast<size_t>(T) * ldx);
  round_to_bf16(x, T, cols, ldx, xb.data());
  for_each_panel(rows, static_cast<size_t>(rows) * cols * T, kTileRows, kPanelRows,
                 [&](int r0, int r1) { panel(w, cols, r0, r1, xb.data(), ldx, T, y, ldy); });
}

void e4m3_gemm(const Linear& w, const float* x, int T, float* y, int ldy) {
  const int rows = w.rows, cols = w.cols, ldx = bf16_row_stride(cols);
  std::vector<uint16_t> xb(static_cast<size_t>(T) * ldx);
  round_to_bf16(x, T, cols, ldx, xb.data());
  for_each_panel(
      rows, static_cast<size_t>(rows) * cols * T, kTileRows, kPanelRows, [&](int r0, int r1) {
        // The panel's rows in bf16, cols apart (panel's layout); each row through a
        // padded f32 and bf16 buffer (round_to_bf16 writes whole vectors).
        std::vector<uint16_t> tile(static_cast<size_t>(r1 - r0) * cols);
        std::vector<float> row(ldx, 0.0f);
        std::vector<uint16_t> rounded(ldx);
        for (int r = r0; r < r1; ++r) {
          w.row_to_f32(r, row.data());
          round_to_bf16(row.data(), 1, cols, ldx, rounded.data());
          std::copy_n(rounded.data(), cols, tile.data() + static_cast<size_t>(r - r0) * cols);
        }
        panel(tile.data(), cols, 0, r1 - r0, xb.data(), ldx, T, y + r0, ldy);
      });
}

int bf16_row_stride(int cols) {
  return (cols + kBf16PerVector - 1) / kBf16PerVector * kBf16PerVector;
}

// Rows of x rounded to bf16 (round to nearest even), each padded with zeros to ld columns.
WHALE_BF16_TARGET void round_to_bf16(const float* x, int T, int cols, int ld, uint16_t* out) {
  for (int t = 0; t < T; ++t) {
    const float* src = x + static_cast<size_t>(t) * cols;
    uint16_t* dst = out + static_cast<size_t>(t) * ld;
    for (int c = 0; c < ld; c += 16) {
      const int valid = std::clamp(cols - c, 0, 16);
      const __m512 v = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << valid) - 1), src + c);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c),
                          reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
    }
  }
}

void bf16_dot_rows(const uint16_t* w, const uint16_t* xb, int ldx, int T, int n, float* out) {
  constexpr int kPass = 6;  // 6 × 4 sums + 4 weight vectors in the 32 registers
  using Rows = void (*)(const uint16_t*, const uint16_t*, int, int, float*);
  static constexpr Rows kRows[kPass] = {dot_rows<1>, dot_rows<2>, dot_rows<3>,
                                        dot_rows<4>, dot_rows<5>, dot_rows<6>};
  for (int t0 = 0; t0 < T; t0 += kPass)
    kRows[std::min(kPass, T - t0) - 1](w, xb + static_cast<size_t>(t0) * ldx, ldx, n, out + t0);
}

void bf16_gemm_reference(const uint16_t* w, int rows, int cols, const float* x, int T, float* y,
                         int ldy) {
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < rows; ++r) {
      double sum = 0;
      for (int c = 0; c < cols; ++c)
        sum += static_cast<double>(bf16_to_f32(w[static_cast<size_t>(r) * cols + c])) *
               bf16_to_f32(f32_to_bf16(x[static_cast<size_t>(t) * cols + c]));
      y[static_cast<size_t>(t) * ldy + r] = static_cast<float>(sum);
    }
}

}  // namespace whale
