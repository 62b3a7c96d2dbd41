// A weight matrix W [rows = out, cols = in] used in its stored type: f32, bf16, or fp8 e4m3
// with one f32 scale per block_rows × block_cols block (DeepSeek-V3's `weight_scale_inv`:
// w = e4m3 · scale, multiply despite the name), or whale's group quantization (io/quantize.h):
// I8 = q8 (int8 codes, one f16 scale per 32 inputs), U8 = q4 (packed nibbles, an f16 scale and
// minimum per 32 inputs). Dequantization happens inside the products.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "base/aligned.h"
#include "ops/group_lanes.h"
#include "ops/int8_gemm.h"
#include "ops/packed_bf16.h"
#include "ops/work_shares.h"
#include "tensor/dtype.h"

namespace whale {

struct Linear {
  DType dtype = DType::F32;
  int rows = 0, cols = 0;
  const uint8_t* data = nullptr;   // rows × row_bytes() bytes (not owned)
  std::vector<float> block_scale;  // fp8 only: [ceil(rows/br), ceil(cols/bc)]
  int block_rows = 128, block_cols = 128;
  // q8/q4 only (not owned): q8 [rows, groups] scales, q4 [rows, groups, 2] (scale, min) pairs,
  // as f16 bits; groups = ceil(cols / 32).
  const uint16_t* qscale = nullptr;
  // q8/q4 only: the rows' codes are in decode's group-lane order (ops/group_lanes.h), as
  // put_rows_in_group_lanes (model/weights.h) stores them for the AVX512-VNNI row dots; prefill's
  // tiles read that order in place, every other reader puts a row back in order first.
  bool group_lanes = false;
  // q8 rows in group-lane order only: how many consecutive rows share one lane row (group_lanes.h's
  // super rows: rows that end in half a block, such as 2816 values, read as rows of whole blocks).
  int super_rows = 1;
  // bf16 only: the rows packed losslessly in 12 bits a value (ops/packed_bf16.h), as
  // pack_bf16_rows (model/weights.h) stores them for AVX512-BF16 CPUs; data then points at the
  // planes. Decode's row dots and prefill's tiles read the packed rows, every other reader
  // unpacks a row first.
  PackedBf16 packed;

  bool bf16_packed() const { return packed.planes != nullptr; }

  bool empty() const { return data == nullptr; }
  // fp8: the scales of row r's blocks along the row (ceil(cols / block_cols) of them).
  const float* row_block_scales(int r) const {
    return block_scale.data() + (r / block_rows) * ((cols + block_cols - 1) / block_cols);
  }
  bool quantized() const { return dtype == DType::I8 || dtype == DType::U8; }
  size_t groups() const { return (static_cast<size_t>(cols) + 31) / 32; }
  // Bytes of one row's codes: cols (q8), groups · 16 (q4), cols · 1.5 (packed bf16), cols ·
  // element size otherwise.
  size_t row_bytes() const;
  // Bytes a full pass over the matrix reads (codes and, for q8/q4, their scales; for packed bf16
  // the bases and exceptions).
  size_t bytes() const;
  // Row r dequantized to f32 (out has cols elements).
  void row_to_f32(int r, float* out) const;
  // Dot product of row r with x (cols elements).
  float row_dot(int r, const float* x) const;
  // Dot products of row r with T rows of x ([T, cols]): out[t], bit-identical to row_dot(r, x +
  // t·cols), with the row read and dequantized once for up to 7 rows of x (kernels.h's *_rows).
  void rows_dot(int r, const float* x, int T, float* out) const;
  // out[k] += Σ_{s < n} p[s] · W[r0 + s, k]: n consecutive rows weighted and summed (MLA's
  // absorption W_UKᵀ q_nope). Plain bf16 rows, and q8 rows in their stored order, in one kernel
  // call; other formats row by row (row_to_f32, axpy): the same FMAs either way.
  void weighted_rows_sum(int r0, int n, const float* p, float* out) const;
  // out[i] = row_dot(r0 + i, x) for i < n, the same bits (bf16 and q8 rows as above: one call).
  void row_dots(int r0, int n, const float* x, float* out) const;
  // Asks for rows r0 … r0 + n into the cache ahead of their use (at most their first 16 KiB):
  // blocks of a few KiB met cold are read at a fraction of the bandwidth (a stream the hardware
  // prefetcher has not yet caught).
  void prefetch_rows(int r0, int n) const;

