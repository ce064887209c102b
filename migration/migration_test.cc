#include "migration/migration.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "placement/test_util.h"

namespace uw::migration {
namespace {

using placement::HostRuleMode;
using placement::HostState;
using placement::Move;
using placement::RuleType;
using placement::Snapshot;
using placement::testing::Builder;

Move M(const std::string& vm, const std::string& from, const std::string& to, int priority = 3) {
  Move m;
  m.vm = vm;
  m.from = from;
  m.to = to;
  m.priority = priority;
  return m;
}

// The serial order passes the checker, and so does every prefix ordering NextRunnable allows
// (simulated with a random completion order and memory counted on both hosts in flight).
void ExpectSafe(const Snapshot& s, const Schedule& sched, const Caps& caps, uint32_t seed) {
  placement::Plan serial;
  for (const Step& st : sched.steps) serial.moves.push_back(st.move);
  ASSERT_TRUE(placement::CheckPlan(s, serial).ok()) << placement::CheckPlan(s, serial).message();

  std::map<std::string, int64_t> used, cap;
  for (const auto& h : s.hosts) cap[h.name] = h.memory_mib;
  std::map<std::string, int64_t> mem;
  for (const auto& v : s.vms) {
    mem[v.name] = v.memory_mib;
    if (!v.host.empty()) used[v.host] += v.memory_mib;
  }
  std::vector<StepState> states(sched.steps.size(), StepState::kPending);
  std::mt19937 rng(seed);
  std::vector<int> running;
  size_t done = 0;
  while (done < sched.steps.size()) {
    for (int i : NextRunnable(sched, states, caps)) {
      states[i] = StepState::kRunning;
      running.push_back(i);
      const Move& m = sched.steps[i].move;
      used[m.to] += mem[m.vm];
      ASSERT_LE(used[m.to], cap[m.to]) << "starting " << m.vm << " -> " << m.to << " over-commits it";
    }
    ASSERT_FALSE(running.empty()) << "schedule stuck with " << sched.steps.size() - done << " steps left";
    std::map<std::string, int64_t> per_host;
    for (int i : running) {
      ++per_host[sched.steps[i].move.from];
      ++per_host[sched.steps[i].move.to];
    }
    for (auto& [h, n] : per_host) ASSERT_LE(n, caps.per_host) << h;
    ASSERT_LE(static_cast<int64_t>(running.size()), caps.cluster);
    size_t k = rng() % running.size();
    int i = running[k];
    running.erase(running.begin() + static_cast<long>(k));
    states[i] = StepState::kDone;
    used[sched.steps[i].move.from] -= mem[sched.steps[i].move.vm];
    ++done;
  }
}

TEST(OrderMovesTest, MoveThatFreesRoomRunsFirst) {
  // b is full; vm_a (a -> b) needs vm_b (b -> c) gone first, even though the plan lists it second.
  Builder bld;
  bld.AddHost("a", 8, 4096).AddHost("b", 8, 4096).AddHost("c", 8, 8192);
  bld.AddVm("vm_a", "a", 1, 2048).AddVm("vm_b", "b", 1, 4096);
  Snapshot s = bld.Build();
  std::vector<Move> moves = {M("vm_a", "a", "b"), M("vm_b", "b", "c")};
  auto sched = OrderMoves(s, moves);
  ASSERT_TRUE(sched.ok()) << sched.status().message();
  ASSERT_EQ(sched->steps.size(), 2u);
  EXPECT_EQ(sched->steps[0].move.vm, "vm_b");
  EXPECT_EQ(sched->steps[1].move.vm, "vm_a");
  EXPECT_EQ(sched->steps[1].depends_on, std::vector<int>{0});
  EXPECT_EQ(sched->steps[1].wave, 1);
  EXPECT_TRUE(sched->unschedulable.empty());
  ExpectSafe(s, *sched, {}, 1);
}

TEST(OrderMovesTest, MemoryCountsOnBothHostsInFlight) {
  // A swap through a host with room for only one extra guest at a time: b can take vm1 only
  // once vm2 has left, and vm2 can only go to a once vm1 has left... a cycle with no room
  // anywhere is unschedulable, not over-committed.
  Builder bld;
  bld.AddHost("a", 8, 4096).AddHost("b", 8, 4096);
  bld.AddVm("vm1", "a", 1, 4096).AddVm("vm2", "b", 1, 4096);
  Snapshot s = bld.Build();
  auto sched = OrderMoves(s, {M("vm1", "a", "b"), M("vm2", "b", "a")});
  ASSERT_TRUE(sched.ok());
  EXPECT_TRUE(sched->steps.empty());
  ASSERT_EQ(sched->unschedulable.size(), 2u);
  EXPECT_NE(sched->unschedulable[0].reason.find("never has room"), std::string::npos) << sched->unschedulable[0].reason;
}

TEST(OrderMovesTest, ConcurrentMovesIntoOneHostShareItsRoom) {
  // c has room for two of the three guests at once; the third waits for nothing to leave c, so
  // it can never run (no move leaves c).
  Builder bld;
  bld.AddHost("a", 8, 8192).AddHost("c", 8, 5000);
  bld.AddVm("v1", "a", 1, 2048).AddVm("v2", "a", 1, 2048).AddVm("v3", "a", 1, 2048);
  Snapshot s = bld.Build();
  auto sched = OrderMoves(s, {M("v1", "a", "c"), M("v2", "a", "c"), M("v3", "a", "c")});
  ASSERT_TRUE(sched.ok());
  EXPECT_EQ(sched->steps.size(), 2u);
  ASSERT_EQ(sched->unschedulable.size(), 1u);
  EXPECT_EQ(sched->unschedulable[0].subject, "v3");
}

TEST(OrderMovesTest, PerHostCapMakesWaves) {
  Builder bld;
  bld.AddHost("a", 64, 65536).AddHost("b", 64, 65536);
  for (int i = 0; i < 6; ++i) bld.AddVm("v" + std::to_string(i), "a", 1, 1024);
  Snapshot s = bld.Build();
  std::vector<Move> moves;
  for (int i = 0; i < 6; ++i) moves.push_back(M("v" + std::to_string(i), "a", "b"));
  Caps caps{2, 16};
  auto sched = OrderMoves(s, moves, caps);
  ASSERT_TRUE(sched.ok());
  EXPECT_EQ(sched->waves, 3);
  std::vector<StepState> states(6, StepState::kPending);
  EXPECT_EQ(NextRunnable(*sched, states, caps).size(), 2u);
  states[0] = StepState::kRunning;
  EXPECT_EQ(NextRunnable(*sched, states, caps), std::vector<int>{1});
  ExpectSafe(s, *sched, caps, 2);
}

TEST(OrderMovesTest, ClusterCapLimitsRunning) {
  Builder bld;
  for (int h = 0; h < 8; ++h) bld.AddHost("h" + std::to_string(h), 64, 65536);
  for (int i = 0; i < 4; ++i) bld.AddVm("v" + std::to_string(i), "h" + std::to_string(i), 1, 1024);
  Snapshot s = bld.Build();
  std::vector<Move> moves;
  for (int i = 0; i < 4; ++i)
    moves.push_back(M("v" + std::to_string(i), "h" + std::to_string(i), "h" + std::to_string(i + 4)));
  Caps caps{4, 3};
  auto sched = OrderMoves(s, moves, caps);
  ASSERT_TRUE(sched.ok());
  EXPECT_EQ(sched->waves, 2);
  std::vector<StepState> states(4, StepState::kPending);
  EXPECT_EQ(NextRunnable(*sched, states, caps).size(), 3u);
}

TEST(OrderMovesTest, MandatoryMovesFirst) {
  Builder bld;
  bld.AddHost("a", 64, 65536).AddHost("b", 64, 65536);
  bld.AddVm("low", "a", 1, 1024).AddVm("urgent", "a", 1, 1024);
  Snapshot s = bld.Build();
  auto sched = OrderMoves(s, {M("low", "a", "b", 4), M("urgent", "a", "b", 1)}, Caps{2, 1});
  ASSERT_TRUE(sched.ok());
  ASSERT_EQ(sched->steps.size(), 2u);
  EXPECT_EQ(sched->steps[0].move.vm, "urgent");
  EXPECT_EQ(sched->steps[0].plan_index, 1);
}

TEST(OrderMovesTest, AntiAffinityWaitsForTheOtherToLeave) {
  // web1 may go to b only after web2 left b.
  Builder bld;
  bld.AddHost("a", 8, 8192).AddHost("b", 8, 8192).AddHost("c", 8, 8192);
  bld.AddVm("web1", "a", 1, 1024).AddVm("web2", "b", 1, 1024);
  bld.AddRule("apart", RuleType::kVmAntiAffinity, {"web1", "web2"});
  Snapshot s = bld.Build();
  auto sched = OrderMoves(s, {M("web1", "a", "b"), M("web2", "b", "c")});
  ASSERT_TRUE(sched.ok()) << sched.status().message();
  ASSERT_EQ(sched->steps.size(), 2u);
  EXPECT_EQ(sched->steps[0].move.vm, "web2");
  EXPECT_EQ(sched->steps[1].depends_on, std::vector<int>{0});
  ExpectSafe(s, *sched, {}, 3);
}

TEST(OrderMovesTest, AntiAffinityNeverBrokenIsUnschedulable) {
  Builder bld;
  bld.AddHost("a", 8, 8192).AddHost("b", 8, 8192);
  bld.AddVm("web1", "a", 1, 1024).AddVm("web2", "b", 1, 1024);
  bld.AddRule("apart", RuleType::kVmAntiAffinity, {"web1", "web2"});
  auto sched = OrderMoves(bld.Build(), {M("web1", "a", "b")});
  ASSERT_TRUE(sched.ok());
  ASSERT_EQ(sched->unschedulable.size(), 1u);
  EXPECT_NE(sched->unschedulable[0].reason.find("required rule apart"), std::string::npos);
}

TEST(OrderMovesTest, VmHostMustRuleKept) {
  Builder bld;
  bld.AddHost("a", 8, 8192, HostState::kOn, {"rack1"}).AddHost("b", 8, 8192, HostState::kOn, {"rack2"});
  bld.AddVm("db", "a", 1, 1024);
  bld.AddRule("db-on-a", RuleType::kVmHost, {"db"}, true, HostRuleMode::kMust, {"a"});
  auto sched = OrderMoves(bld.Build(), {M("db", "a", "b")});
  ASSERT_TRUE(sched.ok());
  ASSERT_EQ(sched->unschedulable.size(), 1u);
}

TEST(OrderMovesTest, AffinityGroupMovesTogether) {
  Builder bld;
  bld.AddHost("a", 8, 8192).AddHost("b", 8, 8192);
  bld.AddVm("app", "a", 1, 1024).AddVm("other", "a", 1, 1024).AddVm("cache", "a", 1, 1024);
  bld.AddRule("together", RuleType::kVmAffinity, {"app", "cache"});
  Snapshot s = bld.Build();
  auto sched = OrderMoves(s, {M("app", "a", "b"), M("other", "a", "b"), M("cache", "a", "b")}, Caps{4, 16});
  ASSERT_TRUE(sched.ok()) << sched.status().message();
  ASSERT_EQ(sched->steps.size(), 3u);
  // app and cache are consecutive and in one wave.
  int app = -1, cache = -1;
  for (size_t i = 0; i < 3; ++i) {
    if (sched->steps[i].move.vm == "app") app = static_cast<int>(i);
    if (sched->steps[i].move.vm == "cache") cache = static_cast<int>(i);
  }
  EXPECT_EQ(std::abs(app - cache), 1);
  EXPECT_EQ(sched->steps[app].wave, sched->steps[cache].wave);
  ExpectSafe(s, *sched, Caps{4, 16}, 4);
}

TEST(OrderMovesTest, StaticProblemsNamed) {
  Builder bld;
  bld.AddHost("a", 8, 8192).AddHost("b", 8, 8192).AddHost("m", 8, 8192, HostState::kMaintenance);
  bld.AddHost("gone", 8, 8192, HostState::kFailed);
  bld.AddVm("v", "a", 1, 1024).AddVm("ct", "a", 1, 1024);
  bld.LastVm().kind = placement::GuestKind::kLxc;
  Snapshot s = bld.Build();
  Move cold = M("ct", "a", "b");
  cold.cold = true;
  auto sched = OrderMoves(s, {M("ghost", "a", "b"), M("v", "a", "m"), M("v", "b", "a"), M("ct", "a", "b"),
                              M("v", "a", "a"), cold, M("v", "gone", "b")});
  ASSERT_TRUE(sched.ok());
  ASSERT_EQ(sched->steps.size(), 1u);
  EXPECT_TRUE(sched->steps[0].move.cold);
  std::vector<std::string> reasons;
  for (auto& u : sched->unschedulable) reasons.push_back(u.reason);
  ASSERT_EQ(reasons.size(), 6u);
  auto has = [&](const std::string& text) {
    return std::any_of(reasons.begin(), reasons.end(),
                       [&](const std::string& r) { return r.find(text) != std::string::npos; });
  };
  EXPECT_TRUE(has("ghost a -> b: unknown guest"));
  EXPECT_TRUE(has("destination m is maintenance"));
  EXPECT_TRUE(has("v b -> a: guest v is on a, not b"));
  EXPECT_TRUE(has("cannot live-migrate (lxc) and the move is not cold"));
  EXPECT_TRUE(has("same host"));
  EXPECT_TRUE(has("v gone -> b: source gone is failed"));
  EXPECT_FALSE(OrderMoves(s, {}, Caps{0, 1}).ok());
}

TEST(OrderMovesTest, DrsPlansOnRandomClustersAreSafeUnderAnyCompletionOrder) {
  for (uint32_t seed = 1; seed <= 8; ++seed) {
    Snapshot s = placement::testing::RandomCluster(16, 300, seed, 0.7);
    s.settings.drs.threshold = 5;
    auto plan = placement::MakePlan(s, "drs");
    ASSERT_TRUE(plan.ok());
    Caps caps{2, 6};
    auto sched = OrderMoves(s, plan->moves, caps);
    ASSERT_TRUE(sched.ok()) << sched.status().message();
    EXPECT_EQ(sched->steps.size() + sched->unschedulable.size(), plan->moves.size());
    // The planner's own order is safe serially, so everything is schedulable.
    EXPECT_TRUE(sched->unschedulable.empty()) << sched->unschedulable[0].reason;
    ExpectSafe(s, *sched, caps, seed);
  }
}

TEST(OrderMovesTest, MaintenanceEvacuationOfAFullClusterIsSafe) {
  // Hosts nearly full: evacuating one needs the planner's moves and nothing more.
  Builder bld;
  for (int h = 0; h < 4; ++h) bld.AddHost("h" + std::to_string(h), 16, 16384);
  for (int i = 0; i < 24; ++i) bld.AddVm("v" + std::to_string(i), "h" + std::to_string(i % 4), 1, 2048);
  Snapshot s = bld.Build();
  s.hosts[0].state = HostState::kMaintenance;
  auto plan = placement::MakePlan(s, "drs");
  ASSERT_TRUE(plan.ok());
  auto sched = OrderMoves(s, plan->moves, Caps{2, 4});
  ASSERT_TRUE(sched.ok());
  EXPECT_EQ(sched->steps.size(), 6u);
  ExpectSafe(s, *sched, Caps{2, 4}, 9);
}

TEST(BlockedByFailureTest, DependentsOfAFailedMoveAreSkipped) {
  Builder bld;
  bld.AddHost("a", 8, 4096).AddHost("b", 8, 4096).AddHost("c", 8, 8192);
  bld.AddVm("vm_a", "a", 1, 2048).AddVm("vm_b", "b", 1, 4096);
  auto sched = OrderMoves(bld.Build(), {M("vm_a", "a", "b"), M("vm_b", "b", "c")});
  ASSERT_TRUE(sched.ok());
  std::vector<StepState> states = {StepState::kFailed, StepState::kPending};
  auto blocked = BlockedByFailure(*sched, states);
  ASSERT_EQ(blocked.size(), 1u);
  EXPECT_EQ(blocked[0].first, 1);
  EXPECT_NE(blocked[0].second.find("vm_b b -> c"), std::string::npos);
  EXPECT_TRUE(NextRunnable(*sched, states, {}).empty());
}

TEST(CapsTest, ParseAndErrors) {
  auto c = ParseCaps(Json{{"per_host", 2}});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->per_host, 2);
  EXPECT_EQ(c->cluster, 16);
  EXPECT_EQ(ParseCaps(Json{{"per_host", 0}}).status().message(), "migration.per_host: expected a positive integer");
  EXPECT_EQ(ParseCaps(Json{{"clustr", 1}}).status().message(), "migration.clustr: unknown field");
  EXPECT_EQ(*ParseCaps(CapsToJson(Caps{3, 5})), (Caps{3, 5}));
}

// ---------------------------------------------------------------------------------------------

Record NewRecord() {
  Record r;
  r.id = "m1";
  r.guest = "vm1";
  r.source = "h1";
  r.destination = "h2";
  return r;
}

TEST(RecordTest, HappyPathAndHistory) {
  Record r = NewRecord();
  for (Phase p :
       {Phase::kPrepare, Phase::kTransfer, Phase::kSwitchOver, Phase::kConfirm, Phase::kVerify, Phase::kDone}) {
    ASSERT_TRUE(Advance(r, p).ok()) << PhaseName(p);
  }
  EXPECT_EQ(r.history.size(), 6u);
  EXPECT_TRUE(IsTerminal(r.phase));
  Status st = Advance(r, Phase::kTransfer);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), "migration m1 of vm1: cannot go from done to transfer");
  EXPECT_EQ(r.phase, Phase::kDone);
}

