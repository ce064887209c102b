// Guests on shared storage, on the namespace test bed with its Ceph (scripts/testbed up --ceph):
// a guest boots with a clone of a golden image as its disk, writes a marker, live-migrates with
// its memory only, and reads the marker back on the destination; then it starts again on the other
// host from the same volume. The same guest on a local disk migrates with the disk copied; a volume
// hot-plugged into a running guest is written and unplugged; a killed OSD loses nothing. Every disk
// byte is checked from outside the guest too (QEMU's own rbd driver reading the volume), so the
// marker is on Ceph, not only in the guest's page cache.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/command.h"
#include "storage/storage.h"
#include "tests/ceph_config.h"
#include "tests/testbed_client.h"

namespace uw::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
constexpr int64_t kMiB = 1 << 20;

class RbdGuestOnTestbed : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = Testbed::Load();
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    bed_ = std::move(*t);
    ASSERT_GE(bed_.hosts.size(), 2u);
    ASSERT_FALSE(bed_.hosts[0].agent_url.empty()) << "the test bed runs no agents";
    if (!bed_.ceph.is_object()) GTEST_SKIP() << "the test bed runs no Ceph (scripts/testbed up 2 --ceph)";
    config_ = uw::testing::RbdConfigOf(bed_.ceph);
    auto b = storage::OpenRbdBackend(config_);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    rbd_ = std::move(*b);
    tag_ = std::to_string(getpid());
    guest_ = "it-rbd-" + tag_;
    image_ = "golden-" + tag_;
    volume_ = "it-rbd-" + tag_;
    const fs::path source = fs::temp_directory_path() / ("uw-golden-" + tag_ + ".raw");
    std::ofstream(source) << "UW-GOLDEN-IMAGE";
    fs::resize_file(source, 16 * kMiB);
    auto imported = rbd_->ImportImage(image_, source.string());
    fs::remove(source);
    ASSERT_TRUE(imported.ok()) << imported.status().ToString();
    const auto start = std::chrono::steady_clock::now();
    auto v = rbd_->CreateVolume({volume_, 0, image_});
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    std::printf("[ figure ] clone of the golden image: %.1f ms\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  void TearDown() override {
    if (!rbd_) return;
    for (size_t h = 0; h < 2; ++h) (void)Call(h, "DELETE", "/api/v1/guests/" + guest_ + "?force=true");
    // The guest's QEMU lets go of the volume when it is deleted; one killed without closing it
    // holds its watch until the OSD times it out (osd_client_watch_timeout, 30 s).
    Status gone;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 450; ++i) {
      gone = rbd_->DeleteVolume(volume_);
      if (gone.ok() || gone.code() == StatusCode::kNotFound) break;
      usleep(100000);
    }
    std::printf("[ figure ] guest deleted -> its volume deleted: %.1f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    EXPECT_TRUE(gone.ok()) << gone.ToString();
    EXPECT_TRUE(rbd_->DeleteImage(image_).ok());
  }

  api::ClientResponse Call(size_t host, const std::string& method, const std::string& path,
                           const std::string& body = "") {
    auto r = bed_.Agent(host).Do(method, path, body, {{"Content-Type", "application/json"}});
    if (!r.ok()) return api::ClientResponse{0, {}, r.status().ToString()};
    return *r;
  }
  std::string Exec(size_t host, const std::string& command, int timeout_s = 30) {
    auto r = Call(host, "POST", "/api/v1/guests/" + guest_ + "/exec",
                  Json({{"command", command}, {"timeout_s", timeout_s}}).dump());
    if (r.status != 200) return "<exec failed: " + std::to_string(r.status) + " " + r.body + ">";
    return Json::parse(r.body)["output"].get<std::string>();
  }
  api::ClientResponse Create(size_t host) {
    Json disk = {{"rbd", config_.pool + "/uw-vol-" + volume_}};
    Json spec = {{"name", guest_}, {"kind", "qemu"}, {"image", "tiny"}, {"memory_mib", 256}};
    spec["disks"] = Json::array({disk});
    return Call(host, "POST", "/api/v1/guests", spec.dump());
  }
  // The first `len` bytes at 1 MiB of the guest's vda on `host`, read from the disk itself (the page
  // cache dropped first).
  std::string MarkerOnDisk(size_t host, size_t len) {
    return Exec(host,
                "sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=4096 skip=256 count=1 2>/dev/null | "
                "head -c " +
                    std::to_string(len));
  }
  // Moves the guest live from host 0 to host 1, the destination prepared with `disks` (the guest's
  // local disks to copy), and returns the source's last migration report (its "state" is
  // "completed" when the move worked; otherwise it says which step failed).
  Json MigrateToSecondHost(const Json& disks) {
    Json request = {{"guest", guest_}, {"kind", "qemu"}, {"memory_mib", 256}, {"vcpus", 1}};
    if (!disks.empty()) request["disks"] = disks;
    auto prep = Call(1, "POST", "/api/v1/migrations/prepare", request.dump());
    if (prep.status != 200) return {{"state", "prepare failed"}, {"error", prep.body}};
    const Json dest = Json::parse(prep.body);
    if (dest["disks"].size() != disks.size()) return {{"state", "prepared other disks"}, {"error", prep.body}};
    auto mig = Call(
        0, "POST", "/api/v1/guests/" + guest_ + "/migrate",
        Json({{"destination",
               {{"host", dest["host"]}, {"migration_uri", dest["migration_uri"]}, {"state_dir", dest["state_dir"]}}}})
            .dump());
    if (mig.status != 202) return {{"state", "migrate refused"}, {"error", mig.body}};
    Json job;
    const bool ended = WaitFor(
        [&] {
          auto r = Call(0, "GET", "/api/v1/guests/" + guest_ + "/migration");
          job = Json::parse(r.body, nullptr, false);
          return r.status != 200 || job.value("state", "") != "running";
        },
        120s);
    return ended ? job : Json({{"state", "still running after 120 s"}, {"job", job}});
  }
  // `len` bytes at `offset` of the volume, read by QEMU's rbd driver from outside any guest (a
  // whole copy: qemu-img dd cannot skip into an rbd: source).
  std::string VolumeBytes(int64_t offset, size_t len) {
    const fs::path out = fs::temp_directory_path() / ("uw-rbd-read-" + tag_);
    fs::remove(out);
    const std::string spec = "rbd:" + config_.pool + "/uw-vol-" + volume_ + ":id=" + config_.user +
                             ":conf=" + config_.config_file + ":keyring=" + config_.keyring;
    auto r = ::uw::RunCommand({"qemu-img", "convert", "-U", "-f", "raw", "-O", "raw", spec, out.string()}, {}, 60s);
    if (!r.ok() || r->exit_code != 0) {
      return "<qemu-img convert failed: " + (r.ok() ? r->err : r.status().message()) + ">";
    }
    std::ifstream in(out);
    in.seekg(offset);
    std::string s(len, '\0');
    in.read(s.data(), static_cast<std::streamsize>(len));
    fs::remove(out);
    return s;
  }

  Testbed bed_;
  storage::RbdConfig config_;
  std::unique_ptr<storage::StorageBackend> rbd_;
  std::string tag_, guest_, image_, volume_;
};

