// Admission and growth see leases: a host holds what its guests' leases grant now; a guest that no
// host has room for is admitted where elastic and preemptible leases can give the room back (never
// a guaranteed one), and a guest grows only into room no other grant holds.
#include <gtest/gtest.h>

#include "manager/lease_test_fixture.h"

namespace uw::manager {
namespace {

using testing::LeaseTest;

class AdmissionTest : public LeaseTest {
 protected:
  // Waits for the tasks that carry out notices (every task but a create) to end.
  void SettleNoticeTasks() {
    EXPECT_TRUE(Eventually([&] {
      return Count(
                 "SELECT COUNT(*) AS n FROM tasks WHERE kind <> 'guest.create' AND state IN ('pending', "
                 "'running')") == 0;
    }));
  }
  int64_t ReservedOn(const std::string& host) {
    return (*Client().Call("GET", "/api/v1/hosts/" + host))["reserved"]["memory_mib"].get<int64_t>();
  }
};

TEST_F(AdmissionTest, AGuestNoHostHasRoomForIsAdmittedWhereLeasesGiveItBack) {
  StartManager();
  AddHost("h1", 4, 1024);
  std::string acme = TenantToken("acme");
  Create("g");  // guaranteed: never taken from
  std::string e =
      Create("e", {{"lease_class", "elastic"}, {"memory_mib", 512}, {"lease_floor", {{"memory_mib", 256}}}});
  std::string p = Create("p", {{"lease_class", "preemptible"}});
  EXPECT_EQ(ReservedOn("h1"), 1024);
  // e counters with a smaller shrink: the room is owed to the admitted guest, so it is declined.
  cluster_.SetExecOutput("e", "uw-notice", "counter memory_mib=448\n");

  Json body = {{"name", "n"}, {"image", "tiny"}, {"memory_mib", 384}};
  auto r = Client(acme).Call("POST", "/api/v1/guests", &body);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["state"], "pending");
  EXPECT_NE((*r)["message"].get<std::string>().find("waiting for 2 lease(s) there to give back 384 MiB"),
            std::string::npos)
      << r->dump();
  // Strict priority: the preemptible lease whole, then the elastic one down to what is missing.
  Json notices = *Client().Call("GET", "/api/v1/notices");
  ASSERT_EQ(notices["notices"].size(), 2u) << notices.dump();
  for (const Json& n : notices["notices"]) {
    EXPECT_NE(n["reason"].get<std::string>().find("to make room on host h1 for a new guest"), std::string::npos);
    EXPECT_EQ(n.dump().find("acme"), std::string::npos) << "names the admitted guest's tenant: " << n.dump();
    if (n["guest"] == "p") {
      EXPECT_EQ(n["action"], "stop");
    }
    if (n["guest"] == "e") {
      EXPECT_EQ(n["after"]["memory_mib"], 384);
    }
  }
  Tick();  // delivered; e's counter is declined
  Tick();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'notice.counter_declined'"), 1);
  EXPECT_EQ(cluster_.StateOf("h1", "acme:n"), "");  // not created before the room is given back

  clock_.Advance(std::chrono::milliseconds(config_.lease_notice_ms + 1000));
  Tick();  // acted on at the deadline: p stops, e shrinks
  SettleNoticeTasks();
  Tick();  // the room is back: the create runs
  EXPECT_TRUE(Eventually([&] { return cluster_.StateOf("h1", "acme:n") == "running"; }));
  EXPECT_EQ(cluster_.StateOf("h1", "p"), "shutoff");
  EXPECT_EQ(MemoryOf("e"), 384);
  EXPECT_EQ(MemoryOf("g"), 256);
  EXPECT_EQ(Lease(e)["granted"]["memory_mib"], 384);
  EXPECT_EQ(Lease(p)["state"], "closed");
  EXPECT_EQ(ReservedOn("h1"), 256 + 384 + 384);  // p, preempted, holds nothing

