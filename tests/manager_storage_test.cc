// The manager's storage catalogue on a real Ceph (ctest's fixture `ceph`, $UW_CEPH_DIR), with
// in-memory agents: guests whose disks are catalogue volumes get the volumes' RBD images, volumes
// made for a guest go with it, a volume that is a guest's disk is not deleted or shared, and the
// refusals make nothing.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "manager/manager_fixture.h"
#include "storage/heartbeat.h"
#include "tests/ceph_config.h"

namespace uw::manager::testing {
namespace {

class ManagerStorageTest : public ManagerTest {
 protected:
  void SetUp() override {
    ManagerTest::SetUp();
    const char* dir = std::getenv("UW_CEPH_DIR");
    if (dir == nullptr) GTEST_SKIP() << "UW_CEPH_DIR is not set: run through ctest (fixture `ceph`)";
    auto ceph = LoadJsonFile(std::string(dir) + "/ceph.json");
    ASSERT_TRUE(ceph.ok()) << ceph.status().ToString();
    config_.storage_backend = "rbd";
    config_.storage_rbd = uw::testing::RbdConfigOf(*ceph);
    auto b = storage::OpenRbdBackend(config_.storage_rbd);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    ceph_ = std::move(*b);
    // A unique image name per run: the fixture's Ceph outlives a test.
    image_ = "mgr-" + std::to_string(::getpid());
    source_ = (dir_ / "base.raw").string();
    std::ofstream(source_, std::ios::binary) << std::string(1 << 20, '\x5a');
  }
  void TearDown() override {
    if (ceph_) {
      auto volumes = ceph_->ListVolumes();
      for (const auto& v : volumes.ok() ? *volumes : std::vector<storage::VolumeInfo>{}) {
        if (v.image == image_) (void)ceph_->DeleteVolume(v.name);
      }
      (void)ceph_->DeleteImage(image_);
    }
    ManagerTest::TearDown();
  }
  // The RBD image behind `disk` ({"rbd": "POOL/IMAGE"}), as the backend names volumes.
  std::string VolumeOf(const Json& disk) {
    const std::string rbd = disk.value("rbd", "");
    const std::string prefix = config_.storage_rbd.pool + "/uw-vol-";
    return rbd.rfind(prefix, 0) == 0 ? rbd.substr(prefix.size()) : "";
  }
  std::unique_ptr<storage::StorageBackend> ceph_;
  std::string image_, source_;
};

TEST_F(ManagerStorageTest, GuestsGetCatalogueVolumesAsRbdDisks) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  Json import = ImportImage(image_, source_);
  ASSERT_EQ(import["state"], "succeeded") << import.dump();
  EXPECT_EQ(import["result"]["backend"], "rbd");
  Json data = {{"name", "data"}, {"size_gib", 1}};
  ASSERT_TRUE(Client(acme).Call("POST", "/api/v1/volumes", &data).ok());

  Json g = {{"name", "web"},
            {"image", "tiny"},
            {"memory_mib", 64},
            {"disks", {{{"image", image_}, {"size_gib", 2}}, {{"volume", "data"}, {"target", "vdc"}}}}};
  auto created = Client(acme).Call("POST", "/api/v1/guests", &g);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ(WaitTask(*created)["state"], "succeeded");
  // The agent was asked for the volumes' RBD images, and no rights beyond a tenant's were needed.
  Json spec = cluster_.CreateSpec("h1", "acme:web");
  ASSERT_EQ(spec["disks"].size(), 2u) << spec.dump();
  EXPECT_EQ(spec["disks"][1]["target"], "vdc");
  auto vols = Client().Call("GET", "/api/v1/volumes");
  ASSERT_TRUE(vols.ok());
  ASSERT_EQ((*vols)["volumes"].size(), 2u) << vols->dump();
  std::map<std::string, Json> by_name;
  for (const Json& v : (*vols)["volumes"]) by_name[v["name"]] = v;
  const Json boot = by_name["acme:web-disk0"], kept = by_name["acme:data"];
  EXPECT_EQ(VolumeOf(spec["disks"][0]), boot["backend_name"]);
  EXPECT_EQ(VolumeOf(spec["disks"][1]), kept["backend_name"]);
  EXPECT_EQ(boot["guest"], "acme:web");
  EXPECT_EQ(boot["delete_with_guest"], true);
  EXPECT_EQ(boot["size_gib"], 2);
  EXPECT_EQ(kept["guest"], "acme:web");
  auto on_ceph = ceph_->GetVolume(boot["backend_name"]);
  ASSERT_TRUE(on_ceph.ok()) << on_ceph.status().ToString();
  EXPECT_EQ(on_ceph->image, image_);
  EXPECT_EQ(on_ceph->virtual_bytes, int64_t{2} << 30);

