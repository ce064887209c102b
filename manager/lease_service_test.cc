// The lease service end to end on in-memory agents and a FakeClock: notices acked, silent and
// countered, term ends by class, extensions with flex, restarts, and who may see and answer what.
#include <gtest/gtest.h>

#include "common/base64.h"
#include "manager/lease_test_fixture.h"

namespace uw::manager {
namespace {

using testing::kAdmin;
using testing::LeaseTest;

TEST_F(LeaseTest, AGuestThatAcksIsShrunkAtOnce) {
  StartManager();
  AddHost("h1");
  std::string lease = Create("e1", {{"lease_class", "elastic"}});
  cluster_.SetExecOutput("e1", "uw-notice", "dropped caches\nack\n");
  Json n = Reclaim(lease, {{"memory_mib", 128}, {"notice_s", 600}, {"reason", "make room"}});
  EXPECT_EQ(n["state"], "pending");
  EXPECT_EQ(n["after"]["memory_mib"], 128);
  Tick();
  SettleTasks();
  // Delivered over the channel, answered, acted on well before the deadline.
  auto execs = ExecsOf("e1", "uw-notice");
  ASSERT_FALSE(execs.empty());
  EXPECT_EQ(execs.back().rfind("uw-notice " + n["id"].get<std::string>() + " shrink 1 256 1 128 0 600 make_room", 0),
            0u)
      << execs.back();
  Json done = Notice(n["id"]);
  EXPECT_EQ(done["state"], "acted") << done.dump();
  EXPECT_EQ(done["delivery"]["state"], "delivered");
  EXPECT_EQ(done["delivery"]["answer"], "ack");
  EXPECT_EQ(MemoryOf("e1"), 128);
  EXPECT_EQ(Lease(lease)["granted"]["memory_mib"], 128);
  Json rep = *Client().Call("GET", "/api/v1/repossessions?guest=e1");
  ASSERT_EQ(rep["repossessions"].size(), 1u);
  EXPECT_EQ(rep["repossessions"][0]["answer"], "ack");
  EXPECT_EQ(rep["repossessions"][0]["after"]["memory_mib"], 128);
}

TEST_F(LeaseTest, ASilentGuestIsShrunkAtTheDeadlineAndCanReadTheRecord) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  std::string lease = Create("s1", {{"lease_class", "elastic"}}, acme);
  Json n = Reclaim(lease, {{"memory_mib", 160}, {"notice_s", 60}});
  Tick();
  Json pending = Notice(n["id"]);
  EXPECT_EQ(pending["state"], "pending");
  EXPECT_EQ(pending["delivery"]["answer"], "none");  // the daemon printed no answer
  EXPECT_EQ(MemoryOf("acme:s1"), 256);
  // Another tenant sees nothing and cannot answer; the owner's late answer is refused and recorded.
  EXPECT_EQ(Client(beta).Do("GET", "/api/v1/notices/" + n["id"].get<std::string>())->status, 404);
  EXPECT_EQ(Client(beta)
                .Do("POST", "/api/v1/notices/" + n["id"].get<std::string>() + "/reply", R"({"reply": "ack"})")
                ->status,
            404);
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/leases"))["leases"].size(), 0u);
  clock_.Advance(std::chrono::seconds(61));
  Tick();
  SettleTasks();
  EXPECT_EQ(MemoryOf("acme:s1"), 160);
  EXPECT_EQ(Client(acme)
                .Do("POST", "/api/v1/notices/" + n["id"].get<std::string>() + "/reply", R"({"reply": "ack"})")
                ->status,
            409);
  Json rep = *Client(acme).Call("GET", "/api/v1/repossessions?guest=s1");
  ASSERT_EQ(rep["repossessions"].size(), 1u);
  EXPECT_TRUE(rep["repossessions"][0]["answer"].is_null());
  EXPECT_EQ(rep["repossessions"][0]["guest"], "s1");  // the tenant's own name for it
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/repossessions"))["repossessions"].size(), 0u);
}

TEST_F(LeaseTest, ACounterOfferIsAcceptedByTheBroker) {
  StartManager();
  AddHost("h1");
  std::string lease = Create("c1", {{"lease_class", "elastic"}});
  cluster_.SetExecOutput("c1", "uw-notice", "counter memory_mib=192\n");
  Json n = Reclaim(lease, {{"memory_mib", 128}, {"notice_s", 600}});
  Tick();
  SettleTasks();
  Json done = Notice(n["id"]);
  EXPECT_EQ(done["state"], "acted") << done.dump();
  EXPECT_EQ(done["after"]["memory_mib"], 192);
  EXPECT_EQ(MemoryOf("c1"), 192);
  EXPECT_EQ(Lease(lease)["granted"]["memory_mib"], 192);
}

TEST_F(LeaseTest, UnderThePolicyBrokerACounterIsAcceptedOnlyWhenALeaseRankedBelowItGivesInstead) {
  config_.lease_broker = "policy";
  config_.lease_reclaim_policy = lease::BrokerPolicy::kStrictPriority;
  StartManager();
  AddHost("h1");
  std::string elastic = Create("c1", {{"lease_class", "elastic"}, {"lease_floor", {{"memory_mib", 32}}}});
  std::string other = Create("c2", {{"lease_class", "elastic"}});
  cluster_.SetExecOutput("c1", "uw-notice", "counter memory_mib=192\n");
  // Only another elastic lease on the host: nothing strict priority takes before c1 covers the
  // 64 MiB it would keep, so the counter is declined and c1 gives what the notice said, at its deadline.
  Json declined = Reclaim(elastic, {{"memory_mib", 128}, {"notice_s", 60}});
  Tick();
  EXPECT_EQ(Notice(declined["id"])["state"], "pending");
  auto why = manager_->store().Query("SELECT data FROM events WHERE type = 'notice.counter_declined'");
  ASSERT_TRUE(why.ok());
  ASSERT_EQ(why->size(), 1u);
  EXPECT_NE((*why)[0].Str("data").find("can give 0 vCPU(s) and 0 MiB of the 0 vCPU(s) and 64 MiB"), std::string::npos)
      << (*why)[0].Str("data");
  clock_.Advance(std::chrono::seconds(61));
  Tick();
  SettleTasks();
  EXPECT_EQ(MemoryOf("c1"), 128);
  EXPECT_EQ(Lease(other)["granted"]["memory_mib"], 256);  // untouched
  // With a preemptible guest on the host, the same kind of counter is accepted and the preemptible
  // lease gets a stop notice of its own that names the counter it covers.
  std::string preemptible = Create("p1", {{"lease_class", "preemptible"}});
  cluster_.SetExecOutput("c1", "uw-notice", "counter memory_mib=96\n");
  Json accepted = Reclaim(elastic, {{"memory_mib", 64}, {"notice_s", 600}});
  Tick();
  SettleTasks();
  Json done = Notice(accepted["id"]);
  EXPECT_EQ(done["state"], "acted") << done.dump();
  EXPECT_EQ(MemoryOf("c1"), 96);
  auto covered = manager_->store().Query("SELECT data FROM events WHERE type = 'notice.counter_accepted'");
  ASSERT_TRUE(covered.ok());
  ASSERT_EQ(covered->size(), 1u);
  Json data = Json::parse((*covered)[0].Str("data"));
  ASSERT_EQ(data["cover"].size(), 1u) << data.dump();
  Json cover = Notice(data["cover"][0]);
  EXPECT_EQ(cover["lease"], preemptible) << cover.dump();
  EXPECT_EQ(cover["action"], "stop");
  EXPECT_NE(cover["reason"].get<std::string>().find("by its counter to notice " + accepted["id"].get<std::string>()),
            std::string::npos)
      << cover.dump();
  EXPECT_EQ(Lease(other)["granted"]["memory_mib"], 256);
  // The silent preemptible guest gives at its deadline: it stops.
  clock_.Advance(std::chrono::milliseconds(config_.lease_notice_ms + 1000));
  Tick();
  SettleTasks();
  EXPECT_EQ(Notice(data["cover"][0])["state"], "acted");
  EXPECT_EQ(cluster_.StateOf("h1", "p1"), "shutoff");
}

TEST_F(LeaseTest, AnOperatorsForcedStopIsUrgentAndLeavesARecord) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme");
  std::string lease = Create("f1", {{"lease_class", "elastic"}}, acme);
  // A shrink is on notice when the operator pulls the plug: it is overtaken, not acted on.
  Json shrink = Reclaim(lease, {{"memory_mib", 128}, {"notice_s", 600}});
  // The tenant's own forced stop is not a repossession; an operator's is, at once.
  Json force = {{"force", true}}, none = Json::object();
  auto stop = Client().Call("POST", "/api/v1/guests/acme:f1/stop", &force);
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  EXPECT_EQ((*stop)["kind"], "guest.stop");
  EXPECT_EQ(WaitTask(*stop)["state"], "succeeded");
  EXPECT_EQ(cluster_.StateOf("h1", "acme:f1"), "shutoff");
  EXPECT_EQ(Notice(shrink["id"])["state"], "withdrawn");
  Json rep = *Client(acme).Call("GET", "/api/v1/repossessions?guest=f1");
  ASSERT_EQ(rep["repossessions"].size(), 1u) << rep.dump();
  EXPECT_EQ(rep["repossessions"][0]["action"], "stop");
  EXPECT_EQ(rep["repossessions"][0]["urgent"], true);
  EXPECT_TRUE(rep["repossessions"][0]["answer"].is_null());
  EXPECT_NE(rep["repossessions"][0]["reason"].get<std::string>().find("forced stop"), std::string::npos);
  Json stopped = Notice(rep["repossessions"][0]["notice"]);
  EXPECT_EQ(stopped["delivery"]["state"], "skipped");
  EXPECT_EQ(Lease(lease)["state"], "closed");
  // Nothing is left to act on: a later tick changes nothing.
  clock_.Advance(std::chrono::seconds(700));
  Tick();
  SettleTasks();
  EXPECT_EQ((*Client(acme).Call("GET", "/api/v1/repossessions?guest=f1"))["repossessions"].size(), 1u);
  // A start grants anew; the tenant's own forced stop records nothing.
  auto start = Client(acme).Call("POST", "/api/v1/guests/f1/start", &none);
  ASSERT_TRUE(start.ok());
  EXPECT_EQ(WaitTask(*start)["state"], "succeeded");
  auto own = Client(acme).Call("POST", "/api/v1/guests/f1/stop", &force);
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(WaitTask(*own)["state"], "succeeded");
  EXPECT_EQ((*Client(acme).Call("GET", "/api/v1/repossessions?guest=f1"))["repossessions"].size(), 1u);
}

