// The storage catalogue (manager/storage_service.h) over REST, on the local backend (real qcow2
// files made by qemu-img in the test's directory): images, volumes per tenant, quotas, bad input.
// Guests' disks: here the local backend's (made on the guest's host); RBD volumes need Ceph
// (tests/manager_storage_test.cc on ctest's Ceph fixture).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/command.h"
#include "manager/manager_fixture.h"

namespace uw::manager::testing {
namespace {

class StorageCatalogueTest : public ManagerTest {
 protected:
  void SetUp() override {
    ManagerTest::SetUp();
    config_.storage_backend = "local";
    config_.storage_local.dir = (dir_ / "storage").string();
    // A 1 MiB raw image (qemu-img finds the format).
    source_ = (dir_ / "base.raw").string();
    std::ofstream(source_, std::ios::binary) << std::string(1 << 20, '\0');
  }
  std::string source_;
};

TEST_F(StorageCatalogueTest, ImagesAndVolumesPerTenant) {
  StartManager();
  std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  Json import = {{"name", "base"}, {"source", source_}};
  // An import is a task (202, Location); its result is the image.
  auto started = Client().Do("POST", "/api/v1/images", import.dump());
  ASSERT_EQ(started->status, 202) << started->body;
  EXPECT_EQ(Json::parse(started->body)["kind"], "image.import");
  EXPECT_EQ(Client().Call("POST", "/api/v1/images", &import).status().code(), StatusCode::kAlreadyExists)
      << "the name is taken while the import runs";
  Json done = WaitTask(Json::parse(started->body));
  ASSERT_EQ(done["state"], "succeeded") << done.dump();
  const Json& img = done["result"];
  EXPECT_EQ(img["backend"], "local");
  EXPECT_EQ(img["size_bytes"], 1 << 20);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/images/base"))["size_bytes"], 1 << 20);
  EXPECT_EQ(Client().Call("POST", "/api/v1/images", &import).status().code(), StatusCode::kAlreadyExists);
  // Tenants read images; only operators import them.
  EXPECT_EQ((*Client(acme).Call("GET", "/api/v1/images"))["images"][0]["name"], "base");
  EXPECT_EQ(Client(acme).Do("POST", "/api/v1/images", import.dump())->status, 403);

  // Each tenant's "data" is its own: no collision, no leak.
  Json vol = {{"name", "data"}, {"image", "base"}, {"size_gib", 2}};
  auto a = Client(acme).Call("POST", "/api/v1/volumes", &vol);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ((*a)["name"], "data");
  EXPECT_EQ((*a)["tenant"], "acme");
  EXPECT_EQ((*a)["state"], "ready");
  EXPECT_FALSE(a->contains("backend_name"));  // the backend's name is for operators
  ASSERT_TRUE(Client(beta).Call("POST", "/api/v1/volumes", &vol).ok());
  EXPECT_EQ(Client(acme).Call("POST", "/api/v1/volumes", &vol).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ((*Client(acme).Call("GET", "/api/v1/volumes"))["volumes"].size(), 1u);
  EXPECT_EQ(Client(acme).Do("GET", "/api/v1/volumes/beta:data")->status, 404);
  EXPECT_EQ(Client(acme).Do("DELETE", "/api/v1/volumes/beta:data")->status, 404);
  auto all = Client().Call("GET", "/api/v1/volumes");
  ASSERT_EQ((*all)["volumes"].size(), 2u);
  EXPECT_EQ((*all)["volumes"][0]["name"], "acme:data");
  const std::string backend_name = (*all)["volumes"][0]["backend_name"];
  EXPECT_TRUE(std::filesystem::exists(dir_ / "storage" / "volumes" / (backend_name + ".qcow2")));
  // The short name is ambiguous for an operator, and says so.
  auto ambiguous = Client().Call("GET", "/api/v1/volumes/data");
  EXPECT_EQ(ambiguous.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(ambiguous.status().message().find("acme:data"), std::string::npos);

  // Resize only grows.
  Json smaller = {{"size_gib", 1}}, bigger = {{"size_gib", 3}};
  auto shrink = Client(acme).Call("POST", "/api/v1/volumes/data/resize", &smaller);
  EXPECT_EQ(shrink.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(shrink.status().message().find("only grows"), std::string::npos) << shrink.status().ToString();
  auto grown = Client(acme).Call("POST", "/api/v1/volumes/data/resize", &bigger);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  EXPECT_EQ((*grown)["size_gib"], 3);

  // The image may not go while volumes are cloned from it; the message names them.
  auto busy = Client().Call("DELETE", "/api/v1/images/base");
  EXPECT_EQ(busy.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(busy.status().message().find("acme:data"), std::string::npos) << busy.status().ToString();
  ASSERT_TRUE(Client(acme).Call("DELETE", "/api/v1/volumes/data").ok());
  ASSERT_TRUE(Client(beta).Call("DELETE", "/api/v1/volumes/data").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "storage" / "volumes" / (backend_name + ".qcow2")));
  ASSERT_TRUE(Client().Call("DELETE", "/api/v1/images/base").ok());
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM images"), 0);
}

TEST_F(StorageCatalogueTest, QuotasCapATenantsGiB) {
  StartManager();
  std::string acme = TenantToken("acme");
  Json quota = {{"gib", 3}};
  auto q = Client().Call("PUT", "/api/v1/storage/quotas/acme", &quota);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ((*q)["gib"], 3);
  EXPECT_EQ(Client(acme).Do("PUT", "/api/v1/storage/quotas/acme", quota.dump())->status, 403);
  Json two = {{"name", "a"}, {"size_gib", 2}};
  ASSERT_TRUE(Client(acme).Call("POST", "/api/v1/volumes", &two).ok());
  two["name"] = "b";
  auto over = Client(acme).Call("POST", "/api/v1/volumes", &two);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find("quota of 3 GiB"), std::string::npos) << over.status().ToString();
  Json four = {{"size_gib", 4}};
  EXPECT_EQ(Client(acme).Call("POST", "/api/v1/volumes/a/resize", &four).status().code(),
            StatusCode::kResourceExhausted);
  // Nothing was made or reserved by the refusals.
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM volumes"), 1);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_ / "storage" / "volumes"), {}), 1);
  auto mine = Client(acme).Call("GET", "/api/v1/storage/quotas");
  ASSERT_EQ((*mine)["quotas"].size(), 1u);
  EXPECT_EQ((*mine)["quotas"][0]["used_gib"], 2);
  // No quota: unlimited again.
  Json none = {{"gib", nullptr}};
  ASSERT_TRUE(Client().Call("PUT", "/api/v1/storage/quotas/acme", &none).ok());
  EXPECT_TRUE(Client(acme).Call("POST", "/api/v1/volumes", &two).ok());
}

TEST_F(StorageCatalogueTest, BadInputIsRefusedAndMakesNothing) {
  StartManager();
  std::string acme = TenantToken("acme");
  auto code = [&](const std::string& method, const std::string& path, const Json& body) {
    return Client(acme).Do(method, path, body.dump())->status;
  };
  EXPECT_EQ(code("POST", "/api/v1/volumes", {{"name", "x"}, {"image", "ghost"}}), 404);  // clone of a missing image
  EXPECT_EQ(code("POST", "/api/v1/volumes", {{"name", "x"}}), 400);                      // no size, no image
  EXPECT_EQ(code("POST", "/api/v1/volumes", {{"name", "x"}, {"size_gib", 0}}), 400);
  EXPECT_EQ(code("POST", "/api/v1/volumes", {{"name", "../x"}, {"size_gib", 1}}), 400);
  EXPECT_EQ(code("POST", "/api/v1/volumes", {{"name", "x"}, {"size_gib", 1}, {"tenant", "beta"}}), 403);
  EXPECT_EQ(code("POST", "/api/v1/volumes/ghost/resize", {{"size_gib", 5}}), 404);
  EXPECT_EQ(Client().Do("POST", "/api/v1/images", Json({{"name", "i"}, {"source", "relative/path"}}).dump())->status,
            400);
  EXPECT_EQ(Client().Do("POST", "/api/v1/images", Json({{"name", "i"}, {"source", "/no/such/file"}}).dump())->status,
            404);
  EXPECT_EQ(Client().Do("POST", "/api/v1/images", Json({{"name", "i"}, {"source", "ftp://x/y"}}).dump())->status, 400);
  // A guest's disk naming an unknown volume: nothing is created or reserved.
  AddHost("h1");
  Json guest = {{"name", "g"}, {"image", "tiny"}, {"memory_mib", 64}, {"disks", {{{"volume", "ghost"}}}}};
  auto r = Client(acme).Do("POST", "/api/v1/guests", guest.dump());
  EXPECT_EQ(r->status, 409) << r->body;  // the local backend's volumes are no guest's disks
  guest["disks"] = {{{"volume", "ghost"}, {"path", "/etc/passwd"}}};
  EXPECT_EQ(Client(acme).Do("POST", "/api/v1/guests", guest.dump())->status, 400);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM volumes"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM images"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 0);
}

// On the local backend, a guest's {image, size_gib} disk is made by its host's agent on that host's
// copy of the image, which the manager sends there first in pieces; the disk's volume counts towards
// the tenant's quota and goes with the guest. A {volume} disk is refused (those are files here).
TEST_F(StorageCatalogueTest, LocalDisksAreMadeOnTheGuestsHostFromACopyOfTheImage) {
  StartManager();
  // 7 MiB that do not compress: its qcow2 takes three pieces.
  std::string bytes(7 << 20, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 7919) % 251);
  std::ofstream(source_, std::ios::binary) << bytes;
  ASSERT_EQ(ImportImage("base", source_)["state"], "succeeded");
  const std::string ref = "base@" + std::to_string(Count("SELECT created_ms AS n FROM images WHERE name = 'base'"));
  AddHost("h1");
  const std::string acme = TenantToken("acme");
  Json quota = {{"gib", 3}};
  ASSERT_TRUE(Client().Call("PUT", "/api/v1/storage/quotas/acme", &quota).ok());
  Json guest = {{"name", "g1"}, {"image", "tiny"}, {"memory_mib", 64}};
  guest["disks"] = Json::array({{{"image", "base"}, {"size_gib", 2}}});
  auto created = Client(acme).Call("POST", "/api/v1/guests", &guest);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ(WaitTask(*created)["state"], "succeeded");
  const Json spec = cluster_.CreateSpec("h1", "acme:g1");
  ASSERT_EQ(spec["disks"].size(), 1u) << spec.dump();
  EXPECT_EQ(spec["disks"][0], Json({{"size_mib", 2048}, {"base_image", ref}})) << spec.dump();
  // The host has the manager's file, byte for byte.
  std::ifstream in(dir_ / "storage" / "images" / "base.qcow2", std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(file.size(), size_t{6} << 20);
  EXPECT_TRUE(cluster_.ImageCopy("h1", ref) == file) << "the host's copy differs from the image";
  // The disk is the tenant's volume, on the guest's host, counted in its quota.
  auto vol = Client(acme).Call("GET", "/api/v1/volumes/g1-disk0");
  ASSERT_TRUE(vol.ok()) << vol.status().ToString();
  EXPECT_EQ((*vol)["backend"], "local-host");
  EXPECT_EQ((*vol)["guest"], "g1");
  EXPECT_EQ((*vol)["size_gib"], 2);
  EXPECT_EQ((*Client(acme).Call("GET", "/api/v1/storage/quotas"))["quotas"][0]["used_gib"], 2);
  // It grows on its host (within the quota), and only grows.
  Json bigger = {{"size_gib", 3}}, smaller = {{"size_gib", 1}}, too_big = {{"size_gib", 4}};
  auto resize = Client(acme).Call("POST", "/api/v1/volumes/g1-disk0/resize", &bigger);
  ASSERT_TRUE(resize.ok()) << resize.status().ToString();
  EXPECT_EQ((*resize)["size_gib"], 3);
  EXPECT_EQ(cluster_.DiskMib("h1", "acme:g1", "vda"), 3072);
  EXPECT_EQ(Client(acme).Call("POST", "/api/v1/volumes/g1-disk0/resize", &smaller).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Client(acme).Call("POST", "/api/v1/volumes/g1-disk0/resize", &too_big).status().code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(cluster_.DiskMib("h1", "acme:g1", "vda"), 3072);
  EXPECT_EQ(Client().Call("DELETE", "/api/v1/images/base").status().code(), StatusCode::kFailedPrecondition);
  // Over the quota, and a {volume} disk: refused, nothing made.
  guest["name"] = "g2";
  auto over = Client(acme).Call("POST", "/api/v1/guests", &guest);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted) << over.status().ToString();
  guest["disks"] = Json::array({{{"volume", "g1-disk0"}}});
  auto vol_disk = Client(acme).Call("POST", "/api/v1/guests", &guest);
  EXPECT_EQ(vol_disk.status().code(), StatusCode::kFailedPrecondition) << vol_disk.status().ToString();
  EXPECT_NE(vol_disk.status().message().find("{image, size_gib}"), std::string::npos);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM volumes"), 1);
  // The guest deleted: its disk's volume goes with it.
  auto stop = Client(acme).Call("POST", "/api/v1/guests/g1/stop");
  ASSERT_EQ(WaitTask(*stop)["state"], "succeeded");
  auto del = Client(acme).Call("DELETE", "/api/v1/guests/g1");
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  ASSERT_EQ(WaitTask(*del)["state"], "succeeded");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM volumes"), 0);
  EXPECT_TRUE(Client().Call("DELETE", "/api/v1/images/base").ok());
}

// A cold move of a guest with a local disk: the disk's file is read from the stopped guest's host
// and carried to the other (after the image it is made on), and the create there takes it. A move
// that fails on the way leaves the guest and its disk where they were, running again.
TEST_F(StorageCatalogueTest, AColdMoveCarriesALocalDiskAndAFailedOneLeavesItWhereItWas) {
  StartManager();
  ASSERT_EQ(ImportImage("base", source_)["state"], "succeeded");
  const std::string ref = "base@" + std::to_string(Count("SELECT created_ms AS n FROM images WHERE name = 'base'"));
  AddHost("h1");
  AddHost("h2");
  Json guest = {{"name", "g"}, {"image", "tiny"}, {"memory_mib", 64}};
  guest["disks"] = Json::array({{{"image", "base"}, {"size_gib", 1}}});
  ASSERT_EQ(WaitTask(*Client().Call("POST", "/api/v1/guests", &guest))["state"], "succeeded");
  const std::string src = (*Client().Call("GET", "/api/v1/guests/g"))["host"], dst = src == "h1" ? "h2" : "h1";
  // What the guest wrote: 7 MiB, three pieces.
  std::string written(7 << 20, '\0');
  for (size_t i = 0; i < written.size(); ++i) written[i] = static_cast<char>((i * 131) % 253);
  cluster_.SetDiskFile(src, "g", "vda", written);
  Json cold = {{"host", dst}, {"mode", "cold"}};

  // The destination refuses the disk (it has a guest of that name): rolled back, running again.
  AgentGuest squatter;
  squatter.name = "g";
  squatter.state = "shutoff";
  cluster_.Place(dst, squatter);
  const Json failed = WaitTask(*Client().Call("POST", "/api/v1/guests/g/migrate", &cold));
  EXPECT_EQ(failed["state"], "failed") << failed.dump();
  EXPECT_NE(failed.dump().find("copying disk vda of guest g from host " + src), std::string::npos) << failed.dump();
  EXPECT_EQ(cluster_.StateOf(src, "g"), "running");
  EXPECT_EQ(cluster_.DiskFile(src, "g", "vda"), written);
  EXPECT_EQ(cluster_.StateOf(dst, "g"), "");  // the incoming copy abandoned
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/g"))["host"], src);

  // Carried: the image first, then the disk's file byte for byte; the source keeps nothing.
  const Json moved = WaitTask(*Client().Call("POST", "/api/v1/guests/g/migrate", &cold));
  ASSERT_EQ(moved["state"], "succeeded") << moved.dump();
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/g"))["host"], dst);
  EXPECT_EQ(cluster_.StateOf(dst, "g"), "running");
  EXPECT_EQ(cluster_.StateOf(src, "g"), "");
  EXPECT_TRUE(cluster_.DiskFile(dst, "g", "vda") == written) << "the destination's disk differs";
  EXPECT_FALSE(cluster_.DiskFile(src, "g", "vda").has_value());
  EXPECT_FALSE(cluster_.ImageCopy(dst, ref).empty());
  EXPECT_EQ(cluster_.CreateSpec(dst, "g")["disks_carried"], true);
  auto migs = Client().Call("GET", "/api/v1/migrations?guest=g");
  ASSERT_TRUE(migs.ok()) << migs.status().ToString();
  const Json last = (*migs)["migrations"][0];
  EXPECT_EQ(last["phase"], "done") << migs->dump();
  EXPECT_EQ(last["stats"]["disk_total_bytes"], written.size()) << last.dump();
  // The stored spec is the guest's, not the move's: a later create makes its disk as before.
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests WHERE spec LIKE '%disks_carried%'"), 0);
}

// An image imported from an http URL (the manager downloads it with libcurl): here served by the
// manager's own HTTP server on a route added for the test. A URL that answers 404, and one where
// nothing listens, are clear errors (the latter retryable) that make no image.
TEST_F(StorageCatalogueTest, ImagesImportFromUrls) {
  StartManager();
  std::string bytes(1 << 20, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i % 251);
  router_->AddPublic("GET", "/files/base.raw", [&bytes](const api::Request&) {
    api::Response r;
    r.content_type = "application/octet-stream";
    r.body = bytes;
    return r;
  });
  router_->AddPublic("GET", "/files/missing.raw",
                     [](const api::Request&) { return api::Response::Error(NotFoundError("no such file")); });
  const std::string base = "http://127.0.0.1:" + std::to_string(server_->port());
  Json done = ImportImage("web-base", base + "/files/base.raw");
  ASSERT_EQ(done["state"], "succeeded") << done.dump();
  EXPECT_EQ(done["result"]["size_bytes"], 1 << 20);
  EXPECT_EQ(done["result"]["source"], base + "/files/base.raw");
  // A volume cloned from it holds the downloaded bytes.
  Json vol = {{"name", "v"}, {"image", "web-base"}, {"size_gib", 1}};
  ASSERT_TRUE(Client().Call("POST", "/api/v1/volumes", &vol).ok());
  auto shown = Client().Call("GET", "/api/v1/volumes/v");
  ASSERT_TRUE(shown.ok());
  const std::string file =
      (dir_ / "storage" / "volumes" / ((*shown)["backend_name"].get<std::string>() + ".qcow2")).string();
  const std::string head = (dir_ / "head.raw").string();
  auto read =
      ::uw::RunCommand({"qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=4096", "count=1", "if=" + file, "of=" + head},
                       {}, std::chrono::seconds(30));
  ASSERT_TRUE(read.ok() && read->exit_code == 0) << (read.ok() ? read->err : read.status().ToString());
  std::ifstream in(head, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, bytes.substr(0, 4096));

  // A download that fails fails the task, saying why; nothing is recorded.
  Json missing = ImportImage("missing", base + "/files/missing.raw");
  EXPECT_EQ(missing["state"], "failed") << missing.dump();
  EXPECT_EQ(missing["error"]["code"], "invalid_argument") << missing.dump();
  EXPECT_NE(missing["error"]["message"].get<std::string>().find("404"), std::string::npos) << missing.dump();
  Json nobody = ImportImage("nobody", "http://127.0.0.1:9/base.raw");
  EXPECT_EQ(nobody["state"], "failed") << nobody.dump();
  EXPECT_EQ(nobody["error"]["code"], "unavailable") << nobody.dump();
  EXPECT_NE(nobody["error"]["message"].get<std::string>().find("127.0.0.1:9"), std::string::npos) << nobody.dump();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM images"), 1);
  ASSERT_TRUE(Client().Call("DELETE", "/api/v1/volumes/v").ok());
  ASSERT_TRUE(Client().Call("DELETE", "/api/v1/images/web-base").ok());
}

// The image and volume lists page by name (?limit=&after=, "next", "total"), a tenant's by its short
// names.
TEST_F(StorageCatalogueTest, ImageAndVolumeListsPage) {
  StartManager();
  std::string acme = TenantToken("acme");
  for (const char* v : {"a", "b", "c"}) {
    Json vol = {{"name", v}, {"size_gib", 1}};
    ASSERT_TRUE(Client(acme).Call("POST", "/api/v1/volumes", &vol).ok());
  }
  Json other = {{"name", "z"}, {"size_gib", 1}, {"tenant", "beta"}};
  ASSERT_TRUE(Client().Call("POST", "/api/v1/volumes", &other).ok());
  auto first = Client(acme).Call("GET", "/api/v1/volumes?limit=2");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_EQ((*first)["volumes"].size(), 2u);
  EXPECT_EQ((*first)["next"], "b");
  EXPECT_EQ((*first)["total"], 3);
  auto rest = Client(acme).Call("GET", "/api/v1/volumes?limit=2&after=b");
  ASSERT_TRUE(rest.ok()) << rest.status().ToString();
  ASSERT_EQ((*rest)["volumes"].size(), 1u);
  EXPECT_EQ((*rest)["volumes"][0]["name"], "c");
  EXPECT_EQ((*rest)["next"], nullptr);
  auto all = Client().Call("GET", "/api/v1/volumes?limit=3");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ((*all)["next"], "acme:c");
  EXPECT_EQ((*all)["total"], 4);
  EXPECT_EQ(Client().Do("GET", "/api/v1/volumes?limit=0")->status, 400);
  for (const char* i : {"i1", "i2"}) ASSERT_EQ(ImportImage(i, source_)["state"], "succeeded");
  auto images = Client(acme).Call("GET", "/api/v1/images?limit=1");
  ASSERT_TRUE(images.ok()) << images.status().ToString();
  EXPECT_EQ((*images)["images"][0]["name"], "i1");
  EXPECT_EQ((*images)["next"], "i1");
  EXPECT_EQ((*images)["total"], 2);
  auto second = Client(acme).Call("GET", "/api/v1/images?limit=1&after=i1");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)["images"][0]["name"], "i2");
}

TEST_F(StorageCatalogueTest, WithoutABackendTheRoutesSaySo) {
  config_.storage_backend.clear();
  StartManager();
  Json x = {{"name", "x"}, {"size_gib", 1}};
  auto r = Client().Call("POST", "/api/v1/volumes", &x);
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("no storage backend"), std::string::npos) << r.status().ToString();
  EXPECT_EQ((*Client().Call("GET", "/api/v1/storage"))["backend"], nullptr);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/volumes"))["volumes"].size(), 0u);
}

TEST_F(StorageCatalogueTest, AVolumeLeftBeingCreatedIsSettledAtTheNextStart) {
  StartManager();
  Json kept = {{"name", "kept"}, {"size_gib", 1}};
  ASSERT_TRUE(Client().Call("POST", "/api/v1/volumes", &kept).ok());
  // As if the manager had been killed between the row and the backend's create.
  ASSERT_TRUE(manager_->store()
                  .Exec("INSERT INTO volumes(key, tenant, name, backend, backend_name, size_gib, state, created_ms) "
                        "VALUES ('lost', '', 'lost', 'local', 'vol-0000000000000000', 1, 'creating', 0)")
                  .ok());
  ASSERT_TRUE(manager_->store().Exec("UPDATE volumes SET state = 'creating' WHERE key = 'kept'").ok());
  StopManager();
  StartManager();
  EXPECT_TRUE(Client().Call("GET", "/api/v1/storage").ok());  // opens the backend, which settles them
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM volumes WHERE key = 'lost'"), 0);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/volumes/kept"))["state"], "ready");
}

}  // namespace
}  // namespace uw::manager::testing
