// The local backend against the real qemu-img and real files (no daemon needed: a unit test).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "common/command.h"
#include "storage/storage.h"

namespace uw::storage {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kMiB = 1 << 20;

class LocalBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("uw-storage-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto b = OpenLocalBackend({(dir_ / "store").string()});
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    backend_ = std::move(*b);
    // A 16 MiB raw "golden image" whose first bytes are a marker.
    source_ = dir_ / "golden.raw";
    std::ofstream(source_) << "UNDERWARE-GOLDEN";
    fs::resize_file(source_, 16 * kMiB);
  }
  void TearDown() override {
    backend_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // The first 16 bytes the guest would read from `volume` (qemu-img dd through the backing chain).
  std::string FirstBytes(const std::string& volume) {
    const fs::path out = dir_ / "head.raw";
    fs::remove(out);
    auto r = RunCommand({"qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=16", "count=1",
                         "if=" + (dir_ / "store/volumes" / (volume + ".qcow2")).string(), "of=" + out.string()},
                        {}, std::chrono::seconds(20));
    if (!r.ok() || r->exit_code != 0) return "(dd failed)";
    std::ifstream in(out);
    std::string s(16, '\0');
    in.read(s.data(), 16);
    return s;
  }

  fs::path dir_;
  fs::path source_;
  std::unique_ptr<StorageBackend> backend_;
};

TEST_F(LocalBackendTest, ImportCloneResizeSnapshotAndDeleteInOrder) {
  auto image = backend_->ImportImage("golden", source_.string());
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  EXPECT_EQ(image->format, "qcow2");
  EXPECT_EQ(image->virtual_bytes, 16 * kMiB);
  EXPECT_TRUE(image->volumes.empty());
  EXPECT_EQ(backend_->ImportImage("golden", source_.string()).status().code(), StatusCode::kAlreadyExists);

  auto v = backend_->CreateVolume({"v1", 0, "golden"});
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->image, "golden");
  EXPECT_EQ(v->virtual_bytes, 16 * kMiB);
  EXPECT_FALSE(v->in_use);
  EXPECT_EQ(FirstBytes("v1"), "UNDERWARE-GOLDEN");  // the clone reads through to its image
  auto bigger = backend_->CreateVolume({"v2", 32 * kMiB, "golden"});
  ASSERT_TRUE(bigger.ok()) << bigger.status().ToString();
  EXPECT_EQ(bigger->virtual_bytes, 32 * kMiB);
  auto empty = backend_->CreateVolume({"data", 8 * kMiB, ""});
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ(empty->image, "");

  auto golden = backend_->GetImage("golden");
  ASSERT_TRUE(golden.ok());
  EXPECT_EQ(golden->volumes, (std::vector<std::string>{"v1", "v2"}));
  // An image with clones cannot go, and says which.
  Status refused = backend_->DeleteImage("golden");
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("v1, v2"), std::string::npos) << refused.message();

  // Volumes only grow.
  EXPECT_EQ(backend_->ResizeVolume("v1", 8 * kMiB).status().code(), StatusCode::kInvalidArgument);
  auto grown = backend_->ResizeVolume("v1", 64 * kMiB);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  EXPECT_EQ(grown->virtual_bytes, 64 * kMiB);
  EXPECT_EQ(FirstBytes("v1"), "UNDERWARE-GOLDEN");

  ASSERT_TRUE(backend_->SnapshotVolume("v1", "before").ok());
  EXPECT_EQ(backend_->SnapshotVolume("v1", "before").code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(backend_->GetVolume("v1")->snapshots, (std::vector<std::string>{"before"}));

  auto listed = backend_->ListVolumes();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 3u);
  EXPECT_EQ((*listed)[0].name, "data");

  auto disk = backend_->Disk("v1");
  ASSERT_TRUE(disk.ok());
  EXPECT_EQ(disk->type, "file");
  EXPECT_EQ(disk->path, (dir_ / "store/volumes/v1.qcow2").string());

  auto cap = backend_->GetCapacity();
  ASSERT_TRUE(cap.ok());
  EXPECT_GT(cap->total_bytes, 0);
  EXPECT_GT(cap->used_bytes, 0);

  for (const char* name : {"v1", "v2", "data"}) ASSERT_TRUE(backend_->DeleteVolume(name).ok()) << name;
  EXPECT_TRUE(backend_->DeleteImage("golden").ok());
  EXPECT_TRUE(backend_->ListImages()->empty());
  EXPECT_TRUE(backend_->ListVolumes()->empty());
}

