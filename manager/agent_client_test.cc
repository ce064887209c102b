// The manager's agent client against a real agent: vmm::Agent serving its REST API over libvirt's
// test driver (test:///default, in this process, no daemon). The contract cases are written
// against AgentClient, so every implementation of it runs the same ones (a test double that
// disagrees with the real agent fails here, not in the manager's tests).
#include "manager/agent_client.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>

#include "manager/in_memory_agent.h"
#include "vmm/agent.h"
#include "vmm/libvirt_driver.h"

namespace uw::manager {
namespace {

namespace fs = std::filesystem;
constexpr const char* kToken = "contract-agent-token-0123456789";

// One implementation of AgentClient under test, with whatever serves it.
class Implementation {
 public:
  virtual ~Implementation() = default;
  virtual std::shared_ptr<AgentClient> client() = 0;
};

// The HTTP client and a real vmm::Agent on libvirt's test driver.
class HttpOverTestDriver final : public Implementation {
 public:
  HttpOverTestDriver() {
    dir_ = fs::temp_directory_path() / ("uw-act-" + std::to_string(getpid()));
    fs::create_directories(dir_ / "images/tiny");
    std::ofstream(dir_ / "images/tiny/vmlinux") << "kernel";
    std::ofstream(dir_ / "images/tiny/initrd.img") << "initrd";
    vmm::AgentConfig c;
    c.host_name = "contract-host";
    c.listen_port = 0;
    c.token = kToken;
    c.libvirt_uri = "test:///default";
    c.state_dir = (dir_ / "state").string();
    c.images["tiny"] = (dir_ / "images/tiny").string();
    c.migration_uri = "qemu+tcp://127.0.0.1/system";
    auto h = vmm::LibvirtHypervisor::Open("test:///default");
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    vmm::KvmSupport kvm;
    kvm.reason = "no KVM in unit tests";
    agent_ = std::make_unique<vmm::Agent>(c, std::move(*h), nullptr, kvm);
    Status started = agent_->Start();
    EXPECT_TRUE(started.ok()) << started.ToString();
    client_ =
        NewHttpAgentClient("contract-host", {"http://127.0.0.1:" + std::to_string(agent_->port()), kToken}, 10000);
  }
  ~HttpOverTestDriver() override {
    agent_.reset();
    fs::remove_all(dir_);
  }
  std::shared_ptr<AgentClient> client() override { return client_; }

 private:
  fs::path dir_;
  std::unique_ptr<vmm::Agent> agent_;
  std::shared_ptr<AgentClient> client_;
};

// The in-memory agents the manager's tests use.
class InMemory final : public Implementation {
 public:
  InMemory() {
    cluster_.AddHost("contract-host");
    client_ = cluster_.Client("contract-host");
  }
  std::shared_ptr<AgentClient> client() override { return client_; }

 private:
  InMemoryCluster cluster_;
  std::shared_ptr<AgentClient> client_;
};

using Factory = std::function<std::unique_ptr<Implementation>()>;

class AgentClientContract : public ::testing::TestWithParam<std::pair<const char*, Factory>> {
 protected:
  void SetUp() override {
    impl_ = GetParam().second();
    agent_ = impl_->client();
  }
  void TearDown() override {
    for (const auto& g : made_) (void)agent_->Delete(g, true);
  }
  // A guest of the test image, started ("ct-" + a suffix unique to the test: names make channel
  // socket paths, which must stay short).
  Result<AgentGuest> Make(const std::string& suffix, int64_t memory_mib = 128) {
    const std::string name = "ct-" + suffix;
    made_.push_back(name);
    return agent_->Create({{"name", name},
                           {"kind", "qemu"},
                           {"image", "tiny"},
                           {"vcpus", 1},
                           {"max_vcpus", 2},
                           {"memory_mib", memory_mib},
                           {"max_memory_mib", 256}});
  }

