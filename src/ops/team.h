// Parallel regions for decode's hot loops, and a team that makes them cheap.
//
// A v2-lite-8l decode step opens ~50 OpenMP parallel regions (one per matrix product, MoE layer
// and absorbed attention core) and passes ~40 barriers inside them. On the 2-core Zen 5 VM an
// empty libgomp region costs 2.8–3.2 µs and a barrier 1.4–2.2 µs, where one thread sees another's
// store after 0.2 µs: ~0.2 ms of a 13.6 ms q8 step is spent starting, joining and synchronizing
// threads (bench/inference/README.md, session 22). So Model::forward runs a decode step inside
// one OpenMP region (with_decode_team): its first thread runs the step, the others wait in a spin
// loop for the step's parallel pieces (parallel_region), and barriers inside them are a counter
// and a generation word (region_barrier) — as llama.cpp's thread pool does.
//
// Outside a decode team, parallel_region is an OpenMP parallel region and region_barrier an OpenMP
// barrier, so the same code serves prefill and every other caller.
#pragma once
#include <atomic>
#include <functional>
#include <thread>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace whale {

// Runs body(rank, threads) on every thread of a region: the decode team's threads when this
// thread leads one (and is not already inside one of its regions), else an OpenMP parallel region
// of omp_get_max_threads() threads when `parallel` (one thread otherwise, or when nested). As in
// an OpenMP region, an exception must not leave the body (the program ends).
void parallel_region(bool parallel, const std::function<void(int rank, int threads)>& body);
// Inside parallel_region's body: waits for every thread of the region.
void region_barrier();
// The threads parallel_region(parallel, …) would run on.
int region_threads(bool parallel);

// OpenMP's loop schedules inside a region, without the barrier at their end (region_barrier):
// items [0, n) in one contiguous block a thread (static), …
template <class F>
void region_static(int n, int rank, int threads, const F& fn) {
  const int begin = static_cast<int>(static_cast<long long>(n) * rank / threads);
  const int end = static_cast<int>(static_cast<long long>(n) * (rank + 1) / threads);
  for (int i = begin; i < end; ++i) fn(i);
}
// … or one at a time to whichever thread asks (dynamic), from a counter made before the region.
class RegionItems {
 public:
  explicit RegionItems(int n) : n_(n) {}
  int next() {
    const int i = next_.fetch_add(1, std::memory_order_relaxed);
    return i < n_ ? i : -1;
  }

 private:
  const int n_;
  std::atomic<int> next_{0};
};

// Waits for ready(): spins a while (a region's pieces meet within microseconds), then yields the
// core each time round, so that where threads outnumber the cores (--threads above the CPUs) a
// waiter does not hold the core the thread it waits for needs.
template <class Ready>
void spin_until(const Ready& ready) {
  for (int spins = 0; !ready(); ++spins) {
    if (spins < 4096) {
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

// Runs fn on this thread while the other omp_get_max_threads() − 1 threads serve its
// parallel_regions; just fn where there is one thread, more threads than cores, or inside a
// parallel region already. fn's exceptions from outside its regions reach the caller.
void with_decode_team(const std::function<void()>& fn);

}  // namespace whale
