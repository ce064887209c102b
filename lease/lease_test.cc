#include "lease/lease.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>

namespace uw::lease {
namespace {

Lease MakeLease(LeaseClass c, Resources granted, Resources floor) {
  Lease l;
  l.id = "lease-1";
  l.guest = "acme:web1";
  l.tenant = "acme";
  l.lease_class = c;
  l.granted = granted;
  l.floor = floor;
  l.start_ms = 1000;
  EXPECT_TRUE(Advance(l, LeaseState::kActive, 1000, "granted").ok());
  return l;
}

TEST(LeaseTest, EveryTransitionOfTheStateMachine) {
  const std::vector<LeaseState> all = {LeaseState::kNascent, LeaseState::kActive, LeaseState::kExtending,
                                       LeaseState::kClosing, LeaseState::kClosed, LeaseState::kFailed};
  // The allowed ones, by (from, to); every other pair is refused and changes nothing.
  const std::set<std::pair<LeaseState, LeaseState>> allowed = {
      {LeaseState::kNascent, LeaseState::kActive},   {LeaseState::kNascent, LeaseState::kFailed},
      {LeaseState::kActive, LeaseState::kExtending}, {LeaseState::kActive, LeaseState::kClosing},
      {LeaseState::kExtending, LeaseState::kActive}, {LeaseState::kExtending, LeaseState::kClosing},
      {LeaseState::kExtending, LeaseState::kFailed}, {LeaseState::kClosing, LeaseState::kClosed},
      {LeaseState::kClosing, LeaseState::kFailed}};
  for (LeaseState from : all) {
    for (LeaseState to : all) {
      Lease l;
      l.id = "l";
      l.state = from;
      Status s = Advance(l, to, 5, "test");
      if (allowed.count({from, to})) {
        EXPECT_TRUE(s.ok()) << LeaseStateName(from) << " -> " << LeaseStateName(to);
        EXPECT_EQ(l.state, to);
        ASSERT_EQ(l.history.size(), 1u);
        EXPECT_EQ(l.history[0].from, from);
        EXPECT_EQ(l.history[0].at_ms, 5);
      } else {
        EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << LeaseStateName(from) << " -> " << LeaseStateName(to);
        EXPECT_EQ(l.state, from);
        EXPECT_TRUE(l.history.empty());
      }
    }
  }
  Lease closed;
  closed.id = "lease-9";
  closed.state = LeaseState::kClosed;
  EXPECT_EQ(Advance(closed, LeaseState::kActive, 1, "").message(), "lease lease-9 is closed; it cannot become active");
}

TEST(LeaseTest, ClassesNameWhatMayBeReclaimedAndWhatATermEndDoes) {
  EXPECT_EQ(Reclaimable(MakeLease(LeaseClass::kGuaranteed, {2, 1024}, {2, 1024})), (Resources{0, 0}));
  EXPECT_EQ(Reclaimable(MakeLease(LeaseClass::kElastic, {4, 2048}, {1, 512})), (Resources{3, 1536}));
  EXPECT_EQ(Reclaimable(MakeLease(LeaseClass::kPreemptible, {2, 1024}, {2, 1024})), (Resources{2, 1024}));
  EXPECT_EQ(AtTermEnd(LeaseClass::kGuaranteed), TermEndAction::kRenew);
  EXPECT_EQ(AtTermEnd(LeaseClass::kGuaranteed, GuaranteedTermEnd::kClose), TermEndAction::kClose);
  EXPECT_EQ(AtTermEnd(LeaseClass::kElastic), TermEndAction::kFallToFloor);
  EXPECT_EQ(AtTermEnd(LeaseClass::kPreemptible), TermEndAction::kStop);
  Lease l = MakeLease(LeaseClass::kElastic, {2, 1024}, {1, 256});
  EXPECT_FALSE(Expired(l, 1'000'000));  // open-ended
  l.term_end_ms = 5000;
  EXPECT_FALSE(Expired(l, 4999));
  EXPECT_TRUE(Expired(l, 5000));
  EXPECT_EQ(*ParseLeaseClass("elastic"), LeaseClass::kElastic);
  EXPECT_EQ(ParseLeaseClass("gold").status().message(),
            "lease class 'gold': expected one of guaranteed | elastic | preemptible");
}

TEST(LeaseTest, RenewalsWithFlexAreCheckedAppliedAndOrderedShrinksFirst) {
  Lease l = MakeLease(LeaseClass::kElastic, {2, 1024}, {1, 512});
  l.term_end_ms = 5000;
  EXPECT_EQ(CheckRenewal(l, {"lease-1", {1, 256}, 9000}, 2000).message(),
            "amount: 1 vCPUs, 256 MiB is below the lease's floor of 1 vCPUs, 512 MiB");
  EXPECT_EQ(CheckRenewal(l, {"lease-1", {2, 1024}, 1500}, 2000).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckRenewal(l, {"lease-1", {0, 1024}, 9000}, 2000).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(ApplyRenewal(l, {"lease-1", {1, 768}, 9000}, 2000).ok());
  EXPECT_EQ(l.state, LeaseState::kActive);
  EXPECT_EQ(l.granted, (Resources{1, 768}));
  EXPECT_EQ(*l.term_end_ms, 9000);
  ASSERT_EQ(l.history.size(), 3u);  // granted, extending, renewed
  EXPECT_EQ(l.history[1].to, LeaseState::kExtending);
  EXPECT_EQ(l.history[2].why, "renewed: 1 vCPUs, 768 MiB");
  // A lease that is not active is not renewed.
  ASSERT_TRUE(Advance(l, LeaseState::kClosing, 3000, "released").ok());
  EXPECT_EQ(ApplyRenewal(l, {"lease-1", {1, 768}, 9000}, 3000).code(), StatusCode::kFailedPrecondition);

  const std::vector<Renewal> rs = {{"grow", {4, 4096}, std::nullopt},
                                   {"same", {2, 2048}, std::nullopt},
                                   {"shrink-a", {1, 1024}, std::nullopt},
                                   {"mixed", {4, 1024}, std::nullopt},
                                   {"shrink-b", {2, 512}, std::nullopt}};
  const std::vector<Resources> now(rs.size(), Resources{2, 2048});
  std::vector<std::string> ids;
  for (const auto& r : OrderRenewals(rs, now)) ids.push_back(r.lease_id);
  EXPECT_EQ(ids, (std::vector<std::string>{"shrink-a", "shrink-b", "same", "mixed", "grow"}));
}

TEST(NoticeTest, ANoticeIsCheckedAgainstTheLease) {
  Lease g = MakeLease(LeaseClass::kGuaranteed, {2, 1024}, {2, 1024});
  EXPECT_EQ(MakeNotice(g, "n1", NoticeAction::kShrink, {2, 512}, "room", 10, 10, 100, false).status().code(),
            StatusCode::kInvalidArgument);  // a guaranteed lease is not shrunk
  EXPECT_TRUE(MakeNotice(g, "n1", NoticeAction::kShrink, {2, 512}, "host failed", 10, 10, 10, true).ok());
  Lease e = MakeLease(LeaseClass::kElastic, {2, 1024}, {1, 512});
  EXPECT_EQ(MakeNotice(e, "n1", NoticeAction::kShrink, {1, 256}, "room", 10, 10, 100, false).status().message(),
            "after: 1 vCPUs, 256 MiB is below the elastic lease's floor of 1 vCPUs, 512 MiB");
  EXPECT_EQ(MakeNotice(e, "n1", NoticeAction::kShrink, {2, 1024}, "room", 10, 10, 100, false).status().code(),
            StatusCode::kInvalidArgument);  // no shrink at all
  EXPECT_EQ(MakeNotice(e, "n1", NoticeAction::kShrink, {2, 512}, "room", 10, 50, 40, false).status().code(),
            StatusCode::kInvalidArgument);  // deadline before not_before
  auto n = MakeNotice(e, "n1", NoticeAction::kMigrate, e.granted, "balance", 10, 10, 100, false);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->state, NoticeState::kPending);
  EXPECT_EQ(n->guest, "acme:web1");
}

TEST(NoticeTest, AnAckedShrinkIsActedOnEarlyASilentOneAtTheDeadline) {
  Lease e = MakeLease(LeaseClass::kElastic, {2, 1024}, {1, 512});
  Notice acked = *MakeNotice(e, "n1", NoticeAction::kShrink, {2, 512}, "make room", 100, 150, 1000, false);
  EXPECT_EQ(ActAt(acked), 1000);
  ASSERT_TRUE(ApplyReply(acked, e, {ReplyKind::kAck, "acme:web1", 120, std::nullopt, std::nullopt}).ok());
  EXPECT_EQ(acked.state, NoticeState::kAcked);
  EXPECT_EQ(ActAt(acked), 150);  // at once, but never before not_before
  EXPECT_EQ(Act(acked, 149).status().code(), StatusCode::kFailedPrecondition);
  auto rec = Act(acked, 150);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->answer, ReplyKind::kAck);
  EXPECT_EQ(rec->after, (Resources{2, 512}));
  EXPECT_EQ(Act(acked, 200).status().code(), StatusCode::kFailedPrecondition);  // not twice

