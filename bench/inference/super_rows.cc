// Rows that end in a short lane block, read as super rows (ops/group_lanes.h's
// q8_super_rows_dot_range), as Model::load now lays out the shared experts' 2816-value down_proj.
//
// In decode's group-lane order a row is cut into blocks of 16 groups of 32 values; a row of 1408
// values (v2-lite-8l's routed down_proj) ends in a block of 12 groups, one of 2816 (the shared
// experts' down_proj) in one of 8. From memory such rows read slower than rows of whole blocks.
// The same random q8 matrix laid out both ways — rows in group-lane order, and super rows (R
// consecutive rows as one row of R · cols values, every block whole, the same bytes and scales) —
// is read from memory by each kernel, chunks of ~128 KiB as the MoE region's, each thread a
// contiguous half of them. Prints GB/s of codes and scales next to the probe; checks that the
// two layouts' outputs agree (up to float summation order).
//
//   g++ -O2 -std=c++20 -fopenmp -I src bench/inference/super_rows.cc build/libwhale_core.a \
//     -lhwy -lopenblas -lpcre2-8 -o /tmp/super_rows
//   OMP_NUM_THREADS=2 /tmp/super_rows [ROUNDS=3]
#include <omp.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "base/page_buffer.h"
#include "ops/bandwidth.h"
#include "ops/group_lanes.h"
#include "ops/precision.h"

using namespace whale;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Layouts {
  int cols = 0, rows = 0, R = 1;
  PageBuffer per_row, super, scales;  // codes in both orders; f16 scales [rows][groups]
};

// A random q8 matrix of ~`bytes` bytes of codes, its rows a multiple of R and of 64.
void build(int cols, size_t bytes, Layouts* m) {
  m->cols = cols;
  m->R = super_rows(cols);
  const int unit = std::lcm(m->R, 64);
  m->rows = static_cast<int>(bytes / cols / unit * unit);
  const size_t n = static_cast<size_t>(m->rows) * cols;
  m->per_row = PageBuffer(n);
  m->super = PageBuffer(n);
  m->scales = PageBuffer(static_cast<size_t>(m->rows) * (cols / 32) * sizeof(uint16_t));
  std::mt19937 rng(7);
  std::vector<int8_t> stored(static_cast<size_t>(m->R) * cols);
  auto* scales = reinterpret_cast<uint16_t*>(m->scales.data());
  for (size_t i = 0; i < static_cast<size_t>(m->rows) * (cols / 32); ++i)
    scales[i] = static_cast<uint16_t>(0x2000 + rng() % 0x400);  // f16 in [2^-7, 2^-6)
  for (int r = 0; r < m->rows; r += m->R) {
    for (int8_t& v : stored) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
    for (int k = 0; k < m->R; ++k)
      q8_row_to_lanes(
          stored.data() + static_cast<size_t>(k) * cols, cols,
          reinterpret_cast<int8_t*>(m->per_row.data()) + static_cast<size_t>(r + k) * cols);
    q8_row_to_lanes(stored.data(), m->R * cols,
                    reinterpret_cast<int8_t*>(m->super.data()) + static_cast<size_t>(r) * cols);
  }
}

// Every row's dot with x by each layout, chunks of ~128 KiB as the MoE region's (each thread a
// contiguous half of the chunks); returns the seconds.
double run(const Layouts& m, bool super, const LaneActivations& x, const LaneActivations& xs,
           std::vector<float>& y) {
  const int chunk = std::max<int>(m.R, std::bit_floor((size_t{128} << 10) / m.cols) / m.R * m.R);
  const int chunks = (m.rows + chunk - 1) / chunk;
  const auto* scales = reinterpret_cast<const uint16_t*>(m.scales.data());
  const double start = now();
#pragma omp parallel
  {
    const int me = omp_get_thread_num(), threads = omp_get_num_threads();
    for (int c = chunks * me / threads; c < chunks * (me + 1) / threads; ++c) {
      const int r0 = c * chunk, r1 = std::min(m.rows, r0 + chunk);
      const size_t groups = m.cols / 32;
      const auto* codes =
          reinterpret_cast<const int8_t*>(super ? m.super.data() : m.per_row.data());
      const size_t at = static_cast<size_t>(r0) * m.cols;
      if (super)
        q8_super_rows_dot_range(codes + at, scales + r0 * groups, r1 - r0, m.cols, xs,
                                y.data() + r0, 1);
      else
        q8_lanes_dot_row_range(codes + at, scales + r0 * groups, r1 - r0, m.cols, x, y.data() + r0,
                               1);
    }
  }
  return now() - start;
}

}  // namespace

int main(int argc, char** argv) {
  if (!use_vnni()) {
    std::printf("needs AVX512-VNNI (the group-lane kernels)\n");
    return 0;
  }
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 3;
  BandwidthProbe probe(size_t{1} << 30);
  for (int cols : {1408, 2816, 1536}) {
    Layouts m;
    build(cols, size_t{512} << 20, &m);
    std::vector<float> x(cols);
    for (int i = 0; i < cols; ++i) x[i] = std::sin(0.37f * i);
    LaneActivations per_row_x, super_x;
    quantize_lane_activations(x.data(), 1, cols, &per_row_x);
    quantize_super_activations(x.data(), 1, cols, &super_x);
    std::vector<float> a(m.rows), b(m.rows);
    run(m, false, per_row_x, super_x, a);
    run(m, true, per_row_x, super_x, b);
    double worst = 0;
    for (int r = 0; r < m.rows; ++r)
      worst = std::max(worst, std::abs(static_cast<double>(a[r]) - b[r]) / (std::abs(a[r]) + 1e-3));
    const double bytes = static_cast<double>(m.rows) * (cols + cols / 32 * 2);
    std::printf("%d columns (super rows of %d; outputs agree within %.1e):\n", cols, m.R, worst);
    for (int round = 0; round < rounds; ++round) {
      double t[2] = {1e9, 1e9};
      for (int rep = 0; rep < 3; ++rep)
        for (int super = 0; super < 2; ++super)
          t[super] = std::min(t[super], run(m, super, per_row_x, super_x, super ? b : a));
      const double bw = probe.measure(2);
      std::printf(
          "  probe %5.1f GB/s   per-row lanes %5.1f GB/s (%3.0f%%)   super rows %5.1f GB/s "
          "(%3.0f%%)\n",
          bw, bytes / t[0] / 1e9, 100 * bytes / t[0] / 1e9 / bw, bytes / t[1] / 1e9,
          100 * bytes / t[1] / 1e9 / bw);
    }
  }
}
