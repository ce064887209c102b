// Policy plug-ins: consolidate and opportunity-cost. Every plan goes through CheckPlan.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "placement/placement.h"
#include "placement/test_util.h"

namespace uw::placement {
namespace {

using testing::Builder;
using ::testing::HasSubstr;
using testing::PlanAndCheck;

TEST(PolicyTest, NamesAndUnknownPolicy) {
  EXPECT_EQ(PolicyNames().size(), 3u);
  for (const auto& n : PolicyNames()) {
    auto p = MakePolicy(n);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ((*p)->name(), n);
  }
  auto bad = MakePolicy("random");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("unknown policy 'random'"));
}

TEST(ConsolidateTest, LowerBoundAndFfdByHand) {
  // Hosts of 10 cores / 10 GiB. Guests: cpu 6, 6, 4, 4 (mem 1 GiB each) -> cpu total 20:
  // lower bound 2; FFD: 6 | 6 | 4+4... first fit puts 4 with the first 6 -> {6,4},{6,4} = 2.
  Builder b;
  for (int h = 0; h < 4; ++h) b.AddHost("h" + std::to_string(h), 10, 10240);
  b.AddVm("a", "h0", 8, 1024, 6);
  b.AddVm("b", "h1", 8, 1024, 6);
  b.AddVm("c", "h2", 8, 1024, 4);
  b.AddVm("d", "h3", 8, 1024, 4);
  Snapshot s = b.Build();
  EXPECT_EQ(ConsolidationLowerBound(s), 2);
  EXPECT_EQ(FirstFitDecreasingHosts(s), 2);
  Plan p = PlanAndCheck(s, "consolidate");
  EXPECT_EQ(p.after.hosts_used, 2);
  EXPECT_EQ(p.after.hosts_on, 2);
  EXPECT_EQ(p.moves.size(), 2u);
  int offs = 0;
  for (const auto& a : p.power) offs += a.action == PowerActionType::kPowerOff;
  EXPECT_EQ(offs, 2);
}

// Memory as the binding dimension: lower bound from memory.
TEST(ConsolidateTest, MemoryBoundInstances) {
  Builder b;
  for (int h = 0; h < 6; ++h) b.AddHost("h" + std::to_string(h), 64, 16384);
  for (int i = 0; i < 12; ++i) b.AddVm("v" + std::to_string(i), "h" + std::to_string(i % 6), 1, 5000, 0.5);
  Snapshot s = b.Build();
  // 12 x 5000 = 60000 MiB over 16384 per host: ceil(3.66) = 4; but only 3 fit per host -> 4.
  EXPECT_EQ(ConsolidationLowerBound(s), 4);
  Plan p = PlanAndCheck(s, "consolidate");
  EXPECT_EQ(p.after.hosts_used, 4);
}

class ConsolidateRandomTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ConsolidateRandomTest, WithinLowerBoundPlusOneAndNeverWorseThanFfd) {
  std::mt19937 rng(GetParam());
  Builder b;
  const int hosts = 24;
  for (int h = 0; h < hosts; ++h) b.AddHost("h" + std::to_string(h), 32, 131072);
  std::vector<int64_t> used(hosts, 0);
  std::vector<double> cpu(hosts, 0);
  for (int i = 0; i < 160; ++i) {
    int64_t mem = 1024 * (1 + static_cast<int64_t>(rng() % 16));
    double c = 0.25 * (1 + static_cast<int>(rng() % 16));
    int h = static_cast<int>(rng() % hosts);
    while (used[h] + mem > 131072 || cpu[h] + c > 32) h = (h + 1) % hosts;
    used[h] += mem;
    cpu[h] += c;
    b.AddVm("v" + std::to_string(i), "h" + std::to_string(h), 4, mem, c);
  }
  Snapshot s = b.Build();
  int64_t lb = ConsolidationLowerBound(s);
  int64_t ffd = FirstFitDecreasingHosts(s);
  Plan p = PlanAndCheck(s, "consolidate");
  EXPECT_LE(p.after.hosts_used, lb + 1) << "lb " << lb << " ffd " << ffd;
  EXPECT_LE(p.after.hosts_used, ffd);
  // Packed hosts never exceed CPU capacity.
  auto after = ApplyPlan(s, p);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(ComputeMetrics(*after).unmet_cpu_cores, 0);
}

INSTANTIATE_TEST_SUITE_P(Seeds, ConsolidateRandomTest, ::testing::Values(1u, 2u, 3u, 4u, 5u));

TEST(ConsolidateTest, RespectsPinsAndRules) {
  Builder b;
  for (int h = 0; h < 4; ++h) b.AddHost("h" + std::to_string(h), 16, 65536);
  b.AddVm("pinned", "h3", 1, 1024, 0.5);
  b.LastVm().kind = GuestKind::kLxc;
  b.AddVm("a1", "h0", 1, 1024, 0.5);
  b.AddVm("a2", "h1", 1, 1024, 0.5);
  b.AddVm("x", "h2", 1, 1024, 0.5);
  b.AddRule("apart", RuleType::kVmAntiAffinity, {"a1", "a2"});
  Snapshot s = b.Build();
  Plan p = PlanAndCheck(s, "consolidate");
  // Two hosts: the pinned guest's host and one more, since a1 and a2 must stay apart.
  EXPECT_EQ(p.after.hosts_used, 2);
  for (const Move& m : p.moves) EXPECT_NE(m.vm, "pinned");
}