  // A guest's disk is neither deleted nor given to a second guest; another tenant cannot name it.
  auto busy = Client(acme).Call("DELETE", "/api/v1/volumes/data");
  EXPECT_EQ(busy.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(busy.status().message().find("disk of guest 'web'"), std::string::npos) << busy.status().ToString();
  Json second = {{"name", "web2"}, {"image", "tiny"}, {"memory_mib", 64}, {"disks", {{{"volume", "data"}}}}};
  auto shared = Client(acme).Call("POST", "/api/v1/guests", &second);
  EXPECT_EQ(shared.status().code(), StatusCode::kFailedPrecondition) << shared.status().ToString();
  auto foreign = Client(beta).Call("POST", "/api/v1/guests", &second);
  EXPECT_EQ(foreign.status().code(), StatusCode::kNotFound) << foreign.status().ToString();
  EXPECT_EQ(foreign.status().message().find("acme"), std::string::npos);
  // The image cannot go while a volume is cloned from it.
  EXPECT_EQ(Client().Call("DELETE", "/api/v1/images/" + image_).status().code(), StatusCode::kFailedPrecondition);

  // Deleting the guest deletes the volume made for it and frees the other.
  auto stop = Client(acme).Call("POST", "/api/v1/guests/web/stop");
  ASSERT_TRUE(stop.ok());
  ASSERT_EQ(WaitTask(*stop)["state"], "succeeded");
  auto del = Client(acme).Call("DELETE", "/api/v1/guests/web");
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  ASSERT_EQ(WaitTask(*del)["state"], "succeeded");
  EXPECT_EQ(ceph_->GetVolume(boot["backend_name"]).status().code(), StatusCode::kNotFound);
  auto freed = Client(acme).Call("GET", "/api/v1/volumes/data");
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ((*freed)["guest"], nullptr);
  EXPECT_TRUE(ceph_->GetVolume(kept["backend_name"]).ok());
  ASSERT_TRUE(Client(acme).Call("DELETE", "/api/v1/volumes/data").ok());
  EXPECT_EQ(ceph_->GetVolume(kept["backend_name"]).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(Client().Call("DELETE", "/api/v1/images/" + image_).ok());
}

TEST_F(ManagerStorageTest, ARefusedGuestLeavesNoVolumeBehind) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme");
  ASSERT_EQ(ImportImage(image_, source_)["state"], "succeeded");
  const size_t on_ceph_before = ceph_->ListVolumes()->size();
  // Over the tenant's quota: the image disk's volume is refused, so is the guest.
  Json quota = {{"gib", 1}};
  ASSERT_TRUE(Client().Call("PUT", "/api/v1/storage/quotas/acme", &quota).ok());
  Json g = {{"name", "big"}, {"image", "tiny"}, {"memory_mib", 64}, {"disks", {{{"image", image_}, {"size_gib", 5}}}}};
  auto over = Client(acme).Call("POST", "/api/v1/guests", &g);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted) << over.status().ToString();
  // Within the quota but with no room on any host: the volume made for it goes again.
  quota["gib"] = 10;
  ASSERT_TRUE(Client().Call("PUT", "/api/v1/storage/quotas/acme", &quota).ok());
  g["memory_mib"] = 1 << 20;
  auto no_room = Client(acme).Call("POST", "/api/v1/guests", &g);
  EXPECT_EQ(no_room.status().code(), StatusCode::kResourceExhausted) << no_room.status().ToString();
  // A second disk naming a missing volume: the first disk's new volume goes too.
  g["memory_mib"] = 64;
  g["disks"].push_back({{"volume", "ghost"}});
  auto ghost = Client(acme).Call("POST", "/api/v1/guests", &g);
  EXPECT_EQ(ghost.status().code(), StatusCode::kNotFound) << ghost.status().ToString();
  EXPECT_NE(ghost.status().message().find("disks[1].volume"), std::string::npos) << ghost.status().ToString();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM volumes"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 0);
  EXPECT_EQ(ceph_->ListVolumes()->size(), on_ceph_before);
}

// A free volume becomes a disk of an existing guest and is taken off it again: the agent is asked
// for the volume's RBD image at the next free target, the guest's spec keeps the disk (for a
// restart elsewhere), and every refusal leaves the volume as it was.
TEST_F(ManagerStorageTest, VolumesAttachToAndDetachFromExistingGuests) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  ASSERT_EQ(ImportImage(image_, source_)["state"], "succeeded");
  Json data = {{"name", "data"}, {"size_gib", 1}};
  ASSERT_TRUE(Client(acme).Call("POST", "/api/v1/volumes", &data).ok());
  ASSERT_TRUE(Client(beta).Call("POST", "/api/v1/volumes", &data).ok());
  Json g = {{"name", "web"}, {"image", "tiny"}, {"memory_mib", 64}, {"disks", {{{"image", image_}, {"size_gib", 1}}}}};
  auto created = Client(acme).Call("POST", "/api/v1/guests", &g);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ(WaitTask(*created)["state"], "succeeded");
  Json box = {{"name", "box"}, {"kind", "lxc"}, {"image", "tiny"}, {"memory_mib", 64}};
  auto made_box = Client(acme).Call("POST", "/api/v1/guests", &box);
  ASSERT_TRUE(made_box.ok()) << made_box.status().ToString();
  ASSERT_EQ(WaitTask(*made_box)["state"], "succeeded");
  auto agent = cluster_.Client("h1");