  Notice silent = *MakeNotice(e, "n2", NoticeAction::kShrink, {2, 512}, "make room", 100, 150, 1000, false);
  EXPECT_EQ(Act(silent, 999).status().code(), StatusCode::kFailedPrecondition);
  auto taken = Act(silent, 1000);
  ASSERT_TRUE(taken.ok());
  EXPECT_FALSE(taken->answer.has_value());  // the record says the guest was silent
  EXPECT_EQ(taken->reason, "make room");
  // A late answer is refused and changes nothing.
  Notice late = *MakeNotice(e, "n3", NoticeAction::kShrink, {2, 512}, "make room", 100, 150, 1000, false);
  EXPECT_EQ(ApplyReply(late, e, {ReplyKind::kAck, "acme:web1", 1001, std::nullopt, std::nullopt}).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(late.state, NoticeState::kPending);
  // Only a preemptible lease is stopped to make room; anything is, when urgent: at once, and still recorded.
  EXPECT_EQ(MakeNotice(e, "n5", NoticeAction::kStop, {}, "make room", 100, 100, 1000, false).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(MakeNotice(MakeLease(LeaseClass::kPreemptible, {1, 256}, {}), "n6", NoticeAction::kStop, {}, "term end",
                         100, 100, 1000, false)
                  .ok());
  Notice urgent = *MakeNotice(e, "n4", NoticeAction::kStop, e.granted, "host failed", 100, 100, 100, true);
  auto now = Act(urgent, 100);
  ASSERT_TRUE(now.ok());
  EXPECT_TRUE(now->urgent);
  // A notice overtaken by an urgent action is withdrawn: no answer, no act, no second withdrawal.
  Notice overtaken = *MakeNotice(e, "n7", NoticeAction::kShrink, {2, 512}, "make room", 100, 150, 1000, false);
  ASSERT_TRUE(Withdraw(overtaken).ok());
  EXPECT_EQ(overtaken.state, NoticeState::kWithdrawn);
  EXPECT_EQ(NoticeStateName(overtaken.state), "withdrawn");
  EXPECT_EQ(Act(overtaken, 1000).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(ApplyReply(overtaken, e, {ReplyKind::kAck, "acme:web1", 120, std::nullopt, std::nullopt}).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(Withdraw(overtaken).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Withdraw(urgent).code(), StatusCode::kFailedPrecondition);  // acted on already
}

TEST(NoticeTest, OnlyTheGuestAnswersAndACounterIsBoundedAndDecidedByTheBroker) {
  Lease e = MakeLease(LeaseClass::kElastic, {2, 2048}, {1, 512});
  Notice n = *MakeNotice(e, "n1", NoticeAction::kShrink, {2, 512}, "make room", 100, 100, 1000, false);
  EXPECT_EQ(ApplyReply(n, e, {ReplyKind::kAck, "beta:db1", 120, std::nullopt, std::nullopt}).code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(ApplyReply(n, e, {ReplyKind::kCounter, "acme:web1", 120, Resources{2, 256}, std::nullopt}).code(),
            StatusCode::kInvalidArgument);  // a bigger shrink, below the floor
  EXPECT_EQ(ApplyReply(n, e, {ReplyKind::kCounter, "acme:web1", 120, std::nullopt, 2000}).code(),
            StatusCode::kInvalidArgument);  // past the deadline
  EXPECT_EQ(ApplyReply(n, e, {ReplyKind::kCounter, "acme:web1", 120, std::nullopt, std::nullopt}).code(),
            StatusCode::kInvalidArgument);  // no terms
  EXPECT_EQ(n.state, NoticeState::kPending);
  // A smaller shrink, later: declined, the notice stands; offered again and accepted, its terms hold.
  const Reply counter{ReplyKind::kCounter, "acme:web1", 130, Resources{2, 1024}, 600};
  ASSERT_TRUE(ApplyReply(n, e, counter).ok());
  EXPECT_EQ(n.state, NoticeState::kCountered);
  EXPECT_EQ(ActAt(n), 1000);  // undecided: the deadline stands
  ASSERT_TRUE(DecideCounter(n, false).ok());
  EXPECT_EQ(n.state, NoticeState::kPending);
  EXPECT_EQ(n.after, (Resources{2, 512}));
  ASSERT_TRUE(ApplyReply(n, e, counter).ok());
  ASSERT_TRUE(DecideCounter(n, true).ok());
  EXPECT_EQ(n.state, NoticeState::kAcked);
  EXPECT_EQ(n.after, (Resources{2, 1024}));
  EXPECT_EQ(ActAt(n), 600);
  EXPECT_EQ(DecideCounter(n, true).code(), StatusCode::kFailedPrecondition);
  auto rec = Act(n, 600);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->answer, ReplyKind::kCounter);
  EXPECT_EQ(rec->after, (Resources{2, 1024}));
  // Released: the guest gave it back already; acted on at once.
  Notice r = *MakeNotice(e, "n2", NoticeAction::kShrink, {2, 1024}, "make room", 100, 100, 1000, false);
  ASSERT_TRUE(ApplyReply(r, e, {ReplyKind::kRelease, "acme:web1", 110, std::nullopt, std::nullopt}).ok());
  EXPECT_EQ(r.state, NoticeState::kReleased);
  EXPECT_EQ(ActAt(r), 110);
  EXPECT_EQ(ApplyReply(r, e, {ReplyKind::kAck, "acme:web1", 111, std::nullopt, std::nullopt}).code(),
            StatusCode::kFailedPrecondition);  // answered already
}

}  // namespace
}  // namespace uw::lease
