// The instruction sets of whale's AVX512-VNNI kernels (ops/int8_gemm.cc, ops/group_lanes.cc).
// Highway 1.0 has no VNNI-specific target to dispatch on, so these functions carry the
// instruction set themselves and run only after the CPU check (ops/precision.h: use_vnni()).
#pragma once

#define WHALE_VNNI_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))
