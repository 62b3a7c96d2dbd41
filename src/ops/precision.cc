#include "ops/precision.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "ops/kernels.h"

namespace whale {

namespace {
bool env_is_one(const char* name) {
  const char* value = std::getenv(name);
  return value && std::strcmp(value, "1") == 0;
}
std::atomic<bool>& exact_flag() {
  static std::atomic<bool> exact = env_is_one("WHALE_EXACT") || env_is_one("WHALE_EXACT_BF16");
  return exact;
}
}  // namespace

bool exact_activations() {
  return exact_flag().load();
}
void set_exact_activations(bool exact) {
  exact_flag().store(exact);
}

// __builtin_cpu_supports takes literal names only, hence one function per feature set.
bool bf16_gemm_available() {
  static const bool available = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }();
  return available;
}

bool vnni_available() {
  static const bool available = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }();
  return available;
}

bool use_bf16_gemm() {
  return bf16_gemm_available() && !exact_activations();
}

bool use_vnni() {
  return vnni_available() && !exact_activations();
}

std::string simd_description() {
  std::string name = simd_target_name();
  if (use_bf16_gemm()) name += " + AVX512-BF16";
  if (use_vnni()) name += " + AVX512-VNNI";
  return name;
}

}  // namespace whale
