// The manager's unit tests (manager/manager_fixture.h: in-memory agents, a fake clock).
// DRS and maintenance: recommendations, automatic mode, the timer, evacuation, the cooldown and rules.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "manager/manager_fixture.h"

namespace uw::manager {
namespace {

using testing::ManagerTest;

TEST_F(ManagerTest, DrsManualModeStoresRecommendationsWithReasons) {
  StartManager();
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  auto c = Client();
  // Pin both guests to h1 by putting h2 in maintenance, then bring h2 back: DRS should recommend.
  ASSERT_TRUE(c.Call("POST", "/api/v1/hosts/h2/maintenance").ok());
  for (int i = 0; i < 4; ++i) {
    Json body = {{"name", "busy" + std::to_string(i)}, {"image", "tiny"}, {"vcpus", 2}, {"memory_mib", 1024}};
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &body))["state"], "succeeded");
  }
  ASSERT_TRUE(c.Call("DELETE", "/api/v1/hosts/h2/maintenance").ok());
  auto plan = c.Call("POST", "/api/v1/drs/run");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  auto recs = c.Call("GET", "/api/v1/drs/recommendations");
  ASSERT_TRUE(recs.ok());
  ASSERT_FALSE((*recs)["recommendations"].empty()) << plan->dump();
  const Json& rec = (*recs)["recommendations"][0];
  EXPECT_EQ(rec["from"], "h1");
  EXPECT_EQ(rec["to"], "h2");
  EXPECT_FALSE(rec["reason"].get<std::string>().empty());
  EXPECT_GT(rec["imbalance_before"].get<double>(), rec["imbalance_after"].get<double>());
  // Applying starts a live migration task; the in-memory agents move the guest after two progress polls.
  const std::string moved = rec["guest"];
  auto apply = c.Call("POST", "/api/v1/drs/recommendations/" + rec["id"].get<std::string>() + "/apply");
  ASSERT_TRUE(apply.ok()) << apply.status().ToString();
  EXPECT_EQ((*apply)["kind"], "guest.migrate");
  Json done = WaitTask(*apply);
  ASSERT_EQ(done["state"], "succeeded") << done.dump();
  EXPECT_EQ(done["result"]["downtime_ms"], 5) << "the in-memory agent's downtime";
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/" + moved))["host"], "h2");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/" + moved))["migrating_to"], nullptr);
  EXPECT_TRUE(HasGuest("h2", moved));
  EXPECT_FALSE(HasGuest("h1", moved));
  auto migs = c.Call("GET", "/api/v1/migrations?guest=" + moved);
  ASSERT_TRUE(migs.ok());
  ASSERT_EQ((*migs)["migrations"].size(), 1u);
  EXPECT_EQ((*migs)["migrations"][0]["phase"], "done");
  EXPECT_EQ(c.Call("POST", "/api/v1/drs/recommendations/" + rec["id"].get<std::string>() + "/apply").status().code(),
            StatusCode::kFailedPrecondition)
      << "an applied recommendation cannot be applied twice";
  Json bad = {{"automation", "sometimes"}};
  EXPECT_EQ(c.Call("PUT", "/api/v1/drs/config", &bad).status().code(), StatusCode::kInvalidArgument);
  Json automatic = {{"automation", "automatic"}};
  EXPECT_EQ((*c.Call("PUT", "/api/v1/drs/config", &automatic))["automation"], "automatic");
  // Automatic mode applies through the same path.
  ASSERT_TRUE(c.Call("POST", "/api/v1/drs/run").ok());
  EXPECT_TRUE(Eventually([&] {
    return Count(
               "SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.migrate' AND "
               "state IN ('pending', 'running')") == 0;
  }));
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.migrate' AND state <> 'succeeded'"), 0);
  EXPECT_EQ(cluster_.GuestsOn("h1").size() + cluster_.GuestsOn("h2").size(), 4u) << "every guest runs exactly once";
  // The dry-run plan on an uploaded snapshot and the exported snapshot parse with the engine.
  auto snap = c.Call("GET", "/api/v1/cluster/snapshot");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ((*snap)["vms"].size(), 4u);
  Json req = {{"snapshot", *snap}};
  auto dry = c.Call("POST", "/api/v1/drs/plan", &req);
  ASSERT_TRUE(dry.ok()) << dry.status().ToString();
  EXPECT_TRUE((*dry)["moves"].empty()) << "automatic mode balanced the cluster: " << dry->dump();
}

