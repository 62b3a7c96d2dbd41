// Highway compiles this file once per target (foreach_target re-includes it).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/kernels.cc"
#include "ops/kernels.h"

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "tensor/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace whale {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

float DotF32(const float* a, const float* b, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    s0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), s0);
    s1 = hn::MulAdd(hn::LoadU(d, a + i + N), hn::LoadU(d, b + i + N), s1);
    s2 = hn::MulAdd(hn::LoadU(d, a + i + 2 * N), hn::LoadU(d, b + i + 2 * N), s2);
    s3 = hn::MulAdd(hn::LoadU(d, a + i + 3 * N), hn::LoadU(d, b + i + 3 * N), s3);
  }
  for (; i + N <= n; i += N) s0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), s0);
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// bf16 is the top half of an f32: widen to u32 and shift left by 16.
template <class DF, class DU16>
HWY_INLINE hn::Vec<DF> LoadBf16(DF df, DU16 du16, const uint16_t* p) {
  const hn::Rebind<uint32_t, DF> du32;
  return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, p))));
}

float DotBf16(const uint16_t* w, const float* x, size_t n) {
  const hn::ScalableTag<float> d;
  const hn::Rebind<uint16_t, decltype(d)> du16;
  const size_t N = hn::Lanes(d);
  auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    s0 = hn::MulAdd(LoadBf16(d, du16, w + i), hn::LoadU(d, x + i), s0);
    s1 = hn::MulAdd(LoadBf16(d, du16, w + i + N), hn::LoadU(d, x + i + N), s1);
    s2 = hn::MulAdd(LoadBf16(d, du16, w + i + 2 * N), hn::LoadU(d, x + i + 2 * N), s2);
    s3 = hn::MulAdd(LoadBf16(d, du16, w + i + 3 * N), hn::LoadU(d, x + i + 3 * N), s3);
  }
  for (; i + N <= n; i += N) s0 = hn::MulAdd(LoadBf16(d, du16, w + i), hn::LoadU(d, x + i), s0);
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; i < n; ++i) sum += bf16_to_f32(w[i]) * x[i];
  return sum;
}

template <class DF>
HWY_INLINE hn::Vec<DF> LoadF16(DF df, const uint16_t* p) {
  const hn::Rebind<hwy::float16_t, DF> df16;
  return hn::PromoteTo(df, hn::LoadU(df16, reinterpret_cast<const hwy::float16_t*>(p)));
}

float DotF16(const uint16_t* w, const float* x, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  auto s0 = hn::Zero(d), s1 = hn::Zero(d);
  size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    s0 = hn::MulAdd(LoadF16(d, w + i), hn::LoadU(d, x + i), s0);
    s1 = hn::MulAdd(LoadF16(d, w + i + N), hn::LoadU(d, x + i + N), s1);
  }
  for (; i + N <= n; i += N) s0 = hn::MulAdd(LoadF16(d, w + i), hn::LoadU(d, x + i), s0);
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(s0, s1)));
  for (; i < n; ++i) sum += whale::f16_to_f32(w[i]) * x[i];
  return sum;
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

