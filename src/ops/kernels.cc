// Highway compiles this file once per target (foreach_target re-includes it).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/kernels.cc"
#include "ops/kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "tensor/dtype.h"

// Per-target code too: after highway.h.
#include "hwy/contrib/math/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace whale {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Several activation rows against one weight row. Every dot kernel is written for R rows at
// once (row t at x + t·ldx): each weight chunk is loaded and dequantized once, then accumulated
// into R independent sets of accumulators that follow one row's order exactly (same lanes, same
// partial sums, same final reduction, same scalar tail). The single-row kernels are the R = 1
// instances, so a row's result is bit-identical whether it is computed alone or with others.
// ForRows<R>(f) calls f(t) for t = 0 … R − 1 with t a compile-time constant, so that the per-row
// arrays of accumulators are kept in registers.
#ifndef WHALE_ROW
#define WHALE_ROW [&](auto t) HWY_ATTR __attribute__((always_inline))
#endif

template <class F, size_t... kT>
HWY_INLINE void ForRowsImpl(const F& f, std::index_sequence<kT...>) {
  (f(std::integral_constant<size_t, kT>()), ...);
}
template <size_t R, class F>
HWY_INLINE void ForRows(const F& f) {
  ForRowsImpl(f, std::make_index_sequence<R>());
}

// The row dots below (f32, bf16, f16, fp8, and q8/q4 in the stored order: what decode reads
// where Model::load makes no group-lane or packed copies — the exact path, CPUs without AVX512,
// fp8 checkpoints) take no page prefetch. They had one in the source, which GCC 12 removed in
// every one of them (kernels.h's WHALE_PREFETCH_INLINE); restored, f32 and bf16 rows read from
// memory alike and fp8 rows (compute-bound) ~15% slower (`whale bench --kernels`, alternated,
// session 23).
template <size_t R>
HWY_INLINE void DotF32Rows(const float* a, const float* x, size_t ldx, size_t n, float* out) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  hn::Vec<decltype(d)> s0[R], s1[R], s2[R], s3[R];
  ForRows<R>(WHALE_ROW { s0[t] = s1[t] = s2[t] = s3[t] = hn::Zero(d); });
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    const auto w0 = hn::LoadU(d, a + i), w1 = hn::LoadU(d, a + i + N);
    const auto w2 = hn::LoadU(d, a + i + 2 * N), w3 = hn::LoadU(d, a + i + 3 * N);
    ForRows<R>(WHALE_ROW {
      const float* xt = x + t * ldx + i;
      s0[t] = hn::MulAdd(w0, hn::LoadU(d, xt), s0[t]);
      s1[t] = hn::MulAdd(w1, hn::LoadU(d, xt + N), s1[t]);
      s2[t] = hn::MulAdd(w2, hn::LoadU(d, xt + 2 * N), s2[t]);
      s3[t] = hn::MulAdd(w3, hn::LoadU(d, xt + 3 * N), s3[t]);
    });
  }
  for (; i + N <= n; i += N) {
    const auto w0 = hn::LoadU(d, a + i);
    ForRows<R>(WHALE_ROW { s0[t] = hn::MulAdd(w0, hn::LoadU(d, x + t * ldx + i), s0[t]); });
  }
  float sum[R];
  ForRows<R>(WHALE_ROW {
    sum[t] = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0[t], s1[t]), hn::Add(s2[t], s3[t]))));
  });
  for (; i < n; ++i) {
    const float wi = a[i];
    ForRows<R>(WHALE_ROW { sum[t] += wi * x[t * ldx + i]; });
  }
  ForRows<R>(WHALE_ROW { out[t] = sum[t]; });
}

// bf16 is the top half of an f32: widen to u32 and shift left by 16.
template <class DF, class DU16>
HWY_INLINE hn::Vec<DF> LoadBf16(DF df, DU16 du16, const uint16_t* p) {
  const hn::Rebind<uint32_t, DF> du32;
  return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, p))));
}

template <size_t R>
HWY_INLINE void DotBf16Rows(const uint16_t* w, const float* x, size_t ldx, size_t n, float* out) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<uint16_t, decltype(d)> du16;
  const size_t N = hn::Lanes(d);
  hn::Vec<decltype(d)> s0[R], s1[R], s2[R], s3[R];
  ForRows<R>(WHALE_ROW { s0[t] = s1[t] = s2[t] = s3[t] = hn::Zero(d); });
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    const auto w0 = LoadBf16(d, du16, w + i), w1 = LoadBf16(d, du16, w + i + N);
    const auto w2 = LoadBf16(d, du16, w + i + 2 * N), w3 = LoadBf16(d, du16, w + i + 3 * N);
    ForRows<R>(WHALE_ROW {
      const float* xt = x + t * ldx + i;
      s0[t] = hn::MulAdd(w0, hn::LoadU(d, xt), s0[t]);
      s1[t] = hn::MulAdd(w1, hn::LoadU(d, xt + N), s1[t]);
      s2[t] = hn::MulAdd(w2, hn::LoadU(d, xt + 2 * N), s2[t]);
      s3[t] = hn::MulAdd(w3, hn::LoadU(d, xt + 3 * N), s3[t]);
    });
  }
  for (; i + N <= n; i += N) {
    const auto w0 = LoadBf16(d, du16, w + i);
    ForRows<R>(WHALE_ROW { s0[t] = hn::MulAdd(w0, hn::LoadU(d, x + t * ldx + i), s0[t]); });
  }
  float sum[R];
  ForRows<R>(WHALE_ROW {
    sum[t] = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0[t], s1[t]), hn::Add(s2[t], s3[t]))));
  });
  for (; i < n; ++i) {
    const float wi = bf16_to_f32(w[i]);
    ForRows<R>(WHALE_ROW { sum[t] += wi * x[t * ldx + i]; });
  }
  ForRows<R>(WHALE_ROW { out[t] = sum[t]; });
}

template <class DF>
HWY_INLINE hn::Vec<DF> LoadF16(DF df, const uint16_t* p) {
  const hn::Rebind<hwy::float16_t, DF> df16;
  return hn::PromoteTo(df, hn::LoadU(df16, reinterpret_cast<const hwy::float16_t*>(p)));
}

template <size_t R>
HWY_INLINE void DotF16Rows(const uint16_t* w, const float* x, size_t ldx, size_t n, float* out) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  hn::Vec<decltype(d)> s0[R], s1[R];
  ForRows<R>(WHALE_ROW { s0[t] = s1[t] = hn::Zero(d); });
  size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const auto w0 = LoadF16(d, w + i), w1 = LoadF16(d, w + i + N);
    ForRows<R>(WHALE_ROW {
      const float* xt = x + t * ldx + i;
      s0[t] = hn::MulAdd(w0, hn::LoadU(d, xt), s0[t]);
      s1[t] = hn::MulAdd(w1, hn::LoadU(d, xt + N), s1[t]);
    });
  }
  for (; i + N <= n; i += N) {
    const auto w0 = LoadF16(d, w + i);
    ForRows<R>(WHALE_ROW { s0[t] = hn::MulAdd(w0, hn::LoadU(d, x + t * ldx + i), s0[t]); });
  }
  float sum[R];
  ForRows<R>(WHALE_ROW { sum[t] = hn::GetLane(hn::SumOfLanes(d, hn::Add(s0[t], s1[t]))); });
  for (; i < n; ++i) {
    const float wi = whale::f16_to_f32(w[i]);
    ForRows<R>(WHALE_ROW { sum[t] += wi * x[t * ldx + i]; });
  }
  ForRows<R>(WHALE_ROW { out[t] = sum[t]; });
}

void F16ToF32(const uint16_t* in, float* out, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(LoadF16(d, in + i), d, out + i);
  for (; i < n; ++i) out[i] = whale::f16_to_f32(in[i]);
}