TEST_F(ManagerTest, MaintenanceRecommendsMandatoryEvacuationAndTheLoopRunsDrsOnATimer) {
  config_.drs_interval_ms = 100;
  StartManager();
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  auto c = Client();
  Json pinned = {{"name", "pinned"}, {"image", "tiny"}, {"memory_mib", 512}, {"automation", "disabled"}};
  Json mobile = {{"name", "mobile"}, {"image", "tiny"}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &pinned))["state"], "succeeded");
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &mobile))["state"], "succeeded");
  // Cold moves allowed: still never for a disabled guest, nor for one whose migration is running
  // (the evacuation spans several DRS passes: each migration answers 3 progress polls first).
  Json cold = {{"allow_cold_moves", true}};
  auto cfg = c.Call("PUT", "/api/v1/drs/config", &cold);
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ((*cfg)["allow_cold_moves"], true);
  Json bad = {{"allow_cold_moves", "yes"}};
  EXPECT_EQ(c.Call("PUT", "/api/v1/drs/config", &bad).status().code(), StatusCode::kInvalidArgument);
  cluster_.Script("h1", "*", {.polls_to_complete = 3});
  cluster_.Script("h2", "*", {.polls_to_complete = 3});
  std::string host = (*c.Call("GET", "/api/v1/guests/mobile"))["host"];
  gate_.Hold(true);  // the evacuation's migration stays in flight (its polls wait) until released
  auto m = c.Call("POST", "/api/v1/hosts/" + host + "/maintenance");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE((*m)["maintenance"].get<bool>());
  EXPECT_EQ((*m)["state"], "maintenance");
  EXPECT_GE((*m)["evacuation"]["remaining"].get<int>(), 1);
  // The timer's DRS passes while the migration is in flight (checked below: not recommended again).
  const int64_t passes = Count("SELECT COUNT(*) AS n FROM events WHERE type = 'drs.pass'");
  EXPECT_TRUE(Eventually([&] {
    clock_.Advance(std::chrono::milliseconds(config_.drs_interval_ms));
    return Count("SELECT COUNT(*) AS n FROM events WHERE type = 'drs.pass'") > passes;
  }));
  gate_.Hold(false);
  // New guests avoid a host in maintenance.
  Json next = {{"name", "next"}, {"image", "tiny"}, {"memory_mib", 256}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &next))["state"], "succeeded");
  EXPECT_NE((*c.Call("GET", "/api/v1/guests/next"))["host"], host);
  // The evacuation of `mobile` is a mandatory (priority 1) move, recorded and applied.
  EXPECT_TRUE(Eventually([&] {
    bool found = false;
    auto recs = c.Call("GET", "/api/v1/drs/recommendations?all=true");
    for (const auto& r : (*recs)["recommendations"]) {
      if (r["guest"] == "mobile" && r["from"] == host && r["priority"] == 1) found = true;
      EXPECT_NE(r["guest"], "pinned") << "automation=disabled guests are never moved";
    }
    return found;
  }));
  // ... and evacuates it for real even in manual mode (mandatory moves), leaving the pinned guest.
  EXPECT_TRUE(Eventually([&] { return (*c.Call("GET", "/api/v1/guests/mobile"))["host"] != host; }));
  // The monitor loop runs DRS once the interval has passed on the (fake) clock.
  EXPECT_TRUE(Eventually([&] {
    clock_.Advance(std::chrono::milliseconds(config_.drs_interval_ms));
    return Count("SELECT COUNT(*) AS n FROM events WHERE type = 'drs.pass'") >= 3;
  }));
  EXPECT_GE(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'drs.pass'"), 3) << "the timer loop runs DRS";
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM recommendations WHERE note LIKE '%in flight%'"), 0)
      << "a guest being migrated was recommended again";
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM recommendations WHERE guest = 'pinned'"), 0);
  ASSERT_TRUE(c.Call("DELETE", "/api/v1/hosts/" + host + "/maintenance").ok());
  EXPECT_FALSE((*c.Call("GET", "/api/v1/hosts/" + host))["maintenance"].get<bool>());
  EXPECT_EQ((*c.Call("GET", "/api/v1/hosts/" + host))["state"], "connected");
}

