// The health watch's state machine with plain durations: starting -> ready -> unresponsive ->
// ready.
#include "vmm/health.h"

#include <gtest/gtest.h>

namespace uw::vmm {
namespace {

using std::chrono::seconds;
const TimePoint kT0 = TimePoint(seconds(1'700'000'000));

class HealthTest : public ::testing::Test {
 protected:
  HealthTest() : tracker_(Options()) {}
  static HealthOptions Options() {
    HealthOptions o;
    o.interval = seconds(5);
    o.starting_interval = seconds(1);
    o.timeout = seconds(30);
    return o;
  }
  // Advances to second `s` and returns the pings due then.
  std::vector<DuePing> At(int s) {
    now_ = seconds(s);
    return tracker_.Due(now_);
  }
  std::vector<HealthEvent> Answer(const std::string& g, int64_t instance, bool answered) {
    return tracker_.Report(g, instance, answered, now_, kT0 + now_);
  }
  Health HealthOf(const std::string& g) { return tracker_.View(g)->health; }

  HealthTracker tracker_;
  Duration now_{0};
};

TEST_F(HealthTest, StartingGuestIsPingedEverySecondUntilItAnswers) {
  tracker_.Observe("vm1", 7, true, "/s/vm1.sock", now_, kT0);
  EXPECT_EQ(HealthOf("vm1"), Health::kStarting);
  EXPECT_FALSE(tracker_.View("vm1")->ready);
  auto due = At(0);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].guest, "vm1");
  EXPECT_EQ(due[0].instance, 7);
  EXPECT_EQ(due[0].channel, "/s/vm1.sock");
  EXPECT_EQ(due[0].timeout, Options().starting_ping_timeout);
  EXPECT_TRUE(At(0).empty()) << "a ping in flight is not sent twice";
  EXPECT_TRUE(Answer("vm1", 7, false).empty());
  EXPECT_TRUE(At(0).empty());
  EXPECT_EQ(At(1).size(), 1u);
  // Still starting however long it takes: only a guest that was ready becomes unresponsive.
  Answer("vm1", 7, false);
  EXPECT_TRUE(tracker_.Expire(seconds(100), kT0 + seconds(100)).empty());
  EXPECT_EQ(HealthOf("vm1"), Health::kStarting);
  now_ = seconds(4);
  At(4);
  auto events = Answer("vm1", 7, true);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].event, "ready");
  EXPECT_NE(events[0].detail.find("4.0 s after"), std::string::npos) << events[0].detail;
  EXPECT_EQ(HealthOf("vm1"), Health::kReady);
  EXPECT_TRUE(tracker_.View("vm1")->ready);
  EXPECT_EQ(tracker_.View("vm1")->since, kT0 + seconds(4));
  // Once ready, pings every interval.
  EXPECT_TRUE(At(8).empty());
  EXPECT_EQ(At(9).size(), 1u);
  EXPECT_TRUE(Answer("vm1", 7, true).empty()) << "no event while it stays ready";
}

TEST_F(HealthTest, SilenceForTheTimeoutMakesAReadyGuestUnresponsiveAndAnAnswerReadyAgain) {
  tracker_.Observe("vm1", 1, true, "/s", now_, kT0);
  At(0);
  Answer("vm1", 1, true);
  for (int s = 5; s <= 25; s += 5) {
    ASSERT_EQ(At(s).size(), 1u);
    Answer("vm1", 1, false);
    EXPECT_TRUE(tracker_.Expire(now_, kT0 + now_).empty()) << "at " << s << " s";
    EXPECT_EQ(HealthOf("vm1"), Health::kReady);
  }
  auto events = tracker_.Expire(seconds(31), kT0 + seconds(31));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].event, "unresponsive");
  EXPECT_NE(events[0].detail.find("31.0 s"), std::string::npos) << events[0].detail;
  auto v = tracker_.View("vm1");
  EXPECT_EQ(v->health, Health::kUnresponsive);
  EXPECT_FALSE(v->ready);
  ASSERT_TRUE(v->unresponsive_since.has_value());
  EXPECT_EQ(*v->unresponsive_since, kT0 + seconds(30));
  EXPECT_TRUE(tracker_.Expire(seconds(40), kT0 + seconds(40)).empty()) << "one event per episode";
  At(40);
  auto back = Answer("vm1", 1, true);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].event, "ready");
  EXPECT_NE(back[0].detail.find("again"), std::string::npos) << back[0].detail;
  EXPECT_EQ(HealthOf("vm1"), Health::kReady);
  EXPECT_FALSE(tracker_.View("vm1")->unresponsive_since.has_value());
}

