// bf16 rows packed losslessly into 12 bits a weight, for decode on AVX512-BF16 CPUs: the same
// weights, bit for bit, in three quarters of the bytes — and decode reads every weight once per
// token, so a memory-bound step reads 25% less (after DFloat11's observation that trained
// weights use few of bf16's 256 exponents; here a fixed-width code instead of Huffman, so that
// a vector unpacks in a handful of operations).
//
// A bf16 value is s (1 bit) · e (8) · m (7); its high byte is s·e₇…e₁, its low byte e₀·m. In a
// segment of 512 values of a row, let E be the largest e₇…e₁ (half the exponent) and
// base = max(E − 7, 0). Every value whose half-exponent h lies in base + 1 … base + 7 — the top 14
// binades of the segment — is stored as its low byte unchanged and a nibble s·(h − base). A value
// below (or ±0) is stored as low byte 0 and nibble s·000, which unpacks to ±0, and its exact
// value goes to the row's exception list (column, bf16), whose products the kernel adds after
// the row's sum; zeros need none. In v2-lite-8l's random weights 2.5 values in 10,000 are
// exceptions, in an 85M model trained by `whale train` 3.5; a matrix with more than 1% stays
// unpacked (model/weights.h's pack_bf16_rows). From memory the packed rows stream as fast as
// plain bf16 rows do (2 threads here: 54 GB/s of packed bytes, 72 bf16-worth), so v2-lite-8l's
// bf16 decode runs 1.38–1.45× faster than on the same rows unpacked (both on huge pages).
//
// Layout of a row of `cols` values (cols a multiple of 64): chunks of 64 values, 96 bytes each —
// 64 low bytes, then 32 bytes of nibbles (plane byte b's nibble in byte b / 2, low nibble for
// even b) — where plane byte b of the chunk holds value
//   8 · (b / 16) + b % 16            for b % 16 < 8   (values 0 … 31)
//   32 + 8 · (b / 16) + b % 16 − 8   for b % 16 ≥ 8   (values 32 … 63),
// the order in which AVX-512's byte unpacks (vpunpcklbw / vpunpckhbw, per 128-bit lane) pair a
// low byte with its high byte into bf16 words: one chunk is a load of each plane, a widening
// and a mask of the nibbles, one vpshufb (the segment's 16-entry nibble → high byte table), two
// unpacks, and two vdpbf16ps per activation row.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace whale {

constexpr int kPackedChunk = 64;       // values per chunk
constexpr int kPackedChunkBytes = 96;  // bytes per chunk
constexpr int kPackedSegment = 512;    // values per segment (one base exponent)

inline bool packed_bf16_fit(int cols) {
  return cols > 0 && cols % kPackedChunk == 0 && cols <= 65536;
}
inline size_t packed_bf16_row_bytes(int cols) {
  return static_cast<size_t>(cols) / kPackedChunk * kPackedChunkBytes;
}
inline int packed_bf16_segments(int cols) {
  return (cols + kPackedSegment - 1) / kPackedSegment;
}

// A value the 12-bit code cannot hold: row-relative column, exact bf16 bits.
struct PackedException {
  uint16_t col;
  uint16_t value;
};

// A matrix [rows, cols] of packed rows: the planes (rows × packed_bf16_row_bytes(cols)), a base
// per segment ([rows, segments]) and the exceptions of row r at exceptions[offsets[r] …
// offsets[r + 1]). Views (not owned).
struct PackedBf16 {
  const uint8_t* planes = nullptr;
  const uint8_t* bases = nullptr;
  const uint32_t* offsets = nullptr;
  const PackedException* exceptions = nullptr;

  // All the matrix's exceptions (its rows' lists end to end).
  size_t exception_count(int rows) const { return offsets[rows]; }
};

// Packs one row: writes packed_bf16_row_bytes(cols) bytes to planes, packed_bf16_segments(cols)
// bases, and appends the row's exceptions in column order; returns how many. By vectors where
// the CPU has AVX512-BF16's companions, else as the reference (value by value); the same bytes.
size_t pack_bf16_row(const uint16_t* row, int cols, uint8_t* planes, uint8_t* bases,
                     std::vector<PackedException>* exceptions);
size_t pack_bf16_row_reference(const uint16_t* row, int cols, uint8_t* planes, uint8_t* bases,
                               std::vector<PackedException>* exceptions);
// Row r back to bf16 (the exact stored bits): by vectors where the CPU has AVX512-BF16's
// companions (bf16_gemm_available()), else as the reference, which reads the layout value by value.
void unpack_bf16_row(const PackedBf16& m, int cols, int r, uint16_t* out);
void unpack_bf16_row_reference(const PackedBf16& m, int cols, int r, uint16_t* out);

// Rows [r0, r1) against T activation rows rounded to bf16 (xb, ldx apart, as bf16_gemm.h's
// round_to_bf16 writes them): y[t · ldy + r − r0] = Σ_c w[r, c] · xb[t, c] for r in [r0, r1), the
// exceptions' products added after each row's vector sum. Each row's sum runs in the same order
// whatever T, so a token's result does not depend on its batch-mates. Call only when
// bf16_gemm_available().
void packed_bf16_dot_row_range(const PackedBf16& m, int cols, int r0, int r1, const uint16_t* xb,
                               int ldx, int T, float* y, size_t ldy);
// Scalar reference: unpacks by the definition above and sums in double.
void packed_bf16_dot_reference(const PackedBf16& m, int cols, int r, const uint16_t* xb,
                               double* out);

}  // namespace whale
