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
