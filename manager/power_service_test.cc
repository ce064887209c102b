// The manager's power management (manager/power_service.h) on in-memory agents and a fake clock,
// with `exec` power drivers whose BMC is a file (the ipmi driver against a real ipmi_sim is
// tests/manager_integration_test's).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "manager/ha_service.h"
#include "manager/manager_fixture.h"

namespace uw::manager {
namespace {

using testing::kAdmin;
using testing::ManagerTest;

class PowerTest : public ManagerTest {
 protected:
  // A manager (heartbeat timeout 10 s) with hosts h1, holding guest g, and h2.
  void StartWithGuestGOnH1() {
    config_.heartbeat_timeout_ms = 10000;
    StartManager();
    AddHost("h1");
    Json vm = {{"name", "g"}, {"image", "tiny"}, {"memory_mib", 64}};
    ASSERT_EQ(WaitTask(*Client().Call("POST", "/api/v1/guests", &vm))["state"], "succeeded");
    AddHost("h2");
  }
  Result<api::ClientResponse> Power(const std::string& host, const std::string& action) {
    Json body = {{"action", action}};
    return Client().Do("POST", "/api/v1/hosts/" + host + "/power", body.dump());
  }
};

TEST_F(PowerTest, APowerDriversSecretNeverLeavesTheManager) {
  config_.ipmitool = "false";  // a BMC that does not answer, at once
  StartManager();
  AddHost("h1");
  Json ipmi = {{"driver", "ipmi"}, {"address", "10.77.0.1"}, {"username", "admin"}, {"password", "pw-0123456789"}};
  Json ops = {{"name", "ops"}, {"role", "operator"}};
  const std::string token = (*Client().Call("POST", "/api/v1/tokens", &ops))["token"];
  EXPECT_EQ(Client(token).Do("PUT", "/api/v1/hosts/h1/power-driver", ipmi.dump())->status, 403);
  auto set = Client().Do("PUT", "/api/v1/hosts/h1/power-driver", ipmi.dump());
  ASSERT_EQ(set->status, 200) << set->body;
  EXPECT_EQ(set->body.find("pw-0123456789"), std::string::npos) << set->body;
  EXPECT_NE(set->body.find("\"password_set\":true"), std::string::npos) << set->body;
  // The BMC is not there: its status is an error in the view, not a failed request.
  auto shown = Client().Do("GET", "/api/v1/hosts/h1/power", "");
  ASSERT_EQ(shown->status, 200) << shown->body;
  EXPECT_EQ(shown->body.find("pw-0123456789"), std::string::npos);
  EXPECT_NE(Json::parse(shown->body)["bmc"]["error"].get<std::string>().find("host 'h1' (ipmi 10.77.0.1:623)"),
            std::string::npos)
      << shown->body;
  EXPECT_EQ(AllEvents().find("pw-0123456789"), std::string::npos);
  // Changing the address alone keeps the password.
  Json moved = ipmi;
  moved.erase("password");
  moved["address"] = "10.77.0.9";
  EXPECT_EQ(Client().Do("PUT", "/api/v1/hosts/h1/power-driver", moved.dump())->status, 200);
  EXPECT_NE(manager_->store().Query("SELECT config FROM host_power")->at(0).Str("config").find("pw-0123456789"),
            std::string::npos);
  // Bad configs name the field; an unknown host is 404.
  Json bad = ipmi;
  bad["driver"] = "redfish";
  auto r = Client().Do("PUT", "/api/v1/hosts/h1/power-driver", bad.dump());
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("address: only for the ipmi driver"), std::string::npos) << r->body;
  EXPECT_EQ(Client().Do("PUT", "/api/v1/hosts/nope/power-driver", ipmi.dump())->status, 404);
}

TEST_F(PowerTest, AnEmptyHostGoesToStandbyAndWakesThroughItsDriver) {
  StartManager();
  AddHost("h1");
  AddHost("h2");
  ASSERT_EQ(Client().Do("PUT", "/api/v1/hosts/h2/power-driver", ExecDriver("h2").dump())->status, 200);
  auto off = Power("h2", "off");
  ASSERT_EQ(off->status, 200) << off->body;
  EXPECT_EQ(Json::parse(off->body)["phase"], "standby");
  EXPECT_EQ(Bmc("h2"), "off");
  EXPECT_EQ((*Client().Call("GET", "/api/v1/hosts/h2"))["state"], "standby");
  // A host that is off is not missed: no host.disconnected for it.
  clock_.Advance(std::chrono::milliseconds(3 * config_.heartbeat_timeout_ms));
  Heartbeat("h1");
  manager_->CheckHeartbeats();
  std::string events = AllEvents();
  EXPECT_NE(events.find("host.entering_standby"), std::string::npos);
  EXPECT_NE(events.find("host.standby"), std::string::npos);
  EXPECT_EQ(events.find("host.disconnected"), std::string::npos) << events;
  // No guest is placed on it.
  Json vm = {{"name", "g"}, {"image", "tiny"}, {"memory_mib", 64}};
  auto created = Client().Call("POST", "/api/v1/guests", &vm);
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(WaitTask(*created)["result"]["host"], "h1");
  EXPECT_EQ(Power("h2", "off")->status, 409);  // in standby already
  // On: the BMC says on, the host is waking until its agent joins, then on with its wake path tested.
  auto on = Power("h2", "on");
  ASSERT_EQ(on->status, 200) << on->body;
  EXPECT_EQ(Json::parse(on->body)["phase"], "waking");
  EXPECT_EQ(Bmc("h2"), "on");
  EXPECT_EQ(Power("h2", "on")->status, 409);  // in another power operation
  clock_.Advance(std::chrono::milliseconds(4200));
  AddHost("h2");
  auto after = Client().Call("GET", "/api/v1/hosts/h2/power");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)["phase"], "on");
  EXPECT_FALSE((*after)["wake_tested"].is_null());
  EXPECT_EQ((*after)["bmc"]["state"], "on");
  EXPECT_EQ((*Client().Call("GET", "/api/v1/hosts/h2"))["state"], "connected");
  EXPECT_NE(AllEvents().find("\"wake_ms\":4200"), std::string::npos);
}