TEST(ConsolidateTest, KeepsMinHostsOnAndHaReserve) {
  Builder b;
  for (int h = 0; h < 4; ++h) b.AddHost("h" + std::to_string(h), 16, 65536);
  for (int i = 0; i < 4; ++i) b.AddVm("v" + std::to_string(i), "h" + std::to_string(i), 1, 8192, 0.5);
  Snapshot s = b.Build();
  Plan p = PlanAndCheck(s, "consolidate");
  EXPECT_EQ(p.after.hosts_on, 1);
  s.settings.ha.enabled = true;
  p = PlanAndCheck(s, "consolidate");
  EXPECT_EQ(p.after.hosts_on, 2);
  s.settings.ha.enabled = false;
  s.settings.dpm.min_hosts_on = 3;
  p = PlanAndCheck(s, "consolidate");
  EXPECT_EQ(p.after.hosts_on, 3);
}

TEST(OpportunityCostTest, RelievesTheHottestHost) {
  Snapshot s = testing::RandomCluster(12, 180, 5);
  s.settings.drs.threshold = 5;
  Plan p = PlanAndCheck(s, "opportunity-cost");
  EXPECT_EQ(p.policy, "opportunity-cost");
  ASSERT_FALSE(p.moves.empty());
  auto max_load = [](const Snapshot& snap) {
    auto e = ComputeEntitlements(snap);
    std::map<std::string, double> cpu;
    for (size_t i = 0; i < snap.vms.size(); ++i) cpu[snap.vms[i].host] += e.vms[i].cpu_cores;
    double m = 0;
    for (const auto& h : snap.hosts) m = std::max(m, cpu[h.name] / h.cpu_cores);
    return m;
  };
  auto placed = MakePlan(s, "drs");  // placements of guests the generator left unplaced
  ASSERT_TRUE(placed.ok());
  Plan only_place = *placed;
  only_place.moves.clear();
  only_place.power.clear();
  auto start = ApplyPlan(s, only_place);
  ASSERT_TRUE(start.ok());
  auto after = ApplyPlan(s, p);
  ASSERT_TRUE(after.ok());
  EXPECT_LT(max_load(*after), max_load(*start));
  EXPECT_LT(p.after.imbalance, p.before.imbalance);
}

TEST(OpportunityCostTest, PlacementAvoidsExpensiveHosts) {
  Builder b;
  b.AddHost("hot", 16, 65536);
  b.AddHost("cool", 16, 65536);
  b.AddVm("load", "hot", 16, 49152, 12);
  b.AddVm("new", "", 2, 4096, 1);
  Snapshot s = b.Build();
  auto index = PlacementIndex::Build(s, "opportunity-cost");
  ASSERT_TRUE(index.ok());
  EXPECT_EQ((*index)->Place(s.vms[1]).host, "cool");
  EXPECT_FALSE(PlacementIndex::Build(s, "nope").ok());
}

// Found by the snapshot fuzzer: consolidation powered h3 on to place `d`, then moved everything off
// it and planned its power-off too, and the checker refuses two power actions for one host.
TEST(ConsolidateTest, NeverPowersOffAHostThePlanPowersOn) {
  const Json j = Json::parse(R"({
    "hosts": [{"name": "h1", "cpu_cores": 2, "memory_mib": 16384}, {"name": "h2", "cpu_cores": 7, "memory_mib": 16384},
              {"name": "h3", "cpu_cores": 4, "memory_mib": 8192, "state": "standby"}],
    "vms": [{"name": "a", "vcpus": 4, "memory_mib": 4096, "demand": {"cpu_cores": 3.5}},
            {"name": "b", "vcpus": 4, "memory_mib": 4096, "demand": {"cpu_cores": 3.9}},
            {"name": "c", "host": "h1", "vcpus": 1, "memory_mib": 2048},
            {"name": "d", "host": null, "vcpus": 1, "memory_mib": 11024}],
    "settings": {"drs": {"automation": "automatic"}, "dpm": {"enabled": true, "min_hosts_on": 1}}})");
  auto s = ParseSnapshot(j);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  auto plan = MakePlan(*s, "consolidate");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(CheckPlan(*s, *plan).ok()) << CheckPlan(*s, *plan).ToString();
  for (const PowerAction& a : plan->power) {
    EXPECT_EQ(
        std::count_if(plan->power.begin(), plan->power.end(), [&](const PowerAction& b) { return b.host == a.host; }),
        1)
        << a.host;
  }
}

}  // namespace
}  // namespace uw::placement
