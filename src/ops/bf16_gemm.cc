#include "ops/bf16_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/aligned.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "ops/token_lanes.h"
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

constexpr int kBf16PerVector = 32;

// Prefill's products, tokens across the lanes (ops/token_lanes.h): the activations of 16 tokens
// are interleaved a pair of columns at a time — lane i of vector p holds token i's values 2p and
// 2p + 1 — and each vdpbf16ps multiplies one such vector by a pair of one weight row's values
// broadcast from memory, adding into that row's 16 per-token sums. No horizontal sums, no passes
// over column blocks, and the weight rows are read in place: 8 rows × 16 tokens per tile.
constexpr int kPanelRows = 64;  // weight rows one thread takes at a time

// x [T, cols] rounded to bf16 and interleaved: block b (tokens 16b …), pair p at
// blocks[(b · pairs + p) · 32 …] (32 bf16 = 16 lanes of 2); tokens past T and the column past an
// odd cols are zeros.
WHALE_BF16_TARGET void interleave_tokens(const float* x, int T, int cols, int pairs,
                                         uint16_t* blocks) {
  for (int t = 0; t < T; ++t) {
    const float* src = x + static_cast<size_t>(t) * cols;
    const int b = t / kLaneTokens, lane = t % kLaneTokens;
    uint32_t* dst = reinterpret_cast<uint32_t*>(blocks) + static_cast<size_t>(b) * pairs * 16;
    // 16 values (8 pairs) at a time: rounded, then each pair to its lane of its vector.
    for (int c = 0; c < 2 * pairs; c += 16) {
      const int valid = std::clamp(cols - c, 0, 16);
      const __m256i rounded = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(
          _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << valid) - 1), src + c)));
      alignas(32) uint32_t two[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(two), rounded);
      for (int j = 0; j < 8 && c / 2 + j < pairs; ++j)
        dst[static_cast<size_t>(c / 2 + j) * 16 + lane] = two[j];
    }
  }
}

// y[i·ldy + a] for a < R rows (w[a], cols values each) and the block's first `tokens` tokens.
// An odd cols' last pair reads its one weight alone (the pair would reach past the row).
template <int R>
WHALE_BF16_TARGET void tile_sums(const uint16_t* const (&w)[kTileRows], int cols,
                                 const uint16_t* block, int tokens, float* y, int ldy) {
  __m512 sum[R];
#pragma GCC unroll 8
  for (int a = 0; a < R; ++a) sum[a] = _mm512_setzero_ps();
  const int full = cols / 2;
  for (int p = 0; p < full; ++p) {
    const __m512bh x = reinterpret_cast<__m512bh>(_mm512_load_si512(block + 32 * p));
#pragma GCC unroll 8
    for (int a = 0; a < R; ++a) {
      uint32_t pair;
      std::memcpy(&pair, w[a] + 2 * p, 4);
      sum[a] = _mm512_dpbf16_ps(sum[a], x, reinterpret_cast<__m512bh>(_mm512_set1_epi32(pair)));
    }
  }
  if (cols % 2) {
    const __m512bh x = reinterpret_cast<__m512bh>(_mm512_load_si512(block + 32 * full));
#pragma GCC unroll 8
    for (int a = 0; a < R; ++a)
      sum[a] = _mm512_dpbf16_ps(sum[a], x,
                                reinterpret_cast<__m512bh>(_mm512_set1_epi32(w[a][2 * full])));
  }
  store_token_sums(sum, tokens, y, ldy);
}

// Weight rows [r0, r1) (w: rows ldw values apart, cols of them used) against every block of
// tokens.
void panel(const uint16_t* w, int ldw, int cols, int r0, int r1, const uint16_t* blocks, int pairs,
           int T, float* y, int ldy) {
  using Tile =
      void (*)(const uint16_t* const(&)[kTileRows], int, const uint16_t*, int, float*, int);
  static constexpr Tile kTiles[kTileRows] = {tile_sums<1>, tile_sums<2>, tile_sums<3>,
                                             tile_sums<4>, tile_sums<5>, tile_sums<6>,
                                             tile_sums<7>, tile_sums<8>};
  // Token blocks outer: a block (64 KiB for 2048 columns) stays near while the panel passes.
  for (int b = 0; b * kLaneTokens < T; ++b) {
    const int tokens = std::min(kLaneTokens, T - b * kLaneTokens);
    for (int r = r0; r < r1; r += kTileRows) {
      const int here = std::min(kTileRows, r1 - r);
      const uint16_t* rows[kTileRows];
      for (int a = 0; a < kTileRows; ++a)
        rows[a] = w + static_cast<size_t>(r + std::min(a, here - 1)) * ldw;
      kTiles[here - 1](rows, cols, blocks + static_cast<size_t>(b) * pairs * 32, tokens,
                       y + static_cast<size_t>(b) * kLaneTokens * ldy + r, ldy);
    }
  }
}

// The activations interleaved, on cache lines.
struct TokenBlocks {
  int pairs = 0;
  AlignedVector<uint16_t> data;
  TokenBlocks(const float* x, int T, int cols)
      : pairs((cols + 1) / 2),
        data(static_cast<size_t>((T + kLaneTokens - 1) / kLaneTokens) * pairs * 32, 0) {
    interleave_tokens(x, T, cols, pairs, data.data());
  }
};