// The race that Wake-on-LAN's test on the test bed lost: a driver that infers "on" from the agent
// answering lets the agent's link beat before the power operation records "waking". That first
// beat (host in standby, no join) changes nothing; the next one completes the wake.
TEST_F(PowerTest, AHostThatBeatsBeforeItsWakeIsRecordedIsWokenByItsNextBeat) {
  StartManager();
  AddHost("h1");
  AddHost("h2");
  ASSERT_EQ(Client().Do("PUT", "/api/v1/hosts/h2/power-driver", ExecDriver("h2").dump())->status, 200);
  ASSERT_EQ(Power("h2", "off")->status, 200);
  Heartbeat("h2");  // its agent back, beating with the token it had: the manager has not asked for on yet
  auto view = Client().Call("GET", "/api/v1/hosts/h2/power");
  EXPECT_EQ((*view)["phase"], "standby") << view->dump();
  auto on = Power("h2", "on");
  ASSERT_EQ(on->status, 200) << on->body;
  EXPECT_EQ(Json::parse(on->body)["phase"], "waking");
  Heartbeat("h2");  // connected already: no reconnect, yet this beat completes the wake
  view = Client().Call("GET", "/api/v1/hosts/h2/power");
  EXPECT_EQ((*view)["phase"], "on") << view->dump();
  EXPECT_FALSE((*view)["wake_tested"].is_null());
  EXPECT_EQ((*Client().Call("GET", "/api/v1/hosts/h2"))["state"], "connected");
  EXPECT_NE(AllEvents().find("host.woken h2"), std::string::npos) << AllEvents();
}