void Bf16ToF32(const uint16_t* in, float* out, size_t n) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<uint16_t, decltype(d)> du16;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(LoadBf16(d, du16, in + i), d, out + i);
  for (; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}

// Lanes(df) e4m3 codes → their values × 2^-8 as f32, exactly: each byte sign-extended to 16
// bits and shifted left 7 (the sign lands in bits 15 and 14) with bit 14 cleared is an f16 with
// the code's 4 exponent and 3 mantissa bits one place lower than in the byte — f16's bias (15)
// reads e4m3's (7) as 8 more, subnormals included — and F16C widens it. e4m3's NaN codes (0x7F,
// 0xFF) are not values here (they read as ±480 · 2^-8): HasE4M3Nan finds them, and a row
// holding one is NaN, as in the reference. (The table lookup this replaces ran at 2.4 GB/s of
// weights on one core: `whale bench --kernels`.)
template <class DF>
HWY_INLINE hn::Vec<DF> LoadE4M3(DF df, const uint8_t* p) {
  const hn::Rebind<int8_t, DF> di8;
  const hn::Rebind<int16_t, DF> di16;
  const hn::Rebind<hwy::float16_t, DF> df16;
  const auto codes = hn::LoadU(di8, reinterpret_cast<const int8_t*>(p));
  const auto half = hn::And(hn::ShiftLeft<7>(hn::PromoteTo(di16, codes)),
                            hn::Set(di16, static_cast<int16_t>(0xBF80)));
  return hn::PromoteTo(df, hn::BitCast(df16, half));
}

// Whether any of n codes is a NaN (0x7F or 0xFF): the largest of code & 0x7F over full vectors,
// the rest one by one — three instructions per vector of codes.
HWY_INLINE bool HasE4M3Nan(const uint8_t* w, size_t n) {
  const hn::ScalableTag<uint8_t> du8;
  const size_t N = hn::Lanes(du8);
  const auto magnitude = hn::Set(du8, uint8_t{0x7F});
  auto largest = hn::Zero(du8);
  size_t i = 0;
  for (; i + N <= n; i += N) largest = hn::Max(largest, hn::And(hn::LoadU(du8, w + i), magnitude));
  bool nan = !hn::AllFalse(du8, hn::Eq(largest, magnitude));
  for (; i < n; ++i) nan |= (w[i] & 0x7F) == 0x7F;
  return nan;
}

template <size_t R>
HWY_INLINE void DotE4M3Rows(const uint8_t* w, const float* scales, size_t block, const float* x,
                            size_t ldx, size_t n, float* out) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  hn::Vec<decltype(d)> total[R], s0[R], s1[R];
  float tail[R];
  ForRows<R>(WHALE_ROW {
    total[t] = hn::Zero(d);
    tail[t] = 0;
  });
  for (size_t c = 0, b = 0; c < n; c += block, ++b) {
    const size_t len = n - c < block ? n - c : block;
    ForRows<R>(WHALE_ROW { s0[t] = s1[t] = hn::Zero(d); });
    size_t i = 0;
    for (; i + 2 * N <= len; i += 2 * N) {
      const auto w0 = LoadE4M3(d, w + c + i), w1 = LoadE4M3(d, w + c + i + N);
      ForRows<R>(WHALE_ROW {
        const float* xt = x + t * ldx + c + i;
        s0[t] = hn::MulAdd(w0, hn::LoadU(d, xt), s0[t]);
        s1[t] = hn::MulAdd(w1, hn::LoadU(d, xt + N), s1[t]);
      });
    }
    for (; i + N <= len; i += N) {
      const auto w0 = LoadE4M3(d, w + c + i);
      ForRows<R>(WHALE_ROW { s0[t] = hn::MulAdd(w0, hn::LoadU(d, x + t * ldx + c + i), s0[t]); });
    }
    const auto scale = hn::Set(d, scales[b] * 256.0f);
    ForRows<R>(WHALE_ROW { total[t] = hn::MulAdd(hn::Add(s0[t], s1[t]), scale, total[t]); });
    if (i < len) {
      float part[R];
      ForRows<R>(WHALE_ROW { part[t] = 0; });
      for (; i < len; ++i) {
        const float wi = kE4M3ToF32[w[c + i]];  // NaN codes included
        ForRows<R>(WHALE_ROW { part[t] += wi * x[t * ldx + c + i]; });
      }
      ForRows<R>(WHALE_ROW { tail[t] += scales[b] * part[t]; });
    }
  }
  const bool has_nan = HasE4M3Nan(w, n);
  ForRows<R>(WHALE_ROW {
    out[t] = has_nan ? std::numeric_limits<float>::quiet_NaN()
                     : hn::GetLane(hn::SumOfLanes(d, total[t])) + tail[t];
  });
}

// A row of e4m3 codes → f32 with its block scales (prefill's dequantized tiles).
void E4M3ToF32(const uint8_t* w, const float* scales, size_t block, float* out, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  for (size_t c = 0, b = 0; c < n; c += block, ++b) {
    const size_t len = n - c < block ? n - c : block;
    const auto scale = hn::Set(d, scales[b] * 256.0f);
    size_t i = 0;
    for (; i + N <= len; i += N) hn::StoreU(hn::Mul(LoadE4M3(d, w + c + i), scale), d, out + c + i);
    for (; i < len; ++i) out[c + i] = kE4M3ToF32[w[c + i]] * scales[b];
  }
  if (HasE4M3Nan(w, n))  // LoadE4M3 reads the NaN codes as numbers
    for (size_t i = 0; i < n; ++i)
      if ((w[i] & 0x7F) == 0x7F) out[i] = kE4M3ToF32[w[i]];
}

// Quantized rows. At most 16 f32 lanes, so a lane count always divides a group (32) and a q4
// half-group (16). Scales are converted a chunk of groups at a time with the f16 promotion.
using QTag = hn::CappedTag<float, 16>;
constexpr size_t kGroup = 32, kScaleChunk = 64;

// f16 scales [0, count) → f32 (count ≤ 2 · kScaleChunk).
HWY_INLINE void ScalesToF32(const uint16_t* in, float* out, size_t count) {
  const QTag d;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= count; i += N) hn::StoreU(LoadF16(d, in + i), d, out + i);
  const hn::CappedTag<float, 1> d1;  // the rest one lane at a time, still by the f16 promotion
  for (; i < count; ++i) hn::StoreU(LoadF16(d1, in + i), d1, out + i);
}

HWY_INLINE float Q4Value(const uint8_t* group, size_t j, float scale, float min) {
  uint8_t b = group[j & 15];
  return static_cast<float>(j < 16 ? b & 15 : b >> 4) * scale + min;
}

// One q8 group's Σ code·x per row as vectors (scale not applied).
template <size_t R>
HWY_INLINE void GroupDotQ8(const int8_t* w, const float* x, size_t ldx, hn::Vec<QTag> (&acc)[R]) {
  const QTag d;
  const hn::Rebind<int8_t, QTag> di8;
  const hn::Rebind<int32_t, QTag> di32;
  const size_t N = hn::Lanes(d);
  ForRows<R>(WHALE_ROW { acc[t] = hn::Zero(d); });
  for (size_t j = 0; j < kGroup; j += N) {
    const auto wf = hn::ConvertTo(d, hn::PromoteTo(di32, hn::LoadU(di8, w + j)));
    ForRows<R>(WHALE_ROW { acc[t] = hn::MulAdd(wf, hn::LoadU(d, x + t * ldx + j), acc[t]); });
  }
}

