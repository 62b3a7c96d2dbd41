// Products of whale's group-quantized weights (io/quantize.h: q8 = int8 codes with one f16 scale
// per 32 inputs; q4 = nibbles with an f16 scale and minimum per 32) with activations quantized to
// int8 per group of 32, by AVX512-VNNI's vpdpbusd (AMD Zen 4, Intel Ice Lake and later): each
// instruction multiplies 64 unsigned × signed byte pairs and adds them in fours into 16 int32
// sums, so a 64-weight chunk — two groups — takes one instruction per activation row, where
// widening the weights to f32 takes a dozen. Per chunk and row the two groups' integer sums are
// converted and added with one FMA by their (weight scale × activation scale): decode's row dots
// form the products of 8 groups once per 256 values and spread them to the lanes by a permute.
// Prefill interleaves 16 tokens across the lanes instead (q8_gemm below).
//
// vpdpbusd's unsigned operand is the weights, its signed one the activation codes. q4's nibbles
// (0–15) are unsigned already; their minimum contributes min · Σ x̂ per group, from the
// activations' group sums (the min terms below). q8's codes enter with their sign bit flipped
// (code + 128: one xor per weight chunk for all the activation rows), and each lane sum starts
// from −128 · Σ x̂ over the lane's 4 activation codes, stored with the activations: the sums come
// out exact, as if the codes were multiplied signed. (The other way round — unsigned activations
// — the offset is a sum over the weights, two more instructions for every 64 weights.) With the
// scale products this made decode's q8 row dot 27% faster from L2 (30.9 → 39.1 GB/s of codes on
// one core), two rows 39% faster, results bit for bit the same.
//
// The activations are rounded (int8 per group of 32, scale = max|x| / 127) as llama.cpp's q8_0 /
// q8_1 activations are; exact_activations() (ops/precision.h) keeps them f32 instead
// (kernels.h's dot_q8 / dot_q4).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/aligned.h"

namespace whale {

// Whether the CPU has it and the path is on: ops/precision.h (vnni_available(), use_vnni()).

// Rows of activations quantized for these products. Row t's group g (32 values) is
// code · scale with code = round(x / scale) in [-127, 127], scale = max|x| / 127 (0 for an
// all-zero group); rows are padded to a multiple of 256 values (code 0, scale 0). A row is a
// sequence of blocks of 256 values: 4 chunks of 64 values (two groups), each stored as
//   64 codes         signed bytes
//   16 lane offsets  −128 · the sum of each int32 lane's 4 codes (vpdpbusd adds 4 products per
//                    lane; lanes 0–7 are group 2c's, 8–15 group 2c + 1's): q8's sums start there
// then the block's 8 group scales (f32), its 8 group offsets (int32 −128 · Σ codes of the group:
// where prefill's q8 sums start, a group at a time), and 16 min terms: per group the pair
// (0, scale · Σ codes), which multiplied with the 8 groups' (scale, min) pairs of a q4 row gives
// min · Σ x̂ in the odd lanes and 0 in the even ones. A block is 640 bytes, ten cache lines.
// The kernels keep one pointer per activation row; decode's passes of up to 6 rows of 2048 values
// take 30 KiB, about a Zen 4 core's L1 (32 KiB).
struct Int8Activations {
  static constexpr int kLaneOffsetsOffset = 64;
  static constexpr int kChunkBytes = 64 + 16 * 4;
  static constexpr int kGroupScalesOffset = 4 * kChunkBytes;
  static constexpr int kGroupOffsetsOffset = kGroupScalesOffset + 8 * 4;
  static constexpr int kMinTermsOffset = kGroupScalesOffset + 16 * 4;
  static constexpr int kBlockBytes = kMinTermsOffset + 16 * 4;
  int T = 0, cols = 0, blocks = 0;  // blocks of 256 values per row
  AlignedVector<uint8_t> data;      // [T, blocks, kBlockBytes], rows on cache lines

