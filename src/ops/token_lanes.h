// What prefill's GEMMs share (ops/int8_gemm.cc, ops/bf16_gemm.cc): the activations of 16 tokens
// across a vector's lanes, so that one instruction multiplies them by weights of one row
// broadcast to every lane and each row's sums come out one per token, with no horizontal sums.
#pragma once
#include <immintrin.h>

#include <cstddef>

namespace whale {

constexpr int kLaneTokens = 16;  // tokens of one block: a vector's 16 f32 or int32 lanes
constexpr int kTileRows = 8;     // weight rows of a register tile: 8 sums (+ 8 int32 for int8)

// y[i·ldy + a] = lane i of sum[a], for a < R ≤ 8 and i < tokens: a token's R sums by one masked
// store (a scalar store per sum stalls on y's cold lines: 6% of a q8 prefill).
template <int R>
__attribute__((target("avx512f,avx512vl"))) inline void store_token_sums(const __m512 (&sum)[R],
                                                                         int tokens, float* y,
                                                                         int ldy) {
  static_assert(R <= 8, "one 8-lane store per token");
  alignas(64) float sums[R][kLaneTokens];
  for (int a = 0; a < R; ++a) _mm512_store_ps(sums[a], sum[a]);
  const __m256i lanes =
      _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(kLaneTokens));
  const __mmask8 rows = static_cast<__mmask8>((1u << R) - 1);
  for (int i = 0; i < tokens; ++i)
    _mm256_mask_storeu_ps(
        y + static_cast<size_t>(i) * ldy, rows,
        _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), rows, lanes, &sums[0][i], 4));
}

}  // namespace whale
