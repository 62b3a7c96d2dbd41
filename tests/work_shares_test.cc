// WorkShares (ops/work_shares.h): every item handed out exactly once, under real threads and
// with absent ones; a thread's own share in order from its front; stealing takes the back half of
// the largest share left; shares of equal cost.
#include "ops/work_shares.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

namespace whale {
namespace {

// Drains thread t's calls until -1, returning the items in the order received.
std::vector<int> drain(WorkShares& shares, int t) {
  std::vector<int> items;
  for (int i; (i = shares.next(t)) >= 0;) items.push_back(i);
  return items;
}

TEST(WorkShares, OwnShareComesInOrderThenTheBackHalfOfTheOther) {
  WorkShares shares(16, 2);
  // Thread 1 alone: its share [8, 16), then the back half of thread 0's [0, 8): [4, 8), then
  // the back half of what is left, [2, 4), then [1, 2), then [0, 1).
  const std::vector<int> expected = {8, 9, 10, 11, 12, 13, 14, 15, 4, 5, 6, 7, 2, 3, 1, 0};
  EXPECT_EQ(drain(shares, 1), expected);
  EXPECT_EQ(shares.next(0), -1);
  EXPECT_EQ(shares.next(1), -1);
}

TEST(WorkShares, InterleavedThreadsStealOnlyWhatTheOwnerHasNotTaken) {
  WorkShares shares(10, 2);  // [0, 5) and [5, 10)
  EXPECT_EQ(shares.next(0), 0);
  EXPECT_EQ(shares.next(0), 1);
  for (int i = 5; i < 10; ++i) EXPECT_EQ(shares.next(1), i);
  EXPECT_EQ(shares.next(1), 3);  // thread 0 has [2, 5) left: thread 1 takes [3, 5)
  EXPECT_EQ(shares.next(0), 2);  // thread 0 keeps [2, 3)
  EXPECT_EQ(shares.next(0), 4);  // then steals back from thread 1's [4, 5)
  EXPECT_EQ(shares.next(0), -1);
  EXPECT_EQ(shares.next(1), -1);
}

TEST(WorkShares, SharesOfEqualCost) {
  // Costs 1,1,1,1,1,1,3,3 (total 12): thread 0's share is items 0-5 (cost 6), thread 1's 6-7.
  WorkShares shares(std::vector<double>{1, 1, 1, 1, 1, 1, 3, 3}, 2);
  EXPECT_EQ(shares.next(1), 6);
  EXPECT_EQ(shares.next(0), 0);
  EXPECT_EQ(shares.next(1), 7);
}

TEST(WorkShares, EdgeCases) {
  WorkShares none(0, 2);
  EXPECT_EQ(none.next(0), -1);
  EXPECT_EQ(none.next(1), -1);
  WorkShares one(1, 4);  // more threads than items
  std::vector<int> all;
  for (int t = 3; t >= 0; --t)
    for (int i : drain(one, t)) all.push_back(i);
  EXPECT_EQ(all, std::vector<int>{0});
  WorkShares single(5, 1);
  EXPECT_EQ(drain(single, 0), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(single.next(1), -1);  // a thread beyond the shares
}

// Fewer threads than shares (a region that got one thread): the absent shares are stolen.
TEST(WorkShares, AbsentThreadsSharesAreStolen) {
  WorkShares shares(1000, 8);
  std::vector<int> seen(1000, 0);
  for (int i : drain(shares, 3)) ++seen[i];
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(seen[i], 1) << "item " << i;
}

// Real threads racing (random pauses between items): every item exactly once.
TEST(WorkShares, EveryItemExactlyOnceUnderRealThreads) {
  const int threads = 4;
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + trial * 7 % 500;
    WorkShares shares(n, threads);
    std::vector<std::atomic<int>> seen(n);
    for (auto& s : seen) s = 0;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        std::mt19937 rng(trial * 31 + t);
        for (int i; (i = shares.next(t)) >= 0;) {
          ++seen[i];
          if (rng() % 16 == 0) std::this_thread::yield();
        }
      });
    for (auto& th : pool) th.join();
    for (int i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << "trial " << trial << " item " << i;
  }
}

}  // namespace
}  // namespace whale
