// The libvirt driver against libvirt's in-process test driver (test:///default): real libvirt
// API calls without a daemon. The real QEMU and LXC drivers are exercised in tests/.
#include "vmm/libvirt_driver.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

namespace uw::vmm {
namespace {

GuestSpec Spec(const std::string& name) {
  GuestSpec s;
  s.name = name;
  s.kind = GuestKind::kQemu;
  s.vcpus = 1;
  s.max_vcpus = 2;
  s.memory_mib = 128;
  s.max_memory_mib = 256;
  s.kernel = "/boot/vmlinuz";
  return s;
}

class LibvirtDriverTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(LibvirtEventLoop::Instance().Start().ok()); }
  void SetUp() override {
    auto h = LibvirtHypervisor::Open("test:///default");
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    h_ = std::move(*h);
  }
  std::unique_ptr<LibvirtHypervisor> h_;
};

TEST_F(LibvirtDriverTest, LifecycleAndLiveChanges) {
  auto info = h_->Define(Spec("life1"));
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->state, GuestState::kShutoff);
  EXPECT_EQ(info->max_vcpus, 2);
  EXPECT_EQ(h_->Define(Spec("life1")).status().code(), StatusCode::kAlreadyExists);

  ASSERT_TRUE(h_->Start("life1").ok());
  EXPECT_EQ(h_->Start("life1").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(h_->Get("life1")->state, GuestState::kRunning);
  EXPECT_EQ(h_->Undefine("life1").code(), StatusCode::kFailedPrecondition);

  ASSERT_TRUE(h_->SetMemory("life1", 200).ok());
  EXPECT_EQ(h_->Get("life1")->memory_mib, 200);
  EXPECT_EQ(h_->SetMemory("life1", 4096).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(h_->SetVcpus("life1", 2).ok());
  EXPECT_EQ(h_->Get("life1")->vcpus, 2);
  EXPECT_EQ(h_->SetVcpus("life1", 3).code(), StatusCode::kInvalidArgument);

  ASSERT_TRUE(h_->Pause("life1").ok());
  EXPECT_EQ(h_->Get("life1")->state, GuestState::kPaused);
  ASSERT_TRUE(h_->Resume("life1").ok());
  bool forced = true;
  ASSERT_TRUE(h_->Shutdown("life1", std::chrono::seconds(5), &forced).ok());
  EXPECT_EQ(h_->Get("life1")->state, GuestState::kShutoff);
  EXPECT_EQ(h_->Destroy("life1").code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(h_->Undefine("life1").ok());
  EXPECT_EQ(h_->Get("life1").status().code(), StatusCode::kNotFound);
}

TEST_F(LibvirtDriverTest, SpecSurvivesInTheDomain) {
  GuestSpec s = Spec("spec1");
  s.kind = GuestKind::kKvm;
  s.emulated = true;
  s.labels = {{"tenant", "acme"}};
  ASSERT_TRUE(h_->Define(s).ok());
  auto back = h_->GetSpec("spec1");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->kind, GuestKind::kKvm);
  EXPECT_TRUE(back->emulated);
  EXPECT_EQ(back->labels.size(), 1u);
  EXPECT_EQ(h_->Get("spec1")->kind, GuestKind::kKvm);
  ASSERT_TRUE(h_->Undefine("spec1").ok());
}

TEST_F(LibvirtDriverTest, UnknownGuestsAreNotFound) {
  EXPECT_EQ(h_->Start("nope").code(), StatusCode::kNotFound);
  EXPECT_EQ(h_->SetMemory("nope", 100).code(), StatusCode::kNotFound);
  EXPECT_EQ(h_->Get("nope").status().code(), StatusCode::kNotFound);
}

TEST_F(LibvirtDriverTest, InvalidSpecIsRejectedBeforeLibvirt) {
  GuestSpec s = Spec("bad1");
  s.vcpus = 5;
  EXPECT_EQ(h_->Define(s).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(h_->Get("bad1").status().code(), StatusCode::kNotFound);
}

TEST_F(LibvirtDriverTest, SamplesEveryGuest) {
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(h_->Define(Spec("s" + std::to_string(i))).ok());
    ASSERT_TRUE(h_->Start("s" + std::to_string(i)).ok());
  }
  auto samples = h_->SampleAll();
  ASSERT_TRUE(samples.ok()) << samples.status().ToString();
  int ours = 0;
  for (const auto& c : *samples) {
    if (c.name.size() == 2 && c.name[0] == 's') {
      ++ours;
      EXPECT_EQ(c.state, GuestState::kRunning);
    }
  }
  EXPECT_EQ(ours, 10);
  auto host = h_->Host();
  ASSERT_TRUE(host.ok());
  EXPECT_GT(host->cpu_cores, 0);
  EXPECT_GT(host->memory_mib, 0);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(h_->Destroy("s" + std::to_string(i)).ok());
    ASSERT_TRUE(h_->Undefine("s" + std::to_string(i)).ok());
  }
}

TEST_F(LibvirtDriverTest, DeliversLifecycleEvents) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> seen;
  ASSERT_TRUE(h_->WatchLifecycle([&](const LifecycleEvent& e) {
                  if (e.guest != "ev1") return;
                  std::lock_guard l(mu);
                  seen.push_back(e.event + "/" + e.detail);
                  cv.notify_all();
                }).ok());
  ASSERT_TRUE(h_->Define(Spec("ev1")).ok());
  ASSERT_TRUE(h_->Start("ev1").ok());
  ASSERT_TRUE(h_->Destroy("ev1").ok());
  std::unique_lock l(mu);
  ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(10), [&] { return seen.size() >= 3; }));
  EXPECT_EQ(seen[0], "defined/added");
  EXPECT_EQ(seen[1], "started/booted");
  EXPECT_EQ(seen[2], "stopped/destroyed");
  l.unlock();
  ASSERT_TRUE(h_->WatchLifecycle(nullptr).ok());  // `seen` dies with this test; later events must not reach it
  ASSERT_TRUE(h_->Undefine("ev1").ok());
}

TEST(LibvirtConnectTest, UnreachableDaemonIsUnavailable) {
  auto h = LibvirtHypervisor::Open("qemu+unix:///system?socket=/nonexistent/libvirt-sock");
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(h.status().message().find("/nonexistent/libvirt-sock"), std::string::npos);
}

}  // namespace
}  // namespace uw::vmm
