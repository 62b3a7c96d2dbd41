// A q8 or q4 matrix W [rows, cols] (io/quantize.h: groups of 32 along a row) laid out for the
// product with its transpose on AVX512-VNNI CPUs: y = Wᵀ p, y[c] = Σ_r p[r] · W[r][c]. Absorbed
// MLA's absorption is one per head, W_UKᵀ q_nope (model/mla.cc), and read as stored it is a
// weighted sum of rows dequantized to f32: ~17 GB/s on v2-lite-8l's q8 kv_b_proj, 0.43 ms of a
// 13.5 ms decode step for 8 MB (bench/inference/README.md, session 22).
//
// Column c's weights sum over the rows, so the codes go in blocks of 16 columns by 4 rows, one
// cache line each: byte 4j + i of block (cb, k) holds row 4k + i of column 16cb + j, and one
// vpdpbusd adds 4 rows of 16 columns against 4 broadcast activation codes. For group g of the
// columns (column blocks 2g, 2g + 1), the activations are a_g[r] = p[r] · scale[r][g], quantized
// to int8 per 32 rows exactly as every activation of the lane kernels is (vnni_target.h), and
//   y[c] = Σ_32-row groups σ · Σ_r a8[r] · code[r][c]  (+ Σ_r p[r] · (min[r][g] + 8 · scale[r][g])
//          for q4, whose codes count as nibble − 8: centred, their rounding costs 0.5–0.6% of
//          the product, as q8's does, where the raw nibbles cost 0.9–1.6%).
// The codes enter as unsigned bytes — q8's as code + 128, q4's nibbles as they are, 8 rows of a
// column block to a line (the low nibbles rows 8k … 8k + 3, the high ones 8k + 4 … 8k + 7) — and
// −128 · Σ a8 (q4: −8 · Σ a8) takes the offsets back.
// Scales (and q4 minimums) are stored transposed, [cols / 32][rows] f16, so that a group's are
// contiguous.
#pragma once
#include <cstddef>
#include <cstdint>

namespace whale {

struct TransposedInt8 {
  bool q4 = false;
  int rows = 0, cols = 0;
  const uint8_t* codes = nullptr;    // code_bytes(): [cols / 16][row blocks][64]
  const uint16_t* scales = nullptr;  // [cols / 32][rows] f16
  const uint16_t* mins = nullptr;    // q4 only: [cols / 32][rows] f16

  bool empty() const { return codes == nullptr; }
  size_t code_bytes() const { return static_cast<size_t>(rows) * cols / (q4 ? 2 : 1); }
  size_t scale_count() const { return static_cast<size_t>(rows) * (cols / 32); }
  // Bytes a product reads: codes, scales and q4's minimums.
  size_t bytes() const { return code_bytes() + (q4 ? 2 : 1) * scale_count() * sizeof(uint16_t); }
};

// Whether a matrix of this shape fits: whole groups of 32 both ways (the activations are quantized
// per 32 rows), at most kTransposedInt8MaxRows rows.
constexpr int kTransposedInt8MaxRows = 1024;
inline bool transposed_int8_fit(int rows, int cols) {
  return rows > 0 && cols > 0 && rows % 32 == 0 && cols % 32 == 0 && rows <= kTransposedInt8MaxRows;
}

// Lays out a matrix as io/quantize.h stores it (q8: cols int8 codes a row and cols / 32 f16
// scales; q4: cols / 2 packed bytes and cols / 32 (scale, min) pairs) into room for
// code_bytes() codes and scale_count() f16s of scales (and of minimums for q4).
void transpose_int8_rows(bool q4, int rows, int cols, const uint8_t* stored_codes,
                         const uint16_t* stored_scales, uint8_t* codes, uint16_t* scales,
                         uint16_t* mins);

// y[c] = Σ_r p[r] · W[r][c] for c < cols (p has rows values). Needs AVX512-VNNI (use_vnni()), a
// shape that fits (transposed_int8_fit: its activations live on the stack) and codes on a
// 64-byte boundary (whole-line loads); checked.
void transposed_int8_product(const TransposedInt8& w, const float* p, float* y);
// Scalar reference: the same activation codes, integer sums and float finish.
void transposed_int8_product_reference(const TransposedInt8& w, const float* p, float* y);
// W's value at (r, c), from the layout (for tests).
float transposed_int8_value(const TransposedInt8& w, int r, int c);

}  // namespace whale