TEST_F(RbdGuestOnTestbed, MarkerOnAnRbdCloneSurvivesLiveMigrationAndARestartElsewhere) {
  const auto start = std::chrono::steady_clock::now();
  auto created = Create(0);
  ASSERT_EQ(created.status, 201) << created.body;
  ASSERT_EQ(Exec(0, "ping", 120), "pong\n");
  std::printf("[ figure ] guest on the clone: create -> answering: %.2f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  // The clone reads through to its golden image.
  EXPECT_EQ(Exec(0, "dd if=/dev/vda bs=15 count=1 2>/dev/null"), "UW-GOLDEN-IMAGE");
  // The marker at 1 MiB, written through the guest's page cache and flushed to the disk.
  const std::string marker = "UW-MARKER-" + tag_;
  ASSERT_EQ(Exec(0, "printf '" + marker + "' | dd of=/dev/vda bs=4096 seek=256 conv=sync,fsync 2>/dev/null; echo $?"),
            "0\n");
  EXPECT_EQ(VolumeBytes(kMiB, 4096).substr(0, marker.size()), marker) << "the marker is not on the RBD volume";

  // Live migration with memory only: the destination is prepared with no disks to copy.
  const Json job = MigrateToSecondHost(Json::array());
  ASSERT_EQ(job.value("state", ""), "completed") << job.dump();
  EXPECT_EQ(job["job"].value("disk_total_bytes", int64_t{-1}), 0)
      << "a memory-only move copied disk bytes: " << job.dump();
  std::printf("[ figure ] rbd guest live migration: %s\n", job.dump().c_str());
  ASSERT_TRUE(WaitFor([&] { return Exec(1, "ping", 5) == "pong\n"; }, 60s));
  EXPECT_EQ(MarkerOnDisk(1, marker.size()), marker);
  EXPECT_EQ(Call(0, "GET", "/api/v1/guests/" + guest_).status, 404) << "the source still has the guest";

  // The guest stops on h2 and starts on h1 from the same volume (what an HA restart does).
  ASSERT_EQ(Call(1, "DELETE", "/api/v1/guests/" + guest_ + "?force=true").status, 200);
  created = Create(0);
  ASSERT_EQ(created.status, 201) << created.body;
  ASSERT_EQ(Exec(0, "ping", 120), "pong\n");
  EXPECT_EQ(Exec(0, "dd if=/dev/vda bs=4096 skip=256 count=1 2>/dev/null | head -c " + std::to_string(marker.size())),
            marker);
  // While the guest runs, its volume is in use and cannot be deleted; its image has a clone.
  auto busy = rbd_->GetVolume(volume_);
  ASSERT_TRUE(busy.ok()) << busy.status().ToString();
  EXPECT_TRUE(busy->in_use);
  EXPECT_EQ(rbd_->DeleteVolume(volume_).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(rbd_->DeleteImage(image_).code(), StatusCode::kFailedPrecondition);
}

// The same guest on a local qcow2 disk of the same size instead: its live migration copies the
// disk (the destination makes an empty one first), and the marker is there on the destination.
TEST_F(RbdGuestOnTestbed, TheSameGuestOnALocalDiskMigratesWithItsDiskCopied) {
  Json spec = {{"name", guest_}, {"kind", "qemu"}, {"image", "tiny"}, {"memory_mib", 256}};
  spec["disks"] = Json::array({{{"size_mib", 16}}});
  auto created = Call(0, "POST", "/api/v1/guests", spec.dump());
  ASSERT_EQ(created.status, 201) << created.body;
  ASSERT_EQ(Exec(0, "ping", 120), "pong\n");
  const std::string marker = "UW-LOCAL-" + tag_;
  ASSERT_EQ(Exec(0, "printf '" + marker + "' | dd of=/dev/vda bs=4096 seek=256 conv=sync,fsync 2>/dev/null; echo $?"),
            "0\n");
  auto got = Call(0, "GET", "/api/v1/guests/" + guest_);
  ASSERT_EQ(got.status, 200) << got.body;
  const Json disks = Json::parse(got.body)["local_disks"];
  ASSERT_EQ(disks.size(), 1u) << got.body;
  const Json job = MigrateToSecondHost(disks);
  ASSERT_EQ(job.value("state", ""), "completed") << job.dump();
  EXPECT_GT(job["job"].value("disk_total_bytes", int64_t{0}), 0) << "the local disk was not copied: " << job.dump();
  std::printf("[ figure ] local-disk guest live migration: %s\n", job.dump().c_str());
  ASSERT_TRUE(WaitFor([&] { return Exec(1, "ping", 5) == "pong\n"; }, 60s));
  EXPECT_EQ(MarkerOnDisk(1, marker.size()), marker);
}

// A volume hot-plugged into a running guest (PCI hot-plug through ACPI): the guest sees it, writes
// a marker that lands on the volume, and lets go of it when it is unplugged; bad requests change
// nothing.
TEST_F(RbdGuestOnTestbed, AVolumeHotPlugsIntoARunningGuestAndUnplugsAgain) {
  Json spec = {{"name", guest_}, {"kind", "qemu"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto created = Call(0, "POST", "/api/v1/guests", spec.dump());
  ASSERT_EQ(created.status, 201) << created.body;
  ASSERT_EQ(Exec(0, "ping", 120), "pong\n");
  const std::string disks = "/api/v1/guests/" + guest_ + "/disks";
  const Json disk = {{"rbd", config_.pool + "/uw-vol-" + volume_}, {"target", "vdb"}};
  EXPECT_EQ(Call(0, "POST", disks, Json({{"rbd", disk["rbd"]}, {"target", "../x"}}).dump()).status, 400);
  auto start = std::chrono::steady_clock::now();
  auto attached = Call(0, "POST", disks, disk.dump());
  ASSERT_EQ(attached.status, 200) << attached.body;
  std::printf("[ figure ] rbd volume hot-plug (agent call): %.0f ms\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  EXPECT_EQ(Json::parse(attached.body)["spec"]["disks"].size(), 1u) << attached.body;
  EXPECT_EQ(Call(0, "POST", disks, disk.dump()).status, 409) << "the same target twice";
  // The guest's kernel finds the new PCI device; the clone reads through to its golden image. (The
  // guest names its virtio disks in the order it finds them: its only disk is its vda, whatever
  // libvirt's target says.)
  ASSERT_EQ(Exec(0,
                 "for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done; "
                 "dd if=/dev/vda bs=15 count=1 2>/dev/null"),
            "UW-GOLDEN-IMAGE");
  const std::string marker = "UW-HOTPLUG-" + tag_;
  ASSERT_EQ(Exec(0, "printf '" + marker + "' | dd of=/dev/vda bs=4096 seek=256 conv=sync,fsync 2>/dev/null; echo $?"),
            "0\n");
  EXPECT_EQ(VolumeBytes(kMiB, 4096).substr(0, marker.size()), marker) << "the marker is not on the RBD volume";

  // The volume grows under the running guest: the image in Ceph, then its QEMU is told (never smaller).
  EXPECT_EQ(Exec(0, "cat /sys/block/vda/size"), std::to_string(16 * kMiB / 512) + "\n");
  ASSERT_TRUE(rbd_->ResizeVolume(volume_, 32 * kMiB).ok());
  EXPECT_EQ(Call(0, "POST", disks + "/vdb/resize", R"({"size_mib": 8})").status, 400);
  auto grown = Call(0, "POST", disks + "/vdb/resize", R"({"size_mib": 32})");
  ASSERT_EQ(grown.status, 200) << grown.body;
  EXPECT_EQ(Exec(0, "cat /sys/block/vda/size"), std::to_string(32 * kMiB / 512) + "\n");
  EXPECT_EQ(VolumeBytes(kMiB, 4096).substr(0, marker.size()), marker);

  EXPECT_EQ(Call(0, "DELETE", disks + "/vdc").status, 404);
  start = std::chrono::steady_clock::now();
  auto detached = Call(0, "DELETE", disks + "/vdb");
  ASSERT_EQ(detached.status, 200) << detached.body;
  std::printf("[ figure ] rbd volume unplug (agent call, until the guest let go): %.0f ms\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  EXPECT_TRUE(Json::parse(detached.body)["spec"]["disks"].empty()) << detached.body;
  EXPECT_EQ(Exec(0, "[ -b /dev/vda ] && echo present || echo gone"), "gone\n");
  // Let go of by QEMU too: nothing holds the volume any more.
  auto free = rbd_->GetVolume(volume_);
  ASSERT_TRUE(free.ok()) << free.status().ToString();
  EXPECT_FALSE(free->in_use);
}

// The OSD dies under a running guest (bluestore, so it can come back with its data): the guest's
// writes fail or stall instead of the volume being lost, and once the OSD is back the guest writes
// again and every marker written before is still on the volume.
TEST_F(RbdGuestOnTestbed, AKilledOsdStallsOrFailsTheGuestsWritesAndLosesNothing) {
  if (bed_.ceph.value("store", "") != "bluestore") GTEST_SKIP() << "needs the test bed's Ceph on bluestore";
  const char* src = std::getenv("UW_SOURCE_DIR");
  const std::string ceph = std::string(src != nullptr ? src : ".") + "/scripts/ceph";
  const std::string dir = bed_.ceph.value("dir", "");
  auto created = Create(0);
  ASSERT_EQ(created.status, 201) << created.body;
  ASSERT_EQ(Exec(0, "ping", 120), "pong\n");
  const std::string before = "UW-BEFORE-" + tag_;
  ASSERT_EQ(Exec(0, "printf '" + before + "' | dd of=/dev/vda bs=4096 seek=256 conv=sync,fsync 2>/dev/null; echo $?"),
            "0\n");

  auto killed = ::uw::RunCommand({ceph, "kill-osd", dir}, {}, 60s);
  ASSERT_TRUE(killed.ok() && killed->exit_code == 0) << (killed.ok() ? killed->err : killed.status().ToString());
  const auto start = std::chrono::steady_clock::now();
  const std::string during =
      Exec(0, "printf 'UW-DURING' | dd of=/dev/vda bs=4096 seek=512 conv=sync,fsync 2>&1; echo rc=$?", 60);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ figure ] a guest's write with the OSD down: %.1f s, answered: %s\n", took, during.c_str());
  auto restarted = ::uw::RunCommand({ceph, "start-osd", dir}, {}, 120s);
  ASSERT_TRUE(restarted.ok() && restarted->exit_code == 0)
      << (restarted.ok() ? restarted->out + restarted->err : restarted.status().ToString());
  const auto back = std::chrono::steady_clock::now();
  const std::string after = "UW-AFTER-" + tag_;
  std::string wrote;
  ASSERT_TRUE(WaitFor(
      [&] {
        wrote =
            Exec(0, "printf '" + after + "' | dd of=/dev/vda bs=4096 seek=768 conv=sync,fsync 2>&1; echo rc=$?", 30);
        return wrote.find("rc=0") != std::string::npos;
      },
      120s, 1s))
      << "the guest cannot write after the OSD returned: " << wrote << "\nconsole:\n"
      << Call(0, "GET", "/api/v1/guests/" + guest_ + "/console").body;
  std::printf("[ figure ] OSD back -> the guest writes again: %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - back).count());
  EXPECT_EQ(VolumeBytes(kMiB, 4096).substr(0, before.size()), before);
  EXPECT_EQ(VolumeBytes(3 * kMiB, 4096).substr(0, after.size()), after);
}

}  // namespace
}  // namespace uw::testing
