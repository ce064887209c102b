// The exokernel interface on the real test bed (issue 14): notices reach real guests through their
// control channel, the guest's hook scripts answer, and the balloon really shrinks the guest.
//   - a guest whose hook drops its caches and answers `release` is shrunk at once (MemTotal falls);
//   - a guest with no hook is silent: shrunk at the deadline, with a repossession record;
//   - the guest keeps a copy of what it holds (uw-holdings), updated through the channel, and can
//     ask for it (uw-holdings --ask);
//   - a counter-offer from the guest's hook is accepted by the broker and applied;
//   - a move is announced before and reported after;
//   - a preemptible lease's term ends with a notice, then its guest stops;
//   - an extension with flex (a smaller amount) changes the allocation at the new term, not before;
//   - a container's CPU is taken back by its cgroup's cap.
// Figures (printed as JSON): notice -> answer -> applied latency through the real channel.
#include "tests/manager_it_fixture.h"

namespace uw {
namespace {

using it::ManagerIntegrationTest;
using testing::WaitFor;

class LeaseIntegration : public ManagerIntegrationTest {
 protected:
  static Json Exec(const std::string& g, const std::string& command) {
    Json body = {{"command", command}};
    auto r = AgentOf(HostOf(g)).Call("POST", "/api/v1/guests/" + g + "/exec", &body);
    EXPECT_TRUE(r.ok()) << command << ": " << r.status().ToString();
    return r.ok() ? *r : Json();
  }
  static int64_t MemTotalKb(const std::string& g) {
    Json out = Exec(g, "memtotal");
    return out.is_object() ? std::stoll(out.value("output", "0")) : -1;
  }
  static std::string LeaseOf(const std::string& g) {
    return (*Client().Call("GET", "/api/v1/guests/" + g))["leases"][0]["id"];
  }
  // Reclaims memory down to `after_mib` with `notice_s`; waits until the notice is acted on and
  // its resize task has ended. Returns the notice as it ended, with "ms_to_acted" measured here.
  static Json ShrinkAndWait(const std::string& g, int64_t after_mib, int64_t notice_s) {
    Json body = {{"memory_mib", after_mib}, {"notice_s", notice_s}, {"reason", "integration test"}};
    const auto sent = std::chrono::steady_clock::now();
    auto n = Client().Call("POST", "/api/v1/leases/" + LeaseOf(g) + "/reclaim", &body);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    if (!n.ok()) return Json();
    const std::string id = (*n)["id"];
    Json notice;
    EXPECT_TRUE(WaitFor(
        [&] {
          auto r = Client().Call("GET", "/api/v1/notices/" + id);
          if (r.ok()) notice = *r;
          return r.ok() && notice["state"] == "acted";
        },
        std::chrono::seconds(notice_s + 60), std::chrono::milliseconds(50)))
        << notice.dump();
    notice["ms_to_acted"] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - sent).count();
    // The resize the act journalled.
    EXPECT_TRUE(WaitFor(
        [&] {
          auto t = Client().Call("GET", "/api/v1/tasks?limit=1");
          return t.ok() && (*t)["tasks"][0]["kind"] == "guest.resize" && (*t)["tasks"][0]["state"] == "succeeded";
        },
        std::chrono::seconds(60), std::chrono::milliseconds(50)));
    notice["ms_to_applied"] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - sent).count();
    return notice;
  }
};

