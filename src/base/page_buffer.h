// A large buffer of fresh memory straight from the kernel (mmap), asked to be backed by 2 MiB
// pages where the system allows (transparent huge pages, "madvise" or "always" mode): filling
// 4.6 GB of reordered q8 weights then takes 2,300 page faults instead of 1.2 million, and
// streaming them walks 512× fewer page-table entries — v2-lite-8l q8 decode 1.00–1.04× the
// file-mapped weights (in-process, per-round medians) with huge pages, 0.95–0.96× without. The
// price is at load: the kernel zeroes the pages and, when free memory is fragmented, compacts it
// first (a 4.6 GB model loads in 1.3–2.3 s here, once in 9.6 s). Zero-filled, page-aligned,
// move-only.
#pragma once
#include <cstddef>
#include <cstdint>

namespace whale {

class PageBuffer {
 public:
  PageBuffer() = default;
  explicit PageBuffer(size_t bytes);
  ~PageBuffer();
  PageBuffer(PageBuffer&& o) noexcept;
  PageBuffer& operator=(PageBuffer&& o) noexcept;
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0, mapped_ = 0;
};

}  // namespace whale
