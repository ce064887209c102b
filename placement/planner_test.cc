// Initial placement, mandatory moves, rules and DRS balancing. Every plan goes through CheckPlan.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "placement/placement.h"
#include "placement/test_util.h"

namespace uw::placement {
namespace {

using testing::Builder;
using testing::FindMove;
using ::testing::HasSubstr;
using testing::PlanAndCheck;

std::string HostOf(const Snapshot& s, const Plan& p, const std::string& vm) {
  auto after = ApplyPlan(s, p);
  EXPECT_TRUE(after.ok());
  for (const Vm& v : after->vms) {
    if (v.name == vm) return v.host;
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Initial placement
// ---------------------------------------------------------------------------------------------

TEST(PlacementTest, FiltersGiveAReasonPerRejectedHost) {
  Builder b;
  b.AddHost("small", 2, 65536);
  b.AddHost("full", 16, 8192);
  b.AddHost("down", 16, 65536, HostState::kMaintenance);
  b.AddHost("taken", 16, 65536);
  b.AddHost("good", 16, 65536);
  b.AddHost("busy", 16, 65536);
  b.AddVm("filler", "full", 1, 6144);
  b.AddVm("peer", "taken", 1, 1024);
  b.AddVm("load", "busy", 8, 1024, 8);
  b.AddVm("x", "", 4, 4096, 2);
  b.AddRule("apart", RuleType::kVmAntiAffinity, {"x", "peer"});
  Snapshot s = testing::Reparse(b.Build());
  auto index = PlacementIndex::Build(s);
  ASSERT_TRUE(index.ok());
  PlacementDecision d = (*index)->Place(s.vms[3]);
  EXPECT_EQ(d.host, "good");  // "busy" passes the filters but scores worse (more imbalance)
  std::map<std::string, std::string> why;
  for (const auto& r : d.rejected) why[r.host] = r.reason;
  EXPECT_THAT(why["small"], HasSubstr("guest has 4 vCPUs, host has 2 cores"));
  EXPECT_THAT(why["full"], HasSubstr("needs 4096 MiB, 2048 MiB free"));
  EXPECT_THAT(why["down"], HasSubstr("host is maintenance"));
  EXPECT_THAT(why["taken"], HasSubstr("breaks required rule 'apart'"));
  EXPECT_EQ(why.count("busy"), 0u);
  EXPECT_FALSE(d.needs_power_on);
}

TEST(PlacementTest, NewGuestNotInSnapshotAndStandbyFallback) {
  Builder b;
  b.AddHost("h1", 8, 4096);
  b.AddHost("h2", 32, 131072, HostState::kStandby);
  Snapshot s = b.Build();
  auto index = PlacementIndex::Build(s);
  ASSERT_TRUE(index.ok());
  Vm big;
  big.name = "big";
  big.vcpus = 16;
  big.memory_mib = 65536;
  big.demand = {4, 65536};
  PlacementDecision d = (*index)->Place(big);
  EXPECT_EQ(d.host, "h2");
  EXPECT_TRUE(d.needs_power_on);
  ASSERT_EQ(d.rejected.size(), 1u);
  EXPECT_EQ(d.rejected[0].host, "h1");
  big.memory_mib = 1 << 20;
  d = (*index)->Place(big);
  EXPECT_EQ(d.host, "");
  EXPECT_EQ(d.rejected.size(), 2u);
}

// Regression: a guest not yet in the snapshot (how the manager asks) was placed on failed
// (disconnected) and maintenance hosts, "best score of 3 feasible hosts".
TEST(PlacementTest, NewGuestNeverGoesToAFailedOrMaintenanceHost) {
  Builder b;
  b.AddHost("dead", 64, 262144, HostState::kFailed);
  b.AddHost("resting", 64, 262144, HostState::kMaintenance);
  b.AddHost("busy", 8, 16384);
  b.AddVm("load", "busy", 6, 8192, 6);
  Snapshot s = testing::Reparse(b.Build());
  auto index = PlacementIndex::Build(s);
  ASSERT_TRUE(index.ok());
  Vm vm;
  vm.name = "new";
  vm.vcpus = 2;
  vm.memory_mib = 2048;
  vm.demand = {2, 2048};
  PlacementDecision d = (*index)->Place(vm);
  EXPECT_EQ(d.host, "busy") << d.reason;
  EXPECT_THAT(d.reason, HasSubstr("best score of 1 feasible hosts"));
  std::map<std::string, std::string> why;
  for (const auto& r : d.rejected) why[r.host] = r.reason;
  EXPECT_EQ(why["dead"], "host is failed");
  EXPECT_EQ(why["resting"], "host is maintenance");
  // With no powered-on host left there is no host at all (not a failed one).
  s.hosts[2].state = HostState::kFailed;
  d = (*PlacementIndex::Build(s))->Place(vm);
  EXPECT_EQ(d.host, "");
  EXPECT_EQ(d.rejected.size(), 3u);
}

TEST(PlacementTest, PlanPlacesNewGuestsAndReportsTheUnplaceable) {
  Builder b;
  b.AddHost("h1", 16, 16384);
  b.AddHost("h2", 16, 16384);
  b.AddVm("a", "", 2, 8192);
  b.AddVm("b", "", 2, 8192);
  b.AddVm("c", "", 2, 8192);
  b.AddVm("huge", "", 2, 32768);
  Plan p = PlanAndCheck(b.Build());
  EXPECT_EQ(p.placements.size(), 3u);
  ASSERT_EQ(p.unplaced.size(), 1u);
  EXPECT_EQ(p.unplaced[0].vm, "huge");
  EXPECT_THAT(p.unplaced[0].reason, HasSubstr("needs 32768 MiB"));
}

TEST(PlacementTest, PlacementWakesAStandbyHostWhenNothingElseFits) {
  Builder b;
  b.AddHost("h1", 16, 8192);
  b.AddHost("h2", 16, 65536, HostState::kStandby);
  b.AddVm("a", "h1", 2, 8192);
  b.AddVm("b", "", 2, 8192);
  Plan p = PlanAndCheck(b.Build());
  ASSERT_EQ(p.power.size(), 1u);
  EXPECT_EQ(p.power[0].host, "h2");
  EXPECT_EQ(p.power[0].action, PowerActionType::kPowerOn);
  ASSERT_EQ(p.placements.size(), 1u);
  EXPECT_EQ(p.placements[0].host, "h2");
}

TEST(PlacementTest, FailedHostGuestsAreRestarted) {
  Builder b;
  b.AddHost("h1", 16, 16384, HostState::kFailed);
  b.AddHost("h2", 16, 16384);
  b.AddHost("h3", 16, 16384);
  b.AddVm("a", "h1", 2, 8192);
  b.AddVm("b", "h1", 2, 8192);
  b.AddVm("c", "h1", 2, 8192);
  b.AddVm("d", "h1", 2, 16384);
  Plan p = PlanAndCheck(b.Build());
  EXPECT_EQ(p.placements.size(), 3u);
  EXPECT_EQ(p.unplaced.size(), 1u);
  for (const auto& pl : p.placements) EXPECT_THAT(pl.reason, HasSubstr("restart after failure of h1"));
}

// h1 fails with a large and a small guest; h2 has room for only one of them (8192 MiB free).
Snapshot LastRoom(RestartPriority small_priority) {
  Builder b;
  b.AddHost("h1", 16, 16384, HostState::kFailed);
  b.AddHost("h2", 16, 16384);
  b.AddVm("running", "h2", 1, 8192);
  b.AddVm("large", "h1", 2, 8192);
  b.AddVm("small", "h1", 1, 4096);
  b.LastVm().restart_priority = small_priority;
  return b.Build();
}

TEST(RestartPriorityTest, HighPrioritySmallGuestGetsTheLastRoomBeforeAMediumLargeOne) {
  Snapshot s = LastRoom(RestartPriority::kHigh);
  Plan p = PlanAndCheck(s);
  ASSERT_EQ(p.placements.size(), 1u);
  EXPECT_EQ(p.placements[0].vm, "small");
  EXPECT_THAT(p.placements[0].reason, HasSubstr("restart after failure of h1"));
  ASSERT_EQ(p.unplaced.size(), 1u);
  EXPECT_EQ(p.unplaced[0].vm, "large");
  EXPECT_THAT(p.unplaced[0].reason, HasSubstr("restart after failure of h1: "));
  // At the same priority the largest goes first, as before restart priorities.
  p = PlanAndCheck(LastRoom(RestartPriority::kMedium));
  ASSERT_EQ(p.placements.size(), 1u);
  EXPECT_EQ(p.placements[0].vm, "large");
  // Low goes after medium, however large.
  s = LastRoom(RestartPriority::kMedium);
  s.vms[1].restart_priority = RestartPriority::kLow;
  p = PlanAndCheck(s);
  ASSERT_EQ(p.placements.size(), 1u);
  EXPECT_EQ(p.placements[0].vm, "small");
}

TEST(RestartPriorityTest, DisabledGuestIsNotRestarted) {
  Builder b;
  b.AddHost("h1", 16, 16384, HostState::kFailed);
  b.AddHost("h2", 16, 65536);
  b.AddVm("a", "h1", 2, 4096);
  b.AddVm("scratch", "h1", 2, 4096);
  b.LastVm().restart_priority = RestartPriority::kDisabled;
  b.AddVm("fresh", "", 1, 8192);
  b.LastVm().restart_priority = RestartPriority::kDisabled;  // only restarts read it
  Snapshot s = b.Build();
  Plan p = PlanAndCheck(s);
  ASSERT_EQ(p.unplaced.size(), 1u);
  EXPECT_EQ(p.unplaced[0].vm, "scratch");
  EXPECT_EQ(p.unplaced[0].reason, "restart after failure of h1: restart priority is disabled");
  ASSERT_EQ(p.placements.size(), 2u);
  EXPECT_EQ(p.placements[0].vm, "a");  // restarts before new guests, even larger ones
  EXPECT_EQ(p.placements[1].vm, "fresh");
  EXPECT_EQ(HostOf(s, p, "scratch"), "h1");
}

TEST(RestartPriorityTest, AffinityGroupRestartsWithoutItsDisabledMember) {
  Builder b;
  b.AddHost("h1", 16, 16384, HostState::kFailed);
  b.AddHost("h2", 16, 65536);
  b.AddVm("web", "h1", 2, 4096);
  b.AddVm("cache", "h1", 2, 4096);
  b.AddVm("tmp", "h1", 1, 1024);
  b.LastVm().restart_priority = RestartPriority::kDisabled;
  b.AddRule("together", RuleType::kVmAffinity, {"web", "cache", "tmp"});
  Plan p = PlanAndCheck(b.Build());
  EXPECT_EQ(p.placements.size(), 2u);
  ASSERT_EQ(p.unplaced.size(), 1u);
  EXPECT_EQ(p.unplaced[0].vm, "tmp");
}

// ---------------------------------------------------------------------------------------------
// Mandatory moves (priority 1)
// ---------------------------------------------------------------------------------------------

TEST(MandatoryTest, MaintenanceHostIsEvacuated) {
  Builder b;
  b.AddHost("h1", 16, 32768, HostState::kMaintenance);
  b.AddHost("h2", 16, 32768);
  b.AddHost("h3", 16, 32768);
  for (int i = 0; i < 4; ++i) b.AddVm("v" + std::to_string(i), "h1", 2, 4096, 1);
  b.AddVm("pinned", "h1", 1, 1024);
  b.LastVm().migratable = false;
  Snapshot s = b.Build();
  s.settings.drs.threshold = 1;  // mandatory only
  Plan p = PlanAndCheck(s);
  EXPECT_EQ(p.moves.size(), 4u);
  for (const Move& m : p.moves) {
    EXPECT_EQ(m.priority, 1);
    EXPECT_EQ(m.from, "h1");
    EXPECT_THAT(m.reason, HasSubstr("maintenance"));
  }
  ASSERT_EQ(p.unresolved.size(), 1u);
  EXPECT_EQ(p.unresolved[0].subject, "pinned");
}

TEST(MandatoryTest, MaintenanceMovesContainersColdOnlyWhenAllowed) {
  Builder b;
  b.AddHost("h1", 16, 32768, HostState::kMaintenance);
  b.AddHost("h2", 16, 32768);
  b.AddVm("vm", "h1", 2, 4096, 1);
  b.AddVm("ct", "h1", 1, 1024);
  b.LastVm().kind = GuestKind::kLxc;
  Snapshot s = b.Build();
  s.settings.drs.threshold = 1;
  Plan refused = PlanAndCheck(s);
  ASSERT_EQ(refused.moves.size(), 1u);
  EXPECT_FALSE(refused.moves[0].cold);
  ASSERT_EQ(refused.unresolved.size(), 1u);

  s.settings.drs.allow_cold_moves = true;
  Plan p = PlanAndCheck(s);
  ASSERT_EQ(p.moves.size(), 2u);
  const Move* ct = FindMove(p, "ct");
  ASSERT_NE(ct, nullptr);
  EXPECT_TRUE(ct->cold);
  EXPECT_THAT(ct->reason, HasSubstr("(cold)"));
  EXPECT_FALSE(FindMove(p, "vm")->cold);
  EXPECT_TRUE(p.unresolved.empty());
  // "cold" survives the plan format; the checker refuses a live move of the container.
  auto back = ParsePlan(PlanToJson(p));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, p);
  Plan live = p;
  for (auto& m : live.moves) m.cold = false;
  EXPECT_THAT(CheckPlan(s, live).message(), HasSubstr("cannot live-migrate (lxc)"));
}

TEST(MandatoryTest, MemoryOverCommitIsRelieved) {
  Builder b;
  b.AddHost("h1", 16, 16384);
  b.AddHost("h2", 16, 16384);
  b.AddVm("a", "h1", 2, 8192);
  b.AddVm("b", "h1", 2, 6144);
  b.AddVm("c", "h1", 2, 4096);  // h1: 18432 > 16384, excess 2048: c (smallest that clears it) moves
  Snapshot s = b.Build();
  s.settings.drs.threshold = 1;
  Plan p = PlanAndCheck(s);
  ASSERT_EQ(p.moves.size(), 1u);
  EXPECT_EQ(p.moves[0].vm, "c");
  EXPECT_EQ(p.moves[0].priority, 1);
  EXPECT_THAT(p.moves[0].reason, HasSubstr("memory over-committed"));
}

TEST(RulesTest, BrokenAntiAffinityIsFixed) {
  Builder b;
  b.AddHost("h1", 16, 32768);
  b.AddHost("h2", 16, 32768);
  b.AddHost("h3", 16, 32768);
  b.AddVm("w1", "h1", 1, 1024, 0.1);
  b.AddVm("w2", "h1", 1, 1024, 0.1);
  b.AddVm("w3", "h1", 1, 1024, 0.1);
  b.AddRule("web-apart", RuleType::kVmAntiAffinity, {"w1", "w2", "w3"});
  Snapshot s = b.Build();
  s.settings.drs.threshold = 1;
  Plan p = PlanAndCheck(s);
  EXPECT_EQ(p.moves.size(), 2u);
  std::set<std::string> hosts;
  for (const char* vm : {"w1", "w2", "w3"}) hosts.insert(HostOf(s, p, vm));
  EXPECT_EQ(hosts.size(), 3u);
  for (const Move& m : p.moves) EXPECT_EQ(m.priority, 1);
  EXPECT_EQ(p.after.soft_violations, 0);
}

TEST(RulesTest, AntiAffinityThatCannotBeKeptIsUnresolved) {
  Builder b;
  b.AddHost("h1", 16, 32768);
  b.AddHost("h2", 16, 32768);
  b.AddVm("w1", "h1", 1, 1024);
  b.AddVm("w2", "h1", 1, 1024);
  b.AddVm("w3", "h1", 1, 1024);
  b.AddRule("web-apart", RuleType::kVmAntiAffinity, {"w1", "w2", "w3"});
  Plan p = PlanAndCheck(b.Build());
  ASSERT_FALSE(p.unresolved.empty());
  EXPECT_EQ(p.unresolved[0].subject, "web-apart");
}

TEST(RulesTest, SplitAffinityGroupIsGathered) {
  Builder b;
  b.AddHost("h1", 16, 32768);
  b.AddHost("h2", 16, 32768);
  b.AddVm("db1", "h1", 1, 1024);
  b.AddVm("db2", "h1", 1, 1024);
  b.AddVm("db3", "h2", 1, 1024);
  b.AddRule("db-together", RuleType::kVmAffinity, {"db1", "db2", "db3"});
  Snapshot s = b.Build();
  s.settings.drs.threshold = 1;
  Plan p = PlanAndCheck(s);
  ASSERT_EQ(p.moves.size(), 1u);
  EXPECT_EQ(p.moves[0].vm, "db3");
  EXPECT_EQ(p.moves[0].to, "h1");
  EXPECT_EQ(p.moves[0].priority, 1);
}

TEST(RulesTest, AffinityGroupMovesTogetherWhenBalancing) {
  Builder b;
  b.AddHost("h1", 16, 65536);
  b.AddHost("h2", 16, 65536);
  b.AddVm("db1", "h1", 4, 4096, 4);
  b.AddVm("db2", "h1", 4, 4096, 4);
  b.AddVm("x", "h1", 4, 4096, 4);
  b.AddRule("db-together", RuleType::kVmAffinity, {"db1", "db2"});
  Snapshot s = b.Build();
  s.settings.drs.threshold = 5;
  Plan p = PlanAndCheck(s);
  // Moving the pair (8 cores) balances 12/0 into 4/8; moving x alone gives 8/4: equally good,
  // but both must never be split.
  EXPECT_EQ(HostOf(s, p, "db1"), HostOf(s, p, "db2"));
  EXPECT_LT(p.after.imbalance, p.before.imbalance);
}

TEST(RulesTest, MustAndMustNotHostRules) {
  Builder b;
  b.AddHost("h1", 16, 32768, HostState::kOn, {"licensed"});
  b.AddHost("h2", 16, 32768);
  b.AddHost("h3", 16, 32768);
  b.AddVm("ora", "h2", 2, 2048, 0.5);
  b.AddVm("noisy", "h1", 2, 2048, 0.5);
  b.AddRule("licence", RuleType::kVmHost, {"ora"}, true, HostRuleMode::kMust);
  b.snapshot().rules.back().groups = {"licensed"};
  b.AddRule("keep-off", RuleType::kVmHost, {"noisy"}, true, HostRuleMode::kMustNot, {"h1", "h2"});
  Snapshot s = testing::Reparse(b.Build());
  s.settings.drs.threshold = 1;
  Plan p = PlanAndCheck(s);
  EXPECT_EQ(HostOf(s, p, "ora"), "h1");
  EXPECT_EQ(HostOf(s, p, "noisy"), "h3");
  for (const Move& m : p.moves) EXPECT_EQ(m.priority, 1);
}

TEST(RulesTest, SoftRulesAreFixedWithPriorityTwoAndNeverBrokenForBalance) {
  Builder b;
  b.AddHost("h1", 16, 32768);
  b.AddHost("h2", 16, 32768);
  b.AddVm("a", "h1", 4, 2048, 4);
  b.AddVm("b", "h1", 4, 2048, 4);
  b.AddVm("c", "h2", 1, 2048, 0.5);
  b.AddVm("d", "h1", 1, 2048, 0.5);
  b.AddRule("prefer", RuleType::kVmHost, {"c"}, false, HostRuleMode::kShould, {"h1"});
  b.AddRule("ab-soft-together", RuleType::kVmAffinity, {"a", "b"}, false);
  Snapshot s = b.Build();
  s.settings.drs.threshold = 5;
  Plan p = PlanAndCheck(s);
  const Move* m = FindMove(p, "c");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->priority, 2);
  EXPECT_EQ(m->to, "h1");
  // a and b stay together although splitting them would balance better.
  EXPECT_EQ(HostOf(s, p, "a"), HostOf(s, p, "b"));
  EXPECT_EQ(p.after.soft_violations, 0);
}

// ---------------------------------------------------------------------------------------------
// Balancing
// ---------------------------------------------------------------------------------------------

TEST(BalanceTest, SkewedClusterGetsBalancedWithValidPlan) {
  Snapshot s = testing::RandomCluster(16, 250, 7);
  s.settings.drs.threshold = 5;
  Plan p = PlanAndCheck(s);
  EXPECT_GT(p.before.imbalance, 0.1);
  EXPECT_LT(p.after.imbalance, p.before.imbalance * 0.3);
  std::set<std::string> moved;
  for (const Move& m : p.moves) {
    EXPECT_TRUE(moved.insert(m.vm).second) << m.vm << " moved twice";
    EXPECT_GE(m.priority, 2);
    EXPECT_LE(m.priority, 5);
    EXPECT_GT(m.gain, 0);
  }
  // The metric reported is the one recomputed on the result.
  auto after = ApplyPlan(s, p);
  ASSERT_TRUE(after.ok());
  EXPECT_NEAR(ComputeMetrics(*after).imbalance, p.after.imbalance, 1e-9);
}

TEST(BalanceTest, ThresholdAndMaxMovesAreHonoured) {
  Snapshot s = testing::RandomCluster(16, 250, 11);
  s.settings.drs.threshold = 5;
  Plan all = PlanAndCheck(s);
  s.settings.drs.threshold = 3;
  Plan some = PlanAndCheck(s);
  for (const Move& m : some.moves) EXPECT_LE(m.priority, 3);
  EXPECT_LE(some.moves.size(), all.moves.size());
  EXPECT_LE(some.after.imbalance, 0.10 + 0.05);
  s.settings.drs.threshold = 1;
  EXPECT_TRUE(PlanAndCheck(s).moves.empty());
  s.settings.drs.threshold = 5;
  s.settings.drs.max_moves = 3;
  EXPECT_EQ(PlanAndCheck(s).moves.size(), 3u);
}

TEST(BalanceTest, RecentlyMovedGuestsAreNotMovedAgain) {
  Builder b;
  b.AddHost("h1", 16, 65536);
  b.AddHost("h2", 16, 65536);
  b.AddVm("a", "h1", 4, 2048, 4);
  b.AddVm("b", "h1", 4, 2048, 4);
  Snapshot s = b.Build();
  s.settings.drs.threshold = 5;
  s.vms[0].last_moved_ago_s = 600;  // within the hour
  s.vms[1].last_moved_ago_s = 1200;
  Plan p = PlanAndCheck(s);
  EXPECT_TRUE(p.moves.empty());
  s.vms[1].last_moved_ago_s = 4000;  // outside: may move
  p = PlanAndCheck(s);
  ASSERT_EQ(p.moves.size(), 1u);
  EXPECT_EQ(p.moves[0].vm, "b");
}

TEST(BalanceTest, CostBenefitPrefersTheSmallerMigration) {
  Builder b;
  b.AddHost("h1", 16, 262144);
  b.AddHost("h2", 16, 262144);
  // Same CPU and active-memory demand; "big" has 64 GiB configured, so it costs more to move.
  b.AddVm("big", "h1", 4, 65536, 4, 1024);
  b.AddVm("small", "h1", 4, 2048, 4, 1024);
  Snapshot s = b.Build();
  s.settings.drs.threshold = 5;
  Plan p = PlanAndCheck(s);
  ASSERT_EQ(p.moves.size(), 1u);
  EXPECT_EQ(p.moves[0].vm, "small");
}

TEST(BalanceTest, TinyGainsAreNotWorthAMigration) {
  Builder b;
  b.AddHost("h1", 64, 262144);
  b.AddHost("h2", 64, 262144);
  b.AddVm("a", "h1", 1, 65536, 0.05, 512);
  b.AddVm("b", "h2", 1, 65536, 0.0, 512);
  Snapshot s = b.Build();
  s.settings.drs.threshold = 5;
  EXPECT_TRUE(PlanAndCheck(s).moves.empty());
}

TEST(BalanceTest, BalancedClusterStaysPut) {
  Builder b;
  for (int h = 0; h < 4; ++h) {
    b.AddHost("h" + std::to_string(h), 16, 65536);
    for (int i = 0; i < 4; ++i)
      b.AddVm("v" + std::to_string(h) + std::to_string(i), "h" + std::to_string(h), 2, 4096, 1.5);
  }
  Snapshot s = b.Build();
  s.settings.drs.threshold = 5;
  Plan p = PlanAndCheck(s);
  EXPECT_TRUE(p.moves.empty());
  EXPECT_NEAR(p.before.imbalance, 0, 1e-9);
}

TEST(MetricsTest, ImbalanceFormula) {
  // Two hosts: CPU loads 0.75 and 0.25 (std dev 0.25), memory 0.5 and 0.5 (0):
  // imbalance = sqrt((0.25^2 + 0) / 2) = 0.1767767.
  Builder b;
  b.AddHost("h1", 8, 8192);
  b.AddHost("h2", 8, 8192);
  b.AddVm("a", "h1", 6, 4096, 6);
  b.AddVm("b", "h2", 2, 4096, 2);
  PlanMetrics m = ComputeMetrics(b.Build());
  EXPECT_NEAR(m.cpu_imbalance, 0.25, 1e-12);
  EXPECT_NEAR(m.memory_imbalance, 0, 1e-12);
  EXPECT_NEAR(m.imbalance, std::sqrt(0.0625 / 2), 1e-12);
  EXPECT_EQ(m.hosts_on, 2);
  EXPECT_EQ(m.hosts_used, 2);
}

}  // namespace
}  // namespace uw::placement