TEST_F(PowerTest, PowerOffIsRefusedWithGuestsForTheLastHostAndWithoutADriver) {
  StartManager();
  AddHost("h1");
  AddHost("h2");
  for (const char* h : {"h1", "h2"}) {
    ASSERT_EQ(Client().Do("PUT", std::string("/api/v1/hosts/") + h + "/power-driver", ExecDriver(h).dump())->status,
              200);
  }
  Json vm = {{"name", "busy"}, {"image", "tiny"}, {"memory_mib", 64}};
  auto created = Client().Call("POST", "/api/v1/guests", &vm);
  const std::string host = WaitTask(*created)["result"]["host"];
  const std::string other = host == "h1" ? "h2" : "h1";
  auto r = Power(host, "off");
  EXPECT_EQ(r->status, 409);
  EXPECT_NE(r->body.find("still has 1 guest(s) (busy): put it in maintenance"), std::string::npos) << r->body;
  EXPECT_EQ(Bmc(host), "on");
  ASSERT_EQ(Power(other, "off")->status, 200);
  // Now `host` is the last one on (and still has its guest): delete the guest, still refused.
  ASSERT_EQ(WaitTask(*Client().Call("DELETE", "/api/v1/guests/busy?force=true"))["state"], "succeeded");
  r = Power(host, "off");
  EXPECT_EQ(r->status, 409);
  EXPECT_NE(r->body.find("is the last host on"), std::string::npos) << r->body;
  EXPECT_EQ(Bmc(host), "on");
  // Bad requests.
  EXPECT_EQ(Power(host, "explode")->status, 400);
  EXPECT_EQ(Power("nope", "off")->status, 404);
  AddHost("h3");
  r = Power("h3", "off");
  EXPECT_EQ(r->status, 409);
  EXPECT_NE(r->body.find("has no power driver"), std::string::npos) << r->body;
  // A host in standby keeps its driver: it is its way back.
  EXPECT_EQ(Client().Do("DELETE", "/api/v1/hosts/" + other + "/power-driver", "")->status, 409);
}

TEST_F(PowerTest, AFailingBmcLeavesTheHostOnWithAnEventAndNoSecret) {
  StartManager();
  AddHost("h1");
  AddHost("h2");
  ASSERT_EQ(Client().Do("PUT", "/api/v1/hosts/h2/power-driver", ExecDriver("h2", true).dump())->status, 200);
  auto r = Power("h2", "off");
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_NE(r->body.find("off_command exited with 1: BMC busy (***)"), std::string::npos) << r->body;
  auto p = Client().Call("GET", "/api/v1/hosts/h2/power");
  EXPECT_EQ((*p)["phase"], "on");
  EXPECT_NE((*p)["last_error"].get<std::string>().find("BMC busy"), std::string::npos);
  const std::string events = AllEvents();
  EXPECT_NE(events.find("host.power_failed"), std::string::npos);
  EXPECT_EQ(events.find("pw-0123456789"), std::string::npos);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/hosts/h2"))["state"], "connected");
}

TEST_F(PowerTest, AHostWhoseAgentNeverReturnsRaisesWakeFailedOnce) {
  config_.power_wake_timeout_ms = 60000;
  StartManager();
  AddHost("h1");
  AddHost("h2");
  ASSERT_EQ(Client().Do("PUT", "/api/v1/hosts/h2/power-driver", ExecDriver("h2").dump())->status, 200);
  ASSERT_EQ(Power("h2", "off")->status, 200);
  ASSERT_EQ(Power("h2", "on")->status, 200);
  clock_.Advance(std::chrono::seconds(61));
  Heartbeat("h1");
  manager_->CheckHeartbeats();
  manager_->CheckHeartbeats();
  const std::string events = AllEvents();
  const size_t first = events.find("host.wake_failed");
  ASSERT_NE(first, std::string::npos) << events;
  EXPECT_EQ(events.find("host.wake_failed", first + 1), std::string::npos);
  auto p = Client().Call("GET", "/api/v1/hosts/h2/power");
  EXPECT_EQ((*p)["phase"], "waking");
  EXPECT_NE((*p)["last_error"].get<std::string>().find("its agent has not joined"), std::string::npos);
}

