// Handing out a decode step's row chunks to the threads of a parallel region.
//
// Decode reads weight rows from memory; each thread streams best through one long run of
// consecutive rows, but the step waits for the slower thread at every barrier, and on a shared VM
// one of two threads often runs slower for a while (a busy neighbour on its core). OpenMP's
// guided schedule gives long runs first (half the work to whichever thread asks first) and cannot
// take work back from a slow thread that holds one: v2-lite-8l's MoE layers waited 70–960 µs a
// step at their two barriers. Here each thread starts on its own contiguous share (equal cost)
// and takes items from its front one at a time, so it streams as under a static split; a thread
// whose share is done takes the back half of the largest share left (work stealing from the
// back, far from where the owner reads), and so on until no item is left.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace whale {

class WorkShares {
 public:
  // Items [0, n) for `threads` threads, shares of equal item count.
  WorkShares(int n, int threads);
  // Shares of equal total cost: cost[i] ≥ 0 is item i's (bytes it reads, say) …
  WorkShares(const std::vector<double>& cost, int threads)
      : WorkShares(static_cast<int>(cost.size()), threads, [&](int i) { return cost[i]; }) {}
  // … or cost(i)'s, for items [0, n), asked for in increasing order of i (twice over).
  template <class Cost>
  WorkShares(int n, int threads, Cost cost);

  // Thread t's next item, or -1 once every item has been handed out (then always -1). Each item
  // goes to exactly one call. A region with fewer threads than shares still hands out every
  // item (the absent threads' shares are stolen); a thread t beyond the shares gets none.
  int next(int t);

 private:
  // A share [begin, end) packed as begin << 32 | end, on its own cache line: the owner's pops
  // and the thieves' compare-exchanges only meet when a share is being stolen from.
  struct alignas(64) Share {
    std::atomic<uint64_t> range{0};
  };
  std::vector<Share> shares_;
};

template <class Cost>
WorkShares::WorkShares(int n, int threads, Cost cost) : shares_(std::max(threads, 1)) {
  const int T = static_cast<int>(shares_.size());
  double total = 0;
  for (int i = 0; i < n; ++i) total += cost(i);
  // Share t ends at the first item whose cumulative cost reaches (t + 1) / T of the total.
  int begin = 0;
  double sum = 0;
  for (int t = 0; t < T; ++t) {
    int end = begin;
    const double target = total * (t + 1) / T;
    while (end < n) {
      const double c = cost(end);
      if (t < T - 1 && sum + c / 2 >= target) break;
      sum += c;
      ++end;
    }
    shares_[t].range.store(static_cast<uint64_t>(begin) << 32 | static_cast<uint32_t>(end),
                           std::memory_order_relaxed);
    begin = end;
  }
}

}  // namespace whale
