#include "common/clock.h"

#include <gtest/gtest.h>

namespace uw {
namespace {

TEST(ClockTest, FakeClockAdvances) {
  FakeClock c;
  auto t0 = c.Now();
  auto m0 = c.Monotonic();
  c.Advance(std::chrono::seconds(5));
  EXPECT_EQ(c.Now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(c.Monotonic() - m0, std::chrono::seconds(5));
}

TEST(ClockTest, FormatsRfc3339) {
  TimePoint t{std::chrono::milliseconds(1'700'000'000'123)};
  EXPECT_EQ(FormatRfc3339(t), "2023-11-14T22:13:20.123Z");
  EXPECT_DOUBLE_EQ(ToUnixSeconds(t), 1700000000.123);
}

TEST(ClockTest, RealClockIsMonotonic) {
  auto a = Clock::Real().Monotonic();
  auto b = Clock::Real().Monotonic();
  EXPECT_LE(a, b);
}

}  // namespace
}  // namespace uw