// Issue 11: the DRS cooldown works on a live cluster. A guest that just moved (an operator's
// live move here) is not proposed again within min_move_interval_s; once it has passed, it is.
TEST_F(ManagerTest, DrsCooldownHoldsBackAGuestThatJustMoved) {
  StartManager();
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  auto c = Client();
  Json bad = {{"min_move_interval_s", -1}};
  EXPECT_EQ(c.Call("PUT", "/api/v1/drs/config", &bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*c.Call("GET", "/api/v1/drs/config"))["min_move_interval_s"], 3600) << "the engine's default";
  Json cooldown = {{"min_move_interval_s", 600}};
  EXPECT_EQ((*c.Call("PUT", "/api/v1/drs/config", &cooldown))["min_move_interval_s"], 600);
  // Two guests on one host: `anchor` never moves (automation disabled), `mover` arrives by a live move.
  Json anchor = {{"name", "anchor"}, {"image", "tiny"}, {"vcpus", 2}, {"memory_mib", 1024}, {"automation", "disabled"}};
  Json mover = {{"name", "mover"}, {"image", "tiny"}, {"vcpus", 2}, {"memory_mib", 1024}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &anchor))["state"], "succeeded");
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &mover))["state"], "succeeded");
  const std::string full = (*c.Call("GET", "/api/v1/guests/anchor"))["host"];
  const std::string empty = full == "h1" ? "h2" : "h1";
  if ((*c.Call("GET", "/api/v1/guests/mover"))["host"] != full) {
    Json to = {{"host", full}};
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/mover/migrate", &to))["state"], "succeeded");
  } else {
    // Placed together: move it away and back so that it has just moved.
    Json away = {{"host", empty}}, back = {{"host", full}};
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/mover/migrate", &away))["state"], "succeeded");
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/mover/migrate", &back))["state"], "succeeded");
  }
  auto moved_ago = [&] {
    const Json snap = *c.Call("GET", "/api/v1/cluster/snapshot");
    for (const auto& vm : snap["vms"]) {
      if (vm["name"] == "mover") return vm.value("last_moved_ago_s", -1.0);
    }
    return -2.0;
  };
  auto proposals = [&] {
    EXPECT_TRUE(c.Call("POST", "/api/v1/drs/run").ok());
    int n = 0;
    const Json recs = *c.Call("GET", "/api/v1/drs/recommendations");
    for (const auto& r : recs["recommendations"]) n += r["guest"] == "mover";
    return n;
  };
  EXPECT_DOUBLE_EQ(moved_ago(), 0.0);
  clock_.Advance(std::chrono::seconds(300));
  EXPECT_DOUBLE_EQ(moved_ago(), 300.0);
  EXPECT_EQ(proposals(), 0) << "moved 300 s ago, cooldown 600 s";
  clock_.Advance(std::chrono::seconds(301));
  EXPECT_EQ(proposals(), 1) << "the cooldown has passed; the host is still unbalanced";
  auto rec = (*c.Call("GET", "/api/v1/drs/recommendations"))["recommendations"][0];
  EXPECT_EQ(rec["from"], full);
  EXPECT_EQ(rec["to"], empty);
}