  const uint8_t* row(int t) const {
    return data.data() + static_cast<size_t>(t) * blocks * kBlockBytes;
  }
  // Byte offsets within a row: chunk c; value i's code; group g's scale, its 8 lane offsets, its
  // group offset, its min term (the second float of its pair).
  static size_t chunk_offset(int c) {
    return static_cast<size_t>(c / 4) * kBlockBytes + (c % 4) * kChunkBytes;
  }
  static size_t code_offset(int i) { return chunk_offset(i / 64) + i % 64; }
  static size_t scale_offset(int g) {
    return static_cast<size_t>(g / 8) * kBlockBytes + kGroupScalesOffset + (g % 8) * 4;
  }
  static size_t lane_offsets_offset(int g) {
    return chunk_offset(g / 2) + kLaneOffsetsOffset + (g % 2) * 8 * 4;
  }
  static size_t group_offset_offset(int g) {
    return static_cast<size_t>(g / 8) * kBlockBytes + kGroupOffsetsOffset + (g % 8) * 4;
  }
  static size_t min_term_offset(int g) {
    return static_cast<size_t>(g / 8) * kBlockBytes + kMinTermsOffset + (2 * (g % 8) + 1) * 4;
  }
  // Value i of row t, its group's scale, group g's min term (scale · Σ codes), group g's lane j
  // offset (−128 · Σ of codes 4j … 4j + 3 of the group) and its group offset (−128 · Σ codes).
  int code(int t, int i) const;
  int lane_offset(int t, int g, int j) const;
  int group_offset(int t, int g) const;
  float scale(int t, int i) const;
  float min_term(int t, int g) const;
};
void quantize_activations(const float* x, int T, int cols, Int8Activations* out);
// The same quantization in plain scalar code (the tests' reference for the SIMD one).
void quantize_activations_reference(const float* x, int T, int cols, Int8Activations* out);

// Decode's few rows: out[t] = Σ_c w[c] · x̂[t][c] for every t < x.T, one weight row (q8: cols
// codes and ceil(cols / 32) scales; q4: ceil(cols / 32) · 16 packed bytes and (scale, min) pairs)
// against all the activation rows, in passes of up to 6 rows that read the weight row once. Every
// row's sum runs in the same order whatever T, so a token's result does not depend on its
// batch-mates (speculative verification reproduces plain decoding bit for bit).
void q8_dot_rows(const int8_t* codes, const uint16_t* scales, int cols, const Int8Activations& x,
                 float* out);
void q4_dot_rows(const uint8_t* packed, const uint16_t* scale_min, int cols,
                 const Int8Activations& x, float* out);

// Prefill and batches: y[t·ldy + r] = Σ_c W[r][c] · x̂[t][c] for r < rows, t < T, with x [T, cols]
// f32 quantized here; W is rows of q8 codes + scales or q4 packed bytes + (scale, min) pairs.
// The activations are interleaved 16 tokens to a vector, so that one vpdpbusd multiplies 4 values
// of 16 tokens by the same 4 weights (broadcast) and the 8 of a group add into the same sums —
// one conversion and FMA per group and token (int8_gemm.cc); threads over panels of weight rows,
// register tiles of 8 rows × 16 tokens. Single-core q8 512 × 2048 × 2048: 109 → 311 GOPS.
// `lanes`: 0, the rows in the stored order; 1, in decode's group-lane order (ops/group_lanes.h),
// read in that order from the panels; R > 1 (q8 only), in super rows of R rows
// (group_lanes.h's super_rows).
void q8_gemm(const int8_t* codes, const uint16_t* scales, int rows, int cols, const float* x, int T,
             float* y, int ldy, int lanes = 0);
void q4_gemm(const uint8_t* packed, const uint16_t* scale_min, int rows, int cols, const float* x,
             int T, float* y, int ldy, bool lanes = false);

// The same products summed in double, row by row (x quantized by the scalar reference).
void q8_gemm_reference(const int8_t* codes, const uint16_t* scales, int rows, int cols,
                       const float* x, int T, float* y, int ldy);
void q4_gemm_reference(const uint8_t* packed, const uint16_t* scale_min, int rows, int cols,
                       const float* x, int T, float* y, int ldy);

}  // namespace whale