template <size_t R>
HWY_INLINE void DotQ8Rows(const int8_t* codes, const uint16_t* scales, const float* x, size_t ldx,
                          size_t n, float* out) {
  const QTag d;
  using V = hn::Vec<QTag>;
  const size_t full = n / kGroup;
  HWY_ALIGN float s[kScaleChunk];
  // Two totals (even and odd groups) halve the FMA latency chain that carries across groups.
  V t0[R], t1[R], acc[R];
  ForRows<R>(WHALE_ROW { t0[t] = t1[t] = hn::Zero(d); });
  for (size_t g0 = 0; g0 < full; g0 += kScaleChunk) {
    const size_t count = full - g0 < kScaleChunk ? full - g0 : kScaleChunk;
    ScalesToF32(scales + g0, s, count);
    const int8_t* w = codes + g0 * kGroup;
    const float* xg = x + g0 * kGroup;
    size_t g = 0;
    for (; g + 2 <= count; g += 2) {
      GroupDotQ8<R>(w + g * kGroup, xg + g * kGroup, ldx, acc);
      const V s_even = hn::Set(d, s[g]);
      ForRows<R>(WHALE_ROW { t0[t] = hn::MulAdd(acc[t], s_even, t0[t]); });
      GroupDotQ8<R>(w + (g + 1) * kGroup, xg + (g + 1) * kGroup, ldx, acc);
      const V s_odd = hn::Set(d, s[g + 1]);
      ForRows<R>(WHALE_ROW { t1[t] = hn::MulAdd(acc[t], s_odd, t1[t]); });
    }
    if (g < count) {
      GroupDotQ8<R>(w + g * kGroup, xg + g * kGroup, ldx, acc);
      const V s_even = hn::Set(d, s[g]);
      ForRows<R>(WHALE_ROW { t0[t] = hn::MulAdd(acc[t], s_even, t0[t]); });
    }
  }
  float sum[R];
  ForRows<R>(WHALE_ROW { sum[t] = hn::GetLane(hn::SumOfLanes(d, hn::Add(t0[t], t1[t]))); });
  if (full * kGroup < n) {
    const float scale = whale::f16_to_f32(scales[full]);
    float tail[R];
    ForRows<R>(WHALE_ROW { tail[t] = 0; });
    for (size_t i = full * kGroup; i < n; ++i) {
      const float c = static_cast<float>(codes[i]);
      ForRows<R>(WHALE_ROW { tail[t] += c * x[t * ldx + i]; });
    }
    ForRows<R>(WHALE_ROW { sum[t] += tail[t] * scale; });
  }
  ForRows<R>(WHALE_ROW { out[t] = sum[t]; });
}

void Q8ToF32(const int8_t* codes, const uint16_t* scales, float* out, size_t n) {
  const QTag d;
  const hn::Rebind<int8_t, QTag> di8;
  const hn::Rebind<int32_t, QTag> di32;
  const size_t N = hn::Lanes(d);
  const size_t full = n / kGroup;
  HWY_ALIGN float s[kScaleChunk];
  for (size_t g0 = 0; g0 < full; g0 += kScaleChunk) {
    const size_t count = full - g0 < kScaleChunk ? full - g0 : kScaleChunk;
    ScalesToF32(scales + g0, s, count);
    for (size_t g = 0; g < count; ++g) {
      const size_t base = (g0 + g) * kGroup;
      const auto vs = hn::Set(d, s[g]);
      for (size_t j = 0; j < kGroup; j += N) {
        auto wf = hn::ConvertTo(d, hn::PromoteTo(di32, hn::LoadU(di8, codes + base + j)));
        hn::StoreU(hn::Mul(wf, vs), d, out + base + j);
      }
    }
  }
  if (full * kGroup < n) {
    const float scale = whale::f16_to_f32(scales[full]);
    for (size_t i = full * kGroup; i < n; ++i) out[i] = static_cast<float>(codes[i]) * scale;
  }
}

// One q4 group: Σ nibble·x and Σ x per row as vectors (scale and min not applied).
template <size_t R>
HWY_INLINE void GroupDotQ4(const uint8_t* b, const float* x, size_t ldx, hn::Vec<QTag> (&acc)[R],
                           hn::Vec<QTag> (&xsum)[R]) {
  const QTag d;
  const hn::Rebind<uint8_t, QTag> du8;
  const hn::Rebind<uint32_t, QTag> du32;
  const hn::Rebind<int32_t, QTag> di32;
  const size_t N = hn::Lanes(d);
  const auto mask = hn::Set(du32, 15u);
  ForRows<R>(WHALE_ROW { acc[t] = xsum[t] = hn::Zero(d); });
  for (size_t j = 0; j < kGroup / 2; j += N) {
    const auto bytes = hn::PromoteTo(du32, hn::LoadU(du8, b + j));
    const auto lo = hn::ConvertTo(d, hn::BitCast(di32, hn::And(bytes, mask)));
    const auto hi = hn::ConvertTo(d, hn::BitCast(di32, hn::ShiftRight<4>(bytes)));
    ForRows<R>(WHALE_ROW {
      const float* xt = x + t * ldx;
      const auto x_lo = hn::LoadU(d, xt + j), x_hi = hn::LoadU(d, xt + kGroup / 2 + j);
      acc[t] = hn::MulAdd(lo, x_lo, acc[t]);
      acc[t] = hn::MulAdd(hi, x_hi, acc[t]);
      xsum[t] = hn::Add(xsum[t], hn::Add(x_lo, x_hi));
    });
  }
}

template <size_t R>
HWY_INLINE void DotQ4Rows(const uint8_t* packed, const uint16_t* scale_min, const float* x,
                          size_t ldx, size_t n, float* out) {
  const QTag d;
  using V = hn::Vec<QTag>;
  const size_t full = n / kGroup;
  HWY_ALIGN float s[2 * kScaleChunk];
  // Separate totals for the scale and min terms, even and odd groups: short latency chains.
  V ts0[R], ts1[R], tm0[R], tm1[R], acc[R], xsum[R];
  ForRows<R>(WHALE_ROW { ts0[t] = ts1[t] = tm0[t] = tm1[t] = hn::Zero(d); });
  for (size_t g0 = 0; g0 < full; g0 += kScaleChunk) {
    const size_t count = full - g0 < kScaleChunk ? full - g0 : kScaleChunk;
    ScalesToF32(scale_min + 2 * g0, s, 2 * count);
    const uint8_t* b = packed + g0 * (kGroup / 2);
    const float* xg = x + g0 * kGroup;
    size_t g = 0;
    for (; g + 2 <= count; g += 2) {
      GroupDotQ4<R>(b + g * (kGroup / 2), xg + g * kGroup, ldx, acc, xsum);
      const V sc0 = hn::Set(d, s[2 * g]), mn0 = hn::Set(d, s[2 * g + 1]);
      ForRows<R>(WHALE_ROW {
        ts0[t] = hn::MulAdd(acc[t], sc0, ts0[t]);
        tm0[t] = hn::MulAdd(xsum[t], mn0, tm0[t]);
      });
      GroupDotQ4<R>(b + (g + 1) * (kGroup / 2), xg + (g + 1) * kGroup, ldx, acc, xsum);
      const V sc1 = hn::Set(d, s[2 * g + 2]), mn1 = hn::Set(d, s[2 * g + 3]);
      ForRows<R>(WHALE_ROW {
        ts1[t] = hn::MulAdd(acc[t], sc1, ts1[t]);
        tm1[t] = hn::MulAdd(xsum[t], mn1, tm1[t]);
      });
    }
    if (g < count) {
      GroupDotQ4<R>(b + g * (kGroup / 2), xg + g * kGroup, ldx, acc, xsum);
      const V sc0 = hn::Set(d, s[2 * g]), mn0 = hn::Set(d, s[2 * g + 1]);
      ForRows<R>(WHALE_ROW {
        ts0[t] = hn::MulAdd(acc[t], sc0, ts0[t]);
        tm0[t] = hn::MulAdd(xsum[t], mn0, tm0[t]);
      });
    }
  }
  float sum[R];
  ForRows<R>(WHALE_ROW {
    sum[t] =
        hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(ts0[t], ts1[t]), hn::Add(tm0[t], tm1[t]))));
  });
  if (full * kGroup < n) {
    const float scale = whale::f16_to_f32(scale_min[2 * full]);
    const float min = whale::f16_to_f32(scale_min[2 * full + 1]);
    const uint8_t* b = packed + full * (kGroup / 2);
    for (size_t i = full * kGroup; i < n; ++i) {
      const float v = Q4Value(b, i - full * kGroup, scale, min);
      ForRows<R>(WHALE_ROW { sum[t] += v * x[t * ldx + i]; });
    }
  }
  ForRows<R>(WHALE_ROW { out[t] = sum[t]; });
}

