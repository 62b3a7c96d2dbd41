// Decode's q8 and q4 rows in group-lane order, for AVX512-VNNI CPUs (ops/int8_gemm.h has the
// products in the stored order; this is the same arithmetic with each row's codes reordered once,
// at load: model/weights.h's put_rows_in_group_lanes).
//
// In the stored order a vpdpbusd's 16 int32 lanes hold 4 values each of two groups, so every 64
// weights need their own conversion, scale spread and FMA besides the vpdpbusd. Reordered, each
// lane holds one group: a row is cut into blocks of 16 groups (512 values; the last block of a
// row may hold fewer, G), and within a block of G groups value j of group i sits at byte
//   (j / 4) · 4G + 4i + j % 4,
// slice k = j / 4 of every group side by side, 4 bytes a group. Eight vpdpbusd over the slices of
// a full block sum each of its groups whole into its own lane, and one conversion and one FMA by
// the 16 (weight scale × activation scale) products finish the block: 11 vector operations per
// 512 weights where the stored order takes about 40. Single-core q8 row dots from L2, weights on
// cache lines: 49 → 72–78 GB/s of codes (AMD Zen 4). Where the compute shows, a step speeds up:
// the 85M-parameter q8 speculative model (100 MB) steps 1.09× faster and verifies two rows 1.33×
// faster (in-process A/B), so speculative decoding there went from 1.11–1.20× to 1.27–1.76×.
// With the row ranges (q8_lanes_dot_row_range), v2-lite-8l q8 decode on a 16-core Xeon, where a
// core's arithmetic limited it: 1.36 → 1.71× llama.cpp at 2 threads (92% of the bandwidth probe),
// 1.23 → 1.52× at 4; on the 2-core Zen 5 VM 1.07–1.17× faster in fast minutes, level in slow ones.
//
// q4 rows (int8_gemm.h: per group 16 bytes, byte b holding values b and 16 + b in its low and
// high nibbles, and an f16 (scale, min) pair) are reordered the same way, by 4-byte slices of the
// packed bytes: packed byte b of group i of a block of G groups sits at (b / 4) · 4G + 4i + b % 4,
// so slice k's low nibbles are values 4k … 4k + 3 of every group (activation slice k) and its
// high nibbles values 16 + 4k … 16 + 4k + 3 (activation slice 4 + k): 4 loads, 12 masks and
// shifts and 8 vpdpbusd per 16 groups, and the minimums' terms once per block (q4 decode on the
// Xeon 1.58 → 1.75× llama.cpp's q4_1 at 2 threads, 1.49 → 1.68× at 4).
//
// Rows whose length is not a multiple of 32 stay in the stored order (Linear::group_lanes false).
#pragma once
#include <cstddef>
#include <cstdint>

#include "base/aligned.h"

namespace whale {

constexpr int kLaneBlockGroups = 16;  // groups of 32 values per block: one per int32 lane

// Whether a row of `cols` values can be reordered: whole groups only.
inline bool group_lanes_fit(int cols) {
  return cols > 0 && cols % 32 == 0;
}
// Where value i of a reordered row of `cols` values sits.
size_t q8_lane_index(int cols, int i);
// One row of codes to the group-lane order and back (out must not alias the input).
void q8_row_to_lanes(const int8_t* codes, int cols, int8_t* out);
void q8_row_from_lanes(const int8_t* lanes, int cols, int8_t* out);
// The same for q4 rows: packed byte b (< cols / 2) of a row, one row each way.
size_t q4_lane_index(int cols, int b);
void q4_row_to_lanes(const uint8_t* packed, int cols, uint8_t* out);
void q4_row_from_lanes(const uint8_t* lanes, int cols, uint8_t* out);

// Rows of activations quantized for these dots exactly as Int8Activations' are (int8 per group of
// 32, scale = max|x| / 127), in the same order. A row is a sequence of blocks of 16 groups:
//   8 slices of 64 codes  slice k, bytes 4i … 4i + 3: codes 4k … 4k + 3 of the block's group i
//   16 scales             f32, group i's in lane i
//   16 sum starts         int32 −128 · Σ codes of group i: the weights enter vpdpbusd as unsigned
//                         bytes (code + 128), and this takes the 128s back
// Lanes past a short last block hold zeros. A block is 640 bytes, ten cache lines.
struct LaneActivations {
  static constexpr int kScalesOffset = 8 * 64;
  static constexpr int kStartsOffset = kScalesOffset + kLaneBlockGroups * 4;
  static constexpr int kBlockBytes = kStartsOffset + kLaneBlockGroups * 4;
  int T = 0, cols = 0, blocks = 0;  // blocks per row
  AlignedVector<uint8_t> data;      // [T, blocks, kBlockBytes], rows on cache lines