// Issue 11: rules may name guests before they exist (and apply to their placement); deleting a
// guest takes it out of every rule, and the cluster keeps working: create, plan and migrate.
TEST_F(ManagerTest, RulesNameFutureGuestsAndForgetDeletedOnes) {
  StartManager();
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  AddHost("h3", 4, 8192);
  auto c = Client();
  Json together = {{"name", "together"}, {"type", "vm-affinity"}, {"vms", {"x", "y"}}, {"required", true}};
  Json apart = {{"name", "apart"}, {"type", "vm-anti-affinity"}, {"vms", {"x", "z"}}, {"required", true}};
  Json pin = {{"name", "pin"}, {"type", "vm-host"}, {"vms", {"x"}}, {"hosts", {"h1", "h2", "h3"}}, {"mode", "must"}};
  for (const Json* r : {&together, &apart, &pin}) {
    auto made = c.Call("POST", "/api/v1/rules", r);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
  }
  EXPECT_EQ((*c.Call("GET", "/api/v1/rules/together"))["pending_guests"], Json({"x", "y"}));
  Json typo = {{"name", "typo"}, {"type", "vm-host"}, {"vms", {"x"}}, {"hosts", {"h9"}}, {"mode", "must"}};
  EXPECT_EQ(c.Call("POST", "/api/v1/rules", &typo).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Call("GET", "/api/v1/rules/typo").status().code(), StatusCode::kNotFound);
  // The rule applies to y's initial placement: with x, not on an empty host.
  Json x = {{"name", "x"}, {"image", "tiny"}, {"vcpus", 2}, {"memory_mib", 1024}},
       y = {{"name", "y"}, {"image", "tiny"}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &x))["state"], "succeeded");
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &y))["state"], "succeeded");
  const std::string xhost = (*c.Call("GET", "/api/v1/guests/x"))["host"];
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/y"))["host"], xhost);
  EXPECT_EQ((*c.Call("GET", "/api/v1/rules/together"))["pending_guests"], Json::array());
  // Delete x: it leaves every rule; a rule left without guests goes.
  ASSERT_EQ(WaitTask(*c.Call("DELETE", "/api/v1/guests/x?force=true"))["state"], "succeeded");
  EXPECT_EQ((*c.Call("GET", "/api/v1/rules/together"))["vms"], Json({"y"}));
  EXPECT_EQ((*c.Call("GET", "/api/v1/rules/apart"))["vms"], Json({"z"}));
  EXPECT_EQ(c.Call("GET", "/api/v1/rules/pin").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'rule.changed'"), 2);
  // ... and the cluster keeps working: snapshot, create, plan, migrate.
  auto snap = c.Call("GET", "/api/v1/cluster/snapshot");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  Json z = {{"name", "z"}, {"image", "tiny"}, {"memory_mib", 512}};
  auto zt = c.Call("POST", "/api/v1/guests", &z);
  ASSERT_TRUE(zt.ok()) << zt.status().ToString();
  ASSERT_EQ(WaitTask(*zt)["state"], "succeeded");
  Json empty = Json::object();
  auto plan = c.Call("POST", "/api/v1/drs/plan", &empty);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const std::string yhost = (*c.Call("GET", "/api/v1/guests/y"))["host"];
  Json to = {{"host", yhost == "h1" ? "h2" : "h1"}};
  auto mt = c.Call("POST", "/api/v1/guests/y/migrate", &to);
  ASSERT_TRUE(mt.ok()) << mt.status().ToString();
  EXPECT_EQ(WaitTask(*mt)["state"], "succeeded");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/y"))["host"], to["host"]);
}

// Issue 11: maintenance off while the evacuation runs cancels its migrations that have not
// switched over; the guests stay where they are.
TEST_F(ManagerTest, MaintenanceOffCancelsTheEvacuation) {
  config_.migration_caps.per_host = 1;  // one evacuation move runs, the next waits
  config_.migration_poll_ms = 50;
  StartManager();
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  auto c = Client();
  ASSERT_TRUE(c.Call("POST", "/api/v1/hosts/h2/maintenance").ok());
  for (const char* n : {"a", "b"}) {
    Json g = {{"name", n}, {"image", "tiny"}, {"memory_mib", 512}};
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &g))["state"], "succeeded");
  }
  ASSERT_TRUE(c.Call("DELETE", "/api/v1/hosts/h2/maintenance").ok());
  cluster_.Script("h1", "*", {.never_converges = true});  // transfers that never finish by themselves
  gate_.Hold(true);  // the transfer stays in flight (its poll waits) while maintenance goes off
  ASSERT_TRUE(c.Call("POST", "/api/v1/hosts/h1/maintenance").ok());
  ASSERT_TRUE(gate_.WaitForWaiting(1));
  ASSERT_TRUE(Eventually([&] { return Count("SELECT COUNT(*) AS n FROM migrations WHERE phase = 'transfer'") == 1; }));
  ASSERT_EQ(Count("SELECT COUNT(*) AS n FROM migrations WHERE phase = 'transfer'"), 1);
  ASSERT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.migrate' AND state = 'pending'"), 1);
  ASSERT_TRUE(c.Call("DELETE", "/api/v1/hosts/h1/maintenance").ok());
  gate_.Hold(false);
  EXPECT_TRUE(Eventually([&] {
    return Count(
               "SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.migrate' AND "
               "state IN ('pending', 'running')") == 0;
  }));
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.migrate' AND state = 'cancelled'"), 2);
  for (const char* n : {"a", "b"}) {
    Json g = *c.Call("GET", std::string("/api/v1/guests/") + n);
    EXPECT_EQ(g["host"], "h1") << n;
    EXPECT_EQ(g["migrating_to"], nullptr) << n;
    EXPECT_TRUE(HasGuest("h1", n)) << n;
    EXPECT_FALSE(HasGuest("h2", n)) << n;
  }
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'host.evacuation_cancelled'"), 1);
}

}  // namespace
}  // namespace uw::manager