  std::unique_ptr<Implementation> impl_;
  std::shared_ptr<AgentClient> agent_;
  std::vector<std::string> made_;
};

TEST_P(AgentClientContract, CreateAnswersWithTheRunningGuest) {
  auto g = Make("a");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->state, "running");
  EXPECT_EQ(g->kind, GuestKind::kQemu);
  EXPECT_EQ(g->vcpus, 1);
  EXPECT_EQ(g->max_vcpus, 2);
  EXPECT_EQ(g->memory_mib, 128);
  EXPECT_EQ(g->max_memory_mib, 256);
  EXPECT_TRUE(g->has_channel);
  auto again = agent_->Get(g->name);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->name, g->name);
  EXPECT_EQ(again->state, "running");
  EXPECT_TRUE(again->local_disks.empty());
  EXPECT_EQ(PresenceOf(again), migration::Presence::kRunning);
}

TEST_P(AgentClientContract, DiskCallsOnWhatIsNotThereAreNotFound) {
  auto missing = agent_->AttachDisk("ct-no-such-guest", {"rbd/uw-vol-x", "vdb"});
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
  auto g = Make("disk");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto no_disk = agent_->DetachDisk(g->name, "vdq");
  EXPECT_EQ(no_disk.status().code(), StatusCode::kNotFound) << no_disk.status().ToString();
  EXPECT_NE(no_disk.status().message().find("vdq"), std::string::npos) << no_disk.status().ToString();
  auto there = agent_->Get(g->name);
  ASSERT_TRUE(there.ok()) << there.status().ToString();
  EXPECT_TRUE(there->disks.empty());
}

TEST_P(AgentClientContract, UnknownAndDuplicateGuestsAreClearErrors) {
  auto missing = agent_->Get("ct-no-such-guest");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("ct-no-such-guest"), std::string::npos) << missing.status().ToString();
  EXPECT_EQ(PresenceOf(missing), migration::Presence::kAbsent);
  EXPECT_EQ(agent_->Start("ct-no-such-guest").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(agent_->Delete("ct-no-such-guest", true).code(), StatusCode::kNotFound);
  auto g = Make("dup");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto dup = agent_->Create({{"name", g->name}, {"kind", "qemu"}, {"image", "tiny"}, {"vcpus", 1}, {"memory_mib", 64}});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists) << dup.status().ToString();
}

TEST_P(AgentClientContract, LifecycleStopStartPauseResume) {
  auto g = Make("life");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto stopped = agent_->Stop(g->name, StopRequest{.force = true, .timeout_s = std::nullopt});
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  EXPECT_EQ(stopped->state, "shutoff");
  EXPECT_TRUE(stopped->forced);
  EXPECT_EQ(PresenceOf(stopped), migration::Presence::kAbsent);
  auto again = agent_->Stop(g->name, StopRequest{.force = true, .timeout_s = std::nullopt});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition) << again.status().ToString();
  auto started = agent_->Start(g->name);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_EQ(started->state, "running");
  auto twice = agent_->Start(g->name);
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().code(), StatusCode::kFailedPrecondition) << twice.status().ToString();
  auto paused = agent_->Pause(g->name);
  ASSERT_TRUE(paused.ok()) << paused.status().ToString();
  EXPECT_EQ(paused->state, "paused");
  EXPECT_EQ(PresenceOf(paused), migration::Presence::kPaused);
  auto resumed = agent_->Resume(g->name);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_EQ(resumed->state, "running");
}

TEST_P(AgentClientContract, ResizeWithinTheMaximumAndRefusedAbove) {
  auto g = Make("resize");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto r = agent_->Resize(g->name, ResizeRequest{.vcpus = 2, .memory_mib = 192});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->vcpus, 2);
  EXPECT_EQ(r->memory_mib, 192);
  auto above = agent_->Resize(g->name, ResizeRequest{.vcpus = 3, .memory_mib = std::nullopt});
  ASSERT_FALSE(above.ok());
  EXPECT_EQ(above.status().code(), StatusCode::kInvalidArgument) << above.status().ToString();
}

