#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "vmm/libvirt_driver.h"

namespace uw::vmm {
namespace {

namespace fs = std::filesystem;

class KvmDetectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("uw-kvm-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(root_ / "dev");
    fs::create_directories(root_ / "sys/module");
  }
  void TearDown() override { fs::remove_all(root_); }
  void Touch(const std::string& rel) { std::ofstream(root_ / rel) << ""; }
  fs::path root_;
};

TEST_F(KvmDetectTest, NoDevice) {
  auto k = DetectKvm(root_.string());
  EXPECT_FALSE(k.device_present);
  EXPECT_FALSE(k.usable);
  EXPECT_NE(k.reason.find("absent"), std::string::npos);
}

TEST_F(KvmDetectTest, PvmIsNotUsable) {
  Touch("dev/kvm");
  fs::create_directories(root_ / "sys/module/kvm_pvm");
  auto k = DetectKvm(root_.string());
  EXPECT_TRUE(k.device_present);
  EXPECT_FALSE(k.usable);
  EXPECT_EQ(k.module, "kvm_pvm");
  EXPECT_NE(k.reason.find("kvm_pvm"), std::string::npos);
}

TEST_F(KvmDetectTest, IntelIsUsable) {
  Touch("dev/kvm");
  fs::create_directories(root_ / "sys/module/kvm_intel");
  auto k = DetectKvm(root_.string());
  EXPECT_TRUE(k.usable) << k.reason;
  EXPECT_EQ(k.module, "kvm_intel");
}

TEST_F(KvmDetectTest, ThisMachine) {
  // Whatever this machine is, the answer must be explained when KVM is not usable.
  auto k = DetectKvm("/");
  if (!k.usable) {
    EXPECT_FALSE(k.reason.empty());
  }
}

// Inside a test-bed host: cgroup v1 hierarchies mounted per controller (cpu and cpuacct apart, a
// named systemd hierarchy), no cgroup2 mount; the container's libvirt_lxc process is in machine/.
TEST(CgroupProcsFilesTest, MapsEachHierarchyToItsMount) {
  const std::string mountinfo =
      "22 1 0:20 / /sys rw,nosuid - sysfs sysfs rw\n"
      "30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
      "31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
      "32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
      "33 30 0:29 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
      "34 30 0:30 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n";
  const std::string proc_cgroup =
      "9:name=systemd:/daemons\n"
      "4:memory:/machine/lxc-9055-ct1.libvirt-lxc\n"
      "2:cpuacct:/machine/lxc-9055-ct1.libvirt-lxc\n"
      "1:cpu:/machine/lxc-9055-ct1.libvirt-lxc\n"
      "8:pids:/daemons\n"  // not mounted here: skipped
      "0::/\n";            // no cgroup2 mount: skipped
  EXPECT_EQ(CgroupProcsFiles(proc_cgroup, mountinfo),
            (std::vector<std::string>{"/sys/fs/cgroup/systemd/daemons/cgroup.procs",
                                      "/sys/fs/cgroup/memory/machine/lxc-9055-ct1.libvirt-lxc/cgroup.procs",
                                      "/sys/fs/cgroup/cpuacct/machine/lxc-9055-ct1.libvirt-lxc/cgroup.procs",
                                      "/sys/fs/cgroup/cpu/machine/lxc-9055-ct1.libvirt-lxc/cgroup.procs"}));
}

// A unified (cgroup2) host, a combined cpu,cpuacct v1 mount, a mount of a subtree and an escaped
// mount point.
TEST(CgroupProcsFilesTest, UnifiedCombinedSubtreeAndEscapes) {
  EXPECT_EQ(CgroupProcsFiles("0::/machine.slice/lxc\\x2dct1.scope\n",
                             "40 30 0:31 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"),
            (std::vector<std::string>{"/sys/fs/cgroup/machine.slice/lxc\\x2dct1.scope/cgroup.procs"}));
  EXPECT_EQ(
      CgroupProcsFiles("3:cpu,cpuacct:/a/b\n", "41 30 0:32 / /cg/cpu\\040acct rw - cgroup cgroup rw,cpu,cpuacct\n"),
      (std::vector<std::string>{"/cg/cpu acct/a/b/cgroup.procs"}));
  // Mounted from /a: /a/b is below it, /ab and /x are not.
  const std::string sub = "42 30 0:33 /a /mnt/cg rw - cgroup cgroup rw,memory\n";
  EXPECT_EQ(CgroupProcsFiles("4:memory:/a/b\n", sub), (std::vector<std::string>{"/mnt/cg/b/cgroup.procs"}));
  EXPECT_EQ(CgroupProcsFiles("4:memory:/a\n", sub), (std::vector<std::string>{"/mnt/cg/cgroup.procs"}));
  EXPECT_TRUE(CgroupProcsFiles("4:memory:/ab\n", sub).empty());
  EXPECT_TRUE(CgroupProcsFiles("4:memory:/x\n", sub).empty());
  EXPECT_TRUE(CgroupProcsFiles("garbage\n", sub).empty());
  EXPECT_TRUE(CgroupProcsFiles("4:memory:/a\n", "garbage line\n").empty());
}

}  // namespace
}  // namespace uw::vmm