  // p's room is n's now: starting p again is refused, saying why; nothing is taken for it.
  auto start = Client().Do("POST", "/api/v1/guests/p/start");
  EXPECT_EQ(start->status, 409) << start->body;
  EXPECT_NE(start->body.find("needs its 256 MiB back (its lease ended) on host h1, which has 0 MiB"), std::string::npos)
      << start->body;
  // A guaranteed guest with nothing left to take, and a preemptible one, are refused as before.
  Json more = {{"name", "m"}, {"image", "tiny"}, {"memory_mib", 512}};
  auto refused = Client(acme).Do("POST", "/api/v1/guests", more.dump());
  EXPECT_EQ(refused->status, 409) << refused->body;
  Json pre = {{"name", "q"}, {"image", "tiny"}, {"memory_mib", 128}, {"lease_class", "preemptible"}};
  EXPECT_EQ(Client(acme).Do("POST", "/api/v1/guests", pre.dump())->status, 409);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM notices"), 2);
}

TEST_F(AdmissionTest, ARestartedManagerRunsAWaitingCreateOnceItsRoomIsBack) {
  StartManager();
  AddHost("h1", 4, 512);
  Create("p", {{"lease_class", "preemptible"}, {"memory_mib", 512}});
  Json body = {{"name", "n"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto r = Client().Call("POST", "/api/v1/guests", &body);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const std::string task = (*r)["id"];
  StopManager();  // a restart: the task is recovered, and waits still
  StartManager();
  EXPECT_EQ((*Client().Call("GET", "/api/v1/tasks/" + task))["state"], "pending");
  clock_.Advance(std::chrono::milliseconds(config_.lease_notice_ms + 1000));
  Tick();
  SettleNoticeTasks();
  Tick();
  EXPECT_EQ(WaitTask(*Client().Call("GET", "/api/v1/tasks/" + task))["state"], "succeeded");
  EXPECT_EQ(cluster_.StateOf("h1", "n"), "running");
  EXPECT_EQ(cluster_.StateOf("h1", "p"), "shutoff");
}

TEST_F(AdmissionTest, NothingIsTakenForAGuestThatWillNotComeOrFromOneThatIsGone) {
  StartManager();
  AddHost("h1", 4, 768);
  Create("p", {{"lease_class", "preemptible"}, {"memory_mib", 512}});
  std::string e = Create("e", {{"lease_class", "elastic"}, {"memory_mib", 256}});
  Json body = {{"name", "n"}, {"image", "tiny"}, {"memory_mib", 384}};
  auto r = Client().Call("POST", "/api/v1/guests", &body);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // The waiting create is cancelled: its notice is withdrawn and p keeps running past the deadline.
  auto cancel = Client().Do("POST", "/api/v1/tasks/" + (*r)["id"].get<std::string>() + "/cancel");
  ASSERT_EQ(cancel->status, 200) << cancel->body;
  Json made = *Client().Call("GET", "/api/v1/notices?guest=p");
  ASSERT_EQ(made["notices"].size(), 1u);
  EXPECT_EQ(made["notices"][0]["state"], "withdrawn");
  // A notice open against a guest that is deleted is withdrawn with it, not acted on.
  Json n = Reclaim(e, {{"memory_mib", 128}, {"notice_s", 60}});
  auto del = Client().Do("DELETE", "/api/v1/guests/e?force=true");
  ASSERT_LT(del->status, 300) << del->body;
  SettleTasks();
  EXPECT_EQ(Notice(n["id"])["state"], "withdrawn");
  clock_.Advance(std::chrono::milliseconds(config_.lease_notice_ms + 61000));
  Tick();
  SettleTasks();
  EXPECT_EQ(cluster_.StateOf("h1", "p"), "running");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM repossessions"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'notice.withdrawn'"), 2);
}

TEST_F(AdmissionTest, ALeaseKeepsItsGuestsCpuSharesAndTheProportionalBrokerWeighsThem) {
  config_.lease_reclaim_policy = lease::BrokerPolicy::kProportional;
  StartManager();
  AddHost("h1", 4, 4096);
  std::string heavy = Create("heavy", {{"lease_class", "elastic"},
                                       {"memory_mib", 1024},
                                       {"lease_floor", {{"memory_mib", 16}}},
                                       {"cpu", {{"shares", 2048}}}});
  Create("light", {{"lease_class", "elastic"}, {"memory_mib", 1024}, {"lease_floor", {{"memory_mib", 16}}}});
  EXPECT_EQ(Lease(heavy)["shares"], 2048);
  EXPECT_EQ(cluster_.CreateSpec("h1", "heavy")["cpu"]["shares"], 2048);  // its cputune weight
  // The setting's policy: twice the shares, half the weight.
  Json body = {{"memory_mib", 300}};
  auto r = Client().Call("POST", "/api/v1/hosts/h1/reclaim", &body);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["policy"], "proportional");
  ASSERT_EQ((*r)["notices"].size(), 2u) << r->dump();
  for (const Json& n : (*r)["notices"]) {
    EXPECT_EQ(n["after"]["memory_mib"], n["guest"] == "heavy" ? 1024 - 100 : 1024 - 200) << n.dump();
  }
}

