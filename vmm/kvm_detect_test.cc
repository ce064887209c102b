#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace uw::vmm