TEST(RecordTest, RollBackOnlyBeforeTheDestinationRuns) {
  Record r = NewRecord();
  ASSERT_TRUE(Advance(r, Phase::kPrepare).ok());
  ASSERT_TRUE(Advance(r, Phase::kTransfer).ok());
  ASSERT_TRUE(Advance(r, Phase::kTransfer, "restart with auto-converge").ok());
  ASSERT_TRUE(Advance(r, Phase::kRollingBack, "cancelled").ok());
  EXPECT_FALSE(Advance(r, Phase::kDone).ok());
  ASSERT_TRUE(Advance(r, Phase::kRolledBack).ok());

  Record c = NewRecord();
  for (Phase p : {Phase::kPrepare, Phase::kTransfer, Phase::kSwitchOver, Phase::kConfirm})
    ASSERT_TRUE(Advance(c, p).ok());
  EXPECT_FALSE(Advance(c, Phase::kRollingBack).ok());
  EXPECT_FALSE(Advance(c, Phase::kDone).ok()) << "done only after verification";
  EXPECT_TRUE(Advance(c, Phase::kFailed, "lost").ok());
}

TEST(RecordTest, DeathOnTheDestinationEndsFailedAfterSwitchover) {
  Record r = NewRecord();
  for (Phase p : {Phase::kPrepare, Phase::kTransfer, Phase::kSwitchOver, Phase::kConfirm, Phase::kVerify}) {
    ASSERT_TRUE(Advance(r, p).ok()) << PhaseName(p);
  }
  EXPECT_FALSE(Advance(r, Phase::kRollingBack).ok());
  r.console_tail = "Kernel panic - not syncing";
  ASSERT_TRUE(Advance(r, Phase::kFailedAfterSwitchover, "crashed").ok());
  EXPECT_TRUE(IsTerminal(r.phase));
  EXPECT_TRUE(PastSwitchOver(r.phase));
  auto back = ParseRecord(RecordToJson(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, r);
  EXPECT_EQ(RecordToJson(r)["phase"], "failed_after_switchover");
}

TEST(VerifyTest, TheWindowMustPassWithTheGuestRunningAndAnswering) {
  VerifyPolicy p;  // 10 s window, 90 s timeout
  std::string why;
  VerifyObservation o{.since_switchover_s = 1, .reachable = true, .state = "running", .has_channel = true};
  EXPECT_EQ(VerifyCheck(o, p, &why), Verdict::kWait);
  o.answered = true;
  EXPECT_EQ(VerifyCheck(o, p, &why), Verdict::kWait) << "answered, but the window is not over";
  o.since_switchover_s = 10;
  EXPECT_EQ(VerifyCheck(o, p, &why), Verdict::kVerified);
  // Without a channel running through the window is enough.
  VerifyObservation quiet{.since_switchover_s = 12, .reachable = true, .state = "running", .has_channel = false};
  EXPECT_EQ(VerifyCheck(quiet, p, &why), Verdict::kVerified);
  // A channel that never answers fails at the timeout, not before.
  VerifyObservation mute{.since_switchover_s = 60, .reachable = true, .state = "running", .has_channel = true};
  EXPECT_EQ(VerifyCheck(mute, p, &why), Verdict::kWait);
  mute.since_switchover_s = 90;
  EXPECT_EQ(VerifyCheck(mute, p, &why), Verdict::kDied);
  EXPECT_EQ(why, "the guest has not answered its control channel in the 90 s since the switch-over");
}

TEST(VerifyTest, ACrashedOrVanishedGuestFailsAtOnce) {
  VerifyPolicy p;
  std::string why;
  VerifyObservation o{
      .since_switchover_s = 3, .reachable = true, .state = "crashed", .has_channel = true, .answered = true};
  EXPECT_EQ(VerifyCheck(o, p, &why), Verdict::kDied);
  EXPECT_EQ(why, "the guest is crashed on the destination 3 s after the switch-over");
  o.state = "";
  EXPECT_EQ(VerifyCheck(o, p, &why), Verdict::kDied);
  EXPECT_EQ(why, "the guest vanished from the destination 3 s after the switch-over");
  o.state = "shutoff";
  EXPECT_EQ(VerifyCheck(o, p, &why), Verdict::kDied);
  // An unreachable agent is waited for until the timeout.
  VerifyObservation gone{.since_switchover_s = 30, .reachable = false, .state = ""};
  EXPECT_EQ(VerifyCheck(gone, p, &why), Verdict::kWait);
  gone.since_switchover_s = 61;
  EXPECT_EQ(VerifyCheck(gone, p, &why), Verdict::kUnreachable);
}

TEST(RecordTest, JsonRoundTripAndErrors) {
  Record r = NewRecord();
  r.mode = Mode::kCold;
  r.copy_storage = true;
  r.bandwidth_mib_s = 64;
  r.stats.downtime_ms = 42;
  r.stats.memory_remaining_bytes = 1 << 20;
  ASSERT_TRUE(Advance(r, Phase::kPrepare, "volumes made").ok());
  auto back = ParseRecord(RecordToJson(r));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, r);
  Json bad = RecordToJson(r);
  bad["phase"] = "flying";
  EXPECT_EQ(ParseRecord(bad).status().message(), "migration.phase: unknown migration phase 'flying'");
  bad = RecordToJson(r);
  bad.erase("guest");
  EXPECT_EQ(ParseRecord(bad).status().code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------

ConvergenceInput In(double t, int64_t remaining_mib, int64_t iteration, double bw = 128, int64_t dirty_pages = 0) {
  ConvergenceInput in;
  in.elapsed_s = t;
  in.memory_mib = 512;
  in.stats.memory_remaining_bytes = remaining_mib << 20;
  in.stats.iteration = iteration;
  in.stats.dirty_rate_pages_s = dirty_pages;
  in.bandwidth_mib_s = bw;
  return in;
}

TEST(ConvergenceTest, ConvergingMigrationContinues) {
  ConvergencePolicy p;
  ConvergenceState st;
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(Decide(st, In(i, 500 - 40 * i, 1 + i / 3), p).action, Action::kContinue);
  }
}

TEST(ConvergenceTest, StallEscalatesBandwidthThenAutoConvergeThenAbort) {
  ConvergencePolicy p;
  p.stall_checks = 2;
  ConvergenceState st;
  EXPECT_EQ(Decide(st, In(0, 300, 1), p).action, Action::kContinue);
  EXPECT_EQ(Decide(st, In(1, 200, 2), p).action, Action::kContinue);  // new low
  EXPECT_EQ(Decide(st, In(2, 210, 3), p).action, Action::kContinue);  // stalled 1
  Decision d = Decide(st, In(3, 220, 4), p);                          // stalled 2
  EXPECT_EQ(d.action, Action::kRaiseBandwidth);
  EXPECT_EQ(d.bandwidth_mib_s, 1024);
  EXPECT_NE(d.reason.find("no progress for 2 checks"), std::string::npos) << d.reason;
  EXPECT_EQ(Decide(st, In(4, 230, 5, 1024), p).action, Action::kContinue);  // fresh stage, new low
  EXPECT_EQ(Decide(st, In(5, 240, 6, 1024), p).action, Action::kContinue);
  EXPECT_EQ(Decide(st, In(6, 250, 7, 1024), p).action, Action::kRestartWithAutoConverge);
  EXPECT_EQ(Decide(st, In(7, 260, 1, 1024), p).action, Action::kContinue);
  EXPECT_EQ(Decide(st, In(8, 260, 2, 1024), p).action, Action::kContinue);
  Decision last = Decide(st, In(9, 260, 3, 1024), p);
  EXPECT_EQ(last.action, Action::kAbort);
  EXPECT_NE(last.reason.find("does not converge"), std::string::npos);
}

TEST(ConvergenceTest, PostCopyOnlyWhenAllowedAndArmed) {
  ConvergencePolicy p;
  p.allow_auto_converge = false;
  p.allow_postcopy = true;
  ConvergenceState st;
  st.bandwidth_raised = true;
  ConvergenceInput in = In(0, 300, 3, 1024, 1 << 20);  // 4 GiB/s of dirtying
  in.postcopy_armed = false;
  EXPECT_EQ(Decide(st, in, p).action, Action::kAbort);
  ConvergenceState st2;
  st2.bandwidth_raised = true;
  in.postcopy_armed = true;
  Decision d = Decide(st2, in, p);
  EXPECT_EQ(d.action, Action::kStartPostCopy);
  EXPECT_NE(d.reason.find("dirtying 4096 MiB/s"), std::string::npos) << d.reason;
  // Once in post-copy nothing more to do.
  EXPECT_EQ(Decide(st2, in, p).action, Action::kContinue);
}

TEST(ConvergenceTest, DeadlineGrowsWithMemory) {
  ConvergencePolicy p;
  p.base_timeout_s = 10;
  p.timeout_s_per_gib = 20;
  EXPECT_DOUBLE_EQ(DeadlineSeconds(p, 512), 20);
  EXPECT_DOUBLE_EQ(DeadlineSeconds(p, 2048), 50);
  ConvergenceState st;
  p.allow_auto_converge = false;
  // Steady progress but too slow: the deadline (20 s for 512 MiB) escalates.
  EXPECT_EQ(Decide(st, In(0, 500, 1), p).action, Action::kContinue);
  EXPECT_EQ(Decide(st, In(19, 400, 1), p).action, Action::kContinue);
  Decision d = Decide(st, In(20.5, 390, 1), p);
  EXPECT_EQ(d.action, Action::kRaiseBandwidth);
  EXPECT_NE(d.reason.find("deadline of 20 s"), std::string::npos) << d.reason;
  EXPECT_EQ(Decide(st, In(41, 300, 1, 1024), p).action, Action::kAbort);
}

TEST(ConvergenceTest, PolicyParsing) {
  auto p = ParseConvergencePolicy(Json{{"bandwidth_mib_s", 32}, {"allow_postcopy", true}});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->bandwidth_mib_s, 32);
  EXPECT_TRUE(p->allow_postcopy);
  EXPECT_EQ(*ParseConvergencePolicy(ConvergencePolicyToJson(*p)), *p);
  EXPECT_EQ(ParseConvergencePolicy(Json{{"bandwidth_mib_s", 2048}, {"max_bandwidth_mib_s", 100}}).status().message(),
            "convergence.max_bandwidth_mib_s: must be at least bandwidth_mib_s");
  EXPECT_EQ(ParseConvergencePolicy(Json{{"downtime_limit_ms", -1}}).status().message(),
            "convergence.downtime_limit_ms: expected a positive integer");
}