  Json to_web = {{"guest", "web"}};
  auto attached = Client(acme).Call("POST", "/api/v1/volumes/data/attach", &to_web);
  ASSERT_TRUE(attached.ok()) << attached.status().ToString();
  EXPECT_EQ((*attached)["guest"], "web");
  auto there = agent->Get("acme:web");
  ASSERT_TRUE(there.ok());
  ASSERT_EQ(there->disks.size(), 2u);
  EXPECT_EQ(there->disks[1].target, "vdb");
  auto all = Client().Call("GET", "/api/v1/volumes/acme:data");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(VolumeOf({{"rbd", there->disks[1].rbd}}), (*all)["backend_name"]);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'volume.attached'"), 1);
  // Grown under the running guest: the image in Ceph, and the guest's agent tells its QEMU.
  Json two = {{"size_gib", 2}};
  auto grown = Client(acme).Call("POST", "/api/v1/volumes/data/resize", &two);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  EXPECT_EQ(cluster_.DiskMib("h1", "acme:web", "vdb"), 2048);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'volume.resize_unseen'"), 0);

  // Refusals: each leaves the volumes as they were.
  struct Case {
    std::string token, volume;
    Json body;
    StatusCode code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {acme, "data", to_web, StatusCode::kAlreadyExists, "is a disk of guest 'web'"},
      {beta, "data", to_web, StatusCode::kNotFound, "guest 'web' not found"},
      {acme, "beta:data", to_web, StatusCode::kNotFound, "volume 'beta:data' not found"},
      {kAdmin, "beta:data", {{"guest", "acme:web"}}, StatusCode::kFailedPrecondition, "tenant beta"},
      {acme, "ghost", to_web, StatusCode::kNotFound, "volume 'ghost' not found"},
      {acme, "web-disk0", {{"guest", "box"}}, StatusCode::kFailedPrecondition, "is a disk of guest 'web'"},
      {beta, "data", {{"guest", 5}}, StatusCode::kInvalidArgument, "guest"},
      {beta, "data", {{"guest", "web"}, {"target", "vdz"}}, StatusCode::kInvalidArgument, "target"},
      {beta, "data", {{"guest", "../x"}}, StatusCode::kInvalidArgument, "guest"},
  };
  for (const Case& c : cases) {
    auto r = Client(c.token).Call("POST", "/api/v1/volumes/" + c.volume + "/attach", &c.body);
    EXPECT_EQ(r.status().code(), c.code) << c.volume << " " << c.body.dump() << ": " << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << r.status().ToString();
  }
  Json to_box = {{"guest", "box"}};
  ASSERT_TRUE(Client(acme).Call("POST", "/api/v1/volumes/data/detach").ok());
  auto container = Client(acme).Call("POST", "/api/v1/volumes/data/attach", &to_box);
  EXPECT_EQ(container.status().code(), StatusCode::kFailedPrecondition) << container.status().ToString();
  EXPECT_NE(container.status().message().find("container"), std::string::npos) << container.status().ToString();
  there = agent->Get("acme:web");
  ASSERT_EQ(there->disks.size(), 1u);
  EXPECT_EQ(there->disks[0].target, "vda");
  auto free = Client(acme).Call("GET", "/api/v1/volumes/data");
  EXPECT_EQ((*free)["guest"], nullptr);
  auto again = Client(acme).Call("POST", "/api/v1/volumes/data/detach");
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition) << again.status().ToString();

  // An agent that does not answer: a retryable error, and the volume stays free.
  cluster_.SetDown("h1", true);
  auto down = Client(acme).Call("POST", "/api/v1/volumes/data/attach", &to_web);
  EXPECT_EQ(down.status().code(), StatusCode::kUnavailable) << down.status().ToString();
  EXPECT_NE(down.status().message().find("host h1"), std::string::npos) << down.status().ToString();
  cluster_.SetDown("h1", false);
  EXPECT_EQ((*Client(acme).Call("GET", "/api/v1/volumes/data"))["guest"], nullptr);

  // Attached again (vdb is free again), then the disk made with the guest is detached: it becomes
  // an ordinary volume that outlives the guest, and the guest keeps vdb at its place.
  ASSERT_TRUE(Client(acme).Call("POST", "/api/v1/volumes/data/attach", &to_web).ok());
  auto boot = Client(acme).Call("POST", "/api/v1/volumes/web-disk0/detach");
  ASSERT_TRUE(boot.ok()) << boot.status().ToString();
  EXPECT_EQ((*boot)["delete_with_guest"], false);
  there = agent->Get("acme:web");
  ASSERT_EQ(there->disks.size(), 1u);
  EXPECT_EQ(there->disks[0].target, "vdb");
  auto stop = Client(acme).Call("POST", "/api/v1/guests/web/stop");
  ASSERT_TRUE(stop.ok());
  ASSERT_EQ(WaitTask(*stop)["state"], "succeeded");
  auto del = Client(acme).Call("DELETE", "/api/v1/guests/web");
  ASSERT_TRUE(del.ok());
  ASSERT_EQ(WaitTask(*del)["state"], "succeeded");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM volumes WHERE guest IS NOT NULL"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM volumes"), 3);
  for (const char* v : {"data", "web-disk0"})
    EXPECT_TRUE(Client(acme).Call("DELETE", std::string("/api/v1/volumes/") + v).ok());
  ASSERT_TRUE(Client(beta).Call("DELETE", "/api/v1/volumes/data").ok());
}