void Q4ToF32(const uint8_t* packed, const uint16_t* scale_min, float* out, size_t n) {
  const QTag d;
  const hn::Rebind<uint8_t, QTag> du8;
  const hn::Rebind<uint32_t, QTag> du32;
  const hn::Rebind<int32_t, QTag> di32;
  const size_t N = hn::Lanes(d);
  const size_t full = n / kGroup;
  const auto mask = hn::Set(du32, 15u);
  HWY_ALIGN float s[2 * kScaleChunk];
  for (size_t g0 = 0; g0 < full; g0 += kScaleChunk) {
    const size_t count = full - g0 < kScaleChunk ? full - g0 : kScaleChunk;
    ScalesToF32(scale_min + 2 * g0, s, 2 * count);
    for (size_t g = 0; g < count; ++g) {
      const uint8_t* b = packed + (g0 + g) * (kGroup / 2);
      float* o = out + (g0 + g) * kGroup;
      const auto vs = hn::Set(d, s[2 * g]), vm = hn::Set(d, s[2 * g + 1]);
      for (size_t j = 0; j < kGroup / 2; j += N) {
        const auto bytes = hn::PromoteTo(du32, hn::LoadU(du8, b + j));
        const auto lo = hn::ConvertTo(d, hn::BitCast(di32, hn::And(bytes, mask)));
        const auto hi = hn::ConvertTo(d, hn::BitCast(di32, hn::ShiftRight<4>(bytes)));
        hn::StoreU(hn::MulAdd(lo, vs, vm), d, o + j);
        hn::StoreU(hn::MulAdd(hi, vs, vm), d, o + kGroup / 2 + j);
      }
    }
  }
  if (full * kGroup < n) {
    const float scale = whale::f16_to_f32(scale_min[2 * full]);
    const float min = whale::f16_to_f32(scale_min[2 * full + 1]);
    const uint8_t* b = packed + full * (kGroup / 2);
    for (size_t i = full * kGroup; i < n; ++i) out[i] = Q4Value(b, i - full * kGroup, scale, min);
  }
}

// The exported kernels. One row: the R = 1 instance. T rows: passes of up to kRowsPerPass rows
// (each pass reads the weight row once).
constexpr size_t kRowsPerPass = 7;

// f(integral_constant<R>) for a run-time 1 ≤ r ≤ kRowsPerPass.
template <class F>
HWY_INLINE void WithRowCount(size_t r, const F& f) {
  switch (r) {
    case 1:
      return f(std::integral_constant<size_t, 1>());
    case 2:
      return f(std::integral_constant<size_t, 2>());
    case 3:
      return f(std::integral_constant<size_t, 3>());
    case 4:
      return f(std::integral_constant<size_t, 4>());
    case 5:
      return f(std::integral_constant<size_t, 5>());
    case 6:
      return f(std::integral_constant<size_t, 6>());
    default:
      return f(std::integral_constant<size_t, kRowsPerPass>());
  }
}
static_assert(kRowsPerPass == 7, "WithRowCount's cases");

// pass(first row, integral_constant<rows in this pass>) over T rows.
template <class F>
HWY_INLINE void InPasses(size_t T, const F& pass) {
  for (size_t t0 = 0; t0 < T; t0 += kRowsPerPass)
    WithRowCount(T - t0 < kRowsPerPass ? T - t0 : kRowsPerPass,
                 [&](auto R) HWY_ATTR { pass(t0, R); });
}

float DotF32(const float* a, const float* b, size_t n) {
  float out;
  DotF32Rows<1>(a, b, 0, n, &out);
  return out;
}
// One load per element into four sums, with the weight kernels' page prefetch: the bandwidth
// probe's read (ops/bandwidth.h).
float StreamSumF32(const float* a, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  auto s0 = hn::Zero(d), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    prefetch_weights_ahead(a + i, 4 * N * sizeof(float));  // (kernels.h)
    s0 = hn::Add(s0, hn::LoadU(d, a + i));
    s1 = hn::Add(s1, hn::LoadU(d, a + i + N));
    s2 = hn::Add(s2, hn::LoadU(d, a + i + 2 * N));
    s3 = hn::Add(s3, hn::LoadU(d, a + i + 3 * N));
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; i < n; ++i) sum += a[i];
  return sum;
}
void DotF32Multi(const float* w, const float* x, size_t ldx, size_t T, size_t n, float* out) {
  InPasses(T, [&](size_t t0, auto R)
                  HWY_ATTR { DotF32Rows<decltype(R)::value>(w, x + t0 * ldx, ldx, n, out + t0); });
}
float DotBf16(const uint16_t* w, const float* x, size_t n) {
  float out;
  DotBf16Rows<1>(w, x, 0, n, &out);
  return out;
}
void DotBf16Multi(const uint16_t* w, const float* x, size_t ldx, size_t T, size_t n, float* out) {
  InPasses(T, [&](size_t t0, auto R)
                  HWY_ATTR { DotBf16Rows<decltype(R)::value>(w, x + t0 * ldx, ldx, n, out + t0); });
}
float DotF16(const uint16_t* w, const float* x, size_t n) {
  float out;
  DotF16Rows<1>(w, x, 0, n, &out);
  return out;
}
void DotF16Multi(const uint16_t* w, const float* x, size_t ldx, size_t T, size_t n, float* out) {
  InPasses(T, [&](size_t t0, auto R)
                  HWY_ATTR { DotF16Rows<decltype(R)::value>(w, x + t0 * ldx, ldx, n, out + t0); });
}
float DotE4M3(const uint8_t* w, const float* scales, size_t block, const float* x, size_t n) {
  float out;
  DotE4M3Rows<1>(w, scales, block, x, 0, n, &out);
  return out;
}
void DotE4M3Multi(const uint8_t* w, const float* scales, size_t block, const float* x, size_t ldx,
                  size_t T, size_t n, float* out) {
  InPasses(T, [&](size_t t0, auto R) HWY_ATTR {
    DotE4M3Rows<decltype(R)::value>(w, scales, block, x + t0 * ldx, ldx, n, out + t0);
  });
}
float DotQ8(const int8_t* codes, const uint16_t* scales, const float* x, size_t n) {
  float out;
  DotQ8Rows<1>(codes, scales, x, 0, n, &out);
  return out;
}
void DotQ8Multi(const int8_t* codes, const uint16_t* scales, const float* x, size_t ldx, size_t T,
                size_t n, float* out) {
  InPasses(T, [&](size_t t0, auto R) HWY_ATTR {
    DotQ8Rows<decltype(R)::value>(codes, scales, x + t0 * ldx, ldx, n, out + t0);
  });
}
float DotQ4(const uint8_t* packed, const uint16_t* scale_min, const float* x, size_t n) {
  float out;
  DotQ4Rows<1>(packed, scale_min, x, 0, n, &out);
  return out;
}
void DotQ4Multi(const uint8_t* packed, const uint16_t* scale_min, const float* x, size_t ldx,
                size_t T, size_t n, float* out) {
  InPasses(T, [&](size_t t0, auto R) HWY_ATTR {
    DotQ4Rows<decltype(R)::value>(packed, scale_min, x + t0 * ldx, ldx, n, out + t0);
  });
}

void Axpy(float a, const float* x, float* y, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const auto va = hn::Set(d, a);
  size_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(hn::MulAdd(va, hn::LoadU(d, x + i), hn::LoadU(d, y + i)), d, y + i);
  for (; i < n; ++i) y[i] += a * x[i];
}