  // Activations prepared once for the row dots of a few tokens: for bf16 weights on the
  // AVX512-BF16 path (use_bf16_gemm()) rounded to bf16, for q8 and q4 weights on the
  // AVX512-VNNI path (use_vnni()) quantized to int8, otherwise x as given.
  struct RowsInput {
    const float* x = nullptr;
    int T = 0;
    AlignedVector<uint16_t> bf16;  // on the bf16 path: xb_shift values, then the T rows
    size_t xb_shift = 0;
    int ldx = 0;            // bf16_row_stride(cols)
    Int8Activations int8;   // when on the VNNI path
    LaneActivations lanes;  // instead, for q8/q4 rows in group-lane order
    // The rounded rows [T, ldx], or null off the bf16 path (an offset into bf16, not a pointer
    // kept beside it, so that a copy stays valid).
    const uint16_t* xb() const { return bf16.empty() ? nullptr : bf16.data() + xb_shift; }
  };
  RowsInput prepare_rows(const float* x, int T) const;
  // Whether prepare_rows gives `other` the same rows for the same x (the same format, width and
  // bf16 offset), so that one preparation serves both: a decode step's experts all take the
  // same token.
  bool same_rows_input(const Linear& other) const;
  // out[t] for t < in.T: rows_dot on the prepared activations, each row batch-independent.
  void rows_dot(int r, const RowsInput& in, float* out) const;
  // Rows [r0, r1) of y = W · x on the prepared activations: y[t · ldy + r] = rows_dot(r)'s out[t]
  // (one call per range: for reordered q8/q4 rows and bf16 rows, one kernel call).
  void rows_dot_range(int r0, int r1, const RowsInput& in, float* y, size_t ldy) const;
};

// From this many tokens on, linear_forward multiplies dequantized tiles by sgemm; below, row dots.
constexpr int kGemmMinTokens = 8;
// linear_forward uses threads when rows · cols · T exceeds this (less is not worth a fork/join).
constexpr size_t kLinearParallelWork = 32768;

// The GEMM kernels' (bf16_gemm.h, int8_gemm.h) split of a matrix's rows: panels of a multiple
// of `tile` rows, at most max_rows, smaller for small matrices so that every thread gets several
// (a batch's kv_a_proj has 576 rows, a byte-level head 258); panel(r0, r1) for each, threads
// over panels when the product's work (rows · cols · T) is large.
template <class Panel>
void for_each_panel(int rows, size_t work, int tile, int max_rows, const Panel& panel) {
  const bool threads = work > kLinearParallelWork;
  const int team = threads ? omp_get_max_threads() : 1;
  const int panel_rows = std::clamp(rows / (4 * team) / tile * tile, tile, max_rows);
  const int panels = (rows + panel_rows - 1) / panel_rows;
#pragma omp parallel for schedule(dynamic) if (threads)
  for (int p = 0; p < panels; ++p) panel(p * panel_rows, std::min(rows, (p + 1) * panel_rows));
}

// y[t, :] = W · x[t, :] for t < T. x is [T, cols], y is [T, rows]. Threads over rows: for a few
// tokens, each weight row against all of them at once (rows_dot, bit-identical to T = 1's
// row_dot, so each token's result is independent of the batch: speculative decoding's
// verification reproduces decode bit for bit; bf16 weights on AVX512-BF16 CPUs multiply
// activations rounded to bf16, q8/q4 weights on AVX512-VNNI CPUs int8 activations, unless
// --exact); from 8 tokens on, bf16 weights by AVX512-BF16 (ops/bf16_gemm.h) and q8/q4 weights by
// AVX512-VNNI (ops/int8_gemm.h) where the CPU has them, else tiles of dequantized rows multiplied
// by sgemm (f32: one sgemm).
void linear_forward(const Linear& w, const float* x, int T, float* y);
// Scalar reference: dequantizes each element with the scalar conversions, sums in double.
void linear_forward_reference(const Linear& w, const float* x, int T, float* y);

// Several products with one input, y_i = W_i · x (MLA's query and latent projections): for a few
// tokens the rows of all of them in one parallel region — linear_forward's row dots, so the same
// bits — else linear_forward for each.
struct LinearProduct {
  const Linear* w;
  float* y;  // [T, w->rows]
};
void linear_forward_together(const std::vector<LinearProduct>& products, const float* x, int T);

// What decode's parallel row dots hand out: the rows of several matrices in chunks, numbered one
// matrix (a run) after another — run i's chunks of rows_per_chunk rows are items [first(i),
// first(i + 1)) — and shared out to the threads in shares of equal bytes (WorkShares: each
// thread streams its own consecutive rows, then takes the back half of another's).
class RowChunks {
 public:
  // Appends w's rows as the next run; returns its index.
  int add(const Linear& w, int rows_per_chunk);
  int items() const { return items_; }
  // Run i's chunk count.
  int chunks(int run) const {
    return (run + 1 < static_cast<int>(runs_.size()) ? runs_[run + 1].first : items_) -
           runs_[run].first;
  }
  struct Chunk {
    int run, r0, r1;
  };
  Chunk chunk(int item) const;
  const Linear& matrix(int run) const { return *runs_[run].w; }
  WorkShares shares(int threads) const;

 private:
  struct Run {
    const Linear* w;
    int rows_per_chunk, first;
    double row_bytes;
  };
  // Item `item` of run i: its rows.
  static Chunk chunk_of(const Run& run, int i, int item);
  std::vector<Run> runs_;
  int items_ = 0;
};

}  // namespace whale