// ---------------------------------------------------------------------------------------------

TEST(ReconcileTest, EveryCrashPointEndsWithTheGuestOnOneHost) {
  using P = Presence;
  auto R = [](Phase ph, P s, P d, bool job = false) { return Reconcile(ph, Observation{s, d, job}); };
  // libvirt is still migrating: keep watching.
  EXPECT_EQ(R(Phase::kTransfer, P::kRunning, P::kPaused, true), Recovery::kWait);
  // Migration failed (or never began): source runs, leftover incoming copy goes.
  EXPECT_EQ(R(Phase::kTransfer, P::kRunning, P::kPaused), Recovery::kRollBack);
  EXPECT_EQ(R(Phase::kPrepare, P::kRunning, P::kAbsent), Recovery::kFinishOnSource);
  // Destination agent dead: the source runs, nothing to wait for.
  EXPECT_EQ(R(Phase::kTransfer, P::kRunning, P::kUnknown), Recovery::kFinishOnSource);
  // Completed while the manager was down: libvirt undefined the source.
  EXPECT_EQ(R(Phase::kTransfer, P::kAbsent, P::kRunning), Recovery::kFinishOnDestination);
  EXPECT_EQ(R(Phase::kTransfer, P::kUnknown, P::kRunning), Recovery::kFinishOnDestination);
  // Paused at switch-over: destination runs -> confirm; destination has nothing -> resume source.
  EXPECT_EQ(R(Phase::kSwitchOver, P::kPaused, P::kRunning), Recovery::kConfirm);
  EXPECT_EQ(R(Phase::kSwitchOver, P::kPaused, P::kAbsent), Recovery::kRollBack);
  EXPECT_EQ(R(Phase::kSwitchOver, P::kPaused, P::kUnknown), Recovery::kWait);
  // Past switch-over the destination owns it.
  EXPECT_EQ(R(Phase::kConfirm, P::kPaused, P::kRunning), Recovery::kConfirm);
  EXPECT_EQ(R(Phase::kConfirm, P::kAbsent, P::kRunning), Recovery::kFinishOnDestination);
  EXPECT_EQ(R(Phase::kConfirm, P::kRunning, P::kAbsent), Recovery::kRollBack);
  EXPECT_EQ(R(Phase::kVerify, P::kAbsent, P::kRunning), Recovery::kFinishOnDestination);
  // Gone from both: say so.
  EXPECT_EQ(R(Phase::kTransfer, P::kAbsent, P::kAbsent), Recovery::kLost);
  EXPECT_EQ(R(Phase::kConfirm, P::kAbsent, P::kAbsent), Recovery::kLost);
  // Nobody answers: wait.
  EXPECT_EQ(R(Phase::kTransfer, P::kUnknown, P::kUnknown), Recovery::kWait);
}

}  // namespace
}  // namespace uw::migration
