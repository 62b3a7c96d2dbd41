// What the memory gives a plain read in decode's access pattern, against the bandwidth probe in
// the same round: a 1 GiB buffer read as matrices of S bytes, each thread a contiguous half of
// each matrix (as decode's row splits read a matrix), with a barrier after every matrix (as the
// dependencies between a step's products impose) and without one. No arithmetic but the probe's
// own read (stream_sum_f32 since session 21; the dot product before): the rate the pattern allows
// any kernel. The probe (`whale bench`'s ceiling)
// is the same buffer read as one half per thread. Rounds alternate the order of the patterns.
//
//   g++ -O2 -std=c++20 -fopenmp -I src bench/inference/stream_pattern.cc build/libwhale_core.a \
//     -lhwy -lopenblas -lpcre2-8 -o /tmp/stream_pattern
//   OMP_NUM_THREADS=2 /tmp/stream_pattern [ROUNDS=4]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "base/page_buffer.h"
#include "ops/kernels.h"

using namespace whale;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Pattern {
  size_t matrix_bytes;  // 0: the probe (one half of the buffer per thread)
  bool barrier;
};

// GB/s of one pass over the buffer in the pattern.
double read_pass(const float* buffer, size_t floats, const Pattern& p, double* sink) {
  const double start = now();
  double total = 0;
#pragma omp parallel reduction(+ : total)
  {
    const size_t threads = omp_get_num_threads(), me = omp_get_thread_num();
    const size_t matrix = p.matrix_bytes == 0 ? floats : p.matrix_bytes / sizeof(float);
    const size_t half = matrix / threads;
    for (size_t m = 0; m + matrix <= floats; m += matrix) {
      const float* mine = buffer + m + half * me;
      total += stream_sum_f32(mine, half);
      if (p.barrier) {
#pragma omp barrier
      }
    }
  }
  *sink += total;
  return static_cast<double>(floats * sizeof(float)) / (now() - start) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 4;
  const size_t bytes = size_t{1} << 30, floats = bytes / sizeof(float);
  PageBuffer pages(bytes);  // huge pages, as the weights and the probe
  float* buffer = reinterpret_cast<float*>(pages.data());
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < floats; ++i) buffer[i] = static_cast<float>(i & 1023) * 1e-3f;

  std::vector<Pattern> patterns = {{0, false}};
  for (size_t kib : {64, 256, 1024, 4096, 16384})
    for (bool barrier : {true, false}) patterns.push_back({kib << 10, barrier});
  std::vector<double> rate(patterns.size()), probe_rate(patterns.size());
  double sink = 0;
  for (int r = 0; r < rounds; ++r)
    for (size_t k = 0; k < patterns.size(); ++k) {
      // Each pattern next to a probe pass, the order turned every round.
      const size_t i = (k + r) % patterns.size();
      probe_rate[i] += read_pass(buffer, floats, patterns[0], &sink);
      rate[i] += read_pass(buffer, floats, patterns[i], &sink);
    }
  std::printf("%d threads, %d rounds, 1 GiB read per pass\n", omp_get_max_threads(), rounds);
  std::printf("%-30s %8s %10s\n", "pattern", "GB/s", "of probe");
  for (size_t i = 0; i < patterns.size(); ++i) {
    char name[64];
    if (patterns[i].matrix_bytes == 0)
      std::snprintf(name, sizeof name, "probe (a half per thread)");
    else
      std::snprintf(name, sizeof name, "%zu KiB matrices, %s", patterns[i].matrix_bytes >> 10,
                    patterns[i].barrier ? "barrier" : "no barrier");
    std::printf("%-30s %8.1f %9.0f%%\n", name, rate[i] / rounds, 100 * rate[i] / probe_rate[i]);
  }
  if (sink == -1) std::printf(" ");  // keep the reads
}
