// What `whale bench` (cli/bench.cc) and `whale bench --kernels` (cli/bench_kernels.cc) share.
#pragma once
#include <chrono>
#include <cstddef>
#include <nlohmann/json.hpp>

#include "ops/bandwidth.h"

namespace whale {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The row-dot kernels of decode (linear_forward for 1, 2 and 4 tokens) per weight format — f32,
// bf16, fp8 (e4m3, 128 × 128 block scales), q8, q4 — each measured two ways: on one thread over a
// 512 KiB matrix that stays in L2 (what the arithmetic allows) and on every thread over
// `stream_mib` MiB of 2816 × 2048 matrices read from memory (what decode gets), the latter also
// as a fraction of the streaming-read probe measured right after it. Returns {"threads", "simd",
// "bandwidth_gbps", "kernels": [{"format", "tokens", "cache_gbps", "memory_gbps",
// "memory_fraction", "bandwidth_gbps"}, …]}; GB/s count the weight bytes read (codes and
// scales).
nlohmann::json bench_kernels(double stream_mib, int repeats);

}  // namespace whale