// out[g·ldo + d] += Σ_s p[g·ldp + s] · v[s·ldv + d] for R rows (a compile-time count, so that
// their sums stay in registers), each value vector loaded once for all of them; every element one
// FMA per s in order (the tail lanes by std::fma: on the FMA targets the same single rounding;
// elsewhere each element keeps its own arithmetic whatever G), so a row's result
// does not depend on how many rows are beside it.
template <size_t R>
HWY_INLINE void WeightedRows(const float* p, size_t ldp, const float* v, size_t ldv, size_t n,
                             size_t D, float* out, size_t ldo) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + N <= D; i += N) {
    // (Unrolled, so that the sums stay in registers: rolled, GCC kept them on the stack and the
    // kernel ran at a quarter of its FMA rate.)
    hn::Vec<decltype(d)> acc[R];
#pragma GCC unroll 8
    for (size_t g = 0; g < R; ++g) acc[g] = hn::LoadU(d, out + g * ldo + i);
    for (size_t s = 0; s < n; ++s) {
      const auto vs = hn::LoadU(d, v + s * ldv + i);
#pragma GCC unroll 8
      for (size_t g = 0; g < R; ++g) acc[g] = hn::MulAdd(hn::Set(d, p[g * ldp + s]), vs, acc[g]);
    }
#pragma GCC unroll 8
    for (size_t g = 0; g < R; ++g) hn::StoreU(acc[g], d, out + g * ldo + i);
  }
  for (; i < D; ++i)
    for (size_t g = 0; g < R; ++g) {
      float acc = out[g * ldo + i];
      for (size_t s = 0; s < n; ++s) acc = std::fma(p[g * ldp + s], v[s * ldv + i], acc);
      out[g * ldo + i] = acc;
    }
}
void WeightedRowsSum(const float* p, size_t ldp, size_t G, const float* v, size_t ldv, size_t n,
                     size_t D, float* out, size_t ldo) {
  size_t g = 0;
  for (; g + 8 <= G; g += 8) WeightedRows<8>(p + g * ldp, ldp, v, ldv, n, D, out + g * ldo, ldo);
  if (G - g >= 4) {
    WeightedRows<4>(p + g * ldp, ldp, v, ldv, n, D, out + g * ldo, ldo);
    g += 4;
  }
  for (; g < G; ++g) WeightedRows<1>(p + g * ldp, ldp, v, ldv, n, D, out + g * ldo, ldo);
}

// out[d] += Σ_s p[s] · v[s·ldv + d] with bf16 values: MLA's absorption W_UKᵀ q_nope, reading the
// head's rows once, V vectors of columns at a time (independent FMA chains); every element one
// FMA per s in s order from out's value, the tail lanes by std::fma — the arithmetic of
// converting each row to floats and adding p[s] times it (axpy), so the same bits.
template <size_t V>
HWY_INLINE void WeightedBf16Columns(const float* p, const uint16_t* v, size_t ldv, size_t n,
                                    float* out) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<uint16_t, decltype(d)> du16;
  const size_t N = hn::Lanes(d);
  hn::Vec<decltype(d)> acc[V];  // (unrolled: in registers, as WeightedRows)
#pragma GCC unroll 8
  for (size_t j = 0; j < V; ++j) acc[j] = hn::LoadU(d, out + j * N);
  for (size_t s = 0; s < n; ++s) {
    const auto ps = hn::Set(d, p[s]);
#pragma GCC unroll 8
    for (size_t j = 0; j < V; ++j)
      acc[j] = hn::MulAdd(ps, LoadBf16(d, du16, v + s * ldv + j * N), acc[j]);
  }
#pragma GCC unroll 8
  for (size_t j = 0; j < V; ++j) hn::StoreU(acc[j], d, out + j * N);
}
void WeightedBf16RowsSum(const float* p, const uint16_t* v, size_t ldv, size_t n, size_t D,
                         float* out) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<uint16_t, decltype(d)> du16;
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  if (D <= 8 * N) {
    for (; i + 8 * N <= D; i += 8 * N) WeightedBf16Columns<8>(p, v + i, ldv, n, out + i);
    for (; i + N <= D; i += N) WeightedBf16Columns<1>(p, v + i, ldv, n, out + i);
  } else {
    // Wider rows (V2/V3's kv_lora_rank of 512): row by row through out, so that the rows stream
    // in order — column blocks would take a few lines of every row per pass, a stride the
    // hardware prefetcher follows poorly from memory. The same FMAs in the same order.
    const size_t whole = D / N * N;
    for (size_t s = 0; s < n; ++s) {
      const auto ps = hn::Set(d, p[s]);
      const uint16_t* row = v + s * ldv;
      prefetch_weights_ahead(row, ldv * sizeof(uint16_t));  // (kernels.h)
      for (size_t j = 0; j < whole; j += N)
        hn::StoreU(hn::MulAdd(ps, LoadBf16(d, du16, row + j), hn::LoadU(d, out + j)), d, out + j);
    }
    i = whole;
  }
  for (; i < D; ++i) {
    float acc = out[i];
    for (size_t s = 0; s < n; ++s) acc = std::fma(p[s], bf16_to_f32(v[s * ldv + i]), acc);
    out[i] = acc;
  }
}

// K weight rows against one activation row, each row's arithmetic exactly DotBf16Rows<1>'s (its
// four partial sums, reduction and tail), the rows interleaved so that their FMA chains overlap.
template <size_t K>
HWY_INLINE void DotBf16WeightRows(const uint16_t* w, size_t ldw, const float* x, size_t n,
                                  float* out) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<uint16_t, decltype(d)> du16;
  const size_t N = hn::Lanes(d);
  hn::Vec<decltype(d)> s0[K], s1[K], s2[K], s3[K];
  ForRows<K>(WHALE_ROW { s0[t] = s1[t] = s2[t] = s3[t] = hn::Zero(d); });
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    const auto x0 = hn::LoadU(d, x + i), x1 = hn::LoadU(d, x + i + N);
    const auto x2 = hn::LoadU(d, x + i + 2 * N), x3 = hn::LoadU(d, x + i + 3 * N);
    ForRows<K>(WHALE_ROW {
      const uint16_t* wt = w + t * ldw + i;
      s0[t] = hn::MulAdd(LoadBf16(d, du16, wt), x0, s0[t]);
      s1[t] = hn::MulAdd(LoadBf16(d, du16, wt + N), x1, s1[t]);
      s2[t] = hn::MulAdd(LoadBf16(d, du16, wt + 2 * N), x2, s2[t]);
      s3[t] = hn::MulAdd(LoadBf16(d, du16, wt + 3 * N), x3, s3[t]);
    });
  }
  for (; i + N <= n; i += N) {
    const auto x0 = hn::LoadU(d, x + i);
    ForRows<K>(WHALE_ROW { s0[t] = hn::MulAdd(LoadBf16(d, du16, w + t * ldw + i), x0, s0[t]); });
  }
  float sum[K];
  ForRows<K>(WHALE_ROW {
    sum[t] = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0[t], s1[t]), hn::Add(s2[t], s3[t]))));
  });
  for (; i < n; ++i) ForRows<K>(WHALE_ROW { sum[t] += bf16_to_f32(w[t * ldw + i]) * x[i]; });
  ForRows<K>(WHALE_ROW { out[t] = sum[t]; });
}

// out[r] = DotBf16(w + r·ldw, x, n) for r < rows: the same bits, one dispatch for all the rows.
void DotBf16EachRow(const uint16_t* w, size_t ldw, size_t rows, const float* x, size_t n,
                    float* out) {
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) DotBf16WeightRows<4>(w + r * ldw, ldw, x, n, out + r);
  for (; r < rows; ++r) DotBf16WeightRows<1>(w + r * ldw, ldw, x, n, out + r);
}

