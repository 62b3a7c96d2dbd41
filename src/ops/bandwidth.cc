#include "ops/bandwidth.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "ops/kernels.h"

namespace whale {

BandwidthProbe::BandwidthProbe(size_t bytes) : pages_(bytes / sizeof(float) * sizeof(float)) {
  // On huge pages, as whale's own weight copies are (base/page_buffer.h): on 4 KiB pages the read
  // measures the page walks too — on a 2-core VM here 32–35 GB/s against 57–59 GB/s (alternated
  // in one process), which had whale's decode "above the ceiling".
  const size_t n = pages_.size() / sizeof(float);
  float* buffer = reinterpret_cast<float*>(pages_.data());
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) buffer[i] = static_cast<float>(i & 1023) * 1e-3f;
}

double BandwidthProbe::measure(int repeats) const {
  const size_t n = pages_.size() / sizeof(float);
  const float* buffer = reinterpret_cast<const float*>(pages_.data());
  double best = 0, sink = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    double total = 0;
#pragma omp parallel reduction(+ : total)
    {
      const size_t threads = omp_get_num_threads(), t = omp_get_thread_num();
      const size_t chunk = (n / threads + 15) / 16 * 16;
      const size_t begin = std::min(n, t * chunk), end = std::min(n, begin + chunk);
      // One load per element, with the weight kernels' page prefetch. Until session 21 this was
      // dot(a, a): two loads and an FMA per vector, which read 9–28% slower than this on the
      // 2-core Zen 5 VM (bench/inference/README.md, session 21) — no ceiling, since the head's
      // q8 rows read faster than it.
      total += stream_sum_f32(buffer + begin, end - begin);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(n * sizeof(float)) / seconds / 1e9);
    sink += total;
  }
  if (sink == -1) std::printf(" ");  // keep the reads
  return best;
}

double measure_bandwidth(size_t bytes, int repeats) {
  return BandwidthProbe(bytes).measure(repeats);
}

}  // namespace whale
