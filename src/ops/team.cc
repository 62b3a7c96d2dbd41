#include "ops/team.h"

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>

namespace whale {

namespace {

// A word on a cache line of its own: the leader's and the workers' stores to different words do
// not move one line back and forth.
struct alignas(64) Word {
  std::atomic<uint64_t> value{0};
};

// The threads of one decode step: the leader (rank 0) runs the step and starts each region by
// bumping `start`; the workers spin on it, run the region's body, and count themselves into
// `done`. A barrier counts arrivals and releases everyone by bumping its generation.
class Team {
 public:
  explicit Team(int threads) : threads_(threads) {}
  int threads() const { return threads_; }

  // Leader: body on every rank; returns once every worker has finished it. A body must not
  // throw (noexcept: the program ends, as when an exception leaves an OpenMP region): the other
  // threads may be waiting for it at a barrier, and would run on with captures that are gone.
  void run(const std::function<void(int, int)>& body) noexcept {
    body_ = &body;
    done_.value.store(0, std::memory_order_relaxed);
    start_.value.fetch_add(1, std::memory_order_release);
    body(0, threads_);
    spin_until([&] {
      return done_.value.load(std::memory_order_acquire) == static_cast<uint64_t>(threads_ - 1);
    });
  }

  // Worker: serves regions until stop().
  void serve(int rank) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t now = seen;
      spin_until([&] { return (now = start_.value.load(std::memory_order_acquire)) != seen; });
      if (now == kStop) return;
      seen = now;
      (*body_)(rank, threads_);
      done_.value.fetch_add(1, std::memory_order_release);
    }
  }

  void stop() { start_.value.store(kStop, std::memory_order_release); }

  void barrier() {
    const uint64_t generation = generation_.value.load(std::memory_order_acquire);
    if (arrived_.value.fetch_add(1, std::memory_order_acq_rel) ==
        static_cast<uint64_t>(threads_ - 1)) {
      arrived_.value.store(0, std::memory_order_relaxed);
      generation_.value.store(generation + 1, std::memory_order_release);
      return;
    }
    spin_until([&] { return generation_.value.load(std::memory_order_acquire) != generation; });
  }

 private:
  static constexpr uint64_t kStop = ~uint64_t{0};
  const int threads_;
  const std::function<void(int, int)>* body_ = nullptr;
  Word start_, done_, arrived_, generation_;
};

// This thread's team (leader or worker), and the region it is in: depth 0 outside any region;
// threads of the innermost one; whether that one is the team's.
thread_local Team* t_team = nullptr;
thread_local int t_depth = 0;
thread_local int t_threads = 1;
thread_local bool t_team_region = false;

struct RegionScope {
  int depth = t_depth, threads = t_threads;
  bool team_region = t_team_region;
  RegionScope(int region_threads, bool in_team) {
    ++t_depth;
    t_threads = region_threads;
    t_team_region = in_team;
  }
  ~RegionScope() {
    t_depth = depth;
    t_threads = threads;
    t_team_region = team_region;
  }
};

}  // namespace

int region_threads(bool parallel) {
  if (!parallel || t_depth > 0) return 1;
  if (t_team) return t_team->threads();
  return omp_in_parallel() ? 1 : omp_get_max_threads();
}

void parallel_region(bool parallel, const std::function<void(int, int)>& body) {
  const int threads = region_threads(parallel);
  if (threads == 1) {
    RegionScope scope(1, false);
    body(0, 1);
  } else if (t_team) {
    t_team->run([&](int rank, int n) {
      RegionScope scope(n, true);
      body(rank, n);
    });
  } else {
#pragma omp parallel num_threads(threads)
    {
      const int n = omp_get_num_threads();
      RegionScope scope(n, false);
      body(omp_get_thread_num(), n);
    }
  }
}

void region_barrier() {
  if (t_threads <= 1) return;
  if (t_team_region) {
    t_team->barrier();
  } else {
#pragma omp barrier
  }
}

void with_decode_team(const std::function<void()>& fn) {
  // More threads than cores: spinning waiters would hold the cores the others need (3 threads on
  // the 2-core VM stepped 0.63–0.69× as fast as libgomp's regions, which throttle their spinning
  // there).
  const int threads = omp_get_max_threads();
  if (t_team || t_depth > 0 || omp_in_parallel() || threads < 2 || threads > omp_get_num_procs()) {
    fn();
    return;
  }
  std::unique_ptr<Team> team;
  std::exception_ptr error;
#pragma omp parallel
  {
#pragma omp single
    team = std::make_unique<Team>(omp_get_num_threads());
    // (the single's barrier: every thread sees the team)
    t_team = team.get();
    if (omp_get_thread_num() == 0) {
      try {
        fn();
      } catch (...) {
        error = std::current_exception();
      }
      team->stop();
    } else {
      team->serve(omp_get_thread_num());
    }
    t_team = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace whale
