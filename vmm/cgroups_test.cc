// Cgroup layouts from mountinfo texts of the four layouts the agent must run on.
#include "vmm/cgroups.h"

#include <gtest/gtest.h>

namespace uw::vmm {
namespace {

// Pure v2 (Debian 12 and later defaults).
constexpr const char* kV2 =
    "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw\n"
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n";
// v1 with cpu and cpuacct in one hierarchy (systemd's v1 layout).
constexpr const char* kV1Combined =
    "25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
    "26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup "
    "rw,xattr,name=systemd\n"
    "28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup "
    "cgroup "
    "rw,cpu,cpuacct\n"
    "29 25 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:12 - cgroup cgroup rw,memory\n";
// v1 with cpu and cpuacct mounted separately, no cgroup2 (the test bed's hosts on this machine).
constexpr const char* kV1Split =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n";
// The same plus cgroup2 at /sys/fs/cgroup/unified (this machine's root namespace).
const std::string kHybrid =
    std::string(kV1Split) + "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

TEST(CgroupLayoutTest, PureV2) {
  CgroupLayout l = DetectCgroupLayout(kV2);
  EXPECT_EQ(l.version, "v2");
  EXPECT_EQ(l.cpu, "/sys/fs/cgroup");
  EXPECT_EQ(l.cpuacct, "/sys/fs/cgroup");
  EXPECT_EQ(l.unified, "/sys/fs/cgroup");
  EXPECT_NE(l.notes.find("cpu.weight"), std::string::npos) << l.notes;
}

TEST(CgroupLayoutTest, V1Combined) {
  CgroupLayout l = DetectCgroupLayout(kV1Combined);
  EXPECT_EQ(l.version, "v1");
  EXPECT_EQ(l.cpu, "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(l.cpuacct, "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_TRUE(l.cpu_cpuacct_combined);
  EXPECT_EQ(l.unified, "");
  EXPECT_NE(l.notes.find("share one hierarchy"), std::string::npos) << l.notes;
}

TEST(CgroupLayoutTest, V1Split) {
  CgroupLayout l = DetectCgroupLayout(kV1Split);
  EXPECT_EQ(l.version, "v1");
  EXPECT_EQ(l.cpu, "/sys/fs/cgroup/cpu");
  EXPECT_EQ(l.cpuacct, "/sys/fs/cgroup/cpuacct");
  EXPECT_FALSE(l.cpu_cpuacct_combined);
  EXPECT_NE(l.notes.find("separate hierarchies"), std::string::npos) << l.notes;
}

TEST(CgroupLayoutTest, Hybrid) {
  CgroupLayout l = DetectCgroupLayout(kHybrid);
  EXPECT_EQ(l.version, "hybrid");
  EXPECT_EQ(l.cpu, "/sys/fs/cgroup/cpu");
  EXPECT_EQ(l.cpuacct, "/sys/fs/cgroup/cpuacct");
  EXPECT_EQ(l.unified, "/sys/fs/cgroup/unified");
  EXPECT_NE(l.notes.find("/sys/fs/cgroup/unified"), std::string::npos) << l.notes;
  auto j = CgroupLayoutToJson(l);
  EXPECT_EQ(j["version"], "hybrid");
  EXPECT_EQ(j["cpu"], "/sys/fs/cgroup/cpu");
}

TEST(CgroupLayoutTest, NothingMounted) {
  EXPECT_EQ(DetectCgroupLayout("22 1 259:1 / / rw - ext4 /dev/root rw\n").version, "none");
  EXPECT_EQ(DetectCgroupLayout("").version, "none");
}

// QEMU's emulator thread group as /proc/PID/cgroup shows it on each layout.
TEST(CgroupDirOfTest, CpuOfAQemuProcessOnEveryLayout) {
  auto v2 = CgroupDirOf("0::/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope/libvirt/emulator\n", kV2, "cpu");
  ASSERT_TRUE(v2.ok()) << v2.status().ToString();
  EXPECT_EQ(v2->dir, "/sys/fs/cgroup/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope/libvirt/emulator");
  EXPECT_TRUE(v2->v2);

  auto combined = CgroupDirOf(
      "12:memory:/machine/qemu-1-vm1.libvirt-qemu/emulator\n"
      "4:cpu,cpuacct:/machine/qemu-1-vm1.libvirt-qemu/emulator\n"
      "1:name=systemd:/\n",
      kV1Combined, "cpu");
  ASSERT_TRUE(combined.ok()) << combined.status().ToString();
  EXPECT_EQ(combined->dir, "/sys/fs/cgroup/cpu,cpuacct/machine/qemu-1-vm1.libvirt-qemu/emulator");
  EXPECT_FALSE(combined->v2);

  const std::string split_cgroup =
      "9:cpuacct:/uw-testbed/h1/machine/qemu-1-vm1.libvirt-qemu/emulator\n"
      "8:cpu:/uw-testbed/h1/machine/qemu-1-vm1.libvirt-qemu/emulator\n"
      "1:name=systemd:/uw-testbed/h1\n";
  auto split = CgroupDirOf(split_cgroup, kV1Split, "cpu");
  ASSERT_TRUE(split.ok()) << split.status().ToString();
  EXPECT_EQ(split->dir, "/sys/fs/cgroup/cpu/uw-testbed/h1/machine/qemu-1-vm1.libvirt-qemu/emulator");
  auto acct = CgroupDirOf(split_cgroup, kV1Split, "cpuacct");
  ASSERT_TRUE(acct.ok());
  EXPECT_EQ(acct->dir, "/sys/fs/cgroup/cpuacct/uw-testbed/h1/machine/qemu-1-vm1.libvirt-qemu/emulator");

  // Hybrid: the v1 cpu hierarchy, not the controller-less cgroup2 mount listed as "0::".
  auto hybrid = CgroupDirOf(split_cgroup + "0::/uw-testbed/h1\n", kHybrid, "cpu");
  ASSERT_TRUE(hybrid.ok()) << hybrid.status().ToString();
  EXPECT_EQ(hybrid->dir, split->dir);
  EXPECT_FALSE(hybrid->v2);
}

TEST(CgroupDirOfTest, MissingHierarchiesAreNamed) {
  // v1 without a cpu hierarchy for the process, and no cgroup2: not found, saying what is missing.
  auto none = CgroupDirOf("4:memory:/a\n", kV1Split, "cpu");
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("cpu"), std::string::npos);
  // The cpu hierarchy mounted from a subtree that does not hold the process's cgroup.
  constexpr const char* sub = "31 30 0:28 /other /mnt/cpu rw - cgroup cgroup rw,cpu\n";
  auto outside = CgroupDirOf("8:cpu:/machine/x\n", sub, "cpu");
  EXPECT_EQ(outside.status().code(), StatusCode::kNotFound);
  // Mounted from the subtree that holds it (a cgroup namespace's view).
  auto inside = CgroupDirOf("8:cpu:/other/machine/x\n", sub, "cpu");
  ASSERT_TRUE(inside.ok());
  EXPECT_EQ(inside->dir, "/mnt/cpu/machine/x");
}

TEST(CgroupDirOfTest, SharesFileAndValue) {
  EXPECT_EQ(CpuSharesFileFor(false, 2048).file, "cpu.shares");
  EXPECT_EQ(CpuSharesFileFor(false, 2048).value, 2048);
  EXPECT_EQ(CpuSharesFileFor(true, 2048).file, "cpu.weight");
  EXPECT_EQ(CpuSharesFileFor(true, 2048).value, 2048);
}

}  // namespace
}  // namespace uw::vmm
