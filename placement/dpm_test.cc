// DPM: band edges, min_hosts_on and the HA reserve. Every plan goes through CheckPlan.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "placement/placement.h"
#include "placement/test_util.h"

namespace uw::placement {
namespace {

using testing::Builder;
using ::testing::HasSubstr;
using testing::PlanAndCheck;

int Count(const Plan& p, PowerActionType t) {
  int n = 0;
  for (const auto& a : p.power) n += a.action == t;
  return n;
}

// Four hosts of 10 cores; ten guests spread 3/3/2/2, each using `cpu` cores and little memory.
// Target 0.5 +- 0.25 so that the band edges are exact in binary.
Snapshot Quiet(double cpu, int64_t vm_mem = 1024) {
  Builder b;
  for (int h = 0; h < 4; ++h) b.AddHost("h" + std::to_string(h), 10, 65536);
  const int per_host[] = {3, 3, 2, 2};
  int n = 0;
  for (int h = 0; h < 4; ++h) {
    for (int i = 0; i < per_host[h]; ++i)
      b.AddVm("v" + std::to_string(n++), "h" + std::to_string(h), 2, vm_mem, cpu, 256);
  }
  Snapshot s = b.Build();
  s.settings.dpm.enabled = true;
  s.settings.dpm.target_utilization = 0.5;
  s.settings.dpm.tolerance = 0.25;
  return s;
}

TEST(DpmTest, AtTheLowerEdgeNothingHappens) {
  Plan p = PlanAndCheck(Quiet(1.0));  // 10 / 40 = 0.25 exactly
  EXPECT_EQ(Count(p, PowerActionType::kPowerOff), 0);
}

TEST(DpmTest, BelowTheBandOneHostIsEvacuatedAndPoweredOff) {
  Snapshot s = Quiet(0.99);  // 9.9 / 40 = 0.2475; after one power-off 9.9 / 30 = 0.33
  Plan p = PlanAndCheck(s);
  ASSERT_EQ(Count(p, PowerActionType::kPowerOff), 1);
  EXPECT_THAT(p.power[0].reason, HasSubstr("below band 25%-75%"));
  EXPECT_EQ(p.after.hosts_on, 3);
  EXPECT_EQ(p.before.hosts_on, 4);
  for (const Move& m : p.moves) {
    if (m.from == p.power[0].host) {
      EXPECT_EQ(m.priority, 2);
    }
  }
}

TEST(DpmTest, NeverBelowMinHostsOn) {
  Snapshot s = Quiet(0.2);  // 2 / 40: would go down to one host
  Plan p = PlanAndCheck(s);
  EXPECT_EQ(p.after.hosts_on, 1);
  s.settings.dpm.min_hosts_on = 3;
  p = PlanAndCheck(s);
  EXPECT_EQ(p.after.hosts_on, 3);
}

TEST(DpmTest, HaReserveKeepsHostsOn) {
  // 10 guests of 16 GiB = 160 GiB. Three hosts hold them (196 GiB), but with one of the three
  // failed only 128 GiB remain: with HA on, no host may be powered off.
  Snapshot s = Quiet(0.5, 16384);
  Plan p = PlanAndCheck(s);
  EXPECT_EQ(Count(p, PowerActionType::kPowerOff), 1);
  s.settings.ha.enabled = true;
  p = PlanAndCheck(s);
  EXPECT_EQ(Count(p, PowerActionType::kPowerOff), 0);
}

Snapshot Busy(double cpu) {
  // Three hosts on with 3 guests each, a fourth in standby.
  Builder b;
  for (int h = 0; h < 4; ++h)
    b.AddHost("h" + std::to_string(h), 10, 65536, h == 3 ? HostState::kStandby : HostState::kOn);
  int n = 0;
  for (int h = 0; h < 3; ++h) {
    for (int i = 0; i < 3; ++i) b.AddVm("v" + std::to_string(n++), "h" + std::to_string(h), 4, 1024, cpu, 256);
  }
  Snapshot s = b.Build();
  s.settings.dpm.enabled = true;
  s.settings.dpm.target_utilization = 0.5;
  s.settings.dpm.tolerance = 0.25;
  return s;
}

TEST(DpmTest, AtTheUpperEdgeNothingHappens) {
  Plan p = PlanAndCheck(Busy(2.5));  // 22.5 / 30 = 0.75 exactly
  EXPECT_TRUE(p.power.empty());
}

TEST(DpmTest, AboveTheBandAStandbyHostIsPoweredOnAndUsed) {
  Snapshot s = Busy(2.6);  // 23.4 / 30 = 0.78
  Plan p = PlanAndCheck(s);
  ASSERT_EQ(Count(p, PowerActionType::kPowerOn), 1);
  EXPECT_EQ(p.power[0].host, "h3");
  EXPECT_THAT(p.power[0].reason, HasSubstr("above band"));
  bool used = false;
  for (const Move& m : p.moves) used = used || m.to == "h3";
  EXPECT_TRUE(used);
  EXPECT_EQ(p.after.hosts_on, 4);
}

TEST(DpmTest, HaShortfallPowersOnAHost) {
  Snapshot s = Busy(1.5);                      // 13.5 / 30 = 0.45: in band
  for (auto& v : s.vms) v.memory_mib = 16384;  // 144 GiB; two hosts left after a failure: 128 GiB
  Plan p = PlanAndCheck(s);
  EXPECT_TRUE(p.power.empty());
  s.settings.ha.enabled = true;
  p = PlanAndCheck(s);
  ASSERT_EQ(Count(p, PowerActionType::kPowerOn), 1);
  EXPECT_THAT(p.power[0].reason, HasSubstr("HA reserve"));
}

TEST(DpmTest, DefaultBandIs63PlusMinus18) {
  Builder b;
  for (int h = 0; h < 4; ++h) b.AddHost("h" + std::to_string(h), 100, 262144);
  for (int i = 0; i < 16; ++i) b.AddVm("v" + std::to_string(i), "h" + std::to_string(i % 4), 16, 4096, 11.0, 256);
  Snapshot s = b.Build();
  s.settings.dpm.enabled = true;
  Plan p = PlanAndCheck(s);  // 176 / 400 = 0.44 < 0.45
  EXPECT_EQ(Count(p, PowerActionType::kPowerOff), 1);
  for (auto& v : s.vms) v.demand.cpu_cores = 11.5;  // 184 / 400 = 0.46: in band
  p = PlanAndCheck(s);
  EXPECT_TRUE(p.power.empty());
}

TEST(DpmTest, DisabledDpmNeverTouchesPower) {
  Snapshot s = Quiet(0.2);
  s.settings.dpm.enabled = false;
  EXPECT_TRUE(PlanAndCheck(s).power.empty());
}

}  // namespace
}  // namespace uw::placement