TEST_F(LocalBackendTest, BadInputIsRefusedAndLeavesNothingBehind) {
  ASSERT_TRUE(backend_->ImportImage("golden", source_.string()).ok());
  EXPECT_EQ(backend_->CreateVolume({"v", 0, "missing"}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(backend_->CreateVolume({"v", 4 * kMiB, "golden"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->CreateVolume({"v", 0, ""}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->CreateVolume({"v", -1, ""}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->CreateVolume({"../v", kMiB, ""}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->ImportImage("x", (dir_ / "nope.raw").string()).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(backend_->GetVolume("v").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(backend_->ResizeVolume("v", kMiB).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(backend_->DeleteVolume("v").code(), StatusCode::kNotFound);
  EXPECT_EQ(backend_->Disk("v").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(backend_->CreateVolume({"v", kMiB, ""}).ok());
  EXPECT_EQ(backend_->CreateVolume({"v", kMiB, ""}).status().code(), StatusCode::kAlreadyExists);
  // Nothing half-made is left in the directories.
  for (const char* d : {"store/images", "store/volumes"}) {
    for (const auto& e : fs::directory_iterator(dir_ / d)) {
      EXPECT_EQ(e.path().filename().string().find(".part"), std::string::npos) << e.path();
    }
  }
  // A file that is neither qcow2 nor raw by qemu-img's account is refused by name.
  const fs::path vmdk = dir_ / "disk.vmdk";
  ASSERT_TRUE(
      RunCommand({"qemu-img", "create", "-q", "-f", "vmdk", vmdk.string(), "1M"}, {}, std::chrono::seconds(10)).ok());
  auto refused = backend_->ImportImage("odd", vmdk.string());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("vmdk"), std::string::npos) << refused.status().ToString();
}

// A volume a running QEMU holds open is in use: it cannot be deleted, resized or snapshotted.
TEST_F(LocalBackendTest, AVolumeARunningQemuHoldsIsInUse) {
  ASSERT_TRUE(backend_->CreateVolume({"busy", 8 * kMiB, ""}).ok());
  const std::string file = (dir_ / "store/volumes/busy.qcow2").string();
  // qemu-io keeps the image open (and locked, as QEMU does) while it reads commands from stdin.
  const fs::path fifo = dir_ / "in";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execlp("sh", "sh", "-c", ("exec qemu-io -f qcow2 " + file + " < " + fifo.string() + " >/dev/null 2>&1").c_str(),
           nullptr);
    _exit(127);
  }
  std::ofstream hold(fifo);  // opens when qemu-io's shell opens the other end
  // Until qemu-io has opened it (its lock is the marker; the bound only keeps a broken run finite).
  bool seen = false;
  const auto start = std::chrono::steady_clock::now();
  while (!seen && std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    auto v = backend_->GetVolume("busy");
    seen = v.ok() && v->in_use;
    if (!seen) usleep(20000);
  }
  ASSERT_TRUE(seen) << "qemu-io never held the volume";
  EXPECT_EQ(backend_->DeleteVolume("busy").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend_->ResizeVolume("busy", 16 * kMiB).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend_->SnapshotVolume("busy", "s").code(), StatusCode::kFailedPrecondition);
  hold << "quit\n";
  hold.close();
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_FALSE(backend_->GetVolume("busy")->in_use);
  EXPECT_TRUE(backend_->DeleteVolume("busy").ok());
}

}  // namespace
}  // namespace uw::storage