TEST_F(HealthTest, AnswersToCommandsCountAsLife) {
  tracker_.Observe("vm1", 1, true, "/s", now_, kT0);
  At(0);
  Answer("vm1", 1, true);
  // The pings were skipped (channel busy) but a command answered at 25 s.
  now_ = seconds(25);
  tracker_.Heard("vm1", 1, now_, kT0 + now_);
  EXPECT_TRUE(tracker_.Expire(seconds(50), kT0 + seconds(50)).empty());
  EXPECT_EQ(tracker_.Expire(seconds(55), kT0 + seconds(55)).size(), 1u);
}

TEST_F(HealthTest, CommandsDoNotPostponeThePings) {
  tracker_.Observe("vm1", 1, true, "/s", now_, kT0);
  ASSERT_EQ(At(0).size(), 1u);
  Answer("vm1", 1, true);  // ready; the next ping is due at 5 s
  for (int s = 1; s < 5; ++s) {
    EXPECT_TRUE(At(s).empty());
    tracker_.Heard("vm1", 1, now_, kT0 + now_);  // a command answered every second
  }
  EXPECT_EQ(At(5).size(), 1u);  // the ping (which carries a guest's ask) is still sent on time
  EXPECT_EQ(HealthOf("vm1"), Health::kReady);
}

TEST_F(HealthTest, ACommandAnsweredMakesAStartingGuestReady) {
  tracker_.Observe("vm1", 1, true, "/s", now_, kT0);
  now_ = seconds(3);
  auto events = tracker_.Heard("vm1", 1, now_, kT0 + now_);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].event, "ready");
  EXPECT_EQ(HealthOf("vm1"), Health::kReady);
  EXPECT_TRUE(tracker_.Heard("vm1", 2, now_, kT0 + now_).empty());  // another instance: dropped
}

TEST_F(HealthTest, NoChannelOrNotRunningIsNoneAndNeverPinged) {
  tracker_.Observe("ct1", 5, true, "", now_, kT0);
  tracker_.Observe("vm2", -1, false, "/s", now_, kT0);
  EXPECT_EQ(HealthOf("ct1"), Health::kNone);
  EXPECT_EQ(HealthOf("vm2"), Health::kNone);
  EXPECT_TRUE(tracker_.View("ct1")->running);
  EXPECT_FALSE(tracker_.View("vm2")->running);
  EXPECT_TRUE(At(100).empty());
  EXPECT_TRUE(tracker_.Expire(seconds(1000), kT0).empty());
}

TEST_F(HealthTest, ANewInstanceStartsOverAndOldReportsAreDropped) {
  tracker_.Observe("vm1", 1, true, "/s", now_, kT0);
  At(0);
  Answer("vm1", 1, true);
  ASSERT_EQ(HealthOf("vm1"), Health::kReady);
  ASSERT_EQ(At(5).size(), 1u);  // a ping of instance 1 in flight
  // Migrated away and back, or restarted: a new domain id.
  tracker_.Observe("vm1", 2, true, "/s", now_, kT0 + now_);
  EXPECT_EQ(HealthOf("vm1"), Health::kStarting);
  EXPECT_FALSE(tracker_.View("vm1")->ready);
  EXPECT_TRUE(Answer("vm1", 1, true).empty());
  EXPECT_EQ(HealthOf("vm1"), Health::kStarting) << "an answer of the old QEMU says nothing about the new one";
  ASSERT_EQ(At(5).size(), 1u);
  EXPECT_EQ(Answer("vm1", 2, true).size(), 1u);
  EXPECT_EQ(HealthOf("vm1"), Health::kReady);
  // Observing the same instance again changes nothing.
  tracker_.Observe("vm1", 2, true, "/s", now_, kT0 + now_);
  EXPECT_EQ(HealthOf("vm1"), Health::kReady);
  // Paused or stopped: none; running again: starting.
  tracker_.Observe("vm1", 2, false, "/s", now_, kT0 + now_);
  EXPECT_EQ(HealthOf("vm1"), Health::kNone);
  tracker_.Observe("vm1", 2, true, "/s", now_, kT0 + now_);
  EXPECT_EQ(HealthOf("vm1"), Health::kStarting);
}

TEST_F(HealthTest, RetainAndForgetDropGuests) {
  tracker_.Observe("a", 1, true, "/a", now_, kT0);
  tracker_.Observe("b", 2, true, "/b", now_, kT0);
  tracker_.Retain({"b"});
  EXPECT_FALSE(tracker_.View("a").has_value());
  EXPECT_TRUE(tracker_.View("b").has_value());
  tracker_.Forget("b");
  EXPECT_FALSE(tracker_.View("b").has_value());
  EXPECT_TRUE(At(10).empty());
}

}  // namespace
}  // namespace uw::vmm
