// The machine's memory bandwidth as decode meets it: a streaming read of a buffer much larger
// than the caches, on huge pages where the system allows, split over the OpenMP threads, with
// the SIMD loads the kernels use.
#pragma once
#include <cstddef>

namespace whale {

// Best of `repeats` reads of a `bytes` buffer, in GB/s (1e9 bytes): the ceiling decode's weight
// reads are held against (`whale bench`, bench/llama.cpp).
double measure_bandwidth(size_t bytes, int repeats);

}  // namespace whale