// DPM in automatic mode on an idle cluster: after the hysteresis, empty hosts whose wake path was
// tested go to standby through their drivers (one never woken is blocked, one kept on is left);
// when more hosts must be on, a standby host is powered on again.
TEST_F(PowerTest, DpmPowersIdleHostsOffAfterItsHysteresisAndBackOnWhenNeeded) {
  StartManager();
  for (const char* h : {"h1", "h2", "h3"}) {
    AddHost(h);
    ASSERT_EQ(Client().Do("PUT", std::string("/api/v1/hosts/") + h + "/power-driver", ExecDriver(h).dump())->status,
              200);
  }
  // h2's wake path is tested once by hand (off, on, its agent back).
  ASSERT_EQ(Power("h2", "off")->status, 200);
  ASSERT_EQ(Power("h2", "on")->status, 200);
  AddHost("h2");
  ASSERT_EQ((*Client().Call("GET", "/api/v1/hosts/h2/power"))["phase"], "on");
  Json cfg = {{"dpm", {{"mode", "automatic"}, {"hysteresis_s", 60}, {"keep_on", {"h1"}}, {"band", {45, 81}}}}};
  auto set = Client().Do("PUT", "/api/v1/drs/config", cfg.dump());
  ASSERT_EQ(set->status, 200) << set->body;
  EXPECT_EQ(Json::parse(set->body)["dpm"]["mode"], "automatic");
  auto power = [&] { return (*Client().Call("GET", "/api/v1/drs/power"))["power"]; };
  auto state_of = [&](const std::string& host, const std::string& action) -> Json {
    for (const auto& a : power()) {
      if (a["host"] == host && a["action"] == action) return a;
    }
    return Json();
  };
  ASSERT_TRUE(Client().Call("POST", "/api/v1/drs/run").ok());
  // Planned, but not yet for 60 s: nothing is switched.
  EXPECT_EQ(state_of("h2", "off")["state"], "waiting") << power().dump();
  EXPECT_TRUE(state_of("h1", "off").is_null()) << "h1 is kept on: " << power().dump();
  EXPECT_EQ(Bmc("h2"), "on");
  clock_.Advance(std::chrono::seconds(61));
  ASSERT_TRUE(Client().Call("POST", "/api/v1/drs/run").ok());
  EXPECT_EQ(state_of("h2", "off")["state"], "acted") << power().dump();
  EXPECT_EQ(Bmc("h2"), "off");
  EXPECT_EQ((*Client().Call("GET", "/api/v1/hosts/h2"))["state"], "standby");
  Json h3 = state_of("h3", "off");
  EXPECT_EQ(h3["state"], "blocked") << power().dump();
  EXPECT_NE(h3["note"].get<std::string>().find("wake path is not tested"), std::string::npos);
  EXPECT_EQ(Bmc("h3"), "on");
  // Every host must be on now: DPM wakes h2 (at once: hysteresis 0).
  cfg = {{"dpm", {{"min_hosts_on", 3}, {"hysteresis_s", 0}}}};
  ASSERT_EQ(Client().Do("PUT", "/api/v1/drs/config", cfg.dump())->status, 200);
  ASSERT_TRUE(Client().Call("POST", "/api/v1/drs/run").ok());
  EXPECT_EQ(state_of("h2", "on")["state"], "acted") << power().dump();
  EXPECT_EQ(Bmc("h2"), "on");
  EXPECT_EQ((*Client().Call("GET", "/api/v1/hosts/h2/power"))["phase"], "waking");
  const std::string events = AllEvents();
  EXPECT_NE(events.find("dpm.power_off h2"), std::string::npos) << events;
  EXPECT_NE(events.find("dpm.power_on h2"), std::string::npos) << events;
  // Bad settings name the field.
  for (const Json& bad : {Json{{"dpm", {{"mode", "sometimes"}}}}, Json{{"dpm", {{"band", {81, 45}}}}},
                          Json{{"dpm", {{"min_hosts_on", 0}}}}, Json{{"dpm", {{"hysteresis_s", -1}}}}}) {
    auto r = Client().Do("PUT", "/api/v1/drs/config", bad.dump());
    EXPECT_EQ(r->status, 400) << bad.dump();
    EXPECT_NE(r->body.find("dpm"), std::string::npos) << r->body;
  }
}