float DotE4M3(const uint8_t* w, const float* x, size_t n) {
  // Decode through the 256-entry table in chunks, then a vector dot.
  constexpr size_t kChunk = 256;
  HWY_ALIGN float buf[kChunk];
  float sum = 0;
  for (size_t i = 0; i < n; i += kChunk) {
    size_t len = n - i < kChunk ? n - i : kChunk;
    for (size_t j = 0; j < len; ++j) buf[j] = kE4M3ToF32[w[i + j]];
    sum += DotF32(buf, x + i, len);
  }
  return sum;
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

// One q8 group's Σ code·x as a vector (scale not applied).
HWY_INLINE hn::Vec<QTag> GroupDotQ8(const int8_t* w, const float* x) {
  const QTag d;
  const hn::Rebind<int8_t, QTag> di8;
  const hn::Rebind<int32_t, QTag> di32;
  const size_t N = hn::Lanes(d);
  auto acc = hn::Zero(d);
  for (size_t j = 0; j < kGroup; j += N)
    acc = hn::MulAdd(hn::ConvertTo(d, hn::PromoteTo(di32, hn::LoadU(di8, w + j))),
                     hn::LoadU(d, x + j), acc);
  return acc;
}

float DotQ8(const int8_t* codes, const uint16_t* scales, const float* x, size_t n) {
  const QTag d;
  const size_t full = n / kGroup;
  HWY_ALIGN float s[kScaleChunk];
  // Two totals (even and odd groups) halve the FMA latency chain that carries across groups.
  auto t0 = hn::Zero(d), t1 = hn::Zero(d);
  for (size_t g0 = 0; g0 < full; g0 += kScaleChunk) {
    const size_t count = full - g0 < kScaleChunk ? full - g0 : kScaleChunk;
    ScalesToF32(scales + g0, s, count);
    const int8_t* w = codes + g0 * kGroup;
    const float* xg = x + g0 * kGroup;
    size_t g = 0;
    for (; g + 2 <= count; g += 2) {
      t0 = hn::MulAdd(GroupDotQ8(w + g * kGroup, xg + g * kGroup), hn::Set(d, s[g]), t0);
      t1 = hn::MulAdd(GroupDotQ8(w + (g + 1) * kGroup, xg + (g + 1) * kGroup), hn::Set(d, s[g + 1]),
                      t1);
    }
    if (g < count)
      t0 = hn::MulAdd(GroupDotQ8(w + g * kGroup, xg + g * kGroup), hn::Set(d, s[g]), t0);
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(t0, t1)));
  if (full * kGroup < n) {
    const float scale = whale::f16_to_f32(scales[full]);
    float tail = 0;
    for (size_t i = full * kGroup; i < n; ++i) tail += static_cast<float>(codes[i]) * x[i];
    sum += tail * scale;
  }
  return sum;
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

// One q4 group: Σ nibble·x and Σ x as vectors (scale and min not applied).
HWY_INLINE void GroupDotQ4(const uint8_t* b, const float* x, hn::Vec<QTag>& acc,
                           hn::Vec<QTag>& xsum) {
  const QTag d;
  const hn::Rebind<uint8_t, QTag> du8;
  const hn::Rebind<uint32_t, QTag> du32;
  const hn::Rebind<int32_t, QTag> di32;
  const size_t N = hn::Lanes(d);
  const auto mask = hn::Set(du32, 15u);
  acc = hn::Zero(d);
  xsum = hn::Zero(d);
  for (size_t j = 0; j < kGroup / 2; j += N) {
    const auto bytes = hn::PromoteTo(du32, hn::LoadU(du8, b + j));
    const auto lo = hn::ConvertTo(d, hn::BitCast(di32, hn::And(bytes, mask)));
    const auto hi = hn::ConvertTo(d, hn::BitCast(di32, hn::ShiftRight<4>(bytes)));
    const auto x_lo = hn::LoadU(d, x + j), x_hi = hn::LoadU(d, x + kGroup / 2 + j);
    acc = hn::MulAdd(lo, x_lo, acc);
    acc = hn::MulAdd(hi, x_hi, acc);
    xsum = hn::Add(xsum, hn::Add(x_lo, x_hi));
  }
}

float DotQ4(const uint8_t* packed, const uint16_t* scale_min, const float* x, size_t n) {
  const QTag d;
  const size_t full = n / kGroup;
  HWY_ALIGN float s[2 * kScaleChunk];
  // Separate totals for the scale and min terms, even and odd groups: short latency chains.
  auto ts0 = hn::Zero(d), ts1 = hn::Zero(d), tm0 = hn::Zero(d), tm1 = hn::Zero(d);
  auto acc = hn::Zero(d), xsum = hn::Zero(d);
  for (size_t g0 = 0; g0 < full; g0 += kScaleChunk) {
    const size_t count = full - g0 < kScaleChunk ? full - g0 : kScaleChunk;
    ScalesToF32(scale_min + 2 * g0, s, 2 * count);
    const uint8_t* b = packed + g0 * (kGroup / 2);
    const float* xg = x + g0 * kGroup;
    size_t g = 0;
    for (; g + 2 <= count; g += 2) {
      GroupDotQ4(b + g * (kGroup / 2), xg + g * kGroup, acc, xsum);
      ts0 = hn::MulAdd(acc, hn::Set(d, s[2 * g]), ts0);
      tm0 = hn::MulAdd(xsum, hn::Set(d, s[2 * g + 1]), tm0);
      GroupDotQ4(b + (g + 1) * (kGroup / 2), xg + (g + 1) * kGroup, acc, xsum);
      ts1 = hn::MulAdd(acc, hn::Set(d, s[2 * g + 2]), ts1);
      tm1 = hn::MulAdd(xsum, hn::Set(d, s[2 * g + 3]), tm1);
    }
    if (g < count) {
      GroupDotQ4(b + g * (kGroup / 2), xg + g * kGroup, acc, xsum);
      ts0 = hn::MulAdd(acc, hn::Set(d, s[2 * g]), ts0);
      tm0 = hn::MulAdd(xsum, hn::Set(d, s[2 * g + 1]), tm0);
    }
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(ts0, ts1), hn::Add(tm0, tm1))));
  if (full * kGroup < n) {
    const float scale = whale::f16_to_f32(scale_min[2 * full]);
    const float min = whale::f16_to_f32(scale_min[2 * full + 1]);
    const uint8_t* b = packed + full * (kGroup / 2);
    for (size_t i = full * kGroup; i < n; ++i)
      sum += Q4Value(b, i - full * kGroup, scale, min) * x[i];
  }
  return sum;
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

void Axpy(float a, const float* x, float* y, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const auto va = hn::Set(d, a);
  size_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(hn::MulAdd(va, hn::LoadU(d, x + i), hn::LoadU(d, y + i)), d, y + i);
  for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace HWY_NAMESPACE
}  // namespace whale
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace whale {

HWY_EXPORT(DotF32);
HWY_EXPORT(DotBf16);
HWY_EXPORT(DotE4M3);
HWY_EXPORT(Bf16ToF32);
HWY_EXPORT(Axpy);
HWY_EXPORT(DotF16);
HWY_EXPORT(F16ToF32);
HWY_EXPORT(DotQ8);
HWY_EXPORT(DotQ4);
HWY_EXPORT(Q8ToF32);
HWY_EXPORT(Q4ToF32);

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
float dot_bf16(const uint16_t* w, const float* x, size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotBf16)(w, x, n);
}
float dot_e4m3(const uint8_t* w, const float* x, size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotE4M3)(w, x, n);
}
void bf16_to_f32(const uint16_t* in, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(Bf16ToF32)(in, out, n);
}
void axpy(float a, const float* x, float* y, size_t n) {
  HWY_DYNAMIC_DISPATCH(Axpy)(a, x, y, n);
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
float dot_e4m3_reference(const uint8_t* w, const float* x, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<double>(e4m3_to_f32(w[i])) * x[i];
  return static_cast<float>(sum);
}

std::string simd_target_name() {
  int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  return hwy::TargetName(targets & -targets);  // the lowest bit is the best target
}

}  // namespace whale
#endif  // HWY_ONCE
