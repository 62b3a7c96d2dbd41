// Products of bf16 weights with many activation rows by AVX512-BF16's vdpbf16ps (AMD Zen 4,
// Intel Cooper Lake / Sapphire Rapids and later): the activations are rounded to bf16 once, then
// each instruction multiplies 32 bf16 pairs and adds them into 16 f32 sums — twice the work of an
// f32 FMA, with no dequantization of the weights. linear_forward uses it from kGemmMinTokens rows
// on (prefill, serving batches, training's forward), where the time goes to arithmetic, not to
// reading the weights. It is not bit-identical to the row dots that decode uses: x is rounded to
// bf16 (as llama.cpp does for bf16 weights), and the sums run in another order.
#pragma once
#include <cstdint>

namespace whale {

// True when this CPU has AVX512-BF16.
bool bf16_gemm_available();
// Whether linear_forward uses bf16_gemm for bf16 weights (from kGemmMinTokens rows on): on by
// default where available; off with `whale --exact-bf16`, the environment variable
// WHALE_EXACT_BF16=1, or set_bf16_gemm(false) — then x stays f32 (dequantized tiles by sgemm),
// as the PyTorch golden fixtures compute.
bool use_bf16_gemm();
void set_bf16_gemm(bool enabled);

// y[t·ldy + r] = Σ_c w[r·cols + c] · bf16(x[t·cols + c]) for r < rows, t < T: w is [rows, cols]
// bf16, x is [T, cols] f32, y's rows are ldy floats apart. Threads over panels of weight rows when
// the work is large. Call only when bf16_gemm_available().
void bf16_gemm(const uint16_t* w, int rows, int cols, const float* x, int T, float* y, int ldy);

// The same products summed in double, row by row (x rounded to bf16 the same way).
void bf16_gemm_reference(const uint16_t* w, int rows, int cols, const float* x, int T, float* y,
                         int ldy);

}  // namespace whale
