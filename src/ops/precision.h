// Whether the weight products may round the activations before multiplying, as llama.cpp and
// PyTorch's reduced-precision inference do: to bf16 for bf16 weights on AVX512-BF16 CPUs
// (ops/bf16_gemm.h), to int8 per group of 32 for q8 and q4 weights on AVX512-VNNI CPUs
// (ops/int8_gemm.h). Those paths run 2–3× the arithmetic of f32 activations, so they are the
// default where the CPU has them. Exact mode keeps the activations f32 everywhere (the PyTorch
// golden fixtures' arithmetic): `whale --exact`, the environment variable WHALE_EXACT=1, or
// set_exact_activations(true). `--exact-bf16` and WHALE_EXACT_BF16=1, the names of the first such
// path, mean the same.
#pragma once

namespace whale {

bool exact_activations();
void set_exact_activations(bool exact);

}  // namespace whale
