// Vectors whose data starts on a cache line (64 bytes), for the activations the SIMD kernels
// read with 64-byte loads: malloc only promises 16, and a load that straddles two lines costs
// (two-row bf16 dots 20% slower in L2 with the activations 16 bytes off; q8 decode of
// v2-lite-8l 30–34 → 36–40 tok/s in fast minutes once its activation blocks sat on lines).
// The weights stay where the file puts them (safetensors data is 8-byte aligned): weights and
// bf16 activations at the same offset modulo 32 made single-token steps slower here, so where a
// file's weights start at a multiple of 32 bytes, Linear::prepare_rows puts the activations 16
// bytes past a line.
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace whale {

constexpr size_t kCacheLine = 64;

template <class T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kCacheLine}));
  }
  void deallocate(T* p, size_t) { ::operator delete (p, std::align_val_t{kCacheLine}); }
  template <class U>
  bool operator==(const CacheAligned<U>&) const {
    return true;
  }
};

template <class T>
using AlignedVector = std::vector<T, CacheAligned<T>>;

// A scratch vector that grows and is never given back: decode's per-layer buffers, kept between
// layers, because fresh zeroed ones each time cost more than the work they hold (their lines long
// evicted by the weights' stream, every first write read memory first). Its data, ≥ n elements.
template <class Vector>
typename Vector::value_type* grown(Vector& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace whale