// HA with storage heartbeats (storage/heartbeat.h) on the real pool: the test writes host A's
// beats as its agent would, on the manager's fake clock (a pass a second).
class StorageHeartbeatHaTest : public ManagerStorageTest {
 protected:
  void SetUp() override {
    ManagerStorageTest::SetUp();
    if (IsSkipped()) return;
    auto hb = storage::OpenStorageHeartbeats(config_.storage_rbd);
    ASSERT_TRUE(hb.ok()) << hb.status().ToString();
    beats_ = std::move(*hb);
    // Host names of their own: the heartbeat object outlives a test.
    a_ = "hba-" + std::to_string(::getpid());
    b_ = "hbb-" + std::to_string(::getpid());
    config_.heartbeat_timeout_ms = 10000;
    StartManager();
    AddHost(a_);
    Json vm = {{"name", "g"}, {"image", "tiny"}, {"memory_mib", 64}};
    ASSERT_EQ(WaitTask(*Client().Call("POST", "/api/v1/guests", &vm))["state"], "succeeded");
    AddHost(b_);
    for (const std::string& h : {a_, b_}) {
      ASSERT_EQ(Client().Do("PUT", "/api/v1/hosts/" + h + "/power-driver", ExecDriver(h).dump())->status, 200);
    }
    Json cfg = {{"ha", {{"enabled", true}, {"host_failures", 0}, {"isolation_s", 5}}}};
    ASSERT_EQ(Client().Do("PUT", "/api/v1/drs/config", cfg.dump())->status, 200);
  }
  // One second: A's agent beats on storage when `a_beats`, B heartbeats, then an HA pass.
  void Second(bool a_beats) {
    clock_.Advance(std::chrono::seconds(1));
    if (a_beats) {
      ASSERT_TRUE(beats_->Beat(a_, "run-" + std::to_string(++seq_)).ok());
    }
    Heartbeat(b_);
    manager_->CheckHeartbeats();
    ASSERT_TRUE(manager_->RunHa().ok());
  }
  std::string State(const std::string& host) { return (*Client().Call("GET", "/api/v1/hosts/" + host))["state"]; }
  int64_t Restarts() { return Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.recover'"); }
  bool RunsOnB() {
    return Eventually([&] {
      auto g = Client().Call("GET", "/api/v1/guests/g");
      return g.ok() && (*g)["host"] == b_ && (*g)["state"] == "running";
    });
  }
  std::unique_ptr<storage::StorageHeartbeats> beats_;
  std::string a_, b_;
  int seq_ = 0;
};

// A cut off from the manager but still running (its storage heartbeat live) is isolated, not
// failed; a BMC that says off while the host still beats is caught after the fence and nothing
// restarts; once A really stops, it is fenced without waiting out the isolation and g restarts.
TEST_F(StorageHeartbeatHaTest, ALiveStorageHeartbeatHoldsRestartsUntilTheHostReallyStops) {
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(Second(true));
  cluster_.SetDown(a_, true);  // the manager's network path to A is gone; A runs on
  for (int i = 0; i < 11 && State(a_) != "isolated"; ++i) ASSERT_NO_FATAL_FAILURE(Second(true));
  ASSERT_EQ(State(a_), "isolated") << AllEvents();
  EXPECT_NE(AllEvents().find("its storage heartbeat is live"), std::string::npos) << AllEvents();
  // The isolation runs out: fenced through a "BMC" that says off while A goes on beating.
  for (int i = 0; i < 8 && AllEvents().find("host.fence_suspect") == std::string::npos; ++i) {
    ASSERT_NO_FATAL_FAILURE(Second(true));
    EXPECT_EQ(Restarts(), 0) << "restarted while its storage heartbeat was live\n" << AllEvents();
  }
  ASSERT_NE(AllEvents().find("host.fence_suspect " + a_), std::string::npos) << AllEvents();
  EXPECT_EQ(State(a_), "isolated");
  EXPECT_EQ(Bmc(a_), "off");
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/g"))["host"], a_);
  // A dies: its storage heartbeat stops. It is fenced again when the isolation runs out, and g
  // restarts once that heartbeat has stood still for the timeout (10 s).
  int seconds = 0;
  for (; seconds < 14 && Restarts() == 0; ++seconds) ASSERT_NO_FATAL_FAILURE(Second(false));
  ASSERT_EQ(State(a_), "failed") << AllEvents();
  EXPECT_GE(seconds, 10) << "restarted before its storage heartbeat had stood still for the timeout";
  ASSERT_TRUE(RunsOnB()) << AllEvents();
  EXPECT_TRUE(HasGuest(b_, "g"));
}

// A host that dies on both paths at once is fenced as soon as it is found silent: no isolation wait.
TEST_F(StorageHeartbeatHaTest, AHostSilentOnBothPathsIsFencedAtOnce) {
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(Second(true));
  cluster_.SetDown(a_, true);
  int seconds = 0;
  for (; seconds < 14 && State(a_) != "failed"; ++seconds) ASSERT_NO_FATAL_FAILURE(Second(false));
  ASSERT_EQ(State(a_), "failed") << AllEvents();
  EXPECT_LE(seconds, 11) << "fenced within a pass of the heartbeat timeout, not after the isolation";
  const std::string events = AllEvents();
  EXPECT_NE(events.find("storage heartbeat stopped too"), std::string::npos) << events;
  ASSERT_TRUE(RunsOnB()) << events;
}

}  // namespace
}  // namespace uw::manager::testing