TEST_F(LeaseTest, AResizeThatFailedIsTriedAgainUntilTheGuestHoldsWhatItsLeaseGrants) {
  StartManager();
  AddHost("h1");
  std::string lease = Create("u1", {{"lease_class", "elastic"}});
  Json n = Reclaim(lease, {{"memory_mib", 128}, {"notice_s", 1}});
  Tick();
  // The host is unreachable when the notice falls due: the lease is taken, the balloon is not.
  cluster_.SetDown("h1", true);
  clock_.Advance(std::chrono::seconds(2));
  Tick();
  SettleTasks();
  EXPECT_EQ(Notice(n["id"])["state"], "acted");
  EXPECT_EQ(Lease(lease)["granted"]["memory_mib"], 128);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.resize' AND state = 'failed'"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'lease.unenforced'"), 1);
  // Not before its backoff; then again, and it holds.
  cluster_.SetDown("h1", false);
  Tick();
  SettleTasks();
  EXPECT_EQ(MemoryOf("u1"), 256);
  clock_.Advance(std::chrono::seconds(6));
  Tick();
  SettleTasks();
  EXPECT_EQ(MemoryOf("u1"), 128);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/u1"))["memory_mib"], 128);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'lease.enforcing'"), 1);
  // Converged: nothing more is tried.
  clock_.Advance(std::chrono::seconds(600));
  Tick();
  SettleTasks();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.resize'"), 2);
}