// HA: a host that stops heartbeating, whose agent does not answer and whose BMC says on, is
// isolated; after isolation_s it is fenced (its BMC says off), and its guests that can run
// elsewhere are restarted on the other host, high priority first; the one with a local disk is
// lost with its host. When the fenced host comes back, its stale copies are removed.
TEST_F(PowerTest, HaFencesASilentHostAndRestartsItsGuestsElsewhere) {
  config_.heartbeat_timeout_ms = 10000;
  StartManager();
  AddHost("h1");
  auto create = [&](const std::string& name, const Json& extra) {
    Json vm = {{"name", name}, {"image", "tiny"}, {"memory_mib", 64}};
    vm.update(extra);
    Json t = WaitTask(*Client().Call("POST", "/api/v1/guests", &vm));
    ASSERT_EQ(t["state"], "succeeded") << t.dump();
  };
  create("low", {{"restart_priority", "low"}});
  create("high", {{"restart_priority", "high"}});
  create("off", {{"restart_priority", "disabled"}});
  create("disk", {{"disks", {{{"size_mib", 64}}}}});
  AddHost("h2");
  for (const char* h : {"h1", "h2"}) {
    ASSERT_EQ(Client().Do("PUT", std::string("/api/v1/hosts/") + h + "/power-driver", ExecDriver(h).dump())->status,
              200);
  }
  Json cfg = {{"ha", {{"enabled", true}, {"host_failures", 0}, {"isolation_s", 5}}}};
  ASSERT_EQ(Client().Do("PUT", "/api/v1/drs/config", cfg.dump())->status, 200);

  cluster_.SetDown("h1", true);  // its OS died: the agent does not answer; the BMC still says on
  clock_.Advance(std::chrono::seconds(11));
  Heartbeat("h2");
  manager_->CheckHeartbeats();
  ASSERT_TRUE(manager_->RunHa().ok());
  auto state = [&](const std::string& h) { return (*Client().Call("GET", "/api/v1/hosts/" + h))["state"]; };
  EXPECT_EQ(state("h1"), "isolated");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.recover'"), 0) << "restarted before a fence";
  // An operator's power-off of an isolated host is refused: HA fences it.
  EXPECT_EQ(Power("h1", "off")->status, 409);

  clock_.Advance(std::chrono::seconds(6));
  Heartbeat("h2");
  ASSERT_TRUE(manager_->RunHa().ok());
  EXPECT_EQ(Bmc("h1"), "off");
  EXPECT_EQ(state("h1"), "failed");
  ASSERT_TRUE(Eventually([&] {
    for (const char* g : {"high", "low"}) {
      auto r = Client().Call("GET", std::string("/api/v1/guests/") + g);
      if (!r.ok() || (*r)["host"] != "h2" || (*r)["state"] != "running") return false;
    }
    return true;
  })) << AllEvents();
  EXPECT_TRUE(HasGuest("h2", "high"));
  EXPECT_TRUE(HasGuest("h2", "low"));
  Json disk = *Client().Call("GET", "/api/v1/guests/disk");
  EXPECT_EQ(disk["state"], "lost");
  EXPECT_EQ(disk["host"], "h1");
  Json off = *Client().Call("GET", "/api/v1/guests/off");
  EXPECT_EQ(off["host"], "h1");
  const std::string events = AllEvents();
  const size_t high = events.find("guest.restarting_elsewhere high"),
               low = events.find("guest.restarting_elsewhere low");
  ASSERT_NE(high, std::string::npos) << events;
  ASSERT_NE(low, std::string::npos) << events;
  EXPECT_LT(high, low) << "high priority restarts first";
  for (const char* e : {"host.isolated h1", "host.fencing h1", "host.fenced h1", "guest.lost disk",
                        "guest.not_restarted off", "guest.restarted_elsewhere high"}) {
    EXPECT_NE(events.find(e), std::string::npos) << e << "\n" << events;
  }
  // The lease saw its place taken: an urgent repossession record, readable by the guest's tenant.
  Json recs = *Client().Call("GET", "/api/v1/repossessions?guest=high");
  ASSERT_EQ(recs["repossessions"].size(), 1u) << recs.dump();
  EXPECT_NE(recs.dump().find("failed and was fenced"), std::string::npos) << recs.dump();

  // The host comes back (powered on) with its stale shut-off copies: removed, the guests run once.
  for (const char* g : {"high", "low", "off", "disk"}) cluster_.SetState("h1", g, "shutoff");
  cluster_.SetDown("h1", false);
  ASSERT_EQ(Power("h1", "on")->status, 200);
  LetTasksSettle();
  Heartbeat("h1");
  EXPECT_EQ(state("h1"), "connected");
  EXPECT_FALSE(HasGuest("h1", "high"));
  EXPECT_FALSE(HasGuest("h1", "low"));
  EXPECT_TRUE(HasGuest("h1", "disk"));
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/disk"))["state"], "shutoff");
}

