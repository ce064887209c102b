// Guests' disks on the local storage backend, on the real test bed: the manager keeps the images,
// a guest's {image, size_gib} disk is a qcow2 its host's agent makes on that host's copy of the
// image (sent by the manager before the create), a cold move carries the disk to the other host
// (rebased there onto that host's copy of the image), a live migration copies the disk whole, and
// the disk's volume grows under the running guest.
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "common/command.h"
#include "tests/manager_it_fixture.h"

namespace uw::it {
namespace {

class LocalDiskIntegrationTest : public ManagerIntegrationTest {
 protected:
  static void SetUpTestSuite() {
    local_storage_ = true;
    ManagerIntegrationTest::SetUpTestSuite();
  }
  static void TearDownTestSuite() {
    ManagerIntegrationTest::TearDownTestSuite();
    local_storage_ = false;
  }
  // `command` in guest `g` on `host`, through that host's agent; its output, or why not.
  static std::string Exec(const std::string& host, const std::string& g, const std::string& command) {
    Json body = {{"command", command}, {"timeout_s", 30}};
    auto r = AgentOf(host).Call("POST", "/api/v1/guests/" + g + "/exec", &body);
    if (!r.ok()) return "<exec failed: " + r.status().ToString() + ">";
    return r->value("output", "");
  }
  // Moves guest `g` to `host` ("live" or "cold") through the manager and prints the time as `figure`.
  static void Move(const std::string& g, const std::string& host, const std::string& mode, const std::string& figure) {
    Json body = {{"host", host}, {"mode", mode}};
    const auto start = std::chrono::steady_clock::now();
    auto t = Client().Call("POST", "/api/v1/guests/" + g + "/migrate", &body);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    const Json done = WaitTask(*t);
    ASSERT_EQ(done["state"], "succeeded") << done.dump() << "\nconsole:\n" << Console(host, g);
    std::printf("[ figure ] %s: %lld ms (%s)\n", figure.c_str(), static_cast<long long>(MsSince(start)),
                done.value("result", Json()).dump().c_str());
  }
  // The manager's own account (its log lines holding `what`) as figures.
  static void PrintLogFigures(const std::string& what) {
    std::ifstream log(*dir_ / "manager.log");
    for (std::string line; std::getline(log, line);) {
      if (line.find(what) != std::string::npos) std::printf("[ figure ] %s\n", line.c_str());
    }
  }
  // `len` bytes of the guest's vda at 4 KiB block `block`, read from the disk (page cache dropped).
  static std::string OnDisk(const std::string& host, const std::string& g, int block, size_t len) {
    return Exec(host, g,
                "sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=4096 skip=" + std::to_string(block) +
                    " count=1 2>/dev/null | head -c " + std::to_string(len));
  }
};

TEST_F(LocalDiskIntegrationTest, AGuestBootsOnItsHostsCopyOfAnImageKeepsItsDiskThroughColdAndLiveMovesAndItGrows) {
  WaitConnected();
  const std::string tag = std::to_string(getpid()), image = "mit-local-golden-" + tag, g = "mit-local";
  const std::string golden = "UW-GOLDEN-" + tag;
  {
    const std::string file = "/var/tmp/uw-local-golden-" + tag + ".raw";
    // The marker, then 8 MiB that do not compress (the image's qcow2 takes three pieces to send).
    std::FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(golden.c_str(), f);
    std::string noise(8 << 20, '\0');
    uint64_t x = 88172645463325252ULL;
    for (char& c : noise) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      c = static_cast<char>(x);
    }
    std::fwrite(noise.data(), 1, noise.size(), f);
    std::fclose(f);
    ASSERT_EQ(truncate(file.c_str(), 16 << 20), 0);
    Json import = {{"name", image}, {"source", file}};
    auto started = Client().Call("POST", "/api/v1/images", &import);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    Json imported = WaitTask(*started);
    std::remove(file.c_str());
    ASSERT_EQ(imported["state"], "succeeded") << imported.dump();
  }
  const auto create = std::chrono::steady_clock::now();
  CreateBooted(g, 128, false, {{"disks", Json::array({{{"image", image}, {"size_gib", 1}}})}});
  std::printf("[ figure ] guest on a local disk made on an 8 MiB image copied to its host: create to ready %lld ms\n",
              static_cast<long long>(MsSince(create)));
  PrintLogFigures("copied image " + image);
  const std::string first = HostOf(g), from = Other(first), to = first;
  auto vol = Client().Call("GET", "/api/v1/volumes/" + g + "-disk0");
  ASSERT_TRUE(vol.ok()) << vol.status().ToString();
  EXPECT_EQ((*vol)["backend"], "local-host");
  EXPECT_EQ((*vol)["guest"], g);
  // The disk reads through to the image; what the guest writes lands on its own disk.
  EXPECT_EQ(OnDisk(first, g, 0, golden.size()), golden);
  const std::string marker = "UW-LOCAL-MARKER-" + tag;
  ASSERT_EQ(
      Exec(first, g, "printf '" + marker + "' | dd of=/dev/vda bs=4096 seek=256 conv=sync,fsync 2>/dev/null; echo $?"),
      "0\n");
  auto listed = AgentOf(first).Call("GET", "/api/v1/guests/" + g);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ((*listed)["local_disks"].size(), 1u) << listed->dump();

