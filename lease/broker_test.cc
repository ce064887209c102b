#include "lease/broker.h"

#include <gtest/gtest.h>

namespace uw::lease {
namespace {

Lease Make(std::string id, LeaseClass c, Resources granted, Resources floor) {
  Lease l;
  l.id = std::move(id);
  l.guest = l.id;
  l.lease_class = c;
  l.granted = granted;
  l.floor = c == LeaseClass::kGuaranteed ? granted : floor;
  l.state = LeaseState::kActive;
  return l;
}

const Take* Of(const ReclaimPlan& p, const std::string& id) {
  for (const auto& t : p.takes) {
    if (t.lease_id == id) return &t;
  }
  return nullptr;
}

TEST(BrokerTest, StrictPriorityTakesPreemptibleLeasesWholeFirstAndNeverAGuaranteedOne) {
  std::vector<Lease> ls = {
      Make("g", LeaseClass::kGuaranteed, {2, 1024}, {}), Make("e1", LeaseClass::kElastic, {2, 1024}, {1, 512}),
      Make("e2", LeaseClass::kElastic, {2, 1024}, {1, 256}), Make("p", LeaseClass::kPreemptible, {1, 256}, {})};
  ReclaimPlan plan = PlanReclaim(ls, {0, 600}, BrokerPolicy::kStrictPriority);
  ASSERT_EQ(plan.takes.size(), 2u);
  EXPECT_EQ(plan.takes[0].lease_id, "p");
  EXPECT_EQ(plan.takes[0].action, NoticeAction::kStop);
  // Then the elastic lease most above its floor: e2 gives the remaining 344 MiB.
  EXPECT_EQ(plan.takes[1].lease_id, "e2");
  EXPECT_EQ(plan.takes[1].after, (Resources{2, 680}));
  EXPECT_EQ(plan.shortfall, (Resources{0, 0}));
  EXPECT_EQ(Of(plan, "g"), nullptr);
  // More than all of it: everything reclaimable, and the shortfall says what is missing.
  ReclaimPlan all = PlanReclaim(ls, {0, 4096}, BrokerPolicy::kStrictPriority);
  EXPECT_EQ(all.shortfall, (Resources{0, 4096 - 256 - 512 - 768}));
  EXPECT_EQ(Of(all, "e1")->after, (Resources{2, 512}));  // never below its floor
  EXPECT_EQ(Of(all, "g"), nullptr);
}

TEST(BrokerTest, ProportionalTakesTheSameFractionFromEach) {
  std::vector<Lease> ls = {Make("e1", LeaseClass::kElastic, {1, 1024}, {1, 512}),  // may give 512
                           Make("e2", LeaseClass::kElastic, {1, 2048}, {1, 512}),  // may give 1536
                           Make("g", LeaseClass::kGuaranteed, {1, 4096}, {})};
  ReclaimPlan plan = PlanReclaim(ls, {0, 1024}, BrokerPolicy::kProportional);
  ASSERT_EQ(plan.takes.size(), 2u);
  EXPECT_EQ(Of(plan, "e1")->after.memory_mib, 1024 - 256);  // a quarter of what may be given
  EXPECT_EQ(Of(plan, "e2")->after.memory_mib, 2048 - 768);
  EXPECT_EQ(plan.shortfall, (Resources{0, 0}));
}

TEST(BrokerTest, ProportionalWeighsClassAndShares) {
  Lease heavy = Make("e-heavy", LeaseClass::kElastic, {1, 1024}, {1, 0});  // may give 1024, 2048 shares
  heavy.shares = 2048;
  std::vector<Lease> ls = {heavy, Make("e", LeaseClass::kElastic, {1, 1024}, {1, 0}),  // 1024 shares
                           Make("p", LeaseClass::kPreemptible, {1, 1024}, {})};        // counts double
  // Weights 0.5 : 1 : 2 of 1024 MiB each: 700 MiB is taken 100 : 200 : 400.
  ReclaimPlan plan = PlanReclaim(ls, {0, 700}, BrokerPolicy::kProportional);
  ASSERT_EQ(plan.takes.size(), 3u);
  EXPECT_EQ(Of(plan, "e-heavy")->after.memory_mib, 1024 - 100);
  EXPECT_EQ(Of(plan, "e")->after.memory_mib, 1024 - 200);
  EXPECT_EQ(Of(plan, "p")->after.memory_mib, 1024 - 400);
  EXPECT_EQ(Of(plan, "p")->action, NoticeAction::kShrink);
  EXPECT_EQ(plan.shortfall, (Resources{0, 0}));
}

TEST(BrokerTest, OnlyActiveLeasesAndNamedPolicies) {
  Lease closed = Make("p", LeaseClass::kPreemptible, {1, 256}, {});
  closed.state = LeaseState::kClosed;
  ReclaimPlan plan = PlanReclaim({closed}, {0, 128}, BrokerPolicy::kProportional);
  EXPECT_TRUE(plan.takes.empty());
  EXPECT_EQ(plan.shortfall, (Resources{0, 128}));
  EXPECT_EQ(*ParseBrokerPolicy("proportional"), BrokerPolicy::kProportional);
  EXPECT_EQ(*ParseBrokerPolicy("market"), BrokerPolicy::kMarket);
  EXPECT_EQ(BrokerPolicyName(BrokerPolicy::kMarket), "market");
  EXPECT_EQ(ParseBrokerPolicy("auction").status().code(), StatusCode::kInvalidArgument);
}

TEST(BrokerTest, TheMarketTakesFromTheLowestBidFirstWithinBudgets) {
  auto bid = [](Lease l, int64_t b) {
    l.bid = b;
    return l;
  };
  std::vector<Lease> ls = {bid(Make("rich", LeaseClass::kElastic, {2, 2048}, {1, 512}), 30),
                           bid(Make("cheap", LeaseClass::kElastic, {2, 1024}, {1, 512}), 5),
                           bid(Make("spot", LeaseClass::kPreemptible, {1, 1024}, {}), 5),
                           bid(Make("g", LeaseClass::kGuaranteed, {1, 4096}, {}), 0)};
  // 5 credits: the preemptible one first (a tie), then the cheap elastic one, then the rich one.
  ReclaimPlan plan = PlanReclaim(ls, {0, 1792}, BrokerPolicy::kMarket);
  ASSERT_EQ(plan.takes.size(), 3u);
  EXPECT_EQ(plan.takes[0].lease_id, "spot");
  EXPECT_EQ(plan.takes[0].action, NoticeAction::kStop);  // it gave all it had
  EXPECT_EQ(plan.takes[1].lease_id, "cheap");
  EXPECT_EQ(plan.takes[1].after.memory_mib, 512);
  EXPECT_EQ(plan.takes[2].lease_id, "rich");
  EXPECT_EQ(plan.takes[2].after.memory_mib, 2048 - 256);  // only what was still needed
  EXPECT_EQ(Of(plan, "g"), nullptr);
  EXPECT_EQ(plan.shortfall, (Resources{0, 0}));
  // Bids cost bid x GiB per hour (rounded up), within the tenant's budget.
  EXPECT_EQ(BidCost(ls[0]), 60);
  EXPECT_EQ(BidCost(bid(Make("half", LeaseClass::kElastic, {1, 512}, {1, 256}), 7)), 7);
  EXPECT_TRUE(CheckBudget({ls[0], ls[1]}, 65).ok());
  Status over = CheckBudget({ls[0], ls[1]}, 64);
  EXPECT_EQ(over.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.message().find("65 credits per hour; the budget is 64"), std::string::npos) << over.message();
  EXPECT_EQ(CheckBudget({bid(ls[1], -1)}, 100).code(), StatusCode::kInvalidArgument);
}

TEST(BrokerTest, ACounterIsAcceptedOnlyWhenLeasesRankedBelowItCoverWhatItKeeps) {
  Lease e = Make("e", LeaseClass::kElastic, {2, 1024}, {1, 256});
  const std::vector<Lease> others = {Make("p", LeaseClass::kPreemptible, {1, 512}, {}),
                                     Make("e2", LeaseClass::kElastic, {1, 1024}, {1, 256}),
                                     Make("g", LeaseClass::kGuaranteed, {1, 4096}, {})};
  // A later time only takes from nobody.
  CounterVerdict later = JudgeCounter(e, {0, 0}, others, BrokerPolicy::kStrictPriority);
  EXPECT_TRUE(later.accept);
  EXPECT_TRUE(later.cover.empty());
  // Strict priority: the preemptible lease is stopped whole to cover 256 MiB; e2 (elastic, like e)
  // never covers, so 768 MiB is more than the leases below e can give.
  CounterVerdict strict = JudgeCounter(e, {0, 256}, others, BrokerPolicy::kStrictPriority);
  ASSERT_TRUE(strict.accept) << strict.why;
  ASSERT_EQ(strict.cover.size(), 1u);
  EXPECT_EQ(strict.cover[0].lease_id, "p");
  EXPECT_EQ(strict.cover[0].action, NoticeAction::kStop);
  CounterVerdict too_much = JudgeCounter(e, {0, 768}, others, BrokerPolicy::kStrictPriority);
  EXPECT_FALSE(too_much.accept);
  EXPECT_TRUE(too_much.cover.empty());
  EXPECT_EQ(too_much.why,
            "the leases ranked below it under strict-priority can give 0 vCPU(s) and 512 MiB of the "
            "0 vCPU(s) and 768 MiB it would keep");
  // A preemptible lease has nobody below it.
  EXPECT_FALSE(JudgeCounter(others[0], {0, 16}, {e}, BrokerPolicy::kStrictPriority).accept);
  // Proportional: every other lease may give; the guaranteed one never does, and the countering
  // lease is never its own cover.
  std::vector<Lease> with_self = others;
  with_self.push_back(e);
  CounterVerdict spread = JudgeCounter(e, {0, 768}, with_self, BrokerPolicy::kProportional);
  ASSERT_TRUE(spread.accept) << spread.why;
  EXPECT_EQ(spread.cover.size(), 2u);
  for (const Take& t : spread.cover) {
    EXPECT_NE(t.lease_id, "g");
    EXPECT_NE(t.lease_id, "e");
  }
}

TEST(BrokerTest, TheMarketAcceptsACounterWhenLowerBidsCoverIt) {
  Lease rich = Make("rich", LeaseClass::kElastic, {1, 1024}, {1, 256});
  rich.bid = 10;
  Lease cheap = Make("cheap", LeaseClass::kElastic, {1, 1024}, {1, 512});
  cheap.bid = 2;
  Lease same = Make("same", LeaseClass::kElastic, {1, 1024}, {1, 0});
  same.bid = 10;
  // cheap bids less and may give 512 MiB: rich keeps 300 MiB more at cheap's expense.
  CounterVerdict v = JudgeCounter(rich, {0, 300}, {cheap, same}, BrokerPolicy::kMarket);
  ASSERT_TRUE(v.accept) << v.why;
  ASSERT_EQ(v.cover.size(), 1u);
  EXPECT_EQ(v.cover[0].lease_id, "cheap");
  EXPECT_EQ(v.cover[0].after, (Resources{1, 724}));
  // An equal bid is not below it; and cheap cannot counter at rich's expense.
  EXPECT_FALSE(JudgeCounter(rich, {0, 600}, {cheap, same}, BrokerPolicy::kMarket).accept);
  CounterVerdict low = JudgeCounter(cheap, {0, 100}, {rich, same}, BrokerPolicy::kMarket);
  EXPECT_FALSE(low.accept);
  EXPECT_NE(low.why.find("under market"), std::string::npos) << low.why;
}

}  // namespace
}  // namespace uw::lease
