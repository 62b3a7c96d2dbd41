// whale bench --kernels: decode's row-dot kernels per weight format, in cache and from memory
// (cli/bench.h). The matrices hold random codes; the kernels' speed does not depend on values.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/page_buffer.h"
#include "cli/bench.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "tensor/dtype.h"

namespace whale {

namespace {

constexpr int kCols = 2048;        // v2-lite's hidden size: most of decode's matrices read it
constexpr int kStreamRows = 2816;  // rows of each streamed matrix (V2-Lite's shared experts)
constexpr size_t kCacheBytes = 512 << 10;  // the in-cache matrix: half of a Zen 4 core's L2

struct Format {
  const char* name;
  DType dtype;
  bool packed = false;  // bf16 rows packed in 12 bits (ops/packed_bf16.h), as Model::load does
};
constexpr Format kFormats[] = {
    {"f32", DType::F32},     {"bf16", DType::BF16}, {"bf16 packed", DType::BF16, true},
    {"fp8", DType::F8_E4M3}, {"q8", DType::I8},     {"q4", DType::U8}};

// `count` matrices of rows × kCols in one format, random codes, as Linear views over storage
// owned here: on huge pages, as Model::load's copies of decode's matrices are (and the probe).
struct Matrices {
  PageBuffer codes;
  std::vector<uint16_t> scales;  // q8: one f16 per 32; q4: (scale, min) pairs
  std::vector<Linear> linears;
  // Packed bf16: each matrix's planes, bases and offsets (no exceptions: the values' exponents
  // are all alike).
  PageBuffer planes;
  std::vector<uint8_t> bases;
  std::vector<uint32_t> offsets;
  std::vector<PackedException> exceptions;

  Matrices(DType dtype, int rows, int count, std::mt19937& rng, bool packed = false) {
    Linear shape;
    shape.dtype = dtype;
    shape.rows = rows;
    shape.cols = kCols;
    const size_t bytes = shape.row_bytes() * rows;
    const size_t scales_per_matrix = dtype == DType::I8   ? rows * shape.groups()
                                     : dtype == DType::U8 ? 2 * rows * shape.groups()
                                                          : 0;
    codes = PageBuffer(bytes * count);
    scales.resize(scales_per_matrix * count);
    // Random bits (hundreds of MiB: a 64-bit generator, 8 bytes a draw), then made finite and
    // moderate where the format has NaNs: the exponent of f32 and bf16 fixed near 2^-7 (the
    // sign and mantissa random), fp8's top exponent bit cleared.
    std::uniform_int_distribution<uint64_t> draw;
    std::mt19937_64 bits(rng());
    for (size_t i = 0; i < codes.size(); i += 8) {
      const uint64_t r = draw(bits);
      std::memcpy(codes.data() + i, &r, std::min<size_t>(8, codes.size() - i));
    }
    if (dtype == DType::F32)
      for (size_t i = 0; i + 4 <= codes.size(); i += 4) {
        uint32_t v;
        std::memcpy(&v, codes.data() + i, 4);
        v = (v & 0x807FFFFFu) | 0x3C000000u;
        std::memcpy(codes.data() + i, &v, 4);
      }
    if (dtype == DType::BF16)
      for (size_t i = 0; i + 2 <= codes.size(); i += 2) {
        uint16_t v;
        std::memcpy(&v, codes.data() + i, 2);
        v = static_cast<uint16_t>((v & 0x807F) | 0x3C00);
        std::memcpy(codes.data() + i, &v, 2);
      }
    if (dtype == DType::F8_E4M3)
      for (size_t i = 0; i < codes.size(); ++i) codes.data()[i] &= 0xBF;
    std::fill(scales.begin(), scales.end(), f32_to_f16(0.01f));
    // q8/q4 as Model::load leaves them on AVX512-VNNI CPUs: read in group-lane order (the codes
    // are random, so no reordering is needed to measure their speed).
    shape.group_lanes = shape.quantized() && vnni_available() && group_lanes_fit(kCols);
    for (int m = 0; m < count; ++m) {
      Linear w = shape;
      w.data = codes.data() + m * bytes;
      if (!scales.empty()) w.qscale = scales.data() + m * scales_per_matrix;
      if (dtype == DType::F8_E4M3)
        w.block_scale.assign(static_cast<size_t>((rows + 127) / 128) * ((kCols + 127) / 128), 1.0f);
      linears.push_back(std::move(w));
    }
    if (packed) pack(rows);
  }