TEST_F(LeaseTest, AGuestIsToldWhatItHoldsWheneverThatChanges) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme");
  std::string lease = Create("v1", {{"lease_class", "elastic"}, {"lease_floor", {{"memory_mib", 64}}}}, acme);
  Tick();
  Json h = LastHoldings("acme:v1");
  ASSERT_TRUE(h.is_object());
  EXPECT_EQ(h["guest"], "v1");  // its own name, as its tenant knows it
  EXPECT_EQ(h["lease"]["id"], lease);
  EXPECT_EQ(h["lease"]["class"], "elastic");
  EXPECT_EQ(h["lease"]["granted"]["memory_mib"], 256);
  EXPECT_EQ(h["lease"]["reclaimable"]["memory_mib"], 192);
  EXPECT_TRUE(h["notices"].empty());
  EXPECT_TRUE(h["repossessions"].empty());
  // Nothing changed: nothing is sent again.
  const size_t sent = ExecsOf("acme:v1", "uw-holdings").size();
  Tick();
  EXPECT_EQ(ExecsOf("acme:v1", "uw-holdings").size(), sent);
  // A notice is in the holdings before it is acted on, the record after.
  Json n = Reclaim(lease, {{"memory_mib", 128}, {"notice_s", 600}});
  Tick();
  h = LastHoldings("acme:v1");
  ASSERT_EQ(h["notices"].size(), 1u) << h.dump();
  EXPECT_EQ(h["notices"][0]["id"], n["id"]);
  EXPECT_EQ(h["notices"][0]["after"]["memory_mib"], 128);
  EXPECT_EQ(h["notices"][0]["guest"], "v1");
  clock_.Advance(std::chrono::seconds(601));
  Tick();
  SettleTasks();
  Tick();
  h = LastHoldings("acme:v1");
  EXPECT_EQ(h["lease"]["granted"]["memory_mib"], 128) << h.dump();
  EXPECT_TRUE(h["notices"].empty());
  ASSERT_EQ(h["repossessions"].size(), 1u);
  EXPECT_EQ(h["repossessions"][0]["notice"], n["id"]);
  // A guest that cannot be reached gets them once it can, with a backoff.
  cluster_.SetDown("h1", true);
  Json term = {{"term_s", 3600}};
  ASSERT_TRUE(Client(acme).Call("POST", "/api/v1/leases/" + lease + "/extend", &term).ok());
  Tick();
  cluster_.SetDown("h1", false);
  Tick();
  EXPECT_TRUE(LastHoldings("acme:v1")["lease"]["term_end_ms"].is_null());
  clock_.Advance(std::chrono::seconds(2));
  Tick();
  EXPECT_FALSE(LastHoldings("acme:v1")["lease"]["term_end_ms"].is_null());
}

