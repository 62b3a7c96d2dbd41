// Decode's parallel regions (ops/team.h), by an OpenMP region and inside a decode team: every rank
// runs the body once, barriers order the phases, the loop schedules hand out every item once,
// nested regions run on one thread, and an exception between regions reaches the caller without
// leaving a thread behind.
#include "ops/team.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <stdexcept>
#include <vector>

namespace whale {
namespace {

// Runs fn outside a team, then inside one.
template <class F>
void both_ways(const F& fn) {
  fn(false);
  with_decode_team([&] { fn(true); });
}

TEST(Team, EveryRankRunsTheBodyOnce) {
  both_ways([](bool team) {
    const int threads = region_threads(true);
    EXPECT_EQ(threads, omp_get_max_threads()) << (team ? "team" : "OpenMP");
    std::vector<std::atomic<int>> ran(threads);
    std::atomic<int> sizes_wrong{0};
    parallel_region(true, [&](int rank, int n) {
      if (n != threads) ++sizes_wrong;
      ++ran[rank];
    });
    EXPECT_EQ(sizes_wrong, 0);
    for (int r = 0; r < threads; ++r) EXPECT_EQ(ran[r], 1) << "rank " << r;
    // Not parallel: one thread.
    int calls = 0;
    parallel_region(false, [&](int rank, int n) {
      EXPECT_EQ(rank, 0);
      EXPECT_EQ(n, 1);
      ++calls;
    });
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(region_threads(false), 1);
  });
}

TEST(Team, BarriersOrderThePhases) {
  both_ways([](bool team) {
    const int threads = region_threads(true);
    constexpr int kPhases = 200;
    std::vector<std::atomic<int>> done(kPhases);
    std::atomic<int> early{0};
    parallel_region(true, [&](int, int n) {
      for (int p = 0; p < kPhases; ++p) {
        ++done[p];
        region_barrier();
        // Past the barrier every thread has finished phase p.
        if (done[p].load() != n) ++early;
      }
    });
    EXPECT_EQ(early, 0) << (team ? "team" : "OpenMP");
    for (int p = 0; p < kPhases; ++p) EXPECT_EQ(done[p], threads);
  });
}

TEST(Team, SchedulesHandOutEveryItemOnce) {
  both_ways([](bool) {
    for (int n : {0, 1, 5, 1000}) {
      std::vector<std::atomic<int>> statics(n), dynamics(n);
      RegionItems items(n);
      parallel_region(true, [&](int rank, int threads) {
        region_static(n, rank, threads, [&](int i) { ++statics[i]; });
        for (int i; (i = items.next()) >= 0;) ++dynamics[i];
      });
      for (int i = 0; i < n; ++i) {
        ASSERT_EQ(statics[i], 1) << "static item " << i << " of " << n;
        ASSERT_EQ(dynamics[i], 1) << "dynamic item " << i << " of " << n;
      }
    }
  });
}

TEST(Team, NestedRegionsRunOnOneThread) {
  both_ways([](bool) {
    std::atomic<int> inner_calls{0}, inner_wrong{0};
    parallel_region(true, [&](int, int) {
      EXPECT_EQ(region_threads(true), 1);
      parallel_region(true, [&](int rank, int n) {
        if (rank != 0 || n != 1) ++inner_wrong;
        region_barrier();  // a one-thread region's barrier returns at once
        ++inner_calls;
      });
      region_barrier();
    });
    EXPECT_EQ(inner_wrong, 0);
    EXPECT_EQ(inner_calls, region_threads(true));
  });
}

TEST(Team, ExceptionsReachTheCaller) {
  // From the leader's work between regions (a check in the step, say); the team is usable again
  // afterwards.
  EXPECT_THROW(with_decode_team([] {
                 parallel_region(true, [](int, int) {});
                 throw std::runtime_error("step failed");
               }),
               std::runtime_error);
  int calls = 0;
  with_decode_team([&] { parallel_region(true, [&](int rank, int) { calls += rank == 0; }); });
  EXPECT_EQ(calls, 1);
}

TEST(Team, OneThreadRunsEverythingInPlace) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  int calls = 0;
  with_decode_team([&] {
    EXPECT_EQ(region_threads(true), 1);
    parallel_region(true, [&](int rank, int n) {
      EXPECT_EQ(rank, 0);
      EXPECT_EQ(n, 1);
      region_barrier();
      ++calls;
    });
  });
  omp_set_num_threads(saved);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace whale