  const uint8_t* row(int t) const {
    return data.data() + static_cast<size_t>(t) * blocks * kBlockBytes;
  }
  // Row t's code of value i, the scale of group g, group g's sum start.
  int code(int t, int i) const;
  float scale(int t, int g) const;
  int sum_start(int t, int g) const;
};
// x [T, cols], cols a multiple of 32.
void quantize_lane_activations(const float* x, int T, int cols, LaneActivations* out);

// Rows [0, rows) of a reordered q8 matrix (row r's codes at lanes + r · cols, its cols / 32 f16
// scales at scales + r · cols / 32) against every activation row: y[t · ldy + r] = Σ_c w[r][c] ·
// x̂[t][c], in passes of up to 6 activation rows that read a weight row once. Every sum runs in
// the same order whatever T and whatever the range, so a token's result does not depend on its
// batch-mates (speculative verification reproduces plain decoding bit for bit). One call for the
// whole range: decode makes ~300,000 row dots a token on v2-lite-8l, and a call, a dispatch and a
// store loop per row were 4.5% of its time.
void q8_lanes_dot_row_range(const int8_t* lanes, const uint16_t* scales, int rows, int cols,
                            const LaneActivations& x, float* y, size_t ldy);
// The same for reordered q4 rows (cols / 2 packed bytes and cols / 32 (scale, min) pairs each).
void q4_lanes_dot_row_range(const uint8_t* lanes, const uint16_t* scale_min, int rows, int cols,
                            const LaneActivations& x, float* y, size_t ldy);

// Super rows: a row whose length is not a multiple of 512 ends in a short block, and such rows
// stream from memory slower than rows of whole blocks — not for the short block's arithmetic
// (skipped, its bytes still streamed, 1408-value rows read no faster), but for the row's shape:
// on the 2-core Zen 5 VM, two threads over 512 MB, 1408 values 59–68 GB/s and 2816 values 57–58
// against 75–81 for 1536 or 3072 (bench/inference/README.md, session 23). The super-row order
// puts super_rows(cols) = R consecutive rows into group-lane order as one row of R · cols values
// (q8_row_to_lanes over the R rows' codes at once): every block whole, the same bytes, and the
// scales as they are ([rows][groups] is the super rows' group order already). Read so, 2816
// values stream at 67–75 GB/s where rows read 43–59, and 1408 values at 65–75 against 65–69
// (bench/inference/super_rows.cc). Model::load lays out q8 rows of fewer than 8 blocks that take
// super rows of 2 this way (v2-lite-8l's shared experts' down_proj: q8 decode 1.02× faster,
// alternated in one process); Linear::super_rows says so to every reader (decode's row dots
// here, prefill's panels in int8_gemm.cc, the rows put back in order).
//
// Rows per super row: the fewest whose groups fill whole blocks (1 for rows of whole blocks).
int super_rows(int cols);
// Rows [0, rows) (a multiple of super_rows(cols)) of a q8 matrix in super-row order, against the
// activation rows of x̂ repeated super_rows(cols) times (quantize_super_activations): y[t · ldy +
// r] = Σ_c w[r][c] · x̂[t][c]. Each token's sums run in the same order whatever T (batch
// independent); the order differs from q8_lanes_dot_row_range's, so the bits may too.
void q8_super_rows_dot_range(const int8_t* lanes, const uint16_t* scales, int rows, int cols,
                             const LaneActivations& xs, float* y, size_t ldy);
// x [T, cols] repeated super_rows(cols) times along each row, quantized as
// quantize_lane_activations quantizes (groups of 32 are whole, so every copy has the same codes and
// scales).
void quantize_super_activations(const float* x, int T, int cols, LaneActivations* out);

}  // namespace whale
