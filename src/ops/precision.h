// Whether the weight products may round the activations before multiplying, as llama.cpp and
// PyTorch's reduced-precision inference do: to bf16 for bf16 weights on AVX512-BF16 CPUs
// (ops/bf16_gemm.h), to int8 per group of 32 for q8 and q4 weights on AVX512-VNNI CPUs
// (ops/int8_gemm.h). Those paths run 2–3× the arithmetic of f32 activations, so they are the
// default where the CPU has them. Exact mode keeps the activations f32 everywhere (the PyTorch
// golden fixtures' arithmetic): `whale --exact`, the environment variable WHALE_EXACT=1, or
// set_exact_activations(true). `--exact-bf16` and WHALE_EXACT_BF16=1, the names of the first such
// path, mean the same.
#pragma once
#include <string>

namespace whale {

bool exact_activations();
void set_exact_activations(bool exact);

// What this CPU has: AVX512-BF16 (vdpbf16ps) and AVX512-VNNI (vpdpbusd), each with AVX512-BW/VL.
bool bf16_gemm_available();
bool vnni_available();
// Whether linear_forward takes the paths: where available, unless exact_activations().
bool use_bf16_gemm();
bool use_vnni();
// The instruction sets the products run with, e.g. "AVX3 + AVX512-BF16 + AVX512-VNNI"
// (kernels.h's simd_target_name(), and the rounded-activation paths that are on).
std::string simd_description();

}  // namespace whale