// A failed host's guests that no powered-on host can take go to a standby host: HA powers it on
// through its driver and restarts them there once its agent has joined.
TEST_F(PowerTest, HaPowersOnAStandbyHostForGuestsNoOtherHostCanTake) {
  ASSERT_NO_FATAL_FAILURE(StartWithGuestGOnH1());
  for (const char* h : {"h1", "h2"}) {
    ASSERT_EQ(Client().Do("PUT", std::string("/api/v1/hosts/") + h + "/power-driver", ExecDriver(h).dump())->status,
              200);
  }
  ASSERT_EQ(Power("h2", "off")->status, 200);
  Json cfg = {{"ha", {{"enabled", true}, {"host_failures", 0}, {"isolation_s", 0}}}};
  ASSERT_EQ(Client().Do("PUT", "/api/v1/drs/config", cfg.dump())->status, 200);
  cluster_.SetDown("h1", true);
  clock_.Advance(std::chrono::seconds(11));
  manager_->CheckHeartbeats();
  ASSERT_TRUE(manager_->RunHa().ok());
  auto state = [&](const std::string& h) { return (*Client().Call("GET", "/api/v1/hosts/" + h))["state"]; };
  EXPECT_EQ(state("h1"), "failed") << AllEvents();
  EXPECT_EQ(state("h2"), "waking") << AllEvents();
  EXPECT_EQ(Bmc("h2"), "on");
  EXPECT_NE(AllEvents().find("ha.power_on h2"), std::string::npos) << AllEvents();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.recover'"), 0) << "placed on a host still off";
  ASSERT_TRUE(manager_->RunHa().ok());  // still waking: nothing more
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'ha.power_on'"), 1);
  AddHost("h2");  // its agent joins
  ASSERT_TRUE(manager_->RunHa().ok());
  ASSERT_TRUE(Eventually([&] {
    auto r = Client().Call("GET", "/api/v1/guests/g");
    return r.ok() && (*r)["host"] == "h2" && (*r)["state"] == "running";
  })) << AllEvents();
}

