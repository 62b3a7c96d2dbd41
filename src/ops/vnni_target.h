// What whale's AVX512-VNNI kernels (ops/int8_gemm.cc, ops/group_lanes.cc) share: their
// instruction sets — Highway 1.0 has no VNNI-specific target to dispatch on, so these functions
// carry them and run only after the CPU check (ops/precision.h: use_vnni()) — and the rounding
// of a group of activations to int8.
#pragma once
#include <immintrin.h>

#include <algorithm>

#define WHALE_VNNI_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

namespace whale {

// The first `valid` (≤ 32) of 32 activations as int8 codes: scale = max|x| / 127, code =
// x · (1 / scale) rounded to nearest even (the scalar reference's std::nearbyint in the default
// rounding mode), clamped to ±127; values past `valid` code 0. Codes 0–15 in *q0, 16–31 in *q1
// (int32 lanes); returns the scale (0 for an all-zero group).
WHALE_VNNI_TARGET inline float quantize_group(const float* x, int valid, __m512i* q0, __m512i* q1) {
  const __mmask16 m0 = static_cast<__mmask16>((1u << std::min(16, valid)) - 1);
  const __mmask16 m1 = static_cast<__mmask16>((1u << std::max(0, valid - 16)) - 1);
  const __m512 v0 = _mm512_maskz_loadu_ps(m0, x), v1 = _mm512_maskz_loadu_ps(m1, x + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
  const float scale = amax / 127.0f, inverse = scale > 0 ? 1.0f / scale : 0.0f;
  const __m512 inv = _mm512_set1_ps(inverse), lo = _mm512_set1_ps(-127), hi = _mm512_set1_ps(127);
  *q0 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v0, inv), lo), hi));
  *q1 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v1, inv), lo), hi));
  return scale;
}

}  // namespace whale