TEST_F(LeaseTest, AContainersCpuIsTakenBackByItsCgroupCapAndAVmsByUnplug) {
  StartManager();
  AddHost("h1");
  std::string ct = Create("ct1", {{"kind", "lxc"}, {"vcpus", 2}, {"lease_class", "elastic"}});
  std::string vm = Create("vm1", {{"vcpus", 2}, {"max_vcpus", 2}, {"lease_class", "elastic"}});
  Reclaim(ct, {{"vcpus", 1}, {"notice_s", 1}});
  Reclaim(vm, {{"vcpus", 1}, {"notice_s", 1}});
  Tick();
  clock_.Advance(std::chrono::seconds(2));
  Tick();
  SettleTasks();
  // The container keeps its two vCPUs and may use one CPU's worth of them; the VM has one vCPU.
  EXPECT_EQ(cluster_.CpuQuotaOf("ct1"), 100000);
  EXPECT_EQ(cluster_.Client("h1")->Get("ct1")->vcpus, 2);
  EXPECT_EQ(cluster_.CpuQuotaOf("vm1"), -1);
  EXPECT_EQ(cluster_.Client("h1")->Get("vm1")->vcpus, 1);
  for (const char* g : {"ct1", "vm1"}) {
    Json guest = *Client().Call("GET", std::string("/api/v1/guests/") + g);
    EXPECT_EQ(guest["vcpus"], 1) << g;
    EXPECT_EQ(guest["leases"][0]["granted"]["vcpus"], 1) << g;
  }
  // The cap is kept with the container's spec, and nothing is enforced again: it holds its grant.
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests WHERE name = 'ct1' AND json_extract(spec, '$.cpu.quota_us') = "
                  "100000"),
            1);
  clock_.Advance(std::chrono::seconds(600));
  Tick();
  SettleTasks();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.resize'"), 2);
}