TEST_F(LeaseIntegration, NoticesReachRealGuestsAndTheBalloonShrinksThem) {
  const std::string hooked = "mit-lease-hook", silent = "mit-lease-silent";
  ASSERT_TRUE(WaitFor(
      [] {
        auto r = Client().Call("GET", "/api/v1/hosts");
        return r.ok() && (*r)["hosts"].size() == testbed_->hosts.size();
      },
      std::chrono::seconds(30)));
  WaitConnected();
  CreateBooted(hooked, 384, false, {{"lease_class", "elastic"}, {"lease_floor", {{"memory_mib", 128}}}});
  CreateBooted(silent, 256, false, {{"lease_class", "elastic"}});
  // The hooked guest gives memory back before it is asked twice: drop caches, answer release.
  Json cp = Exec(hooked, "cp /etc/uw/hooks/release-after-drop-caches /etc/uw/notice.d/shrink");
  ASSERT_EQ(cp.value("exit_code", -1), 0) << cp.dump();
  const int64_t before_kb = MemTotalKb(hooked);
  Json released = ShrinkAndWait(hooked, 256, 300);
  EXPECT_EQ(released["delivery"]["state"], "delivered") << released.dump();
  EXPECT_EQ(released["delivery"]["answer"], "release") << released.dump();
  EXPECT_EQ(released["reply"]["kind"], "release");
  EXPECT_LT(released["ms_to_acted"].get<double>(), 60000.0);  // long before the 300 s deadline
  // The guest itself sees less memory: the balloon took 128 MiB.
  int64_t after_kb = 0;
  EXPECT_TRUE(WaitFor(
      [&] {
        after_kb = MemTotalKb(hooked);
        return after_kb > 0 && after_kb <= before_kb - 100 * 1024;
      },
      std::chrono::seconds(30)))
      << "MemTotal " << before_kb << " kB -> " << after_kb << " kB";
  EXPECT_EQ((*Client().Call("GET", "/api/v1/leases/" + LeaseOf(hooked)))["granted"]["memory_mib"], 256);
  // The guest knows what it holds now: its copy of its holdings, kept through the channel.
  Json holdings;
  EXPECT_TRUE(WaitFor(
      [&] {
        Json out = Exec(hooked, "uw-holdings");
        holdings = Json::parse(out.value("output", ""), nullptr, false);
        return out.value("exit_code", -1) == 0 && holdings.is_object() &&
               holdings["lease"]["granted"]["memory_mib"] == 256 && holdings["repossessions"].size() == 1;
      },
      std::chrono::seconds(30)))
      << holdings.dump();
  EXPECT_EQ(holdings["guest"], hooked);
  // The guest asks through its channel (its daemon's answer to the next health ping), and the
  // manager answers with its holdings again.
  ASSERT_EQ(Exec(hooked, "rm -f /run/ask.out; uw-holdings --ask 60 >/run/ask.out 2>&1 &").value("exit_code", -1), 0);
  const auto asked = std::chrono::steady_clock::now();
  Json answered;
  EXPECT_TRUE(WaitFor(
      [&] {
        // Gently: the health ping that carries the ask is skipped while a command holds the channel.
        std::this_thread::sleep_for(std::chrono::seconds(1));
        answered = Json::parse(Exec(hooked, "cat /run/ask.out").value("output", ""), nullptr, false);
        return answered.is_object();
      },
      std::chrono::seconds(60)))
      << Exec(hooked, "cat /run/ask.out; ls -la /run/uw").dump();
  ASSERT_TRUE(answered.is_object());
  EXPECT_EQ(answered["lease"]["granted"]["memory_mib"], 256) << answered.dump();
  std::printf(
      "{\"figure\": \"holdings ask answered\", \"ms\": %lld}\n",
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - asked).count()));
  // The notice is in the guest's own record of what it was told.
  Json seen = Exec(hooked, "cat /run/uw/notices/" + released["id"].get<std::string>());
  EXPECT_NE(seen.value("output", "").find("UW_NOTICE_AFTER_MIB=256"), std::string::npos) << seen.dump();

  // A counter-offer: the hook keeps half of what would be taken; the broker accepts it.
  ASSERT_EQ(Exec(hooked, "cp /etc/uw/hooks/counter-half /etc/uw/notice.d/shrink").value("exit_code", -1), 0);
  Json countered = ShrinkAndWait(hooked, 128, 300);
  EXPECT_EQ(countered["reply"]["kind"], "counter") << countered.dump();
  EXPECT_EQ(countered["after"]["memory_mib"], 192) << countered.dump();
  EXPECT_EQ((*Client().Call("GET", "/api/v1/leases/" + LeaseOf(hooked)))["granted"]["memory_mib"], 192);

  // A silent guest (no hook): nothing happens before the deadline, then it is shrunk anyway.
  const int64_t silent_before_kb = MemTotalKb(silent);
  Json quiet = ShrinkAndWait(silent, 160, 4);
  EXPECT_EQ(quiet["delivery"]["answer"], "none") << quiet.dump();
  EXPECT_TRUE(quiet["reply"].is_null());
  EXPECT_GE(quiet["ms_to_acted"].get<double>(), 3000.0);  // it waited for the deadline
  EXPECT_TRUE(WaitFor([&] { return MemTotalKb(silent) <= silent_before_kb - 80 * 1024; }, std::chrono::seconds(30)));
  Json records = *Client().Call("GET", "/api/v1/repossessions?guest=" + silent);
  ASSERT_EQ(records["repossessions"].size(), 1u);
  EXPECT_TRUE(records["repossessions"][0]["answer"].is_null());
  EXPECT_EQ(records["repossessions"][0]["after"]["memory_mib"], 160);

  // A move is announced (the hook acks at once) and reported after, with the pause, on the new host.
  ASSERT_EQ(Exec(hooked, "cp /etc/uw/hooks/ack /etc/uw/notice.d/migrate").value("exit_code", -1), 0);
  const std::string to = Other(HostOf(hooked));
  Json move = {{"host", to}};
  const auto move_start = std::chrono::steady_clock::now();
  auto moving = Client().Call("POST", "/api/v1/guests/" + hooked + "/migrate", &move);
  ASSERT_TRUE(moving.ok()) << moving.status().ToString();
  Json moved = WaitTask(*moving);
  const double move_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - move_start).count();
  ASSERT_EQ(moved["state"], "succeeded") << moved.dump();
  Json told = *Client().Call("GET", "/api/v1/notices?guest=" + hooked + "&limit=1");
  EXPECT_EQ(told["notices"][0]["action"], "migrate");
  EXPECT_EQ(told["notices"][0]["reply"]["kind"], "ack") << told.dump();
  std::string after_move;
  EXPECT_TRUE(WaitFor(
      [&] {
        after_move = Exec(hooked, "cat /run/uw/notices/*-moved-*").value("output", "");
        return after_move.find("UW_NOTICE_ACTION=moved") != std::string::npos;
      },
      std::chrono::seconds(30)))
      << after_move;
  EXPECT_NE(after_move.find("to=" + to + ",pause_ms="), std::string::npos) << after_move;

  Json fig = {
      {"release_ms_to_acted", released["ms_to_acted"]},
      {"move_task_ms", move_ms},
      {"move_total_ms", moved["result"]["total_ms"]},
      {"move_notice_ms",  // from the notice to the go-ahead (the repossession record)
       (*Client().Call("GET", "/api/v1/repossessions?guest=" + hooked + "&limit=1"))["repossessions"][0]["at_ms"]
               .get<int64_t>() -
           told["notices"][0]["sent_ms"].get<int64_t>()},
      {"release_ms_to_applied", released["ms_to_applied"]},
      {"counter_ms_to_applied", countered["ms_to_applied"]},
      {"silent_ms_to_applied", quiet["ms_to_applied"]},
      {"memtotal_kb", {{"before", before_kb}, {"after_release", after_kb}}}};
  std::printf("lease figures: %s\n", fig.dump().c_str());
  DeleteGuest(hooked);
  DeleteGuest(silent);
}

