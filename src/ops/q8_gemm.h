// Products of q8 weights (int8 codes, one f16 scale per 32 inputs; io/quantize.h) with
// activations quantized the same way, by AVX512-VNNI's vpdpbusd (AMD Zen 4, Intel Ice Lake and
// later): each instruction multiplies 64 byte pairs and adds them in fours into 16 int32 sums, so
// a 64-byte chunk of a weight row — two groups of 32 — takes one instruction per activation row,
// where widening the codes to f32 takes a dozen. Per chunk and row the two groups' integer sums
// are converted and scaled by (weight scale × activation scale) with one multiply and one FMA.
//
// vpdpbusd multiplies unsigned by signed bytes: the activation codes are stored offset by +128
// (u8), and the offset's share, 128 · Σ w over each group, is one more vpdpbusd of the weights
// against a vector of 128s per weight chunk, shared by every activation row.
//
// The activations are rounded (int8 per group of 32, scale = max|x| / 127), as llama.cpp's q8_0
// path does; exact_activations() (ops/precision.h) keeps them f32 instead (kernels.h's dot_q8).
#pragma once
#include <cstdint>
#include <vector>

namespace whale {

// True when this CPU has AVX512-VNNI (with AVX512-BW/VL).
bool q8_vnni_available();
// Whether linear_forward uses this path for q8 weights: where available, unless
// exact_activations().
bool use_q8_vnni();

// Rows of activations quantized for the q8 products. Row t's group g (32 values) is
// code · scale with code = round(x / scale) in [-127, 127], scale = max|x| / 127 (0 for an
// all-zero group). Codes are stored + 128 as bytes, each row padded to a multiple of 64 (padding
// 128, i.e. 0); scales are stored once per int32 lane of vpdpbusd's sums, 16 per 64-byte chunk:
// lanes 0–7 hold group 2c's scale, lanes 8–15 group 2c + 1's.
struct Q8Activations {
  int T = 0, cols = 0;
  int ld = 0;                  // bytes per row of codes: cols rounded up to 64
  std::vector<uint8_t> codes;  // [T, ld]
  std::vector<float> scales;   // [T, ld / 4]
};
void quantize_activations(const float* x, int T, int cols, Q8Activations* out);
// The same quantization in plain scalar code (the test's reference for the SIMD one).
void quantize_activations_reference(const float* x, int T, int cols, Q8Activations* out);

// Decode's few rows: out[t] = Σ_c w[c] · scale(w, c) · x̂[t][c] for every t < x.T, in passes of up
// to 6 rows that read the weight row once. Every row's sum runs in the same order whatever T, so a
// token's result does not depend on its batch-mates (speculative verification reproduces plain
// decoding bit for bit). w is one row of cols codes, scales its ceil(cols / 32) f16 scales.
void q8_dot_rows(const int8_t* w, const uint16_t* scales, int cols, const Q8Activations& x,
                 float* out);

// Prefill and batches: y[t·ldy + r] = Σ_c W[r][c] · x̂[t][c] for r < rows, t < T, with x [T, cols]
// f32 quantized here; W is [rows, cols] codes with [rows, ceil(cols / 32)] scales. Register tiles
// of 4 weight rows × 4 activation rows, threads over panels of weight rows.
void q8_gemm(const int8_t* w, const uint16_t* scales, int rows, int cols, const float* x, int T,
             float* y, int ldy);

// The same products summed in double, row by row (x quantized by the scalar reference).
void q8_gemm_reference(const int8_t* w, const uint16_t* scales, int rows, int cols, const float* x,
                       int T, float* y, int ldy);

}  // namespace whale