TEST_F(LeaseTest, AFloodOfRepliesIsCutOffAndRecordsNothing) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  std::string lease = Create("r1", {{"lease_class", "elastic"}}, acme);
  Json n = Reclaim(lease, {{"memory_mib", 128}, {"notice_s", 600}});
  const std::string path = "/api/v1/notices/" + n["id"].get<std::string>() + "/reply";
  // A burst is taken (the first answer counts; the rest are refused, each recorded once) ...
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(Client(acme).Do("POST", path, R"({"reply": "ack"})")->status, i == 0 ? 200 : 409) << i;
  }
  const int64_t refused = Count("SELECT COUNT(*) AS n FROM events WHERE type = 'notice.answer_refused'");
  EXPECT_EQ(refused, 9);
  // ... past it, 429 with nothing recorded; another tenant is not held back by this one's flood.
  auto flooded = Client(acme).Do("POST", path, R"({"reply": "ack"})");
  EXPECT_EQ(flooded->status, 429) << flooded->body;
  EXPECT_NE(flooded->body.find("too many notice replies from tenant acme"), std::string::npos) << flooded->body;
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'notice.answer_refused'"), refused);
  EXPECT_EQ(Client(beta).Do("POST", path, R"({"reply": "ack"})")->status, 404);
  // Tokens come back with time: two a second.
  clock_.Advance(std::chrono::seconds(1));
  EXPECT_EQ(Client(acme).Do("POST", path, R"({"reply": "ack"})")->status, 409);
  EXPECT_EQ(Client(acme).Do("POST", path, R"({"reply": "ack"})")->status, 409);
  EXPECT_EQ(Client(acme).Do("POST", path, R"({"reply": "ack"})")->status, 429);
}

TEST_F(LeaseTest, ReclaimsThatBreakALeaseAreRefused) {
  StartManager();
  AddHost("h1");
  std::string g = Create("g1");  // guaranteed
  std::string e = Create("e2", {{"lease_class", "elastic"}, {"lease_floor", {{"memory_mib", 192}}}});
  auto refuse = [&](const std::string& lease, const std::string& body) {
    return Client().Do("POST", "/api/v1/leases/" + lease + "/reclaim", body)->status;
  };
  EXPECT_EQ(refuse(g, R"({"memory_mib": 128})"), 400);
  EXPECT_EQ(refuse(e, R"({"memory_mib": 128})"), 400);  // below its floor
  EXPECT_EQ(refuse(e, R"({"memory_mib": 512})"), 400);  // not a shrink
  EXPECT_EQ(refuse(e, R"({"action": "explode"})"), 400);
  EXPECT_EQ(refuse("lease-nope", R"({"memory_mib": 128})"), 404);
  // A tenant may not reclaim.
  EXPECT_EQ(
      Client(TenantToken("acme")).Do("POST", "/api/v1/leases/" + e + "/reclaim", R"({"memory_mib": 200})")->status,
      403);
  // One open notice per lease.
  EXPECT_EQ(refuse(e, R"({"memory_mib": 200})"), 200);
  EXPECT_EQ(refuse(e, R"({"memory_mib": 200})"), 409);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM notices"), 1);
  // Urgent: a guaranteed lease can be shrunk, at once, still with a record.
  EXPECT_EQ(refuse(g, R"({"memory_mib": 128, "urgent": true, "reason": "host failing"})"), 200);
  Tick();
  SettleTasks();
  EXPECT_EQ(MemoryOf("g1"), 128);
  Json rep = *Client().Call("GET", "/api/v1/repossessions?guest=g1");
  ASSERT_EQ(rep["repossessions"].size(), 1u);
  EXPECT_TRUE(rep["repossessions"][0]["urgent"].get<bool>());
}

TEST_F(LeaseTest, APreemptibleLeaseEndsWithANoticeThenTheGuestStops) {
  config_.lease_notice_ms = 30000;
  StartManager();
  AddHost("h1");
  std::string lease = Create("p1", {{"lease_class", "preemptible"}, {"lease_term_s", 60}});
  clock_.Advance(std::chrono::seconds(31));
  Tick();
  Json notices = *Client().Call("GET", "/api/v1/notices?guest=p1");
  ASSERT_EQ(notices["notices"].size(), 1u);
  EXPECT_EQ(notices["notices"][0]["action"], "stop");
  EXPECT_EQ(cluster_.StateOf("h1", "p1"), "running");
  clock_.Advance(std::chrono::seconds(30));
  Tick();
  SettleTasks();
  EXPECT_EQ(cluster_.StateOf("h1", "p1"), "shutoff");
  EXPECT_EQ(Lease(lease)["state"], "closed");
}