// Term ends on real guests: a preemptible lease ends with a notice and the guest stops; a
// guaranteed lease extended with a smaller amount keeps its grant until the term ends, then the
// balloon takes the difference.
TEST_F(LeaseIntegration, TermEndsStopPreemptibleGuestsAndApplyFlexRenewals) {
  const std::string spot = "mit-lease-spot", flex = "mit-lease-flex";
  WaitConnected();
  CreateBooted(spot, 192, false, {{"lease_class", "preemptible"}});
  CreateBooted(flex, 384, false, {{"lease_class", "guaranteed"}});
  auto extend = [](const std::string& g, const Json& body) {
    Json b = body;
    auto r = Client().Call("POST", "/api/v1/leases/" + LeaseOf(g) + "/extend", &b);
    EXPECT_TRUE(r.ok()) << g << " " << body.dump() << ": " << r.status().ToString();
    return r.ok() ? *r : Json();
  };
  // Terms from now, both booted: the spot guest's ends in 4 s, the flex guest's in 6 s.
  const auto spot_term = std::chrono::steady_clock::now();
  extend(spot, {{"term_s", 4}});
  extend(flex, {{"term_s", 6}});
  const int64_t flex_before_kb = MemTotalKb(flex);
  Json pending = extend(flex, {{"memory_mib", 256}});
  EXPECT_EQ(pending["granted"]["memory_mib"], 384) << pending.dump();  // not before the term ends
  EXPECT_EQ(pending["renewal"]["amount"]["memory_mib"], 256) << pending.dump();

  // The spot guest: a stop notice, delivered through its channel, then the stop at the term end.
  Json guest;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = Client().Call("GET", "/api/v1/guests/" + spot);
        if (r.ok()) guest = *r;
        return r.ok() && guest["state"] == "shutoff";
      },
      std::chrono::seconds(60), std::chrono::milliseconds(50)))
      << guest.dump();
  const double spot_stop_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - spot_term).count();
  EXPECT_GE(spot_stop_ms, 3000.0);  // not before its term ended
  Json told = *Client().Call("GET", "/api/v1/notices?guest=" + spot + "&limit=1");
  ASSERT_EQ(told["notices"].size(), 1u) << told.dump();
  EXPECT_EQ(told["notices"][0]["action"], "stop");
  EXPECT_EQ(told["notices"][0]["delivery"]["state"], "delivered") << told.dump();
  Json taken = *Client().Call("GET", "/api/v1/repossessions?guest=" + spot);
  ASSERT_EQ(taken["repossessions"].size(), 1u) << taken.dump();
  EXPECT_EQ(taken["repossessions"][0]["action"], "stop");
  EXPECT_EQ((*Client().Call("GET", "/api/v1/leases/" + guest["leases"][0]["id"].get<std::string>()))["state"],
            "closed");

  // The flex guest: 256 MiB from its new term on, and the guest sees it.
  Json lease;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = Client().Call("GET", "/api/v1/leases/" + LeaseOf(flex));
        if (r.ok()) lease = *r;
        return r.ok() && lease["granted"]["memory_mib"] == 256;
      },
      std::chrono::seconds(60), std::chrono::milliseconds(50)))
      << lease.dump();
  EXPECT_TRUE(lease["renewal"].is_null()) << lease.dump();
  EXPECT_EQ(lease["state"], "active");
  int64_t flex_after_kb = 0;
  EXPECT_TRUE(WaitFor(
      [&] {
        flex_after_kb = MemTotalKb(flex);
        return flex_after_kb > 0 && flex_after_kb <= flex_before_kb - 100 * 1024;
      },
      std::chrono::seconds(60)))
      << "MemTotal " << flex_before_kb << " kB -> " << flex_after_kb << " kB";
  std::printf("lease term figures: %s\n",
              Json({{"spot_term_to_stopped_ms", spot_stop_ms},
                    {"flex_memtotal_kb", {{"before", flex_before_kb}, {"after", flex_after_kb}}}})
                  .dump()
                  .c_str());
  DeleteGuest(spot);
  DeleteGuest(flex);
}

