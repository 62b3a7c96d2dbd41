// The machine's memory bandwidth as decode meets it: a streaming read of a buffer much larger
// than the caches, on huge pages where the system allows, split over the OpenMP threads, with
// the SIMD loads and the page prefetch the kernels use (ops/kernels.h's stream_sum_f32).
#pragma once
#include <cstddef>

#include "base/page_buffer.h"

namespace whale {

// A probe's buffer of `bytes` on huge pages, written once; measure() reads it `repeats` times
// and returns the best, in GB/s (1e9 bytes): the ceiling decode's weight reads are held against
// (`whale bench`, bench/llama.cpp). One buffer for many measurements, so that probing between
// decode blocks does not fault a fresh buffer in each time.
class BandwidthProbe {
 public:
  explicit BandwidthProbe(size_t bytes);
  double measure(int repeats) const;

 private:
  PageBuffer pages_;
};

// BandwidthProbe(bytes).measure(repeats).
double measure_bandwidth(size_t bytes, int repeats);

}  // namespace whale