TEST_F(LeaseTest, AGuaranteedLeaseRenewsAndAnExtensionWithFlexTakesEffectAtTheTermEnd) {
  StartManager();
  AddHost("h1");
  std::string g = Create("r1", {{"lease_term_s", 60}});
  std::string e = Create("f1", {{"lease_class", "elastic"}, {"lease_term_s", 60}});
  const int64_t end = Lease(e)["term_end_ms"];
  Json ext = {{"memory_mib", 128}, {"term_s", 120}};
  auto r = Client().Call("POST", "/api/v1/leases/" + e + "/extend", &ext);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["granted"]["memory_mib"], 256);  // not before the term end
  EXPECT_EQ((*r)["renewal"]["term_end_ms"], end + 120000);
  EXPECT_EQ(Client().Do("POST", "/api/v1/leases/" + e + "/extend", R"({"memory_mib": 8})")->status, 400);
  clock_.Advance(std::chrono::seconds(61));
  Tick();
  SettleTasks();
  Json after = Lease(e);
  EXPECT_EQ(after["granted"]["memory_mib"], 128) << after.dump();
  EXPECT_EQ(after["term_end_ms"], end + 120000);
  EXPECT_TRUE(after["renewal"].is_null());
  EXPECT_EQ(MemoryOf("f1"), 128);
  Json renewed = Lease(g);
  EXPECT_EQ(renewed["state"], "active");
  EXPECT_GT(renewed["term_end_ms"].get<int64_t>(), end);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM notices"), 0);  // nothing was taken
}

TEST_F(LeaseTest, ARestartedManagerActsOnANoticeOnce) {
  StartManager();
  AddHost("h1");
  std::string lease = Create("x1", {{"lease_class", "elastic"}});
  Json n = Reclaim(lease, {{"memory_mib", 128}, {"notice_s", 60}});
  Tick();
  StopManager();
  clock_.Advance(std::chrono::seconds(61));
  StartManager();
  Tick();
  Tick();
  SettleTasks();
  StopManager();
  StartManager();
  Tick();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM repossessions"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.resize'"), 1);
  EXPECT_EQ(MemoryOf("x1"), 128);
}

TEST_F(LeaseTest, ReleasingALeaseStopsTheGuestAndAStartGrantsAnew) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme");
  std::string lease = Create("l1", Json::object(), acme);
  EXPECT_EQ(Client(TenantToken("beta")).Do("POST", "/api/v1/leases/" + lease + "/release")->status, 404);
  auto r = Client(acme).Do("POST", "/api/v1/leases/" + lease + "/release");
  ASSERT_EQ(r->status, 200) << r->body;
  SettleTasks();
  EXPECT_EQ(cluster_.StateOf("h1", "acme:l1"), "shutoff");
  EXPECT_EQ(Lease(lease)["state"], "closed");
  EXPECT_EQ(Client(acme).Do("POST", "/api/v1/leases/" + lease + "/release")->status, 409);
  EXPECT_EQ(WaitTask(*Client(acme).Call("POST", "/api/v1/guests/l1/start"))["state"], "succeeded");
  Json leases = *Client(acme).Call("GET", "/api/v1/leases?guest=l1");
  ASSERT_EQ(leases["leases"].size(), 2u);
  EXPECT_EQ(leases["leases"][0]["state"], "active");
  EXPECT_EQ(leases["leases"][0]["guest"], "l1");
}

TEST_F(LeaseTest, AMoveIsAnnouncedBeforeAndReportedAfter) {
  StartManager();
  AddHost("h1");
  AddHost("h2");
  std::string lease = Create("m1");
  cluster_.SetExecOutput("m1", "uw-notice", "ack\n");
  Json g = *Client().Call("GET", "/api/v1/guests/m1");
  const std::string from = g["host"], to = from == "h1" ? "h2" : "h1";
  Json body = {{"host", to}};
  Json done = WaitTask(*Client().Call("POST", "/api/v1/guests/m1/migrate", &body));
  ASSERT_EQ(done["state"], "succeeded") << done.dump();
  // Told before (a migrate notice, answered ack) and after (moved, with the pause), in that order.
  std::vector<std::string> told;
  // The `moved` message follows the task's end.
  EXPECT_TRUE(Eventually([&] {
    told = ExecsOf("m1", "uw-notice");
    return told.size() == 2;
  }));
  ASSERT_EQ(told.size(), 2u) << ::testing::PrintToString(told);
  EXPECT_NE(told[0].find(" migrate "), std::string::npos) << told[0];
  EXPECT_NE(told[1].find(" moved "), std::string::npos) << told[1];
  EXPECT_NE(told[1].find("to=" + to + ",pause_ms="), std::string::npos) << told[1];
  Json notices = *Client().Call("GET", "/api/v1/notices?guest=m1");
  ASSERT_EQ(notices["notices"].size(), 1u);
  EXPECT_EQ(notices["notices"][0]["action"], "migrate");
  EXPECT_EQ(notices["notices"][0]["state"], "acted");
  EXPECT_EQ(notices["notices"][0]["reply"]["kind"], "ack");
  Json rep = *Client().Call("GET", "/api/v1/repossessions?guest=m1");
  ASSERT_EQ(rep["repossessions"].size(), 1u);
  EXPECT_EQ(rep["repossessions"][0]["action"], "migrate");
  EXPECT_EQ(Lease(lease)["state"], "active");
}

