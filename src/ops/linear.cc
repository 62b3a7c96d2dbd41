#include "ops/linear.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "ops/bf16_gemm.h"
#include "ops/gemm.h"
#include "ops/kernels.h"
#include "ops/precision.h"
#include "ops/team.h"

namespace whale {

size_t Linear::row_bytes() const {
  if (dtype == DType::U8) return groups() * 16;
  if (bf16_packed()) return packed_bf16_row_bytes(cols);
  return static_cast<size_t>(cols) * dtype_size(dtype);
}

size_t Linear::bytes() const {
  size_t b = static_cast<size_t>(rows) * row_bytes();
  if (dtype == DType::I8) b += static_cast<size_t>(rows) * groups() * 2;
  if (dtype == DType::U8) b += static_cast<size_t>(rows) * groups() * 4;
  if (bf16_packed())  // segment bases, the exception offsets and the exceptions
    b += static_cast<size_t>(rows) * packed_bf16_segments(cols) +
         (rows + size_t{1}) * sizeof(uint32_t) +
         packed.exception_count(rows) * sizeof(PackedException);
  return b;
}

namespace {
// Row r's q8 codes or q4 packed bytes in their stored order: the row itself, or for rows in
// group-lane order a copy put back in order (this thread's scratch, valid until its next call).
const uint8_t* stored_row(const Linear& w, int r) {
  const uint8_t* row = w.data + r * w.row_bytes();
  if (!w.group_lanes) return row;
  thread_local std::vector<uint8_t> stored;
  if (w.super_rows > 1) {  // the whole super row back in order, then this row of it
    const int R = w.super_rows, first = r / R * R;
    stored.resize(R * w.row_bytes());
    q8_row_from_lanes(reinterpret_cast<const int8_t*>(w.data + first * w.row_bytes()), R * w.cols,
                      reinterpret_cast<int8_t*>(stored.data()));
    return stored.data() + (r - first) * w.row_bytes();
  }
  stored.resize(w.row_bytes());
  if (w.dtype == DType::I8)
    q8_row_from_lanes(reinterpret_cast<const int8_t*>(row), w.cols,
                      reinterpret_cast<int8_t*>(stored.data()));
  else
    q4_row_from_lanes(row, w.cols, stored.data());
  return stored.data();
}
// Row r of a bf16 matrix: the row itself, or for packed rows a copy unpacked (this thread's
// scratch, valid until its next call).
const uint16_t* bf16_row(const Linear& w, int r) {
  if (!w.bf16_packed())
    return reinterpret_cast<const uint16_t*>(w.data) + static_cast<size_t>(r) * w.cols;
  thread_local std::vector<uint16_t> row;
  row.resize(w.cols);
  unpack_bf16_row(w.packed, w.cols, r, row.data());
  return row.data();
}
const int8_t* q8_codes(const Linear& w, int r) {
  return reinterpret_cast<const int8_t*>(stored_row(w, r));
}
// Rows [r0, r0 + n) of a q8/q4 matrix in group-lane order against prepared activations:
// y[t · ldy + i] for row r0 + i.
void lane_rows(const Linear& w, int r0, int n, const LaneActivations& x, float* y, size_t ldy) {
  if (w.super_rows > 1) {
    const int R = w.super_rows;
    const auto super_range = [&](int first, int count, float* out, size_t ld) {
      q8_super_rows_dot_range(reinterpret_cast<const int8_t*>(w.data) + first * w.row_bytes(),
                              w.qscale + first * w.groups(), count, w.cols, x, out, ld);
    };
    if (r0 % R == 0 && n % R == 0) {
      super_range(r0, n, y, ldy);
      return;
    }
    // Rows that cut super rows (a single row's dot): the super rows that hold them, then theirs.
    const int first = r0 / R * R, count = (r0 + n + R - 1) / R * R - first;
    std::vector<float> all(static_cast<size_t>(x.T) * count);
    super_range(first, count, all.data(), count);
    for (int t = 0; t < x.T; ++t)
      for (int i = 0; i < n; ++i)
        y[t * ldy + i] = all[static_cast<size_t>(t) * count + r0 - first + i];
    return;
  }
  const uint8_t* rows = w.data + r0 * w.row_bytes();
  if (w.dtype == DType::I8)
    q8_lanes_dot_row_range(reinterpret_cast<const int8_t*>(rows), w.qscale + r0 * w.groups(), n,
                           w.cols, x, y, ldy);
  else
    q4_lanes_dot_row_range(rows, w.qscale + 2 * r0 * w.groups(), n, w.cols, x, y, ldy);
}
}  // namespace

void Linear::row_to_f32(int r, float* out) const {
  size_t offset = static_cast<size_t>(r) * cols;
  switch (dtype) {
    case DType::I8:
      q8_to_f32(q8_codes(*this, r), qscale + r * groups(), out, cols);
      break;
    case DType::U8:
      q4_to_f32(stored_row(*this, r), qscale + 2 * r * groups(), out, cols);
      break;
    case DType::F32:
      std::memcpy(out, data + offset * 4, static_cast<size_t>(cols) * 4);
      break;
    case DType::BF16:
      bf16_to_f32(bf16_row(*this, r), out, cols);
      break;
    case DType::F16:
      f16_to_f32(reinterpret_cast<const uint16_t*>(data) + offset, out, cols);
      break;
    case DType::F8_E4M3:
      e4m3_to_f32(data + offset, row_block_scales(r), block_cols, out, cols);
      break;
    default:
      break;
  }
}

float Linear::row_dot(int r, const float* x) const {
  size_t offset = static_cast<size_t>(r) * cols;
  switch (dtype) {
    case DType::I8:
      return dot_q8(q8_codes(*this, r), qscale + r * groups(), x, cols);
    case DType::U8:
      return dot_q4(stored_row(*this, r), qscale + 2 * r * groups(), x, cols);
    case DType::F32: {
      const float* w = reinterpret_cast<const float*>(data) + offset;
      return dot_f32(w, x, cols);
    }
    case DType::BF16:
      return dot_bf16(bf16_row(*this, r), x, cols);
    case DType::F16:
      return dot_f16(reinterpret_cast<const uint16_t*>(data) + offset, x, cols);
    case DType::F8_E4M3:
      return dot_e4m3(data + offset, row_block_scales(r), block_cols, x, cols);
    default:
      return 0;
  }
}

void Linear::weighted_rows_sum(int r0, int n, const float* p, float* out) const {
  if (dtype == DType::BF16 && !bf16_packed()) {
    weighted_bf16_rows_sum(p, bf16_row(*this, r0), cols, n, cols, out);
    return;
  }
  if (dtype == DType::I8 && !group_lanes && cols % kQuantGroup == 0) {
    weighted_q8_rows_sum(p, reinterpret_cast<const int8_t*>(data) + static_cast<size_t>(r0) * cols,
                         cols, qscale + static_cast<size_t>(r0) * groups(), groups(), n, cols, out);
    return;
  }
  thread_local std::vector<float> row;
  row.resize(cols);
  for (int s = 0; s < n; ++s) {
    row_to_f32(r0 + s, row.data());
    axpy(p[s], row.data(), out, cols);
  }
}

void Linear::prefetch_rows(int r0, int n) const {
  constexpr size_t kMostBytes = 16 << 10;
  const size_t bytes = std::min(kMostBytes, static_cast<size_t>(n) * row_bytes());
  const uint8_t* first = data + static_cast<size_t>(r0) * row_bytes();
  for (size_t b = 0; b < bytes; b += kCacheLine) __builtin_prefetch(first + b, 0, 2);
}

void Linear::row_dots(int r0, int n, const float* x, float* out) const {
  if (dtype == DType::BF16 && !bf16_packed()) {
    dot_bf16_each_row(bf16_row(*this, r0), cols, n, x, cols, out);
    return;
  }
  if (dtype == DType::I8 && !group_lanes && cols % kQuantGroup == 0) {
    dot_q8_each_row(reinterpret_cast<const int8_t*>(data) + static_cast<size_t>(r0) * cols, cols,
                    qscale + static_cast<size_t>(r0) * groups(), groups(), n, x, cols, out);
    return;
  }
  for (int i = 0; i < n; ++i) out[i] = row_dot(r0 + i, x);
}

void Linear::rows_dot(int r, const float* x, int T, float* out) const {
  const size_t offset = static_cast<size_t>(r) * cols, n = cols, ldx = cols;
  switch (dtype) {
    case DType::I8:
      dot_q8_rows(q8_codes(*this, r), qscale + r * groups(), x, ldx, T, n, out);
      return;
    case DType::U8:
      dot_q4_rows(stored_row(*this, r), qscale + 2 * r * groups(), x, ldx, T, n, out);
      return;
    case DType::F32:
      dot_f32_rows(reinterpret_cast<const float*>(data) + offset, x, ldx, T, n, out);
      return;
    case DType::BF16:
      dot_bf16_rows(bf16_row(*this, r), x, ldx, T, n, out);
      return;
    case DType::F16:
      dot_f16_rows(reinterpret_cast<const uint16_t*>(data) + offset, x, ldx, T, n, out);
      return;
    case DType::F8_E4M3:
      dot_e4m3_rows(data + offset, row_block_scales(r), block_cols, x, ldx, T, n, out);
      return;
    default:
      std::fill_n(out, T, 0.0f);
  }
}

namespace {
// Where prepare_rows puts the rounded rows on the bf16 path, in elements (see there; 0 for other
// dtypes).
size_t bf16_input_shift(const Linear& w) {
  return w.dtype == DType::BF16 && !w.bf16_packed() && reinterpret_cast<uintptr_t>(w.data) % 32 == 0
             ? 8
             : 0;
}
}  // namespace

bool Linear::same_rows_input(const Linear& o) const {
  return dtype == o.dtype && cols == o.cols && group_lanes == o.group_lanes &&
         super_rows == o.super_rows && bf16_packed() == o.bf16_packed() &&
         bf16_input_shift(*this) == bf16_input_shift(o);
}

Linear::RowsInput Linear::prepare_rows(const float* x, int T) const {
  RowsInput in;
  in.x = x;
  in.T = T;
  if (dtype == DType::BF16 && use_bf16_gemm()) {
    // The rows on cache lines, unless plain weight rows start at a multiple of 32 bytes: then
    // 16 bytes past one. Plain weights and activations at the same offset modulo 32 made
    // single-token steps of an 85M bf16 model ~10% slower (the same file with its data 0, 32 or
    // 40 bytes off a line, alternated; every activation offset against weights at 32: only 0 and
    // 32 were slow). A weight file's data start is a lottery (safetensors aligns it to 8 bytes).
    // Packed rows always take them on lines: their kernel loads a chunk's 64 activations as two
    // whole lines, where a load across two lines costs two (alternated in one process, packed
    // v2-lite-8l decode 1.06× faster on lines than 16 bytes off, a two-row verification of the
    // 85M model 1.14×).
    const size_t shift = bf16_input_shift(*this);
    in.ldx = bf16_row_stride(cols);
    in.bf16.resize(shift + static_cast<size_t>(T) * in.ldx);
    in.xb_shift = shift;
    round_to_bf16(x, T, cols, in.ldx, in.bf16.data() + shift);
  } else if (group_lanes && use_vnni()) {
    if (super_rows > 1)
      quantize_super_activations(x, T, cols, &in.lanes);
    else
      quantize_lane_activations(x, T, cols, &in.lanes);
  } else if (quantized() && use_vnni()) {
    quantize_activations(x, T, cols, &in.int8);
  }
  return in;
}

void Linear::rows_dot(int r, const RowsInput& in, float* out) const {
  if (in.xb() && bf16_packed()) {
    packed_bf16_dot_row_range(packed, cols, r, r + 1, in.xb(), in.ldx, in.T, out, 1);
    return;
  }
  if (in.xb() && dtype == DType::BF16) {
    bf16_dot_rows(reinterpret_cast<const uint16_t*>(data) + static_cast<size_t>(r) * cols, in.xb(),
                  in.ldx, in.T, cols, out);
    return;
  }
  if (in.lanes.T > 0 && group_lanes) {
    lane_rows(*this, r, 1, in.lanes, out, 1);
    return;
  }
  if (in.int8.T > 0 && dtype == DType::I8) {
    q8_dot_rows(reinterpret_cast<const int8_t*>(data) + static_cast<size_t>(r) * cols,
                qscale + static_cast<size_t>(r) * groups(), cols, in.int8, out);
    return;
  }
  if (in.int8.T > 0 && dtype == DType::U8) {
    q4_dot_rows(data + r * row_bytes(), qscale + 2 * r * groups(), cols, in.int8, out);
    return;
  }
  if (in.T == 1) {
    out[0] = row_dot(r, in.x);
    return;
  }
  rows_dot(r, in.x, in.T, out);
}

void Linear::rows_dot_range(int r0, int r1, const RowsInput& in, float* y, size_t ldy) const {
  if (in.lanes.T > 0 && group_lanes) {
    lane_rows(*this, r0, r1 - r0, in.lanes, y + r0, ldy);
    return;
  }
  if (in.xb() && bf16_packed()) {
    packed_bf16_dot_row_range(packed, cols, r0, r1, in.xb(), in.ldx, in.T, y + r0, ldy);
    return;
  }
  if (in.xb() && dtype == DType::BF16) {
    bf16_dot_row_range(reinterpret_cast<const uint16_t*>(data) + static_cast<size_t>(r0) * cols,
                       r1 - r0, in.xb(), in.ldx, in.T, cols, y + r0, ldy);
    return;
  }
  float out[kGemmMinTokens];
  for (int r = r0; r < r1; ++r) {
    rows_dot(r, in, out);
    for (int t = 0; t < in.T; ++t) y[t * ldy + r] = out[t];
  }
}

void linear_forward(const Linear& w, const float* x, int T, float* y) {
  const int rows = w.rows, cols = w.cols;
  const bool threads = static_cast<size_t>(rows) * cols * T > kLinearParallelWork;
  if (T < kGemmMinTokens) {
    linear_forward_together({{&w, y}}, x, T);
    return;
  }
  if (w.bf16_packed() && use_bf16_gemm()) {
    packed_bf16_gemm(w, x, T, y, rows);
    return;
  }
  if (w.dtype == DType::BF16 && use_bf16_gemm()) {
    bf16_gemm(reinterpret_cast<const uint16_t*>(w.data), rows, cols, x, T, y, rows);
    return;
  }
  if (w.dtype == DType::F8_E4M3 && use_bf16_gemm()) {
    e4m3_gemm(w, x, T, y, rows);
    return;
  }
  if (w.dtype == DType::I8 && use_vnni()) {
    q8_gemm(reinterpret_cast<const int8_t*>(w.data), w.qscale, rows, cols, x, T, y, rows,
            w.group_lanes ? w.super_rows : 0);
    return;
  }
  if (w.dtype == DType::U8 && use_vnni()) {
    q4_gemm(w.data, w.qscale, rows, cols, x, T, y, rows, w.group_lanes);
    return;
  }
  if (w.dtype == DType::F32) {  // a true GEMM
    matmul_xwt(x, reinterpret_cast<const float*>(w.data), T, cols, rows, y);
    return;
  }
  // Many tokens: dequantize a tile of rows (about 256 KiB of f32) and multiply it with every
  // token at once by sgemm: y[:, r0 : r0 + n] = x · tileᵀ. One tile per thread at a time.
  const int tile_rows = std::clamp((65536 / std::max(cols, 1)) / 8 * 8, 8, 256);
#pragma omp parallel if (threads)
  {
    std::vector<float> tile(static_cast<size_t>(tile_rows) * cols);
#pragma omp for schedule(dynamic)
    for (int r0 = 0; r0 < rows; r0 += tile_rows) {
      const int n = std::min(tile_rows, rows - r0);
      for (int i = 0; i < n; ++i) w.row_to_f32(r0 + i, tile.data() + static_cast<size_t>(i) * cols);
      gemm(false, true, T, n, cols, 1.0f, x, cols, tile.data(), cols, 0.0f, y + r0, rows);
    }
  }
}

int RowChunks::add(const Linear& w, int rows_per_chunk) {
  runs_.push_back({&w, rows_per_chunk, items_, static_cast<double>(w.row_bytes())});
  items_ += (w.rows + rows_per_chunk - 1) / rows_per_chunk;
  return static_cast<int>(runs_.size()) - 1;
}

RowChunks::Chunk RowChunks::chunk_of(const Run& run, int i, int item) {
  const int r0 = (item - run.first) * run.rows_per_chunk;
  return {i, r0, std::min(r0 + run.rows_per_chunk, run.w->rows)};
}

RowChunks::Chunk RowChunks::chunk(int item) const {
  const auto run = std::prev(std::upper_bound(runs_.begin(), runs_.end(), item,
                                              [](int i, const Run& r) { return i < r.first; }));
  return chunk_of(*run, static_cast<int>(run - runs_.begin()), item);
}

WorkShares RowChunks::shares(int threads) const {
  // WorkShares asks for the items' costs in increasing order: a cursor over the runs.
  size_t at = 0;
  return WorkShares(items_, threads, [&](int item) {
    if (item < runs_[at].first) at = 0;
    while (at + 1 < runs_.size() && runs_[at + 1].first <= item) ++at;
    const Chunk c = chunk_of(runs_[at], static_cast<int>(at), item);
    return (c.r1 - c.r0) * runs_[at].row_bytes;
  });
}

void linear_forward_together(const std::vector<LinearProduct>& products, const float* x, int T) {
  if (T >= kGemmMinTokens) {
    for (const LinearProduct& p : products) linear_forward(*p.w, x, T, p.y);
    return;
  }
  // A few tokens: each weight row is read and dequantized once and dotted with every token
  // (rows_dot), each output bit-identical to single-token decode's row_dot, so a row's result
  // does not depend on what else is in the batch. Speculative decoding relies on this: the
  // verification pass must reproduce plain decoding's logits bit for bit.
  // Chunks of 16 rows (RowChunks): each thread streams its own contiguous share of the rows, and
  // a thread done early takes the back half of what is left of the other's, so a thread that
  // runs slow for a while (a busy neighbour on its core) delays the step by a chunk. OpenMP's
  // guided schedule, used before, gave long runs too but could not take back the half a slow
  // thread held (decode 1.02× faster). Matrices that take the same input in one region: one
  // fork/join and one input preparation for all of them.
  constexpr int kChunkRows = 16;
  std::vector<Linear::RowsInput> inputs;
  inputs.reserve(products.size());  // no reallocation: `input` points into it
  std::vector<const Linear::RowsInput*> input(products.size());
  RowChunks chunks;
  bool threads = false;
  for (size_t i = 0; i < products.size(); ++i) {
    const Linear& w = *products[i].w;
    for (size_t k = 0; k < i && !input[i]; ++k)
      if (products[k].w->same_rows_input(w)) input[i] = input[k];
    if (!input[i]) input[i] = &inputs.emplace_back(w.prepare_rows(x, T));
    chunks.add(w, kChunkRows);
    threads |= static_cast<size_t>(w.rows) * w.cols * T > kLinearParallelWork;
  }
  WorkShares shares = chunks.shares(region_threads(threads));
  parallel_region(threads, [&](int rank, int) {
    for (int item; (item = shares.next(rank)) >= 0;) {
      const RowChunks::Chunk c = chunks.chunk(item);
      const Linear& w = chunks.matrix(c.run);
      w.rows_dot_range(c.r0, c.r1, *input[c.run], products[c.run].y, w.rows);
    }
  });
}

void linear_forward_reference(const Linear& w, const float* x, int T, float* y) {
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < w.rows; ++r) {
      double sum = 0;
      const uint8_t* stored = w.quantized() ? stored_row(w, r) : nullptr;
      const uint16_t* bf16 = w.dtype == DType::BF16 ? bf16_row(w, r) : nullptr;
      for (int c = 0; c < w.cols; ++c) {
        size_t i = static_cast<size_t>(r) * w.cols + c;
        float v;
        if (w.dtype == DType::I8)
          v = q8_element(reinterpret_cast<const int8_t*>(stored), w.qscale + r * w.groups(), c);
        else if (w.dtype == DType::U8)
          v = q4_element(stored, w.qscale + 2 * r * w.groups(), c);
        else if (w.dtype == DType::F32)
          std::memcpy(&v, w.data + i * 4, 4);
        else if (w.dtype == DType::BF16)
          v = bf16_to_f32(bf16[c]);
        else if (w.dtype == DType::F16) {
          uint16_t b;
          std::memcpy(&b, w.data + i * 2, 2);
          v = whale::f16_to_f32(b);
        } else {
          v = e4m3_to_f32(w.data[i]) * w.row_block_scales(r)[c / w.block_cols];
        }
        sum += static_cast<double>(v) * x[static_cast<size_t>(t) * w.cols + c];
      }
      y[static_cast<size_t>(t) * w.rows + r] = static_cast<float>(sum);
    }
}

}  // namespace whale