// out[t] = Σ_{i < n} w[i] · x[t][i] for R activation rows: four partial sums per row (i / 32
// mod 4), a masked last partial step, one reduction — the same for every R.
template <int R>
WHALE_BF16_TARGET __attribute__((always_inline)) inline void dot_rows(const uint16_t* w,
                                                                      const uint16_t* x, int ldx,
                                                                      int n, float* out) {
  __m512 sum[R][4];
#pragma GCC unroll 6
  for (int t = 0; t < R; ++t)
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) sum[t][k] = _mm512_setzero_ps();
  int i = 0;
  for (; i + 4 * kBf16PerVector <= n; i += 4 * kBf16PerVector) {
    __m512bh wv[4];
    prefetch_weights_ahead(w + i, 4 * kBf16PerVector * sizeof(uint16_t));  // (kernels.h)
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

}  // namespace

void bf16_gemm(const uint16_t* w, int rows, int cols, const float* x, int T, float* y, int ldy) {
  const TokenBlocks blocks(x, T, cols);
  for_each_panel(rows, static_cast<size_t>(rows) * cols * T, kTileRows, kPanelRows,
                 [&](int r0, int r1) {
                   panel(w, cols, cols, r0, r1, blocks.data.data(), blocks.pairs, T, y, ldy);
                 });
}

namespace {
// A Linear whose rows are made bf16 first, by fill(r, out): each panel's rows into this thread's
// tile (bf16_row_stride(cols) apart; the buffer reused from panel to panel), then multiplied as
// bf16_gemm's panels (x [T, w.cols] rounded to bf16 once).
template <class Fill>
void gemm_of_filled_rows(const Linear& w, const float* x, int T, float* y, int ldy,
                         const Fill& fill) {
  const int rows = w.rows, cols = w.cols, ldx = bf16_row_stride(cols);
  const TokenBlocks blocks(x, T, cols);
  for_each_panel(
      rows, static_cast<size_t>(rows) * cols * T, kTileRows, kPanelRows, [&](int r0, int r1) {
        thread_local std::vector<uint16_t> tile;
        tile.resize(static_cast<size_t>(r1 - r0) * ldx);
        for (int r = r0; r < r1; ++r) fill(r, tile.data() + static_cast<size_t>(r - r0) * ldx);
        panel(tile.data(), ldx, cols, 0, r1 - r0, blocks.data.data(), blocks.pairs, T, y + r0, ldy);
      });
}
}  // namespace

void e4m3_gemm(const Linear& w, const float* x, int T, float* y, int ldy) {
  const int ldx = bf16_row_stride(w.cols);
  gemm_of_filled_rows(w, x, T, y, ldy, [&](int r, uint16_t* out) {
    // Widened (block scales applied), then rounded to bf16 (round_to_bf16 writes whole vectors).
    thread_local std::vector<float> row;
    row.resize(ldx);
    w.row_to_f32(r, row.data());
    round_to_bf16(row.data(), 1, w.cols, ldx, out);
  });
}

void packed_bf16_gemm(const Linear& w, const float* x, int T, float* y, int ldy) {
  // Packed rows are a multiple of 64 values: bf16_row_stride(cols) = cols, no padding.
  gemm_of_filled_rows(w, x, T, y, ldy,
                      [&](int r, uint16_t* out) { unpack_bf16_row(w.packed, w.cols, r, out); });
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

namespace {
// Rows [0, rows) of w (n values each) against the R activation rows at x: y[t · ldy + r].
template <int R>
WHALE_BF16_TARGET void row_range(const uint16_t* w, int rows, const uint16_t* x, int ldx, int n,
                                 float* y, size_t ldy) {
  for (int r = 0; r < rows; ++r) {
    float out[R];
    dot_rows<R>(w + static_cast<size_t>(r) * n, x, ldx, n, out);
#pragma GCC unroll 6
    for (int t = 0; t < R; ++t) y[t * ldy + r] = out[t];
  }
}
}  // namespace

void bf16_dot_row_range(const uint16_t* w, int rows, const uint16_t* xb, int ldx, int T, int n,
                        float* y, size_t ldy) {
  constexpr int kPass = 6;  // 6 × 4 sums + 4 weight vectors in the 32 registers
  using Range = void (*)(const uint16_t*, int, const uint16_t*, int, int, float*, size_t);
  static constexpr Range kRanges[kPass] = {row_range<1>, row_range<2>, row_range<3>,
                                           row_range<4>, row_range<5>, row_range<6>};
  for (int t0 = 0; t0 < T; t0 += kPass)
    kRanges[std::min(kPass, T - t0) - 1](w, rows, xb + static_cast<size_t>(t0) * ldx, ldx, n,
                                         y + t0 * ldy, ldy);
}

void bf16_dot_rows(const uint16_t* w, const uint16_t* xb, int ldx, int T, int n, float* out) {
  bf16_dot_row_range(w, 1, xb, ldx, T, n, out, 1);
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