TEST_F(LeaseTest, AMoveWaitsForASilentGuestUntilItsNoticeRunsOut) {
  config_.lease_move_notice_ms = 2000;
  StartManager();
  AddHost("h1");
  AddHost("h2");
  Create("m2");
  Json g = *Client().Call("GET", "/api/v1/guests/m2");
  Json body = {{"host", g["host"] == "h1" ? "h2" : "h1"}};
  const auto before = clock_.Now();
  Json done = WaitTask(*Client().Call("POST", "/api/v1/guests/m2/migrate", &body));
  ASSERT_EQ(done["state"], "succeeded") << done.dump();
  EXPECT_GE(clock_.Now() - before, std::chrono::milliseconds(2000));  // the poll sleeper moved the clock
  Json rep = *Client().Call("GET", "/api/v1/repossessions?guest=m2");
  ASSERT_EQ(rep["repossessions"].size(), 1u);
  EXPECT_TRUE(rep["repossessions"][0]["answer"].is_null());
}

TEST_F(LeaseTest, TheBrokerPicksWhatAHostGivesBackByItsPolicy) {
  StartManager();
  AddHost("h1");
  Create("g");  // guaranteed: never
  Create("e", {{"lease_class", "elastic"}, {"lease_floor", {{"memory_mib", 128}}}});
  Create("p", {{"lease_class", "preemptible"}});
  Json body = {{"memory_mib", 300}, {"notice_s", 60}, {"reason", "make room"}};
  auto r = Client().Call("POST", "/api/v1/hosts/h1/reclaim", &body);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["policy"], "strict-priority");
  ASSERT_EQ((*r)["notices"].size(), 2u) << r->dump();
  EXPECT_EQ((*r)["notices"][0]["guest"], "p");
  EXPECT_EQ((*r)["notices"][0]["action"], "stop");
  EXPECT_EQ((*r)["notices"][1]["guest"], "e");
  EXPECT_EQ((*r)["notices"][1]["after"]["memory_mib"], 212);  // 256 - (300 - 256)
  EXPECT_EQ((*r)["shortfall"]["memory_mib"], 0);
  // Leases with a notice open are left out (p and e now), and g gives nothing.
  Json more = {{"memory_mib", 1000}, {"policy", "proportional"}};
  auto r2 = Client().Call("POST", "/api/v1/hosts/h1/reclaim", &more);
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_EQ((*r2)["notices"].size(), 0u);
  EXPECT_EQ((*r2)["shortfall"]["memory_mib"], 1000);
  EXPECT_EQ(Client().Do("POST", "/api/v1/hosts/h9/reclaim", R"({"memory_mib": 1})")->status, 404);
  EXPECT_EQ(Client().Do("POST", "/api/v1/hosts/h1/reclaim", R"({"memory_mib": 1, "policy": "auction"})")->status, 400);
  clock_.Advance(std::chrono::seconds(61));
  Tick();
  SettleTasks();
  EXPECT_EQ(cluster_.StateOf("h1", "p"), "shutoff");
  EXPECT_EQ(MemoryOf("e"), 212);
  EXPECT_EQ(MemoryOf("g"), 256);
}