// HA restarts nothing it cannot be sure of: a host that comes back before its isolation ran out
// keeps its guests; a host whose fence fails, or that has no power driver, keeps them too, with an
// alert saying why.
TEST_F(PowerTest, HaRestartsNothingWithoutAConfirmedFence) {
  ASSERT_NO_FATAL_FAILURE(StartWithGuestGOnH1());
  AddHost("h3");
  Json cfg = {{"ha", {{"enabled", true}, {"host_failures", 0}, {"isolation_s", 5}}}};
  ASSERT_EQ(Client().Do("PUT", "/api/v1/drs/config", cfg.dump())->status, 200);
  auto state = [&](const std::string& h) { return (*Client().Call("GET", "/api/v1/hosts/" + h))["state"]; };
  auto silence = [&](const std::string& h, std::chrono::seconds s) {
    cluster_.SetDown(h, true);
    clock_.Advance(s);
    for (const char* other : {"h1", "h2", "h3"}) {
      if (other != h) Heartbeat(other);
    }
    manager_->CheckHeartbeats();
    ASSERT_TRUE(manager_->RunHa().ok());
  };
  // No power driver: it cannot be fenced.
  silence("h1", std::chrono::seconds(11));
  EXPECT_EQ(state("h1"), "disconnected");
  EXPECT_NE(AllEvents().find("host.fence_failed h1"), std::string::npos);
  EXPECT_NE(AllEvents().find("no power driver"), std::string::npos);
  // A driver whose off fails: isolated, the fence fails, nothing restarts.
  ASSERT_EQ(Client().Do("PUT", "/api/v1/hosts/h1/power-driver", ExecDriver("h1", true).dump())->status, 200);
  ASSERT_TRUE(manager_->RunHa().ok());
  EXPECT_EQ(state("h1"), "isolated");
  clock_.Advance(std::chrono::seconds(6));
  Heartbeat("h2");
  Heartbeat("h3");
  ASSERT_TRUE(manager_->RunHa().ok());
  EXPECT_EQ(state("h1"), "isolated");
  EXPECT_EQ(Bmc("h1"), "on");
  Json power = *Client().Call("GET", "/api/v1/hosts/h1/power");
  EXPECT_NE(power["last_error"].get<std::string>().find("fencing failed"), std::string::npos) << power.dump();
  EXPECT_EQ(power.dump().find("pw-0123456789"), std::string::npos) << "the secret leaked: " << power.dump();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.recover'"), 0);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/g"))["host"], "h1");
  // The operator may fix the driver of an isolated host (its fence failed).
  EXPECT_EQ(Client().Do("PUT", "/api/v1/hosts/h1/power-driver", ExecDriver("h1").dump())->status, 200);
  // It comes back before anyone fenced it: on again, its guest where it was.
  cluster_.SetDown("h1", false);
  Heartbeat("h1");
  EXPECT_EQ(state("h1"), "connected");
  EXPECT_EQ((*Client().Call("GET", "/api/v1/hosts/h1/power"))["phase"], "on");
  EXPECT_NE(AllEvents().find("host.recovered h1"), std::string::npos);
  ASSERT_TRUE(manager_->RunHa().ok());
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.recover'"), 0);
  // Bad settings name the field.
  for (const Json& bad : {Json{{"ha", {{"host_failures", -1}}}}, Json{{"ha", {{"isolation_s", 7200}}}},
                          Json{{"ha", {{"enabled", "yes"}}}}, Json{{"ha", {{"fence", true}}}}}) {
    auto r = Client().Do("PUT", "/api/v1/drs/config", bad.dump());
    EXPECT_EQ(r->status, 400) << bad.dump();
    EXPECT_NE(r->body.find("ha"), std::string::npos) << r->body;
  }
}

