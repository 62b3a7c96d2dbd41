// The progress bar (base/progress.h): by count, and by a time budget (a loop that runs until its
// seconds are spent, with a step count only as a cap, must not show that cap's ETA).
#include "base/progress.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

namespace whale {
namespace {

TEST(Progress, CountsTowardTheTotal) {
  testing::internal::CaptureStderr();
  {
    Progress p("work", 4, " items");
    for (int i = 0; i < 4; ++i) p.advance(1);
  }
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("work [###############...............]  50%"), std::string::npos) << out;
  EXPECT_NE(out.find("100%"), std::string::npos) << out;
  EXPECT_NE(out.find("done in"), std::string::npos) << out;
}

TEST(Progress, TimeBudgetSetsTheBarAndTheEta) {
  testing::internal::CaptureStderr();
  {
    Progress p("sft", 1000000, " steps");  // a cap far beyond what the budget allows
    p.set_time_budget(0.3);
    for (int i = 0; i < 8; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      p.advance(1);
    }
  }
  const std::string out = testing::internal::GetCapturedStderr();
  // Every ETA is within the budget (by count it would be ~50000 s), and the bar moved.
  for (size_t at = out.find("ETA "); at != std::string::npos; at = out.find("ETA ", at + 1)) {
    double eta = -1;
    ASSERT_EQ(std::sscanf(out.c_str() + at, "ETA %lfs", &eta), 1) << out;
    EXPECT_LE(eta, 0.3) << out;
  }
  EXPECT_NE(out.find("ETA "), std::string::npos) << out;
  EXPECT_NE(out.find("#####"), std::string::npos) << out;
  EXPECT_NE(out.find("100%"), std::string::npos) << out;  // the final line
}

}  // namespace
}  // namespace whale