// The same for q8 rows (codes, one f16 scale per group of 32; rows ld_codes codes and ld_scales
// scales apart), D a multiple of 32: each weight code · scale (exact in f32), then one FMA per s
// — the arithmetic of q8_to_f32 and axpy, so the same bits. V groups of columns at a time.
template <size_t V>
HWY_INLINE void WeightedQ8Groups(const float* p, const int8_t* codes, size_t ld_codes,
                                 const uint16_t* scales, size_t ld_scales, size_t n, float* out) {
  const QTag d;
  const hn::Rebind<int8_t, QTag> di8;
  const hn::Rebind<int32_t, QTag> di32;
  constexpr size_t kVectors = kGroup / hn::MaxLanes(d);  // per group (QTag's lanes are fixed)
  const size_t N = hn::Lanes(d);
  hn::Vec<QTag> acc[V * kVectors];  // (unrolled: in registers, as WeightedRows)
#pragma GCC unroll 16
  for (size_t j = 0; j < V * kVectors; ++j) acc[j] = hn::LoadU(d, out + j * N);
  for (size_t s = 0; s < n; ++s) {
    const auto ps = hn::Set(d, p[s]);
#pragma GCC unroll 4
    for (size_t g = 0; g < V; ++g) {
      const auto scale = hn::Set(d, whale::f16_to_f32(scales[s * ld_scales + g]));
#pragma GCC unroll 4
      for (size_t j = 0; j < kVectors; ++j) {
        const int8_t* c = codes + s * ld_codes + g * kGroup + j * N;
        const auto w = hn::Mul(hn::ConvertTo(d, hn::PromoteTo(di32, hn::LoadU(di8, c))), scale);
        acc[g * kVectors + j] = hn::MulAdd(ps, w, acc[g * kVectors + j]);
      }
    }
  }
#pragma GCC unroll 16
  for (size_t j = 0; j < V * kVectors; ++j) hn::StoreU(acc[j], d, out + j * N);
}
void WeightedQ8RowsSum(const float* p, const int8_t* codes, size_t ld_codes, const uint16_t* scales,
                       size_t ld_scales, size_t n, size_t D, float* out) {
  size_t g = 0;
  const size_t groups = D / kGroup;
  if (groups > 4) {  // wider rows: row by row through out, as WeightedBf16RowsSum
    const QTag d;
    const hn::Rebind<int8_t, QTag> di8;
    const hn::Rebind<int32_t, QTag> di32;
    const size_t N = hn::Lanes(d);
    HWY_ALIGN float row_scales[2 * kScaleChunk];
    for (size_t s = 0; s < n; ++s) {
      const auto ps = hn::Set(d, p[s]);
      prefetch_weights_ahead(codes + s * ld_codes, ld_codes);
      for (g = 0; g < groups; ++g) {
        if (g % (2 * kScaleChunk) == 0)
          ScalesToF32(scales + s * ld_scales + g, row_scales,
                      std::min(groups - g, 2 * kScaleChunk));
        const auto scale = hn::Set(d, row_scales[g % (2 * kScaleChunk)]);
        for (size_t j = g * kGroup; j < (g + 1) * kGroup; j += N) {
          const auto w = hn::Mul(
              hn::ConvertTo(d, hn::PromoteTo(di32, hn::LoadU(di8, codes + s * ld_codes + j))),
              scale);
          hn::StoreU(hn::MulAdd(ps, w, hn::LoadU(d, out + j)), d, out + j);
        }
      }
    }
    return;
  }
  for (; g + 4 <= groups; g += 4)
    WeightedQ8Groups<4>(p, codes + g * kGroup, ld_codes, scales + g, ld_scales, n,
                        out + g * kGroup);
  for (; g < groups; ++g)
    WeightedQ8Groups<1>(p, codes + g * kGroup, ld_codes, scales + g, ld_scales, n,
                        out + g * kGroup);
}
// K q8 weight rows against one activation row, each row's arithmetic exactly DotQ8Rows<1>'s
// (group sums, even / odd totals, reduction, tail), the rows interleaved as DotBf16WeightRows.
template <size_t K>
HWY_INLINE void GroupDotQ8Weights(const int8_t* w, size_t ldw, const float* x,
                                  hn::Vec<QTag> (&acc)[K]) {
  const QTag d;
  const hn::Rebind<int8_t, QTag> di8;
  const hn::Rebind<int32_t, QTag> di32;
  const size_t N = hn::Lanes(d);
  ForRows<K>(WHALE_ROW { acc[t] = hn::Zero(d); });
  for (size_t j = 0; j < kGroup; j += N) {
    const auto xj = hn::LoadU(d, x + j);
    ForRows<K>(WHALE_ROW {
      const auto wf = hn::ConvertTo(d, hn::PromoteTo(di32, hn::LoadU(di8, w + t * ldw + j)));
      acc[t] = hn::MulAdd(wf, xj, acc[t]);
    });
  }
}
template <size_t K>
HWY_INLINE void DotQ8WeightRows(const int8_t* codes, size_t ld_codes, const uint16_t* scales,
                                size_t ld_scales, const float* x, size_t n, float* out) {
  const QTag d;
  using V = hn::Vec<QTag>;
  const size_t full = n / kGroup;
  HWY_ALIGN float s[K][kScaleChunk];
  V t0[K], t1[K], acc[K];
  ForRows<K>(WHALE_ROW { t0[t] = t1[t] = hn::Zero(d); });
  for (size_t g0 = 0; g0 < full; g0 += kScaleChunk) {
    const size_t count = full - g0 < kScaleChunk ? full - g0 : kScaleChunk;
    ForRows<K>(WHALE_ROW { ScalesToF32(scales + t * ld_scales + g0, s[t], count); });
    const int8_t* w = codes + g0 * kGroup;
    const float* xg = x + g0 * kGroup;
    size_t g = 0;
    for (; g + 2 <= count; g += 2) {
      GroupDotQ8Weights<K>(w + g * kGroup, ld_codes, xg + g * kGroup, acc);
      ForRows<K>(WHALE_ROW { t0[t] = hn::MulAdd(acc[t], hn::Set(d, s[t][g]), t0[t]); });
      GroupDotQ8Weights<K>(w + (g + 1) * kGroup, ld_codes, xg + (g + 1) * kGroup, acc);
      ForRows<K>(WHALE_ROW { t1[t] = hn::MulAdd(acc[t], hn::Set(d, s[t][g + 1]), t1[t]); });
    }
    if (g < count) {
      GroupDotQ8Weights<K>(w + g * kGroup, ld_codes, xg + g * kGroup, acc);
      ForRows<K>(WHALE_ROW { t0[t] = hn::MulAdd(acc[t], hn::Set(d, s[t][g]), t0[t]); });
    }
  }
  float sum[K];
  ForRows<K>(WHALE_ROW { sum[t] = hn::GetLane(hn::SumOfLanes(d, hn::Add(t0[t], t1[t]))); });
  if (full * kGroup < n) {
    ForRows<K>(WHALE_ROW {
      const float scale = whale::f16_to_f32(scales[t * ld_scales + full]);
      float tail = 0;
      for (size_t i = full * kGroup; i < n; ++i)
        tail += static_cast<float>(codes[t * ld_codes + i]) * x[i];
      sum[t] += tail * scale;
    });
  }
  ForRows<K>(WHALE_ROW { out[t] = sum[t]; });
}

// out[r] = DotQ8 of row r: the same bits, one dispatch for all the rows.
void DotQ8EachRow(const int8_t* codes, size_t ld_codes, const uint16_t* scales, size_t ld_scales,
                  size_t rows, const float* x, size_t n, float* out) {
  size_t r = 0;
  for (; r + 4 <= rows; r += 4)
    DotQ8WeightRows<4>(codes + r * ld_codes, ld_codes, scales + r * ld_scales, ld_scales, x, n,
                       out + r);
  for (; r < rows; ++r)
    DotQ8WeightRows<1>(codes + r * ld_codes, ld_codes, scales + r * ld_scales, ld_scales, x, n,
                       out + r);
}

