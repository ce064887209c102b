// The checker must reject every kind of unsafe plan; hand-written plans, not planner output.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "placement/placement.h"
#include "placement/test_util.h"

namespace uw::placement {
namespace {

using testing::Builder;
using ::testing::HasSubstr;

Snapshot Base() {
  Builder b;
  b.AddHost("h1", 8, 8192, HostState::kOn, {"rack-a"});
  b.AddHost("h2", 8, 8192, HostState::kOn, {"rack-a"});
  b.AddHost("h3", 8, 8192, HostState::kOn, {"rack-b"});
  b.AddHost("h4", 8, 8192, HostState::kStandby, {"rack-b"});
  b.AddVm("a", "h1", 2, 4096);
  b.AddVm("b", "h1", 2, 2048);
  b.AddVm("c", "h2", 2, 4096);
  b.AddVm("d", "h3", 2, 2048);
  b.AddVm("new", "", 1, 1024);
  return b.Build();
}

Move M(const std::string& vm, const std::string& from, const std::string& to) { return {vm, from, to, 3, "", 0}; }

void ExpectRejected(const Snapshot& s, const Plan& p, const std::string& text) {
  Status st = CheckPlan(s, p);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_THAT(st.message(), HasSubstr(text));
}

TEST(CheckerTest, AcceptsASafePlanAndAppliesIt) {
  Snapshot s = Base();
  Plan p;
  p.placements.push_back({"new", "h3", ""});
  p.moves = {M("b", "h1", "h3"), M("a", "h1", "h2")};  // h2 then holds 8192 of 8192
  ASSERT_TRUE(CheckPlan(s, p).ok()) << CheckPlan(s, p).ToString();
  auto after = ApplyPlan(s, p);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->vms[0].host, "h2");
  EXPECT_EQ(after->vms[4].host, "h3");
  EXPECT_EQ(after->vms[0].last_moved_ago_s, 0.0);
}

TEST(CheckerTest, RejectsMemoryOverCommitAtAnyStep) {
  Snapshot s = Base();
  Plan p;
  // Final state would fit (c leaves h2 afterwards) but the first step over-commits h2.
  p.moves = {M("a", "h1", "h2"), M("b", "h1", "h2"), M("c", "h2", "h3")};
  ExpectRejected(s, p, "moves[1] (b h1 -> h2): host h2 memory over-committed (10240 > 8192 MiB)");
  // The same moves in a safe order pass.
  p.moves = {M("c", "h2", "h3"), M("a", "h1", "h2"), M("b", "h1", "h2")};
  EXPECT_TRUE(CheckPlan(s, p).ok());
}

TEST(CheckerTest, RejectsAntiAffinityBreak) {
  Snapshot s = Base();
  Builder b;
  s.rules.push_back({"apart", RuleType::kVmAntiAffinity, {"a", "d"}, {}, {}, HostRuleMode::kMust, true});
  Plan p;
  p.moves = {M("d", "h3", "h1")};
  ExpectRejected(s, p, "breaks required rule 'apart'");
  s.rules[0].required = false;  // a soft rule may be broken
  EXPECT_TRUE(CheckPlan(s, p).ok());
}

TEST(CheckerTest, AffinityGroupMovesAsOneStep) {
  Snapshot s = Base();
  s.rules.push_back({"together", RuleType::kVmAffinity, {"a", "b"}, {}, {}, HostRuleMode::kMust, true});
  Plan p;
  p.moves = {M("a", "h1", "h3"), M("b", "h1", "h3")};
  EXPECT_TRUE(CheckPlan(s, p).ok()) << CheckPlan(s, p).ToString();
  // Split by another move in between: broken at that step.
  p.moves = {M("a", "h1", "h3"), M("c", "h2", "h1"), M("b", "h1", "h3")};
  ExpectRejected(s, p, "moves[0] (a h1 -> h3): breaks required rule 'together'");
  // Only half the group moves.
  p.moves = {M("a", "h1", "h3")};
  ExpectRejected(s, p, "breaks required rule 'together'");
}

TEST(CheckerTest, AlreadyBrokenRuleMayImproveButNotWorsen) {
  Snapshot s = Base();
  s.vms[2].host = "h1";  // c joins a on h1: 4096 + 2048 + 4096 = 10240 > 8192, fine for the checker
  s.rules.push_back({"apart", RuleType::kVmAntiAffinity, {"a", "b", "c"}, {}, {}, HostRuleMode::kMust, true});
  Plan p;
  p.moves = {M("c", "h1", "h2")};
  EXPECT_TRUE(CheckPlan(s, p).ok());
  p.moves = {M("d", "h3", "h2")};
  EXPECT_TRUE(CheckPlan(s, p).ok());  // d is not in the rule
  p.moves = {M("c", "h1", "h2"), M("b", "h1", "h2")};
  ExpectRejected(s, p, "moves[1] (b h1 -> h2): breaks required rule 'apart'");
}

TEST(CheckerTest, VmHostRulesByHostAndGroup) {
  Snapshot s = Base();
  Rule must{"licence", RuleType::kVmHost, {"d"}, {}, {"rack-b"}, HostRuleMode::kMust, true};
  s.rules.push_back(must);
  Plan p;
  p.moves = {M("d", "h3", "h2")};
  ExpectRejected(s, p, "breaks required rule 'licence'");
  s.rules[0] = {"not-here", RuleType::kVmHost, {"b"}, {"h2"}, {}, HostRuleMode::kMustNot, true};
  p.moves = {M("b", "h1", "h2")};
  ExpectRejected(s, p, "breaks required rule 'not-here'");
  s.rules[0].mode = HostRuleMode::kShouldNot;
  s.rules[0].required = false;
  EXPECT_TRUE(CheckPlan(s, p).ok());
}

TEST(CheckerTest, RejectsNonMigratableAndLxcGuests) {
  Snapshot s = Base();
  s.vms[1].kind = GuestKind::kLxc;
  Plan p;
  p.moves = {M("b", "h1", "h3")};
  ExpectRejected(s, p, "cannot live-migrate (lxc)");
  s.vms[1].kind = GuestKind::kKvm;
  s.vms[1].migratable = false;
  ExpectRejected(s, p, "cannot live-migrate (migratable: false)");
}

TEST(CheckerTest, RejectsWrongSourceAndPoweredOffDestination) {
  Snapshot s = Base();
  Plan p;
  p.moves = {M("b", "h2", "h3")};
  ExpectRejected(s, p, "guest is on h1, not h2");
  p.moves = {M("b", "h1", "h4")};
  ExpectRejected(s, p, "destination host is standby");
  // Powered on by the plan first: fine.
  p.power.push_back({"h4", PowerActionType::kPowerOn, ""});
  EXPECT_TRUE(CheckPlan(s, p).ok());
}

TEST(CheckerTest, PowerOffOnlyEmptyHostsAndNotBelowMinimum) {
  Snapshot s = Base();
  Plan p;
  p.power.push_back({"h3", PowerActionType::kPowerOff, ""});
  ExpectRejected(s, p, "still running guest d");
  p.moves = {M("d", "h3", "h2")};
  EXPECT_TRUE(CheckPlan(s, p).ok());
  s.settings.dpm.min_hosts_on = 3;
  ExpectRejected(s, p, "below min_hosts_on 3");
  p.power.push_back({"h3", PowerActionType::kPowerOn, ""});
  ExpectRejected(s, p, "second power action");
}

TEST(CheckerTest, PlacementsAreChecked) {
  Snapshot s = Base();
  Plan p;
  p.placements.push_back({"a", "h3", ""});
  ExpectRejected(s, p, "already running on h1");
  p.placements = {{"new", "h4", ""}};
  ExpectRejected(s, p, "host is standby");
  s.vms[4].memory_mib = 8000;
  p.placements = {{"new", "h1", ""}};
  ExpectRejected(s, p, "memory over-committed");
  // Restart of a guest whose host failed.
  s = Base();
  s.hosts[2].state = HostState::kFailed;
  p.placements = {{"d", "h2", ""}};
  EXPECT_TRUE(CheckPlan(s, p).ok()) << CheckPlan(s, p).ToString();
}

TEST(CheckerTest, UnknownNamesAreInvalidArguments) {
  Snapshot s = Base();
  Plan p;
  p.moves = {M("zz", "h1", "h2")};
  Status st = CheckPlan(s, p);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("moves[0].vm: unknown guest 'zz'"));
  p.moves = {M("a", "h1", "h9")};
  EXPECT_THAT(CheckPlan(s, p).message(), HasSubstr("moves[0].to: unknown host 'h9'"));
}

}  // namespace
}  // namespace uw::placement
