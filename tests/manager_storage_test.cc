// The manager's storage catalogue on a real Ceph (ctest's fixture `ceph`, $UW_CEPH_DIR), with
// in-memory agents: guests whose disks are catalogue volumes get the volumes' RBD images, volumes
// made for a guest go with it, a volume that is a guest's disk is not deleted or shared, and the
// refusals make nothing.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "manager/manager_fixture.h"
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
  Json import = {{"name", image_}, {"source", source_}};
  auto img = Client().Call("POST", "/api/v1/images", &import);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  EXPECT_EQ((*img)["backend"], "rbd");
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
  Json import = {{"name", image_}, {"source", source_}};
  ASSERT_TRUE(Client().Call("POST", "/api/v1/images", &import).ok());
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

}  // namespace
}  // namespace uw::manager::testing
