// Innermost loops, in two versions: a plain scalar reference (`*_reference`) and a SIMD version
// compiled for every x86-64 level by Highway and picked at run time (AVX2, AVX-512, ...).
// Tests hold the SIMD versions to the references.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace whale {

float dot_f32(const float* a, const float* b, size_t n);
float dot_bf16(const uint16_t* w, const float* x, size_t n);  // w bf16
float dot_e4m3(const uint8_t* w, const float* x, size_t n);   // w fp8 e4m3 codes (unscaled)
float dot_f16(const uint16_t* w, const float* x, size_t n);   // w IEEE half
void bf16_to_f32(const uint16_t* in, float* out, size_t n);
void f16_to_f32(const uint16_t* in, float* out, size_t n);
void axpy(float a, const float* x, float* y, size_t n);  // y += a·x

float dot_f32_reference(const float* a, const float* b, size_t n);
float dot_bf16_reference(const uint16_t* w, const float* x, size_t n);
float dot_e4m3_reference(const uint8_t* w, const float* x, size_t n);
float dot_f16_reference(const uint16_t* w, const float* x, size_t n);

// The instruction set the dispatcher chose on this machine ("AVX3_ZEN4", "AVX2", ...).
std::string simd_target_name();

}  // namespace whale
