#include "ops/work_shares.h"

#include <algorithm>

namespace whale {

namespace {
constexpr uint64_t pack(uint32_t begin, uint32_t end) {
  return static_cast<uint64_t>(begin) << 32 | end;
}
constexpr uint32_t begin_of(uint64_t range) {
  return static_cast<uint32_t>(range >> 32);
}
constexpr uint32_t end_of(uint64_t range) {
  return static_cast<uint32_t>(range);
}
}  // namespace

WorkShares::WorkShares(int n, int threads) : shares_(std::max(threads, 1)) {
  // Equal counts, without a cost per item (linear_forward makes one of these per matrix).
  const int64_t items = std::max(n, 0), T = static_cast<int64_t>(shares_.size());
  for (int64_t t = 0; t < T; ++t)
    shares_[t].range.store(
        pack(static_cast<uint32_t>(items * t / T), static_cast<uint32_t>(items * (t + 1) / T)),
        std::memory_order_relaxed);
}

int WorkShares::next(int t) {
  if (t < 0 || t >= static_cast<int>(shares_.size())) return -1;  // a thread with no share
  Share& own = shares_[t];
  for (;;) {
    uint64_t range = own.range.load(std::memory_order_acquire);
    if (begin_of(range) < end_of(range)) {
      if (own.range.compare_exchange_weak(range, pack(begin_of(range) + 1, end_of(range)),
                                          std::memory_order_acq_rel))
        return static_cast<int>(begin_of(range));
      continue;  // a thief took part of it: look again
    }
    // Own share done: the back half of the largest share left (all of a single item).
    int victim = -1;
    uint64_t victim_range = 0;
    uint32_t most = 0;
    for (int v = 0; v < static_cast<int>(shares_.size()); ++v) {
      if (v == t) continue;
      const uint64_t r = shares_[v].range.load(std::memory_order_acquire);
      if (end_of(r) > begin_of(r) && end_of(r) - begin_of(r) > most) {
        most = end_of(r) - begin_of(r);
        victim = v;
        victim_range = r;
      }
    }
    if (victim < 0) return -1;
    const uint32_t b = begin_of(victim_range), e = end_of(victim_range), mid = b + (e - b) / 2;
    if (!shares_[victim].range.compare_exchange_strong(victim_range, pack(b, mid),
                                                       std::memory_order_acq_rel))
      continue;  // the owner or another thief moved first
    // Only this thread writes its own share while it is empty (thieves skip empty shares).
    own.range.store(pack(mid + 1, e), std::memory_order_release);
    return static_cast<int>(mid);
  }
}

}  // namespace whale