TEST_F(LeaseTest, TheMarketTakesFromTheLowestBidAndBidsStayWithinBudgets) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  Json lo = {{"name", "lo"}, {"image", "tiny"}, {"lease_class", "elastic"}, {"lease_bid", 5}};
  // A bid needs a budget.
  auto refused = Client(acme).Do("POST", "/api/v1/guests", lo.dump());
  EXPECT_EQ(refused->status, 409) << refused->body;
  EXPECT_NE(refused->body.find("has none"), std::string::npos) << refused->body;
  EXPECT_EQ(Client(acme).Do("PUT", "/api/v1/budgets/acme", R"({"per_hour": 20})")->status, 403);
  EXPECT_EQ(Client().Do("PUT", "/api/v1/budgets/acme", R"({"per_hour": -1})")->status, 400);
  EXPECT_EQ(Client().Do("PUT", "/api/v1/budgets/acme", R"({"per_hour": 20})")->status, 200);
  std::string lo_lease = Create("lo", {{"lease_class", "elastic"}, {"lease_bid", 5}}, acme);
  std::string hi_lease = Create("hi", {{"lease_class", "elastic"}, {"lease_bid", 12}}, acme);
  // 5 + 12 of 20 credits an hour (256 MiB is 1 GiB-hour a bid): a third bid of 4 is too much.
  auto over = Client(acme).Do("POST", "/api/v1/guests",
                              R"({"name": "x", "image": "tiny", "lease_class": "elastic", "lease_bid": 4})");
  EXPECT_EQ(over->status, 409) << over->body;
  EXPECT_NE(over->body.find("21 credits per hour; the budget is 20"), std::string::npos) << over->body;
  EXPECT_EQ(Client(acme).Do("POST", "/api/v1/leases/" + hi_lease + "/extend", R"({"bid": 16})")->status, 409);
  Json bid14 = {{"bid", 14}};
  auto raised = Client(acme).Call("POST", "/api/v1/leases/" + hi_lease + "/extend", &bid14);
  ASSERT_TRUE(raised.ok()) << raised.status().ToString();
  EXPECT_EQ((*raised)["bid"], 14);
  EXPECT_EQ(Client().Do("PUT", "/api/v1/budgets/acme", R"({"per_hour": 10})")->status, 409);  // bids cost 19
  Json mine = *Client(acme).Call("GET", "/api/v1/budgets");
  ASSERT_EQ(mine["budgets"].size(), 1u);
  EXPECT_EQ(mine["budgets"][0]["committed"], 19);
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/budgets"))["budgets"].size(), 0u);
  // The market takes from the lowest bid first: lo gives all above its floor, hi the rest.
  Json body = {{"memory_mib", 150}, {"notice_s", 60}, {"policy", "market"}};
  auto r = Client().Call("POST", "/api/v1/hosts/h1/reclaim", &body);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ((*r)["notices"].size(), 2u) << r->dump();
  EXPECT_EQ((*r)["notices"][0]["lease"], lo_lease);
  EXPECT_EQ((*r)["notices"][0]["after"]["memory_mib"], 128);
  EXPECT_EQ((*r)["notices"][1]["lease"], hi_lease);
  EXPECT_EQ((*r)["notices"][1]["after"]["memory_mib"], 256 - 22);
}

TEST(ChannelAnswerTest, ReadsTheLastLine) {
  EXPECT_EQ(ParseChannelAnswer("ack\n")->kind, lease::ReplyKind::kAck);
  EXPECT_EQ(ParseChannelAnswer("freed 40 MiB\nrelease\n")->kind, lease::ReplyKind::kRelease);
  auto c = ParseChannelAnswer("counter memory_mib=200 delay_s=5\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c->memory_mib, 200);
  EXPECT_EQ(*c->delay_s, 5);
  EXPECT_FALSE(ParseChannelAnswer(""));
  EXPECT_FALSE(ParseChannelAnswer("none\n"));
  EXPECT_FALSE(ParseChannelAnswer("ack please\n"));
  EXPECT_FALSE(ParseChannelAnswer("counter\n"));
  EXPECT_FALSE(ParseChannelAnswer("counter memory_mib=-5\n"));
  EXPECT_FALSE(ParseChannelAnswer("counter bogus=1\n"));
  EXPECT_FALSE(ParseChannelAnswer("counter memory_mib=12x\n"));
  // A chatty hook's answer is still its last line.
  EXPECT_EQ(ParseChannelAnswer(std::string(10000, 'x') + "\nack\n")->kind, lease::ReplyKind::kAck);
}

}  // namespace
}  // namespace uw::manager