  // A cold move: the guest stops, its disk's file (the writes only; the image stays apart) goes to
  // the other host, which rebases it onto its own copy of the image (the manager sends that first).
  Move(g, from, "cold", "cold move of that guest with its local disk carried");
  if (HasFatalFailure()) return;
  PrintLogFigures("copying disk vda of guest " + g);
  EXPECT_EQ(HostOf(g), from);
  ExpectOnce(g);
  EXPECT_EQ(OnDisk(from, g, 256, marker.size()), marker);
  EXPECT_EQ(OnDisk(from, g, 0, golden.size()), golden);
  {
    auto there = AgentOf(from).Call("GET", "/api/v1/guests/" + g);
    ASSERT_TRUE(there.ok()) << there.status().ToString();
    const std::string path = (*there)["spec"]["disks"][0].value("path", "");
    ASSERT_FALSE(path.empty()) << there->dump();
    // Its backing file is this host's copy: <state_dir>/images/..., beside <state_dir>/disks/.
    const std::string state_dir = path.substr(0, path.rfind("/disks/"));
    auto info = RunCommand({"qemu-img", "info", "-U", "--output=json", path}, {}, std::chrono::seconds(30));
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    ASSERT_EQ(info->exit_code, 0) << info->err;
    const std::string backing = Json::parse(info->out).value("backing-filename", "");
    EXPECT_EQ(backing.rfind(state_dir + "/images/" + image + "@", 0), 0u) << backing << " / " << state_dir;
  }

  // Live migration: the destination gets the whole disk (image and writes) in one file.
  Move(g, to, "live", "live migration of that guest with its local disk copied");
  if (HasFatalFailure()) return;
  EXPECT_EQ(HostOf(g), to);
  ExpectOnce(g);
  EXPECT_EQ(OnDisk(to, g, 256, marker.size()), marker);
  EXPECT_EQ(OnDisk(to, g, 0, golden.size()), golden);

  // The volume grows on the guest's host, and the running guest sees it at once.
  EXPECT_EQ(Exec(to, g, "cat /sys/block/vda/size"), std::to_string((int64_t{1} << 30) / 512) + "\n");
  Json two = {{"size_gib", 2}};
  auto grown = Client().Call("POST", "/api/v1/volumes/" + g + "-disk0/resize", &two);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  EXPECT_TRUE(WaitFor([&] { return Exec(to, g, "cat /sys/block/vda/size") == "4194304\n"; }, std::chrono::seconds(10)))
      << Exec(to, g, "cat /sys/block/vda/size");
  EXPECT_EQ(OnDisk(to, g, 256, marker.size()), marker);

  // The image is in use while a disk is made on it; the guest deleted, its disk's volume goes.
  EXPECT_EQ(Client().Call("DELETE", "/api/v1/images/" + image).status().code(), StatusCode::kFailedPrecondition);
  DeleteGuest(g);
  EXPECT_EQ(Client().Call("GET", "/api/v1/volumes/" + g + "-disk0").status().code(), StatusCode::kNotFound);
  auto gone = Client().Call("DELETE", "/api/v1/images/" + image);
  EXPECT_TRUE(gone.ok()) << gone.status().ToString();
}

}  // namespace
}  // namespace uw::it