// Wake-on-LAN: off is the host's own shutdown through its agent, and the host is taken to be off
// once its agent is gone; on is a magic packet, repeated until the host answers; HA never fences
// through it.
TEST_F(PowerTest, WakeOnLanStandsAHostByThroughItsAgentButNeverFencesIt) {
  ASSERT_NO_FATAL_FAILURE(StartWithGuestGOnH1());
  // h2's NIC: a UDP socket that powers the in-memory host on when its magic packet arrives.
  const int nic = socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(nic, 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(at);
  ASSERT_EQ(bind(nic, reinterpret_cast<sockaddr*>(&at), sizeof(at)), 0);
  const timeval patience{10, 0};  // a packet that never comes fails the test, not hangs it
  setsockopt(nic, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof(patience));
  ASSERT_EQ(getsockname(nic, reinterpret_cast<sockaddr*>(&at), &len), 0);
  const Json wol = {
      {"driver", "wol"}, {"mac", "52:54:00:00:00:02"}, {"broadcast", "127.0.0.1"}, {"port", ntohs(at.sin_port)}};
  for (const char* h : {"h1", "h2"}) {
    auto set = Client().Do("PUT", std::string("/api/v1/hosts/") + h + "/power-driver", wol.dump());
    ASSERT_EQ(set->status, 200) << set->body;
    EXPECT_EQ(Json::parse(set->body)["driver"]["mac"], "52:54:00:00:00:02");
  }
  auto bmc = [&](const std::string& h) {
    return (*Client().Call("GET", "/api/v1/hosts/" + h + "/power"))["bmc"].value("state", "");
  };
  EXPECT_EQ(bmc("h2"), "on");  // its agent answers
  auto off = Power("h2", "off");
  ASSERT_EQ(off->status, 200) << off->body;
  EXPECT_EQ(Json::parse(off->body)["phase"], "standby");
  EXPECT_EQ(bmc("h2"), "off");  // its agent is gone
  // The manager's polls wait at the held gate until the packet has arrived and powered h2 on:
  // otherwise they race through the fake 30 s before this thread has read the packet.
  gate_.Hold(true);
  auto pending = std::async(std::launch::async, [&] { return Power("h2", "on"); });
  char packet[256];
  const ssize_t n = recv(nic, packet, sizeof(packet), 0);
  close(nic);
  EXPECT_EQ(n, 102);
  if (n == 102 && std::string(packet + 6, 6) == std::string("\x52\x54\x00\x00\x00\x02", 6)) {
    cluster_.SetDown("h2", false);
  }
  gate_.Hold(false);
  auto on = pending.get();
  ASSERT_EQ(on->status, 200) << on->body;
  EXPECT_EQ(Json::parse(on->body)["phase"], "waking");
  AddHost("h2");
  // HA: h1 falls silent; with only Wake-on-LAN it is neither isolated nor fenced, g stays put.
  Json cfg = {{"ha", {{"enabled", true}, {"host_failures", 0}, {"isolation_s", 0}}}};
  ASSERT_EQ(Client().Do("PUT", "/api/v1/drs/config", cfg.dump())->status, 200);
  cluster_.SetDown("h1", true);
  clock_.Advance(std::chrono::seconds(11));
  Heartbeat("h2");
  manager_->CheckHeartbeats();
  ASSERT_TRUE(manager_->RunHa().ok());
  ASSERT_TRUE(manager_->RunHa().ok());
  EXPECT_EQ((*Client().Call("GET", "/api/v1/hosts/h1"))["state"], "disconnected");
  const std::string events = AllEvents();
  EXPECT_NE(events.find("host.fence_failed h1"), std::string::npos) << events;
  EXPECT_NE(events.find("Wake-on-LAN, which cannot confirm that a host is off"), std::string::npos) << events;
  EXPECT_EQ(events.find("host.fencing h1"), std::string::npos) << events;
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.recover'"), 0);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/g"))["host"], "h1");
}

// What HA may restart on another host: no container, and only disks every host reaches.
TEST(HaRestartTest, GuestsOnSharedOrReadOnlyDisksCanRunElsewhere) {
  EXPECT_TRUE(internal::CanRunElsewhere("qemu", Json{{"name", "a"}}));
  EXPECT_TRUE(internal::CanRunElsewhere("qemu", Json{{"disks", Json::array({{{"rbd", "rbd/uw-vol-a"}}})}}));
  EXPECT_TRUE(
      internal::CanRunElsewhere("kvm", Json{{"disks", Json::array({{{"path", "/iso"}, {"read_only", true}}})}}));
  EXPECT_FALSE(internal::CanRunElsewhere("qemu", Json{{"disks", Json::array({{{"size_mib", 64}}})}}));
  EXPECT_FALSE(
      internal::CanRunElsewhere("qemu", Json{{"disks", Json::array({{{"rbd", "rbd/a"}}, {{"size_mib", 64}}})}}));
  EXPECT_FALSE(internal::CanRunElsewhere("lxc", Json{{"name", "c"}}));
}

}  // namespace
}  // namespace uw::manager