  void pack(int rows) {
    const size_t row_bytes = packed_bf16_row_bytes(kCols);
    const int segments = packed_bf16_segments(kCols);
    planes = PageBuffer(linears.size() * rows * row_bytes);
    bases.resize(linears.size() * rows * segments);
    offsets.assign(rows + 1, 0);
    for (size_t m = 0; m < linears.size(); ++m) {
      Linear& w = linears[m];
      uint8_t* p = planes.data() + m * rows * row_bytes;
      uint8_t* b = bases.data() + m * rows * segments;
      for (int r = 0; r < rows; ++r)
        pack_bf16_row(reinterpret_cast<const uint16_t*>(w.data) + static_cast<size_t>(r) * kCols,
                      kCols, p + r * row_bytes, b + static_cast<size_t>(r) * segments, &exceptions);
      w.data = p;
      w.packed = {p, b, offsets.data(), nullptr};
    }
    check(exceptions.empty(), "bench --kernels: packed bf16 test rows with exceptions");
  }
};

// One thread, the activations prepared once, every row of the in-cache matrix against T rows
// of x in one row range (as decode calls them), repeated for about 0.2 s: weight bytes per
// second.
double cache_rate(const Linear& w, const std::vector<float>& x, int T) {
  const Linear::RowsInput in = w.prepare_rows(x.data(), T);
  std::vector<float> y(static_cast<size_t>(T) * w.rows);
  double sink = 0;
  int passes = 0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  do {
    w.rows_dot_range(0, w.rows, in, y.data(), w.rows);
    sink += y[0];
    ++passes;
    elapsed = seconds_since(start);
  } while (elapsed < 0.2);
  if (sink == -1) std::printf(" ");  // keep the products
  return static_cast<double>(passes) * w.bytes() / elapsed / 1e9;
}

// Every thread, linear_forward over each streamed matrix in turn (decode's path: guided
// schedule, activations prepared per matrix): the best of `repeats` passes.
double memory_rate(const Matrices& m, const std::vector<float>& x, int T, int repeats) {
  std::vector<float> y(static_cast<size_t>(T) * kStreamRows);
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    size_t bytes = 0;
    for (const Linear& w : m.linears) {
      linear_forward(w, x.data(), T, y.data());
      bytes += w.bytes();
    }
    best = std::max(best, bytes / seconds_since(start) / 1e9);
  }
  return best;
}

}  // namespace

nlohmann::json bench_kernels(double stream_mib, int repeats) {
  std::mt19937 rng(7);
  std::vector<float> x(static_cast<size_t>(4) * kCols);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (float& v : x) v = value(rng);
  nlohmann::json rows = nlohmann::json::array();
  double bandwidth = 0;
  for (const Format& f : kFormats) {
    Linear probe;
    probe.dtype = f.dtype;
    probe.cols = kCols;
    const int cache_rows = static_cast<int>(kCacheBytes / probe.row_bytes());
    if (f.packed && !use_bf16_gemm()) continue;  // packed only where Model::load packs
    const Matrices cached(f.dtype, cache_rows, 1, rng, f.packed);
    probe.rows = kStreamRows;
    const int count =
        std::max(2, static_cast<int>(stream_mib * (1 << 20) / (probe.row_bytes() * kStreamRows)));
    const Matrices streamed(f.dtype, kStreamRows, count, rng, f.packed);
    for (int T : {1, 2, 4}) {
      const double cache = cache_rate(cached.linears[0], x, T);  // on this thread alone
      const double memory = memory_rate(streamed, x, T, repeats);
      // The probe right after each measurement: the bandwidth drifts from minute to minute.
      bandwidth =
          measure_bandwidth(static_cast<size_t>(std::max(256.0, stream_mib) * (1 << 20) / 2), 2);
      rows.push_back({{"format", f.name},
                      {"tokens", T},
                      {"cache_gbps", cache},
                      {"memory_gbps", memory},
                      {"memory_fraction", memory / bandwidth},
                      {"bandwidth_gbps", bandwidth}});
    }
  }
  return {{"threads", omp_get_max_threads()},
          {"simd", simd_description()},
          {"bandwidth_gbps", bandwidth},
          {"kernels", rows}};
}

}  // namespace whale
