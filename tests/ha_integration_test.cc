// High availability on the real test bed: a host's OS dies (its libvirtd, agent and QEMU killed;
// its power and BMC stay on). The manager finds it silent with its BMC saying on and its storage
// heartbeat (in the Ceph pool) stopped too, fences it through IPMI, and restarts its image-booted
// guest and its guest on a Ceph RBD volume on the other host (the latter with the markers it wrote
// on its disk and on a volume hot-plugged through the manager); the guest with a local disk is
// reported lost. When the host is powered on again, the restarted guests run once.
#include <unistd.h>

#include "storage/storage.h"
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

// The test bed's Ceph as the client user sees it (testbed.json's "ceph").
Result<std::unique_ptr<storage::StorageBackend>> TestbedRbd(const Json& ceph) {
  if (!ceph.is_object()) return FailedPreconditionError("the test bed runs no Ceph (scripts/testbed up 2 --ceph)");
  return storage::OpenRbdBackend(uw::testing::RbdConfigOf(ceph));
}

TEST_F(ManagerIntegrationTest, AFailedHostIsFencedAndItsGuestsRestartElsewhere) {
  WaitConnected();
  for (const auto& h : testbed_->hosts) {
    ASSERT_EQ(
        Client().Do("PUT", "/api/v1/hosts/" + h.name + "/power-driver", BmcOf(testbed_->dir, h.name).dump())->status,
        200);
  }
  Json rule = {
      {"name", "mit-ha-together"}, {"type", "vm-affinity"}, {"vms", {"mit-ha-a", "mit-ha-disk", "mit-ha-rbd"}}};
  ASSERT_EQ(Client().Do("POST", "/api/v1/rules", rule.dump())->status, 201);
  CreateBooted("mit-ha-a", 128, false, {{"restart_priority", "high"}});
  CreateBooted("mit-ha-disk", 128, true);
  // A guest on shared storage: its disk a clone of a golden image on the test bed's Ceph, made by
  // the manager's storage catalogue (the volume goes with the guest).
  auto rbd = TestbedRbd(testbed_->ceph);
  ASSERT_TRUE(rbd.ok()) << rbd.status().ToString();
  const std::string tag = std::to_string(getpid()), image = "mit-ha-golden-" + tag;
  {
    const std::string golden = "/var/tmp/uw-ha-golden-" + tag + ".raw";
    std::FILE* f = std::fopen(golden.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
    ASSERT_EQ(truncate(golden.c_str(), 16 << 20), 0);
    Json import = {{"name", image}, {"source", golden}};
    auto started = Client().Call("POST", "/api/v1/images", &import);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    Json imported = WaitTask(*started);
    std::remove(golden.c_str());
    ASSERT_EQ(imported["state"], "succeeded") << imported.dump();
  }
  CreateBooted("mit-ha-rbd", 128, false, {{"disks", Json::array({{{"image", image}, {"size_gib", 1}}})}});
  auto rbd_disk = Client().Call("GET", "/api/v1/volumes/mit-ha-rbd-disk0");
  ASSERT_TRUE(rbd_disk.ok()) << rbd_disk.status().ToString();
  EXPECT_EQ((*rbd_disk)["guest"], "mit-ha-rbd");
  const std::string volume = (*rbd_disk)["backend_name"];
  const std::string victim = HostOf("mit-ha-a"), survivor = Other(victim);
  ASSERT_EQ(HostOf("mit-ha-disk"), victim);
  ASSERT_EQ(HostOf("mit-ha-rbd"), victim);
  const std::string marker = "UW-HA-MARKER-" + tag;
  ASSERT_EQ(GuestExec(AgentOf(victim), "mit-ha-rbd",
                      "printf '" + marker + "' | dd of=/dev/vda bs=4096 seek=256 conv=sync,fsync 2>/dev/null; echo $?"),
            "0\n");
  // A second volume hot-plugged into the running guest through the manager: its spec keeps it, so
  // the restart elsewhere opens it too.
  Json extra = {{"name", "mit-ha-extra"}, {"size_gib", 1}}, to_guest = {{"guest", "mit-ha-rbd"}};
  ASSERT_TRUE(Client().Call("POST", "/api/v1/volumes", &extra).ok());
  const auto plug = std::chrono::steady_clock::now();
  auto attached = Client().Call("POST", "/api/v1/volumes/mit-ha-extra/attach", &to_guest);
  ASSERT_TRUE(attached.ok()) << attached.status().ToString();
  const std::string extra_marker = "UW-HA-EXTRA-" + tag;
  ASSERT_EQ(GuestExec(AgentOf(victim), "mit-ha-rbd",
                      "for i in $(seq 100); do [ -b /dev/vdb ] && break; sleep 0.1; done; printf '" + extra_marker +
                          "' | dd of=/dev/vdb bs=4096 conv=sync,fsync 2>/dev/null; echo $?"),
            "0\n");
  std::printf("[ figure ] volume attach through the manager until the guest wrote to it: %lld ms\n",
              static_cast<long long>(MsSince(plug)));
  const size_t index = IndexOf(victim);
  const std::string path = "/api/v1/hosts/" + victim;
  // A long isolation: the host's storage heartbeat (its agent beats in the Ceph pool) stops with
  // it, and that, not the isolation running out, gets it fenced.
  Json cfg = {{"ha", {{"enabled", true}, {"host_failures", 0}, {"isolation_s", 40}}}};
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
  // The guest on the RBD volume restarts there too, and its disk still holds its marker.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = Client().Call("GET", "/api/v1/guests/mit-ha-rbd");
        return r.ok() && (*r).value("host", "") == survivor && (*r)["health"] == "ready";
      },
      std::chrono::seconds(120)))
      << Console(survivor, "mit-ha-rbd");
  EXPECT_EQ(GuestExec(AgentOf(survivor), "mit-ha-rbd",
                      "dd if=/dev/vda bs=4096 skip=256 count=1 2>/dev/null | head -c " + std::to_string(marker.size())),
            marker);
  EXPECT_EQ(GuestExec(AgentOf(survivor), "mit-ha-rbd",
                      "dd if=/dev/vdb bs=4096 count=1 2>/dev/null | head -c " + std::to_string(extra_marker.size())),
            extra_marker);
  const int64_t rbd_ready_ms = MsSince(t0);
  auto disk = Client().Call("GET", "/api/v1/guests/mit-ha-disk");
  EXPECT_EQ((*disk)["state"], "lost") << disk->dump();
  EXPECT_EQ((*disk)["host"], victim);
  // The repossession record of the place it lost.
  auto records = Client().Call("GET", "/api/v1/repossessions?guest=mit-ha-a");
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  EXPECT_NE(records->dump().find("failed and was fenced"), std::string::npos) << records->dump();
  const std::string events = Events();
  for (const char* e :
       {"host.fencing", "host.fenced", "guest.restarting_elsewhere", "guest.restarted_elsewhere", "guest.lost"}) {
    EXPECT_NE(events.find(std::string("event: ") + e), std::string::npos) << e;
  }
  EXPECT_NE(events.find("its storage heartbeat stopped too"), std::string::npos)
      << "fenced without the storage heartbeat's word\n"
      << events;
  std::printf(
      "HA figures: %s crashed; isolated at %lld ms, fenced at %lld ms, mit-ha-a running on %s at %lld ms, "
      "ready at %lld ms; mit-ha-rbd ready with its marker at %lld ms\n",
      victim.c_str(), static_cast<long long>(isolated_ms), static_cast<long long>(fenced_ms), survivor.c_str(),
      static_cast<long long>(running_ms), static_cast<long long>(ready_ms), static_cast<long long>(rbd_ready_ms));

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
  ExpectOnce("mit-ha-rbd");
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
  DeleteGuest("mit-ha-rbd");
  // Its volume went with it, or (the crashed host's QEMU was killed: its watch lasts until the OSD
  // times it out, osd_client_watch_timeout 30 s) is left for an operator, who deletes it once the
  // watch is gone.
  ASSERT_TRUE(WaitFor(
      [&] {
        bool gone = true;
        for (const char* v : {"mit-ha-rbd-disk0", "mit-ha-extra"}) {
          auto r = Client().Do("DELETE", std::string("/api/v1/volumes/") + v);
          gone = gone && r.ok() && (r->status == 200 || r->status == 404);
        }
        return gone;
      },
      std::chrono::seconds(45), std::chrono::milliseconds(500)));
  EXPECT_EQ((*rbd)->GetVolume(volume).status().code(), StatusCode::kNotFound);
  auto image_gone = Client().Call("DELETE", "/api/v1/images/" + image);
  EXPECT_TRUE(image_gone.ok()) << image_gone.status().ToString();
  (void)Client().Do("DELETE", "/api/v1/rules/mit-ha-together");
}

}  // namespace
}  // namespace uw
