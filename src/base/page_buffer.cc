#include "base/page_buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "base/error.h"

namespace whale {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}

PageBuffer::PageBuffer(size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  // Over-allocate by one huge page and start on a huge-page boundary, so that every 2 MiB of
  // the buffer can be one page.
  mapped_ = (bytes + kHugePage - 1) / kHugePage * kHugePage + kHugePage;
  void* p = ::mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  check(p != MAP_FAILED,
        "cannot allocate " + std::to_string(bytes) + " bytes: " + std::strerror(errno));
  const uintptr_t start = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  // Give back the unaligned head and the tail past the aligned span.
  if (aligned > start) ::munmap(p, aligned - start);
  const size_t span = mapped_ - kHugePage;
  const uintptr_t end = start + mapped_;
  if (end > aligned + span) ::munmap(reinterpret_cast<void*>(aligned + span), end - aligned - span);
  mapped_ = span;
  data_ = reinterpret_cast<uint8_t*>(aligned);
  ::madvise(data_, mapped_, MADV_HUGEPAGE);  // advice: without huge pages it still works
}

PageBuffer::~PageBuffer() {
  if (data_) ::munmap(data_, mapped_);
}

PageBuffer::PageBuffer(PageBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      mapped_(std::exchange(o.mapped_, 0)) {}

PageBuffer& PageBuffer::operator=(PageBuffer&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(data_, mapped_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    mapped_ = std::exchange(o.mapped_, 0);
  }
  return *this;
}

}  // namespace whale