// Scores of kEntries cache entries (rows e[i·lde], i < kEntries) against the queries in lanes
// [h, h + N): one query vector load a k, then a broadcast and an FMA per entry — kEntries
// independent FMA chains, each lane one FMA per k in k order whatever kEntries is.
template <int kEntries, class D>
HWY_INLINE void ScoreEntries(D d, const float* q, size_t ldq, size_t h, const float* e, size_t lde,
                             size_t K, float* s, size_t lds) {
  hn::Vec<D> a[kEntries];
#pragma GCC unroll 8
  for (int i = 0; i < kEntries; ++i) a[i] = hn::Zero(d);
  for (size_t k = 0; k < K; ++k) {
    const auto qk = hn::LoadU(d, q + k * ldq + h);
#pragma GCC unroll 8
    for (int i = 0; i < kEntries; ++i) a[i] = hn::MulAdd(hn::Set(d, e[i * lde + k]), qk, a[i]);
  }
#pragma GCC unroll 8
  for (int i = 0; i < kEntries; ++i) hn::StoreU(a[i], d, s + i * lds + h);
}

// s[j·lds + h] = Σ_k q[k·ldq + h] · e[j·lde + k]: the queries across the lanes, 8 entries at a
// time (eight chains hide the FMA latency; four left the core waiting on it), then 4, then one.
// Every score's chain is the same in each, so the bits do not depend on n.
void TransposedScores(const float* q, size_t ldq, size_t H, const float* e, size_t lde, size_t n,
                      size_t K, float* s, size_t lds) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  for (size_t h = 0; h < H; h += N) {
    size_t j = 0;
    for (; j + 8 <= n; j += 8) ScoreEntries<8>(d, q, ldq, h, e + j * lde, lde, K, s + j * lds, lds);
    for (; j + 4 <= n; j += 4) ScoreEntries<4>(d, q, ldq, h, e + j * lde, lde, K, s + j * lds, lds);
    for (; j < n; ++j) ScoreEntries<1>(d, q, ldq, h, e + j * lde, lde, K, s + j * lds, lds);
  }
}

// e^x by Highway's polynomial (about 1 ulp), 0 below -104, inputs clamped to 88 (e^88 is
// near the largest float) so that large arguments give a large value, not garbage.
template <class D, class V>
HWY_INLINE V ClampedExp(D d, V x) {
  return hn::Exp(d, hn::Min(x, hn::Set(d, 88.0f)));
}

// gate = silu(gate) · up = gate / (1 + e^-gate) · up. The tail goes through the same vector code
// (padded), so every element gets the same arithmetic wherever it sits.
void SiluMul(float* gate, const float* up, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const auto one = hn::Set(d, 1.0f);
  const auto silu_mul = [&](const float* g_in, const float* u_in, float* out) HWY_ATTR {
    const auto g = hn::LoadU(d, g_in);
    const auto sig = hn::Div(one, hn::Add(one, ClampedExp(d, hn::Neg(g))));
    hn::StoreU(hn::Mul(hn::Mul(g, sig), hn::LoadU(d, u_in)), d, out);
  };
  size_t i = 0;
  for (; i + N <= n; i += N) silu_mul(gate + i, up + i, gate + i);
  if (i < n) {
    HWY_ALIGN float g[hn::MaxLanes(d)] = {}, u[hn::MaxLanes(d)] = {};
    std::copy(gate + i, gate + n, g);
    std::copy(up + i, up + n, u);
    silu_mul(g, u, g);
    std::copy(g, g + (n - i), gate + i);
  }
}

// x[i] = e^(x[i] - shift) (e^-inf = 0); returns the sum of the new values.
float ExpShifted(float* x, size_t n, float shift) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const auto vshift = hn::Set(d, shift);
  auto sum = hn::Zero(d);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto e = ClampedExp(d, hn::Sub(hn::LoadU(d, x + i), vshift));
    hn::StoreU(e, d, x + i);
    sum = hn::Add(sum, e);
  }
  if (i < n) {
    HWY_ALIGN float tail[hn::MaxLanes(d)];
    std::fill(tail, tail + hn::MaxLanes(d), -std::numeric_limits<float>::infinity());
    std::copy(x + i, x + n, tail);
    const auto e = ClampedExp(d, hn::Sub(hn::Load(d, tail), vshift));
    hn::Store(e, d, tail);
    sum = hn::Add(sum, e);
    std::copy(tail, tail + (n - i), x + i);
  }
  return hn::GetLane(hn::SumOfLanes(d, sum));
}

// Two passes: the largest value (NaN lanes replaced by -inf), then the first index holding it.
size_t ArgmaxF32(const float* x, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const auto lowest = hn::Set(d, -std::numeric_limits<float>::infinity());
  auto m0 = lowest, m1 = lowest;
  const auto skip_nan = [&](auto v) HWY_ATTR { return hn::IfThenElse(hn::IsNaN(v), lowest, v); };
  size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    m0 = hn::Max(m0, skip_nan(hn::LoadU(d, x + i)));
    m1 = hn::Max(m1, skip_nan(hn::LoadU(d, x + i + N)));
  }
  float best = hn::GetLane(hn::MaxOfLanes(d, hn::Max(m0, m1)));
  for (; i < n; ++i)
    if (x[i] > best) best = x[i];  // a NaN compares false
  const auto vbest = hn::Set(d, best);
  for (i = 0; i + N <= n; i += N) {
    const intptr_t lane = hn::FindFirstTrue(d, hn::Eq(hn::LoadU(d, x + i), vbest));
    if (lane >= 0) return i + static_cast<size_t>(lane);
  }
  for (; i < n; ++i)
    if (x[i] == best) return i;
  return 0;  // no value but NaNs
}

}  // namespace HWY_NAMESPACE
}  // namespace whale
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace whale {

HWY_EXPORT(DotF32);
HWY_EXPORT(StreamSumF32);
HWY_EXPORT(DotBf16);
HWY_EXPORT(DotE4M3);
HWY_EXPORT(Bf16ToF32);
HWY_EXPORT(E4M3ToF32);
HWY_EXPORT(Axpy);
HWY_EXPORT(WeightedRowsSum);
HWY_EXPORT(WeightedBf16RowsSum);
HWY_EXPORT(DotBf16EachRow);
HWY_EXPORT(WeightedQ8RowsSum);
HWY_EXPORT(DotQ8EachRow);
HWY_EXPORT(TransposedScores);
HWY_EXPORT(SiluMul);
HWY_EXPORT(ExpShifted);
HWY_EXPORT(ArgmaxF32);
HWY_EXPORT(DotF16);
HWY_EXPORT(F16ToF32);
HWY_EXPORT(DotQ8);
HWY_EXPORT(DotQ4);
HWY_EXPORT(Q8ToF32);
HWY_EXPORT(Q4ToF32);
HWY_EXPORT(DotF32Multi);
HWY_EXPORT(DotBf16Multi);
HWY_EXPORT(DotF16Multi);
HWY_EXPORT(DotE4M3Multi);
HWY_EXPORT(DotQ8Multi);
HWY_EXPORT(DotQ4Multi);

void dot_f32_rows(const float* w, const float* x, size_t ldx, size_t T, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(DotF32Multi)(w, x, ldx, T, n, out);
}
void dot_bf16_rows(const uint16_t* w, const float* x, size_t ldx, size_t T, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(DotBf16Multi)(w, x, ldx, T, n, out);
}
void dot_f16_rows(const uint16_t* w, const float* x, size_t ldx, size_t T, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(DotF16Multi)(w, x, ldx, T, n, out);
}
void dot_e4m3_rows(const uint8_t* w, const float* block_scales, size_t block, const float* x,
                   size_t ldx, size_t T, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(DotE4M3Multi)(w, block_scales, block, x, ldx, T, n, out);
}
void dot_q8_rows(const int8_t* codes, const uint16_t* scales, const float* x, size_t ldx, size_t T,
                 size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(DotQ8Multi)(codes, scales, x, ldx, T, n, out);
}
void dot_q4_rows(const uint8_t* packed, const uint16_t* scale_min, const float* x, size_t ldx,
                 size_t T, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(DotQ4Multi)(packed, scale_min, x, ldx, T, n, out);
}

float dot_q8(const int8_t* codes, const uint16_t* scales, const float* x, size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotQ8)(codes, scales, x, n);
}
float dot_q4(const uint8_t* packed, const uint16_t* scale_min, const float* x, size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotQ4)(packed, scale_min, x, n);
}
void q8_to_f32(const int8_t* codes, const uint16_t* scales, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(Q8ToF32)(codes, scales, out, n);
}
void q4_to_f32(const uint8_t* packed, const uint16_t* scale_min, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(Q4ToF32)(packed, scale_min, out, n);
}
float q8_element(const int8_t* codes, const uint16_t* scales, size_t i) {
  return static_cast<float>(codes[i]) * whale::f16_to_f32(scales[i / kQuantGroup]);
}
float q4_element(const uint8_t* packed, const uint16_t* scale_min, size_t i) {
  const size_t g = i / kQuantGroup, j = i % kQuantGroup;
  const uint8_t b = packed[g * (kQuantGroup / 2) + j % (kQuantGroup / 2)];
  const int nibble = j < kQuantGroup / 2 ? b & 15 : b >> 4;
  return static_cast<float>(nibble) * whale::f16_to_f32(scale_min[2 * g]) +
         whale::f16_to_f32(scale_min[2 * g + 1]);
}
float dot_q8_reference(const int8_t* codes, const uint16_t* scales, const float* x, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<double>(q8_element(codes, scales, i)) * x[i];
  return static_cast<float>(sum);
}
float dot_q4_reference(const uint8_t* packed, const uint16_t* scale_min, const float* x, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i)
    sum += static_cast<double>(q4_element(packed, scale_min, i)) * x[i];
  return static_cast<float>(sum);
}

