// High availability on the real test bed: a host's OS dies (its libvirtd, agent and QEMU killed;
// its power and BMC stay on). The manager finds it silent with its BMC saying on (isolated),
// fences it through IPMI, and restarts its image-booted guest on the other host; the guest with a
// local disk is reported lost. When the host is powered on again, the restarted guest runs once.
#include "tests/manager_it_fixture.h"

namespace uw {
namespace {

using it::BmcOf;
using it::ManagerIntegrationTest;
using it::MsSince;
using testing::WaitFor;

// `scripts/testbed crash HOST` on this test bed (the repository's script, found from the source dir).
int CrashHost(const std::string& testbed_dir, const std::string& host) {
  const char* src = std::getenv("UW_SOURCE_DIR");
  const std::string script = std::string(src ? src : ".") + "/scripts/testbed";
  const std::string cmd = "UW_TESTBED_DIR='" + testbed_dir + "' '" + script + "' crash " + host;
  return std::system(cmd.c_str());
}

TEST_F(ManagerIntegrationTest, AFailedHostIsFencedAndItsGuestsRestartElsewhere) {
  WaitConnected();
  for (const auto& h : testbed_->hosts) {
    ASSERT_EQ(
        Client().Do("PUT", "/api/v1/hosts/" + h.name + "/power-driver", BmcOf(testbed_->dir, h.name).dump())->status,
        200);
  }
  Json rule = {{"name", "mit-ha-together"}, {"type", "vm-affinity"}, {"vms", {"mit-ha-a", "mit-ha-disk"}}};
  ASSERT_EQ(Client().Do("POST", "/api/v1/rules", rule.dump())->status, 201);
  CreateBooted("mit-ha-a", 128, false, {{"restart_priority", "high"}});
  CreateBooted("mit-ha-disk", 128, true);
  const std::string victim = HostOf("mit-ha-a"), survivor = Other(victim);
  ASSERT_EQ(HostOf("mit-ha-disk"), victim);
  const size_t index = IndexOf(victim);
  const std::string path = "/api/v1/hosts/" + victim;
  Json cfg = {{"ha", {{"enabled", true}, {"host_failures", 0}, {"isolation_s", 2}}}};
  ASSERT_EQ(Client().Do("PUT", "/api/v1/drs/config", cfg.dump())->status, 200);

  // The OS dies; the power stays on.
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(CrashHost(testbed_->dir, victim), 0);
  auto power = [&] {
    auto p = Client().Call("GET", path + "/power");
    return p.ok() ? *p : Json::object();
  };
  int64_t isolated_ms = -1, fenced_ms = -1;
  bool twice = false;
  Json g;
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string phase = power().value("phase", "");
        if (isolated_ms < 0 && (phase == "isolated" || phase == "fencing" || phase == "failed"))
          isolated_ms = MsSince(t0);
        if (fenced_ms < 0 && phase == "failed") fenced_ms = MsSince(t0);
        auto r = Client().Call("GET", "/api/v1/guests/mit-ha-a");
        if (r.ok()) g = *r;
        // Never twice: while HA works the victim's agent is down, so any copy runs on the survivor.
        auto v = AgentOf(victim).Call("GET", "/api/v1/guests/mit-ha-a");
        if (v.ok() && (*v)["state"] == "running") twice = true;
        return g.value("host", "") == survivor && g["state"] == "running";
      },
      std::chrono::seconds(60), std::chrono::milliseconds(100)))
      << "not restarted within 60 s: " << g.dump() << "; power " << power().dump();
  const int64_t running_ms = MsSince(t0);
  EXPECT_FALSE(twice);
  EXPECT_GE(isolated_ms, 0) << "the host was never seen isolated";
  EXPECT_GE(fenced_ms, 0) << "the host was never seen failed (fenced)";
  EXPECT_EQ(power()["bmc"]["state"], "off") << "fenced means off";
  EXPECT_EQ((*Client().Call("GET", path))["state"], "failed");
  // The guest boots there and answers its control channel.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = Client().Call("GET", "/api/v1/guests/mit-ha-a");
        return r.ok() && (*r)["health"] == "ready";
      },
      std::chrono::seconds(120)))
      << Console(survivor, "mit-ha-a");
  const int64_t ready_ms = MsSince(t0);
  auto disk = Client().Call("GET", "/api/v1/guests/mit-ha-disk");
  EXPECT_EQ((*disk)["state"], "lost") << disk->dump();
  EXPECT_EQ((*disk)["host"], victim);
  // The repossession record of the place it lost.
  auto records = Client().Call("GET", "/api/v1/repossessions?guest=mit-ha-a");
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  EXPECT_NE(records->dump().find("failed and was fenced"), std::string::npos) << records->dump();
  const std::string events = Events();
  for (const char* e : {"host.isolated", "host.fencing", "host.fenced", "guest.restarting_elsewhere",
                        "guest.restarted_elsewhere", "guest.lost"}) {
    EXPECT_NE(events.find(std::string("event: ") + e), std::string::npos) << e;
  }
  std::printf(
      "HA figures: %s crashed; isolated at %lld ms, fenced at %lld ms, mit-ha-a running on %s at %lld ms, "
      "ready at %lld ms\n",
      victim.c_str(), static_cast<long long>(isolated_ms), static_cast<long long>(fenced_ms), survivor.c_str(),
      static_cast<long long>(running_ms), static_cast<long long>(ready_ms));

  // The host comes back: powered on through its BMC, its agent joins; the copy it kept of the
  // restarted guest is removed, and the guest with the local disk is found there again.
  ASSERT_EQ(Client().Do("POST", path + "/power", R"({"action": "on"})")->status, 200);
  links_->at(index)->Stop();
  links_->at(index)->Start();
  ASSERT_TRUE(WaitFor([&] { return power().value("phase", "") == "on"; }, std::chrono::seconds(90),
                      std::chrono::milliseconds(100)))
      << power().dump();
  ASSERT_TRUE(WaitFor(
      [&] {
        auto v = AgentOf(victim).Call("GET", "/api/v1/guests/mit-ha-a");
        return !v.ok() && v.status().code() == StatusCode::kNotFound;
      },
      std::chrono::seconds(30)))
      << "the fenced host kept its copy of mit-ha-a";
  ExpectOnce("mit-ha-a");
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = Client().Call("GET", "/api/v1/guests/mit-ha-disk");
        return r.ok() && (*r)["state"] != "lost";
      },
      std::chrono::seconds(30)));

  cfg = {{"ha", {{"enabled", false}}}};
  ASSERT_EQ(Client().Do("PUT", "/api/v1/drs/config", cfg.dump())->status, 200);
  DeleteGuest("mit-ha-a");
  DeleteGuest("mit-ha-disk");
  (void)Client().Do("DELETE", "/api/v1/rules/mit-ha-together");
}

}  // namespace
}  // namespace uw
