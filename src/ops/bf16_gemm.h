// Products of bf16 weights with many activation rows by AVX512-BF16's vdpbf16ps (AMD Zen 4,
// Intel Cooper Lake / Sapphire Rapids and later): the activations are rounded to bf16 once, then
// each instruction multiplies 32 bf16 pairs and adds them into 16 f32 sums — twice the work of an
// f32 FMA, with no dequantization of the weights. linear_forward uses it from kGemmMinTokens rows
// on (prefill, serving batches, training's forward), where the time goes to arithmetic, not to
// reading the weights. It is not bit-identical to the row dots that decode uses: x is rounded to
// bf16 (as llama.cpp does for bf16 weights), and the sums run in another order.
#pragma once
#include <cstddef>
#include <cstdint>

namespace whale {

struct Linear;

// Whether the CPU has it and the path is on: ops/precision.h (bf16_gemm_available(),
// use_bf16_gemm()).

// y[t·ldy + r] = Σ_c w[r·cols + c] · bf16(x[t·cols + c]) for r < rows, t < T: w is [rows, cols]
// bf16, x is [T, cols] f32, y's rows are ldy floats apart. x is rounded and interleaved 16 tokens
// to a vector (a pair of columns per lane), so that each vdpbf16ps takes a pair of weights
// broadcast from memory and adds into 16 tokens' sums — no horizontal sums, the weights read in
// place (bf16_gemm.cc); single core 512 × 2048 × 2048: 166 → 212 GFLOP/s, 92% of vdpbf16ps'
// one per cycle. Threads over panels of weight rows when the work is large. Call only when
// bf16_gemm_available().
void bf16_gemm(const uint16_t* w, int rows, int cols, const float* x, int T, float* y, int ldy);

// Decode's few rows (fewer than kGemmMinTokens) on the same path: x rounded to bf16 once
// (round_to_bf16, rows padded to bf16_row_stride(cols) columns), then each weight row against
// every activation row by bf16_dot_rows: out[t] = Σ_c w[c] · xb[t·ldx + c] for t < T (any T ≥ 1),
// in passes of up to 6 rows that read the weight row once. Every row's sum runs in the same order
// whatever T, so a token's result does not depend on its batch-mates: speculative decoding's
// verification reproduces plain decoding bit for bit on this path too.
int bf16_row_stride(int cols);
void round_to_bf16(const float* x, int T, int cols, int ldx, uint16_t* xb);
void bf16_dot_rows(const uint16_t* w, const uint16_t* xb, int ldx, int T, int n, float* out);
// Rows [0, rows) of w (n values each, one after another) by bf16_dot_rows in one call:
// y[t · ldy + r], the same bits (decode's per-row calls and stores cost, group_lanes.h).
void bf16_dot_row_range(const uint16_t* w, int rows, const uint16_t* xb, int ldx, int T, int n,
                        float* y, size_t ldy);

// An fp8 e4m3 Linear (codes with 128 × 128 block scales) by the same tiles: each panel's rows
// first widened by Linear::row_to_f32 (block scales applied) and rounded to bf16 — DeepSeek's
// fp8_cast_bf16 arithmetic, 2⁻⁹ of a weight — then as bf16_gemm (x [T, w.cols] rounded to bf16
// once). Prefill of fp8 checkpoints.
void e4m3_gemm(const Linear& w, const float* x, int T, float* y, int ldy);

// A bf16 Linear whose rows are packed (ops/packed_bf16.h) by the same tiles: each panel's rows
// unpacked (exactly the bf16 weights), then as bf16_gemm. Prefill of packed models.
void packed_bf16_gemm(const Linear& w, const float* x, int T, float* y, int ldy);

// The same products summed in double, row by row (x rounded to bf16 the same way).
void bf16_gemm_reference(const uint16_t* w, int rows, int cols, const float* x, int T, float* y,
                         int ldy);

}  // namespace whale