float dot_f16(const uint16_t* w, const float* x, size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotF16)(w, x, n);
}
void f16_to_f32(const uint16_t* in, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(F16ToF32)(in, out, n);
}
float dot_f16_reference(const uint16_t* w, const float* x, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<double>(f16_to_f32(w[i])) * x[i];
  return static_cast<float>(sum);
}

float dot_f32(const float* a, const float* b, size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotF32)(a, b, n);
}
float stream_sum_f32(const float* a, size_t n) {
  return HWY_DYNAMIC_DISPATCH(StreamSumF32)(a, n);
}
float dot_bf16(const uint16_t* w, const float* x, size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotBf16)(w, x, n);
}
float dot_e4m3(const uint8_t* w, const float* block_scales, size_t block, const float* x,
               size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotE4M3)(w, block_scales, block, x, n);
}
void e4m3_to_f32(const uint8_t* w, const float* block_scales, size_t block, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(E4M3ToF32)(w, block_scales, block, out, n);
}
void bf16_to_f32(const uint16_t* in, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(Bf16ToF32)(in, out, n);
}
void axpy(float a, const float* x, float* y, size_t n) {
  HWY_DYNAMIC_DISPATCH(Axpy)(a, x, y, n);
}
void weighted_bf16_rows_sum(const float* p, const uint16_t* v, size_t ldv, size_t n, size_t D,
                            float* out) {
  HWY_DYNAMIC_DISPATCH(WeightedBf16RowsSum)(p, v, ldv, n, D, out);
}
void weighted_bf16_rows_sum_reference(const float* p, const uint16_t* v, size_t ldv, size_t n,
                                      size_t D, float* out) {
  for (size_t i = 0; i < D; ++i)
    for (size_t s = 0; s < n; ++s) out[i] = std::fma(p[s], bf16_to_f32(v[s * ldv + i]), out[i]);
}
void weighted_q8_rows_sum(const float* p, const int8_t* codes, size_t ld_codes,
                          const uint16_t* scales, size_t ld_scales, size_t n, size_t D,
                          float* out) {
  HWY_DYNAMIC_DISPATCH(WeightedQ8RowsSum)(p, codes, ld_codes, scales, ld_scales, n, D, out);
}
void dot_q8_each_row(const int8_t* codes, size_t ld_codes, const uint16_t* scales, size_t ld_scales,
                     size_t rows, const float* x, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(DotQ8EachRow)(codes, ld_codes, scales, ld_scales, rows, x, n, out);
}
void dot_bf16_each_row(const uint16_t* w, size_t ldw, size_t rows, const float* x, size_t n,
                       float* out) {
  HWY_DYNAMIC_DISPATCH(DotBf16EachRow)(w, ldw, rows, x, n, out);
}
void silu_mul_kernel(float* gate, const float* up, size_t n) {
  HWY_DYNAMIC_DISPATCH(SiluMul)(gate, up, n);
}
float exp_shifted(float* x, size_t n, float shift) {
  return HWY_DYNAMIC_DISPATCH(ExpShifted)(x, n, shift);
}
size_t argmax_f32(const float* x, size_t n) {
  return HWY_DYNAMIC_DISPATCH(ArgmaxF32)(x, n);
}
size_t argmax_f32_reference(const float* x, size_t n) {
  size_t best = 0;
  bool found = false;
  for (size_t i = 0; i < n; ++i)
    if (!std::isnan(x[i]) && (!found || x[i] > x[best])) {
      best = i;
      found = true;
    }
  return best;
}
void weighted_rows_sum(const float* p, size_t ldp, size_t G, const float* v, size_t ldv, size_t n,
                       size_t D, float* out, size_t ldo) {
  HWY_DYNAMIC_DISPATCH(WeightedRowsSum)(p, ldp, G, v, ldv, n, D, out, ldo);
}
void transposed_scores(const float* q, size_t ldq, size_t H, const float* e, size_t lde, size_t n,
                       size_t K, float* s, size_t lds) {
  HWY_DYNAMIC_DISPATCH(TransposedScores)(q, ldq, H, e, lde, n, K, s, lds);
}
void transposed_scores_reference(const float* q, size_t ldq, size_t H, const float* e, size_t lde,
                                 size_t n, size_t K, float* s, size_t lds) {
  for (size_t j = 0; j < n; ++j)
    for (size_t h = 0; h < H; ++h) {
      float acc = 0;
      for (size_t k = 0; k < K; ++k) acc = std::fma(e[j * lde + k], q[k * ldq + h], acc);
      s[j * lds + h] = acc;
    }
}
void weighted_rows_sum_reference(const float* p, size_t ldp, size_t G, const float* v, size_t ldv,
                                 size_t n, size_t D, float* out, size_t ldo) {
  for (size_t g = 0; g < G; ++g)
    for (size_t i = 0; i < D; ++i) {
      float acc = out[g * ldo + i];
      for (size_t s = 0; s < n; ++s) acc = std::fma(p[g * ldp + s], v[s * ldv + i], acc);
      out[g * ldo + i] = acc;
    }
}

float stream_sum_f32_reference(const float* a, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += a[i];
  return static_cast<float>(sum);
}
float dot_f32_reference(const float* a, const float* b, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(sum);
}
float dot_bf16_reference(const uint16_t* w, const float* x, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<double>(bf16_to_f32(w[i])) * x[i];
  return static_cast<float>(sum);
}
float dot_e4m3_reference(const uint8_t* w, const float* block_scales, size_t block, const float* x,
                         size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i)
    sum += static_cast<double>(e4m3_to_f32(w[i])) * block_scales[i / block] * x[i];
  return static_cast<float>(sum);
}

std::string simd_target_name() {
  int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  return hwy::TargetName(targets & -targets);  // the lowest bit is the best target
}

}  // namespace whale
#endif  // HWY_ONCE