TEST_F(AdmissionTest, TheSettingsNameThePolicyAndCanRefuseToReclaim) {
  auto with = [](Json more) {
    Json j = {
        {"db_path", "/tmp/uw.db"}, {"join_token", "join-token-0123456789"}, {"admin_token", "admin-token-0123456789"}};
    j.update(more);
    return ManagerConfigFromJson(j, "uw.json");
  };
  auto c = with({{"lease_reclaim_policy", "market"}, {"lease_admission", "refuse"}});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->lease_reclaim_policy, lease::BrokerPolicy::kMarket);
  EXPECT_EQ(c->lease_admission, "refuse");
  EXPECT_EQ(with(Json::object())->lease_reclaim_policy, lease::BrokerPolicy::kStrictPriority);
  auto bad = with({{"lease_reclaim_policy", "auction"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("lease_reclaim_policy"), std::string::npos) << bad.status().ToString();
  EXPECT_FALSE(with({{"lease_admission", "maybe"}}).ok());
  EXPECT_EQ(with({{"lease_broker", "policy"}})->lease_broker, "policy");
  auto broker = with({{"lease_broker", "haggle"}});
  ASSERT_FALSE(broker.ok());
  EXPECT_NE(broker.status().message().find("expected accept, decline or policy"), std::string::npos)
      << broker.status().ToString();

  config_.lease_admission = "refuse";
  StartManager();
  AddHost("h1", 4, 512);
  Create("p", {{"lease_class", "preemptible"}, {"memory_mib", 512}});
  auto r = Client().Do("POST", "/api/v1/guests", R"({"name": "n", "image": "tiny", "memory_mib": 256})");
  EXPECT_EQ(r->status, 409) << r->body;
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM notices"), 0);
}

TEST_F(AdmissionTest, AGuestGrowsOnlyIntoRoomNoOtherGrantHolds) {
  StartManager();
  AddHost("h1", 4, 1024);
  std::string e =
      Create("e", {{"lease_class", "elastic"}, {"memory_mib", 512}, {"lease_floor", {{"memory_mib", 256}}}});
  cluster_.SetExecOutput("e", "uw-notice", "ack\n");
  Reclaim(e, {{"memory_mib", 256}, {"notice_s", 60}});
  Tick();
  SettleTasks();
  EXPECT_EQ(MemoryOf("e"), 256);
  EXPECT_EQ(ReservedOn("h1"), 256);
  // The room e gave back is admitted to another guest.
  Create("x", {{"memory_mib", 768}});
  EXPECT_EQ(ReservedOn("h1"), 1024);
  // Growing back into it is refused, by a resize and by an extension, saying where and how much.
  auto grow = Client().Do("POST", "/api/v1/guests/e/resize", R"({"memory_mib": 512})");
  EXPECT_EQ(grow->status, 409) << grow->body;
  EXPECT_NE(grow->body.find("growing guest 'e' by 256 MiB needs room on host h1, which has 0 MiB"), std::string::npos)
      << grow->body;
  auto extend = Client().Do("POST", "/api/v1/leases/" + e + "/extend", R"({"memory_mib": 512})");
  EXPECT_EQ(extend->status, 409) << extend->body;
  EXPECT_EQ(Lease(e)["granted"]["memory_mib"], 256);
  EXPECT_EQ(MemoryOf("e"), 256);
}

}  // namespace
}  // namespace uw::manager
