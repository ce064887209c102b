// Power management on the real test bed: the manager powers a host off and on through its BMC
// (OpenIPMI's ipmi_sim in the host's namespace, reached with ipmitool over LAN+), and the host's
// agent comes back. Only IPMI switches the host here.
#include "tests/manager_it_fixture.h"

namespace uw {
namespace {

using it::BmcOf;
using it::ManagerIntegrationTest;
using it::MsSince;
using testing::WaitFor;

// The last connected host with no guests (the other tests leave theirs on the first hosts), or
// hosts.size() when there is none.
size_t IdleHost(const api::HttpClient& manager, const testing::Testbed& bed) {
  const auto& hosts = bed.hosts;
  for (size_t i = hosts.size(); i-- > 0;) {
    auto h = manager.Call("GET", "/api/v1/hosts/" + hosts[i].name);
    if (h.ok() && (*h)["state"] == "connected" && (*h)["guest_names"].empty()) return i;
  }
  return hosts.size();
}

// Sets `driver` as the power driver of the host at `path` and asks for off: refused (409, saying
// `why`), the host left on.
void ExpectOffRefused(const api::HttpClient& manager, const std::string& path, const Json& driver,
                      const std::string& why) {
  ASSERT_EQ(manager.Do("PUT", path + "/power-driver", driver.dump())->status, 200);
  auto refused = manager.Do("POST", path + "/power", R"({"action": "off"})");
  EXPECT_EQ(refused->status, 409) << refused->body;
  EXPECT_NE(refused->body.find(why), std::string::npos) << refused->body;
  EXPECT_EQ((*manager.Call("GET", path))["state"], "connected");
}

}  // namespace

namespace it {

void ManagerIntegrationTest::StandbyAndWake(size_t index, const Json& driver) {
  const std::string host = testbed_->hosts[index].name;
  const std::string path = "/api/v1/hosts/" + host;
  auto set = Client().Do("PUT", path + "/power-driver", driver.dump());
  ASSERT_EQ(set->status, 200) << set->body;
  if (driver.contains("password")) {
    EXPECT_EQ(set->body.find(driver["password"].get<std::string>()), std::string::npos) << set->body;
  }
  auto status = Client().Call("GET", path + "/power");
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ((*status)["bmc"]["state"], "on") << status->dump();

  // Off: confirmed (ipmi, redfish: the BMC; wol: the agent gone), the host in standby.
  auto t0 = std::chrono::steady_clock::now();
  auto off = Client().Do("POST", path + "/power", R"({"action": "off"})");
  ASSERT_EQ(off->status, 200) << off->body;
  const int64_t standby_ms = MsSince(t0);
  EXPECT_EQ(Json::parse(off->body)["phase"], "standby");
  EXPECT_EQ((*Client().Call("GET", path + "/power"))["bmc"]["state"], "off");
  EXPECT_EQ((*Client().Call("GET", path))["state"], "standby");
  EXPECT_FALSE(testbed_->Agent(index).Do("GET", "/healthz").ok()) << "the agent still answers on a host that is off";

  // On: the host boots; the agent comes back (its link heartbeats again) and the wake path is tested.
  t0 = std::chrono::steady_clock::now();
  auto on = Client().Do("POST", path + "/power", R"({"action": "on"})");
  ASSERT_EQ(on->status, 200) << on->body;
  const int64_t bmc_on_ms = MsSince(t0);
  EXPECT_EQ(Json::parse(on->body)["phase"], "waking");
  // The test bed's agents join through links in this process: restart this host's link, as the
  // agent's own would start with the agent.
  links_->at(index)->Stop();
  links_->at(index)->Start();
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = Client().Call("GET", path + "/power");
        return p.ok() && (*p)["phase"] == "on";
      },
      std::chrono::seconds(60), std::chrono::milliseconds(50)))
      << (*Client().Call("GET", path + "/power")).dump();
  const int64_t wake_ms = MsSince(t0);
  auto after = Client().Call("GET", path + "/power");
  EXPECT_FALSE((*after)["wake_tested"].is_null());
  EXPECT_EQ((*Client().Call("GET", path))["state"], "connected");
  EXPECT_TRUE(testbed_->Agent(index).Do("GET", "/healthz").ok());
  const std::string events = Events();
  for (const char* e : {"host.entering_standby", "host.standby", "host.waking", "host.woken"}) {
    EXPECT_NE(events.find(std::string("event: ") + e), std::string::npos) << e;
  }
  std::printf("power figures (%s): %s standby (off confirmed) in %lld ms; on asked in %lld ms; agent back in %lld ms\n",
              driver.value("driver", "?").c_str(), host.c_str(), static_cast<long long>(standby_ms),
              static_cast<long long>(bmc_on_ms), static_cast<long long>(wake_ms));
}

}  // namespace it

