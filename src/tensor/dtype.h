// Storage types of weights and their conversions to and from f32.
// FP8 is e4m3fn (OCP "FN" variant, as torch.float8_e4m3fn and the DeepSeek-V3 checkpoints):
// 1 sign, 4 exponent bits (bias 7), 3 mantissa bits, no infinities, max 448, 0x7f/0xff are NaN.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>
#include <string>

namespace whale {

// I8 and U8 also hold whale's group-quantized matrices (q8 codes, packed q4 nibbles; see
// io/quantize.h).
enum class DType { F32, BF16, F16, F8_E4M3, I64, I32, U8, I8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: "F32", "BF16", ...
bool parse_dtype(const std::string& name, DType* out);

inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t v);
uint16_t f32_to_f16(float f);

// Every e4m3 code as f32 (NaN for 0x7f and 0xff).
extern const std::array<float, 256> kE4M3ToF32;
inline float e4m3_to_f32(uint8_t v) {
  return kE4M3ToF32[v];
}
// Saturates to ±448, rounds to nearest even (subnormals included).
uint8_t f32_to_e4m3(float f);

}  // namespace whale
