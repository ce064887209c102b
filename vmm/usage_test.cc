#include "vmm/usage.h"

#include <gtest/gtest.h>

namespace uw::vmm {
namespace {

GuestCounters At(double seconds, uint64_t cpu_ns, uint64_t rx = 0) {
  GuestCounters c;
  c.name = "g";
  c.uuid = "u";
  c.at = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(seconds));
  c.cpu_time_ns = cpu_ns;
  c.net_rx_bytes = rx;
  return c;
}

TEST(UsageTrackerTest, FirstSampleHasNoRates) {
  UsageTracker t;
  auto u = t.Update({At(10, 5'000'000'000)});
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].interval_s, 0);
  EXPECT_EQ(u[0].cpu_cores, 0);
}

TEST(UsageTrackerTest, RatesOverTheInterval) {
  UsageTracker t;
  (void)t.Update({At(10, 5'000'000'000, 1000)});
  auto u = t.Update({At(12, 8'000'000'000, 5000)});  // 3 s of CPU in 2 s
  ASSERT_EQ(u.size(), 1u);
  EXPECT_DOUBLE_EQ(u[0].interval_s, 2);
  EXPECT_DOUBLE_EQ(u[0].cpu_cores, 1.5);
  EXPECT_DOUBLE_EQ(u[0].net_rx_bps, 2000);
}

TEST(UsageTrackerTest, RestartedGuestStartsOver) {
  UsageTracker t;
  (void)t.Update({At(10, 5'000'000'000)});
  auto u = t.Update({At(12, 1'000'000)});  // counters went backwards
  EXPECT_EQ(u[0].cpu_cores, 0);
  u = t.Update({At(13, 501'000'000)});
  EXPECT_NEAR(u[0].cpu_cores, 0.5, 1e-9);
}

TEST(UsageTrackerTest, MemoryFromBalloonStatsElseRss) {
  UsageTracker t;
  GuestCounters c = At(1, 0);
  c.balloon_available_kib = 250 * 1024;
  c.balloon_usable_kib = 200 * 1024;
  c.rss_kib = 300 * 1024;
  EXPECT_EQ(t.Update({c})[0].memory_used_mib, 50);
  c.balloon_available_kib = -1;
  EXPECT_EQ(t.Update({c})[0].memory_used_mib, 300);
}

TEST(UsageTrackerTest, ForgetsVanishedGuests) {
  UsageTracker t;
  (void)t.Update({At(1, 1'000'000'000)});
  (void)t.Update({});
  auto u = t.Update({At(2, 2'000'000'000)});
  EXPECT_EQ(u[0].interval_s, 0);
}

}  // namespace
}  // namespace uw::vmm