TEST_P(AgentClientContract, DeleteNeedsAStoppedGuestUnlessForced) {
  auto g = Make("del");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Status refused = agent_->Delete(g->name, false);
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition) << refused.ToString();
  ASSERT_TRUE(agent_->Get(g->name).ok());
  Status forced = agent_->Delete(g->name, true);
  ASSERT_TRUE(forced.ok()) << forced.ToString();
  EXPECT_EQ(agent_->Get(g->name).status().code(), StatusCode::kNotFound);
}

TEST_P(AgentClientContract, MigrationCallsOnAGuestThatIsNotMoving) {
  auto g = Make("mig");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto job = agent_->MigrationStatus(g->name);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->state, "none");
  EXPECT_TRUE(job->error.empty());
  IncomingRequest in;
  in.guest = "ct-incoming";
  in.memory_mib = 1 << 20;  // more than the host has
  auto full = agent_->PrepareIncoming(in);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted) << full.status().ToString();
  in.memory_mib = 1;
  auto ready = agent_->PrepareIncoming(in);
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  EXPECT_EQ(ready->host, "contract-host");
  EXPECT_NE(ready->migration_uri.find("://"), std::string::npos) << ready->migration_uri;
  EXPECT_FALSE(ready->state_dir.empty());
  Status abandoned = agent_->AbandonIncoming("ct-incoming");
  EXPECT_TRUE(abandoned.ok()) << abandoned.ToString();
  EXPECT_EQ(agent_->CancelMigration("ct-no-such-guest").code(), StatusCode::kNotFound);
}