// A container has no vCPUs to unplug: its CPU is taken back by its cgroup's cap (libvirt's
// vcpu_quota), which the agent reads back from libvirt and a busy container cannot exceed.
TEST_F(LeaseIntegration, AContainersCpuIsTakenBackByItsCgroupCap) {
  const std::string ct = "mit-lease-ct";
  WaitConnected();
  Json body = {{"name", ct}, {"kind", "lxc"},     {"image", "tiny"},
               {"vcpus", 2}, {"memory_mib", 128}, {"lease_class", "elastic"}};
  auto t = Client().Call("POST", "/api/v1/guests", &body);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(WaitTask(*t)["state"], "succeeded");
  Json reclaim = {{"vcpus", 1}, {"notice_s", 1}, {"reason", "integration test"}};
  auto n = Client().Call("POST", "/api/v1/leases/" + LeaseOf(ct) + "/reclaim", &reclaim);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  Json task;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = Client().Call("GET", "/api/v1/tasks?limit=1");
        if (r.ok()) task = (*r)["tasks"][0];
        return r.ok() && task["kind"] == "guest.resize" && (task["state"] == "succeeded" || task["state"] == "failed");
      },
      std::chrono::seconds(60), std::chrono::milliseconds(50)))
      << task.dump();
  ASSERT_EQ(task["state"], "succeeded") << task.dump();
  // libvirt's word for the container's cap, through its agent.
  Json seen = *AgentOf(HostOf(ct)).Call("GET", "/api/v1/guests/" + ct);
  EXPECT_EQ(seen["spec"]["cpu"]["quota_us"], 100000) << seen.dump();
  EXPECT_EQ(seen["vcpus"], 2);  // its vCPUs stay; what they may use is capped
  // Two busy loops in the container use at most one CPU's worth.
  Json burn = {{"command",
                "for i in 1 2; do (end=$(($(date +%s) + 12)); while [ $(date +%s) -lt $end ]; do :; done) "
                ">/dev/null 2>&1 & done"}};
  ASSERT_TRUE(AgentOf(HostOf(ct)).Call("POST", "/api/v1/guests/" + ct + "/exec", &burn).ok());
  double most = 0;
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(std::chrono::seconds(1));  // sampling a rate: one reading a second
    auto st = AgentOf(HostOf(ct)).Call("GET", "/api/v1/guests/" + ct + "/stats");
    if (st.ok() && st->contains("cpu_cores")) most = std::max(most, (*st)["cpu_cores"].get<double>());
  }
  EXPECT_GT(most, 0.3) << "the container's busy loops did not run";
  EXPECT_LT(most, 1.3) << "a container capped at one CPU used " << most << " cores";
  std::printf("lease cpu cap figures: %s\n", Json({{"container_cores_at_most", most}}).dump().c_str());
  DeleteGuest(ct);
}

}  // namespace
}  // namespace uw