namespace {

TEST_F(ManagerIntegrationTest, AHostGoesToStandbyAndWakesThroughItsBmc) {
  WaitConnected();  // run alone (--gtest_filter), the agents may not have joined yet
  const size_t index = IdleHost(Client(), *testbed_);
  ASSERT_LT(index, testbed_->hosts.size()) << "no connected host without guests";
  const std::string host = testbed_->hosts[index].name;
  Json bmc = BmcOf(testbed_->dir, host);
  ASSERT_TRUE(bmc.is_object()) << "testbed.json has no bmc for " << host;
  const std::string path = "/api/v1/hosts/" + host;

  // Wrong credentials: a clear refusal, and the host stays on.
  Json wrong = bmc;
  wrong["password"] = "not-the-password";
  ExpectOffRefused(Client(), path, wrong, "the BMC refused the credentials");
  StandbyAndWake(index, bmc);
}

// The same through the BMC's Redfish service (HTTPS, its certificate checked against the one
// testbed.json gives): a wrong password and a wrong certificate are refused with the host left on.
TEST_F(ManagerIntegrationTest, AHostGoesToStandbyAndWakesThroughRedfish) {
  WaitConnected();
  const size_t index = IdleHost(Client(), *testbed_);
  ASSERT_LT(index, testbed_->hosts.size()) << "no connected host without guests";
  const std::string host = testbed_->hosts[index].name;
  const Json redfish = BmcOf(testbed_->dir, host, "redfish");
  ASSERT_TRUE(redfish.is_object()) << "testbed.json has no redfish for " << host;
  const std::string path = "/api/v1/hosts/" + host;
  Json wrong = redfish;
  wrong["password"] = "not-the-password";
  ExpectOffRefused(Client(), path, wrong, "the BMC refused the credentials (GET /redfish/v1/Systems: HTTP 401");
  Json untrusted = redfish;
  untrusted.erase("ca_cert");  // the system's CAs do not know the BMC's self-signed certificate
  ExpectOffRefused(Client(), path, untrusted, "the peer's certificate is not trusted");
  StandbyAndWake(index, redfish);
}

// Wake-on-LAN: off through the host's agent (its clean shutdown), on by a magic packet broadcast
// on the test bed's LAN that only this host's NIC answers. HA cannot fence through it.
TEST_F(ManagerIntegrationTest, AHostGoesToStandbyThroughItsAgentAndWakesOnLan) {
  WaitConnected();
  const size_t index = IdleHost(Client(), *testbed_);
  ASSERT_LT(index, testbed_->hosts.size()) << "no connected host without guests";
  const Json wol = BmcOf(testbed_->dir, testbed_->hosts[index].name, "wol");
  ASSERT_TRUE(wol.is_object()) << "testbed.json has no wol for " << testbed_->hosts[index].name;
  StandbyAndWake(index, wol);
}

// DPM in automatic mode on the real test bed: with nothing busy, the empty host goes to standby
// through its BMC; a guest burning a CPU on the host kept on raises the load above the band, and
// DPM powers the host on again (its agent back). Only IPMI switches hosts.
TEST_F(ManagerIntegrationTest, DpmPowersAnIdleHostOffAndWakesItWhenTheLoadRises) {
  WaitConnected();  // run alone (--gtest_filter), the agents may not have joined yet
  const size_t idle = IdleHost(Client(), *testbed_);
  ASSERT_LT(idle, testbed_->hosts.size()) << "no connected host without guests";
  const std::string host = testbed_->hosts[idle].name, kept = Other(host);
  const std::string path = "/api/v1/hosts/" + host;
  for (const auto& h : testbed_->hosts) {
    ASSERT_EQ(
        Client().Do("PUT", "/api/v1/hosts/" + h.name + "/power-driver", BmcOf(testbed_->dir, h.name).dump())->status,
        200);
  }
  auto phase = [&] {
    auto p = Client().Call("GET", path + "/power");
    return p.ok() ? (*p)["phase"].get<std::string>() : std::string("?");
  };
  auto back = [&] {  // the host's agent joins again (its link starts with it, as the agent's would)
    links_->at(idle)->Stop();
    links_->at(idle)->Start();
    return WaitFor([&] { return phase() == "on"; }, std::chrono::seconds(60), std::chrono::milliseconds(50));
  };
  // DPM only puts a host whose wake path was tested into standby: test it once.
  if ((*Client().Call("GET", path + "/power"))["wake_tested"].is_null()) {
    ASSERT_EQ(Client().Do("POST", path + "/power", R"({"action": "off"})")->status, 200);
    ASSERT_EQ(Client().Do("POST", path + "/power", R"({"action": "on"})")->status, 200);
    ASSERT_TRUE(back());
  }
  Json cfg = {{"dpm", {{"mode", "automatic"}, {"band", {10, 40}}, {"hysteresis_s", 0}, {"keep_on", {kept}}}}};
  ASSERT_EQ(Client().Do("PUT", "/api/v1/drs/config", cfg.dump())->status, 200);

  // Load falls (nothing burns): the idle host goes to standby.
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(Client().Call("POST", "/api/v1/drs/run").ok());
  const int64_t standby_ms = MsSince(t0);
  EXPECT_EQ(phase(), "standby") << (*Client().Call("GET", "/api/v1/drs/power")).dump();
  EXPECT_EQ((*Client().Call("GET", path + "/power"))["bmc"]["state"], "off");

  // Load rises: a guest on the host kept on burns a CPU (half of its two).
  ASSERT_NO_FATAL_FAILURE(CreateBooted("mit-dpm", 128, false));
  ASSERT_EQ(HostOf("mit-dpm"), kept);
  Json burn = {{"command", "burn 120"}};
  ASSERT_TRUE(AgentOf(kept).Call("POST", "/api/v1/guests/mit-dpm/exec", &burn).ok());
  t0 = std::chrono::steady_clock::now();
  // The heartbeats carry the guest's CPU use; DPM powers the host on once the cluster is above 40%.
  ASSERT_TRUE(WaitFor(
      [&] {
        (void)Client().Call("POST", "/api/v1/drs/run");
        return phase() == "waking" || phase() == "on";
      },
      std::chrono::seconds(60), std::chrono::milliseconds(500)))
      << (*Client().Call("GET", "/api/v1/drs/power")).dump();
  const int64_t woken_ms = MsSince(t0);
  ASSERT_TRUE(back());
  const int64_t back_ms = MsSince(t0);
  EXPECT_EQ((*Client().Call("GET", path + "/power"))["bmc"]["state"], "on");
  const std::string events = Events();
  EXPECT_NE(events.find("event: dpm.power_off"), std::string::npos);
  EXPECT_NE(events.find("event: dpm.power_on"), std::string::npos);
  std::printf(
      "dpm figures: %s to standby in %lld ms (one pass); powered on %lld ms after the guest began to burn; "
      "agent back after %lld ms\n",
      host.c_str(), static_cast<long long>(standby_ms), static_cast<long long>(woken_ms),
      static_cast<long long>(back_ms));
  cfg = {{"dpm", {{"mode", "off"}}}};
  EXPECT_EQ(Client().Do("PUT", "/api/v1/drs/config", cfg.dump())->status, 200);
  auto del = Client().Call("DELETE", "/api/v1/guests/mit-dpm?force=true");
  if (del.ok()) WaitTask(*del);
}

}  // namespace
}  // namespace uw