// A cold move's carrying of a local disk, on one host: the file of a stopped guest's disk read in
// pieces, sent as the disk of a guest not there yet, and taken by its create.
TEST_P(AgentClientContract, ALocalDiskIsReadWhileStoppedAndCarriedToAGuestCreatedWithIt) {
  const Json spec = {{"name", "ct-carry-a"}, {"kind", "qemu"},        {"image", "tiny"},
                     {"memory_mib", 128},    {"max_memory_mib", 128}, {"disks", Json::array({{{"size_mib", 16}}})}};
  made_.push_back("ct-carry-a");
  auto a = agent_->Create(spec);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto listed = agent_->Get("ct-carry-a");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->local_disks.size(), 1u);
  EXPECT_EQ(listed->local_disks[0].target, "vda");
  EXPECT_EQ(listed->local_disks[0].virtual_size_bytes, int64_t{16} << 20);
  auto running = agent_->ReadDiskPart("ct-carry-a", "vda", 0, 4096);
  EXPECT_EQ(running.status().code(), StatusCode::kFailedPrecondition) << running.status().ToString();
  ASSERT_TRUE(agent_->Stop("ct-carry-a", StopRequest{.force = true, .timeout_s = std::nullopt}).ok());
  EXPECT_EQ(agent_->ReadDiskPart("ct-carry-a", "vdq", 0, 4096).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(agent_->ReadDiskPart("ct-no-such-guest", "vda", 0, 4096).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(agent_->ReadDiskPart("ct-carry-a", "vda", 0, 5 << 20).status().code(), StatusCode::kInvalidArgument);
  // The whole file, in pieces of 100 bytes.
  std::string file;
  int64_t total = -1;
  while (total < 0 || static_cast<int64_t>(file.size()) < total) {
    auto piece = agent_->ReadDiskPart("ct-carry-a", "vda", static_cast<int64_t>(file.size()), 100);
    ASSERT_TRUE(piece.ok()) << piece.status().ToString();
    ASSERT_FALSE(piece->bytes.empty());
    total = piece->total_bytes;
    file += piece->bytes;
  }
  ASSERT_GT(total, 0);
  // The destination's side: never over a guest it has, in order, and the create waits for all.
  EXPECT_EQ(agent_->PutIncomingDiskPart("ct-carry-a", "vda", 0, total, file).status().code(),
            StatusCode::kAlreadyExists);
  Json b_spec = spec;
  b_spec["name"] = "ct-carry-b";
  b_spec["disks_carried"] = true;
  made_.push_back("ct-carry-b");
  auto half = agent_->PutIncomingDiskPart("ct-carry-b", "vda", 0, total, file.substr(0, 10));
  ASSERT_TRUE(half.ok()) << half.status().ToString();
  EXPECT_EQ(half->bytes, 10);
  EXPECT_FALSE(half->complete);
  EXPECT_EQ(agent_->PutIncomingDiskPart("ct-carry-b", "vda", 5, total, "x").status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(agent_->Create(b_spec).status().code(), StatusCode::kFailedPrecondition);
  auto rest = agent_->PutIncomingDiskPart("ct-carry-b", "vda", 10, total, file.substr(10));
  ASSERT_TRUE(rest.ok()) << rest.status().ToString();
  EXPECT_TRUE(rest->complete);
  auto b = agent_->Create(b_spec);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE(agent_->Stop("ct-carry-b", StopRequest{.force = true, .timeout_s = std::nullopt}).ok());
  auto copy = agent_->ReadDiskPart("ct-carry-b", "vda", 0, 4 << 20);
  ASSERT_TRUE(copy.ok()) << copy.status().ToString();
  EXPECT_EQ(copy->total_bytes, total);
  EXPECT_EQ(copy->bytes, file.substr(0, 4 << 20));
  // Abandoning an incoming guest removes a half-carried disk: a create cannot take it afterwards.
  Json c_spec = b_spec;
  c_spec["name"] = "ct-carry-c";
  made_.push_back("ct-carry-c");
  ASSERT_TRUE(agent_->PutIncomingDiskPart("ct-carry-c", "vda", 0, total, file).ok());
  ASSERT_TRUE(agent_->AbandonIncoming("ct-carry-c").ok());
  EXPECT_EQ(agent_->Create(c_spec).status().code(), StatusCode::kFailedPrecondition);
}

INSTANTIATE_TEST_SUITE_P(Implementations, AgentClientContract,
                         ::testing::Values(std::make_pair("HttpOverTestDriver", Factory([] {
                                                            return std::make_unique<HttpOverTestDriver>();
                                                          })),
                                           std::make_pair("InMemory",
                                                          Factory([] { return std::make_unique<InMemory>(); }))),
                         [](const auto& info) { return std::string(info.param.first); });

// ---------------------------------------------------------------------------------------------
// The directory of clients

TEST(AgentDirectoryTest, OneClientPerHostUntilItsAddressChanges) {
  std::map<std::string, AgentAddress> hosts = {{"h1", {"http://127.0.0.1:1", "t1"}}};
  int made = 0;
  AgentDirectory dir(
      [&](const std::string& host) -> Result<AgentAddress> {
        auto it = hosts.find(host);
        if (it == hosts.end()) return NotFoundError("host '" + host + "' is no longer in the cluster");
        return it->second;
      },
      [&](const std::string& host, const AgentAddress& a) {
        ++made;
        return NewHttpAgentClient(host, a, 200);
      });
  auto first = dir.For("h1");
  EXPECT_EQ(dir.For("h1"), first);
  EXPECT_EQ(made, 1);
  hosts["h1"].token = "t2";  // rejoined with a new token
  EXPECT_NE(dir.For("h1"), first);
  EXPECT_EQ(made, 2);
  auto gone = dir.For("h9");
  EXPECT_EQ(gone->host(), "h9");
  auto r = gone->Get("g");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("no longer in the cluster"), std::string::npos);
  EXPECT_EQ(PresenceOf(r), migration::Presence::kAbsent);
}

TEST(AgentDirectoryTest, AnUnreachableAgentIsUnavailableNamingTheHost) {
  auto client = NewHttpAgentClient("h-down", {"http://127.0.0.1:9", "t"}, 500);
  auto r = client->Get("g");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("agent of host h-down"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(PresenceOf(r), migration::Presence::kUnknown);
}

}  // namespace
}  // namespace uw::manager
