#include "tensor/dtype.h"

#include <array>
#include <cmath>
#include <cstring>

namespace whale {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::BF16:
    case DType::F16:
      return 2;
    case DType::F8_E4M3:
    case DType::U8:
    case DType::I8:
      return 1;
    case DType::I64:
      return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::BF16:
      return "BF16";
    case DType::F16:
      return "F16";
    case DType::F8_E4M3:
      return "F8_E4M3";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::U8:
      return "U8";
    case DType::I8:
      return "I8";
  }
  return "?";
}

bool parse_dtype(const std::string& name, DType* out) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F32", DType::F32}, {"BF16", DType::BF16}, {"F16", DType::F16}, {"F8_E4M3", DType::F8_E4M3},
      {"I64", DType::I64}, {"I32", DType::I32},   {"U8", DType::U8},   {"I8", DType::I8}};
  for (auto& [n, t] : kNames)
    if (name == n) {
      *out = t;
      return true;
    }
  return false;
}

// By its bits: a normal half's exponent rebased (15 → 127) and mantissa widened, exactly; a
// subnormal is mantissa · 2⁻²⁴ (exact in a float). No libm call: q8 kernels convert a group
// scale per 32 weights (std::ldexp here made MLA's q8 absorption several times slower).
float f16_to_f32(uint16_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x8000) << 16;
  const uint32_t magnitude = v & 0x7fff;
  uint32_t bits;
  if (magnitude >= 0x7c00) {  // infinity, NaN (its payload kept)
    bits = sign | 0x7f800000u | (magnitude & 0x3ff) << 13;
  } else if (magnitude >= 0x0400) {  // normal
    bits = sign | (magnitude + ((127 - 15) << 10)) << 13;
  } else {  // zero, subnormal
    const float f = static_cast<float>(magnitude) * 0x1p-24f;
    return sign ? -f : f;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00;
  if (a >= 65520.0f) return sign | 0x7c00;  // rounds to infinity
  if (a < std::ldexp(1.0f, -14)) {          // subnormal: multiples of 2^-24
    return sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24)));
  }
  int e;
  std::frexp(a, &e);                                     // a = m * 2^e, m in [0.5, 1)
  float scaled = std::nearbyint(std::ldexp(a, 11 - e));  // 11 significant bits
  if (scaled >= 2048.0f) {
    scaled /= 2;
    e += 1;
  }
  return sign | static_cast<uint16_t>(((e + 14) << 10) | (static_cast<int>(scaled) & 0x3ff));
}

static float e4m3_decode(uint8_t v) {
  int sign = v >> 7, exponent = (v >> 3) & 0xf, mantissa = v & 7;
  float magnitude;
  if (exponent == 15 && mantissa == 7)
    magnitude = NAN;
  else if (exponent == 0)
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);
  else
    magnitude = std::ldexp(static_cast<float>(mantissa | 8), exponent - 10);
  return sign ? -magnitude : magnitude;
}

static std::array<float, 256> make_e4m3_table() {
  std::array<float, 256> table;
  for (int i = 0; i < 256; ++i) table[i] = e4m3_decode(static_cast<uint8_t>(i));
  return table;
}
const std::array<float, 256> kE4M3ToF32 = make_e4m3_table();

uint8_t f32_to_e4m3(float f) {
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  if (std::isnan(f)) return 0x7f;
  float a = std::fmin(std::fabs(f), 448.0f);
  // Find the nearest of the 127 non-negative finite codes; ties go to the even code.
  // The codes are monotone in value, so a binary search finds the neighbours.
  int lo = 0, hi = 126;  // 126 = 0x7e = 448
  while (hi - lo > 1) {
    int mid = (lo + hi) / 2;
    if (kE4M3ToF32[mid] <= a)
      lo = mid;
    else
      hi = mid;
  }
  float dlo = a - kE4M3ToF32[lo], dhi = kE4M3ToF32[hi] - a;
  int code = (dlo < dhi) ? lo : (dhi < dlo) ? hi : ((lo & 1) ? hi : lo);
  if (a == 0.0f) code = 0;
  return sign | static_cast<uint8_t>(code);
}

}  // namespace whale
