// AgentService's typed calls on libvirt's in-process test driver (the hypervisor double
// agent_test.cc runs the HTTP API on): no HTTP, no JSON.
#include "vmm/agent_service.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/json.h"
#include "vmm/agent_internal.h"
#include "vmm/libvirt_driver.h"

namespace uw::vmm {
namespace {

namespace fs = std::filesystem;

ResizeRequest Resizing(std::optional<int64_t> memory_mib, std::optional<int64_t> vcpus) {
  ResizeRequest r;
  r.memory_mib = memory_mib;
  r.vcpus = vcpus;
  return r;
}

ExecRequest Command(std::string command) {
  ExecRequest r;
  r.command = std::move(command);
  return r;
}

class AgentServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("uw-agent-service-test-" + std::to_string(getpid()));
    fs::create_directories(dir_ / "images/tiny");
    std::ofstream(dir_ / "images/tiny/vmlinux") << "kernel";
    std::ofstream(dir_ / "images/tiny/initrd.img") << "initrd";
    AgentConfig c;
    c.host_name = "s1";
    c.token = "test-token-0123456789abcdef";
    c.libvirt_uri = "test:///default";
    c.state_dir = (dir_ / "state").string();
    c.images["tiny"] = (dir_ / "images/tiny").string();
    c.sample_interval_ms = 100;
    auto h = LibvirtHypervisor::Open("test:///default");
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    KvmSupport kvm;
    kvm.reason = "no KVM in unit tests";
    service_ = std::make_unique<AgentService>(c, std::move(*h), nullptr, kvm);
    ASSERT_TRUE(service_->Start().ok());
  }
  void TearDown() override {
    service_.reset();
    fs::remove_all(dir_);
  }
  // A spec of the tiny image named `name`.
  static CreateRequest Tiny(const std::string& name, bool start = true) {
    CreateRequest r;
    r.spec.name = name;
    r.spec.max_vcpus = 2;
    r.spec.memory_mib = 128;
    r.spec.max_memory_mib = 256;
    r.image = "tiny";
    r.start = start;
    return r;
  }

  fs::path dir_;
  std::unique_ptr<AgentService> service_;
};

TEST_F(AgentServiceTest, CreateStartStopDelete) {
  auto created = service_->Create(Tiny("as-1", /*start=*/false));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(created->info.state, GuestState::kShutoff);
  // The image supplied the kernel; the agent placed the console and the control channel.
  auto details = service_->Get("as-1");
  ASSERT_TRUE(details.ok()) << details.status().ToString();
  ASSERT_TRUE(details->spec.has_value());
  EXPECT_EQ(details->spec->kernel, (dir_ / "images/tiny/vmlinux").string());
  EXPECT_EQ(details->status.info.console_log, (dir_ / "state/console/as-1.log").string());
  ASSERT_EQ(details->status.info.channels.size(), 1u);
  EXPECT_EQ(details->status.info.channels[0].name, "org.underware.guest.0");

  auto started = service_->Start("as-1");
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_EQ(started->info.state, GuestState::kRunning);
  EXPECT_EQ(started->health, Health::kStarting);  // its control channel has not answered yet
  EXPECT_FALSE(started->ready);

  auto listed = service_->List();
  ASSERT_TRUE(listed.ok());
  int found = 0;
  for (const auto& g : *listed) found += g.info.name == "as-1";
  EXPECT_EQ(found, 1);

  StopRequest stop;
  stop.force = true;
  auto stopped = service_->Stop("as-1", stop);
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  EXPECT_TRUE(stopped->forced);
  EXPECT_EQ(stopped->guest.info.state, GuestState::kShutoff);

  ASSERT_TRUE(service_->Delete("as-1", false).ok());
  EXPECT_EQ(service_->Get("as-1").status().code(), StatusCode::kNotFound);
}

TEST_F(AgentServiceTest, UnknownGuestIsNotFoundNamingTheGuestAndHost) {
  const std::vector<std::pair<std::string, Status>> calls = {
      {"Get", service_->Get("as-missing").status()},
      {"Start", service_->Start("as-missing").status()},
      {"Stop", service_->Stop("as-missing", StopRequest{}).status()},
      {"Pause", service_->Pause("as-missing").status()},
      {"Resize", service_->Resize("as-missing", Resizing(128, std::nullopt)).status()},
      {"Delete", service_->Delete("as-missing", true)},
      {"Exec", service_->Exec("as-missing", Command("true")).status()},
      {"ConsoleTail", service_->ConsoleTail("as-missing", 100).status()},
      {"Migrate", service_->Migrate("as-missing", MigrateRequest{}).status()},
      {"ControlMigration", service_->ControlMigration("as-missing", MigrationAction::kCancel)},
  };
  for (const auto& [call, s] : calls) {
    EXPECT_EQ(s.code(), StatusCode::kNotFound) << call << ": " << s.ToString();
    EXPECT_NE(s.message().find("guest 'as-missing'"), std::string::npos) << call << ": " << s.ToString();
    EXPECT_NE(s.message().find("host s1"), std::string::npos) << call << ": " << s.ToString();
  }
  EXPECT_EQ(service_->MigrationStatus("as-missing").guest_state, "absent");
  EXPECT_EQ(service_->Get("bad name").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(AgentServiceTest, DuplicateNameIsAlreadyExistsAndLeavesTheGuestAlone) {
  ASSERT_TRUE(service_->Create(Tiny("as-dup", /*start=*/false)).ok());
  auto again = service_->Create(Tiny("as-dup"));
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists) << again.status().ToString();
  EXPECT_NE(again.status().message().find("as-dup"), std::string::npos);
  auto g = service_->Get("as-dup");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->status.info.state, GuestState::kShutoff);  // not started by the refused create
  EXPECT_TRUE(service_->Delete("as-dup", false).ok());
}

TEST_F(AgentServiceTest, CreateChecksTheHostAndTheSpec) {
  CreateRequest r = Tiny("as-x");
  r.image = "windows";
  EXPECT_EQ(service_->Create(r).status().code(), StatusCode::kInvalidArgument);
  r = Tiny("as-x");
  r.spec.kind = GuestKind::kKvm;
  EXPECT_EQ(service_->Create(r).status().code(), StatusCode::kFailedPrecondition);
  r = Tiny("as-x");
  r.spec.kind = GuestKind::kLxc;
  EXPECT_EQ(service_->Create(r).status().code(),
            StatusCode::kFailedPrecondition);  // no container driver
  r = Tiny("as-x");
  r.spec.max_vcpus = r.spec.vcpus = 4000;
  EXPECT_EQ(service_->Create(r).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(service_->Get("as-x").status().code(), StatusCode::kNotFound);
}

TEST_F(AgentServiceTest, ResizeChangesWhatIsGivenWithinTheGuestsMaxima) {
  ASSERT_TRUE(service_->Create(Tiny("as-rs")).ok());
  auto r = service_->Resize("as-rs", Resizing(200, 2));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->info.memory_mib, 200);
  EXPECT_EQ(r->info.vcpus, 2);

  auto too_big = service_->Resize("as-rs", Resizing(512, 1));
  EXPECT_EQ(too_big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.status().message().find("maximum of 256 MiB"), std::string::npos) << too_big.status().ToString();
  too_big = service_->Resize("as-rs", Resizing(std::nullopt, 3));
  EXPECT_EQ(too_big.status().code(), StatusCode::kInvalidArgument);
  auto g = service_->Get("as-rs");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->status.info.memory_mib, 200);  // nothing changed by the refused resizes
  EXPECT_EQ(g->status.info.vcpus, 2);
  // (CPU tuning is not in libvirt's test driver: the integration test covers it.)
  EXPECT_TRUE(service_->Delete("as-rs", /*force=*/true).ok());
}

TEST_F(AgentServiceTest, DeleteOfARunningGuestNeedsForce) {
  ASSERT_TRUE(service_->Create(Tiny("as-del")).ok());
  Status s = service_->Delete("as-del", false);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_NE(s.message().find("is running"), std::string::npos) << s.ToString();
  EXPECT_TRUE(service_->Get("as-del").ok());
  EXPECT_TRUE(service_->Delete("as-del", true).ok());
  EXPECT_EQ(service_->Get("as-del").status().code(), StatusCode::kNotFound);
}

TEST_F(AgentServiceTest, ExecNeedsARunningGuestAndACommand) {
  ASSERT_TRUE(service_->Create(Tiny("as-ex", /*start=*/false)).ok());
  EXPECT_EQ(service_->Exec("as-ex", Command("true")).status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(service_->Start("as-ex").ok());
  auto missing = service_->Exec("as-ex", ExecRequest{});
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("body.command"), std::string::npos);
  EXPECT_TRUE(service_->Delete("as-ex", true).ok());
}

TEST_F(AgentServiceTest, EventsAndUsage) {
  service_->RecordEvent({TimePoint(std::chrono::seconds(1)), "as-ev", "", "started", "booted", "test"});
  EventPage page = service_->EventsSince(0, Duration::zero());
  ASSERT_FALSE(page.events.empty());
  EXPECT_EQ(page.events.back().event.guest, "as-ev");
  EXPECT_EQ(page.next, page.events.back().seq);
  EXPECT_TRUE(service_->EventsSince(page.next, Duration::zero()).events.empty());

  ASSERT_TRUE(service_->Create(Tiny("as-use")).ok());
  ASSERT_TRUE(service_->SampleNow().ok());
  EXPECT_TRUE(service_->GuestUsageOf("as-use").ok());
  EXPECT_EQ(service_->GuestUsageOf("as-none").status().code(), StatusCode::kNotFound);
  auto host = service_->Host();
  ASSERT_TRUE(host.ok());
  EXPECT_EQ(host->kinds, std::vector<std::string>{"qemu"});
  EXPECT_EQ(host->images, std::vector<std::string>{"tiny"});
  EXPECT_TRUE(service_->Delete("as-use", true).ok());
}

TEST_F(AgentServiceTest, AbandonWithNothingLeftRemovesNothing) {
  auto removed = service_->AbandonIncoming("as-none");
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_FALSE(*removed);
  EXPECT_EQ(service_->AbandonIncoming("bad name").status().code(), StatusCode::kInvalidArgument);
}

// An image copy arrives in pieces, each where the last ended; a whole copy is checked (a qcow2 of
// its own, no backing file) before a guest's local disk is made on it, copy-on-write.
TEST_F(AgentServiceTest, ImageCopiesArriveInPiecesAndLocalDisksAreMadeOnThem) {
  const fs::path made = dir_ / "base.qcow2";
  auto r = RunTool({"qemu-img", "create", "-q", "-f", "qcow2", made.string(), "8M"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::ifstream in(made, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto total = static_cast<int64_t>(file.size());
  const std::string ref = "base@17";
  EXPECT_EQ(service_->ImageState(ref)->bytes, 0);
  EXPECT_EQ(service_->ImageState("../x@1").status().code(), StatusCode::kInvalidArgument);
  auto first = service_->PutImagePart(ref, 0, total, std::string_view(file).substr(0, 1000));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->bytes, 1000);
  EXPECT_FALSE(first->complete);
  // Not where the copy ended: refused, saying how much is there.
  auto gap = service_->PutImagePart(ref, 500, total, "x");
  EXPECT_EQ(gap.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(gap.status().message().find("has 1000 bytes"), std::string::npos) << gap.status().ToString();
  EXPECT_EQ(service_->PutImagePart(ref, 1000, 1001, file.substr(1000)).status().code(),
            StatusCode::kInvalidArgument);  // more than the total
  // A guest's disk cannot be made on a copy that is not whole.
  CreateRequest c = Tiny("as-img", /*start=*/false);
  DiskSpec disk;
  disk.size_mib = 16;
  disk.base_image = ref;
  c.spec.disks.push_back(disk);
  EXPECT_EQ(service_->Create(c).status().code(), StatusCode::kFailedPrecondition);
  auto rest = service_->PutImagePart(ref, 1000, total, std::string_view(file).substr(1000));
  ASSERT_TRUE(rest.ok()) << rest.status().ToString();
  EXPECT_TRUE(rest->complete);
  EXPECT_TRUE(service_->ImageState(ref)->complete);
  auto created = service_->Create(c);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const std::string disk_path = (dir_ / "state/disks/as-img-vda.qcow2").string();
  auto info = RunTool({"qemu-img", "info", "-U", "--output=json", disk_path});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(Json::parse(*info).value("backing-filename", ""), (dir_ / "state/images/base@17.qcow2").string());
  EXPECT_EQ(Json::parse(*info).value("virtual-size", int64_t{0}), int64_t{16} << 20);
  // In use: kept, however old.
  EXPECT_EQ(service_->PruneImages(std::chrono::seconds(0)), 0);
  ASSERT_TRUE(service_->Delete("as-img", true).ok());
  EXPECT_FALSE(fs::exists(disk_path));
  // Unused: kept while recently used (the config's day), removed after.
  EXPECT_EQ(service_->PruneImages(std::chrono::hours(1)), 0);
  EXPECT_TRUE(service_->ImageState(ref)->complete);
  EXPECT_EQ(service_->PruneImages(std::chrono::seconds(0)), 1);
  EXPECT_EQ(service_->ImageState(ref)->bytes, 0);
  // A whole copy made by `create_args` (qemu-img create's, then the file) is refused and removed,
  // saying `why`.
  auto refused = [&](const std::string& name, std::vector<std::string> create_args, const std::string& why) {
    const fs::path file = dir_ / (name + ".qcow2");
    std::vector<std::string> argv = {"qemu-img", "create", "-q", "-f", "qcow2"};
    argv.insert(argv.end(), create_args.begin(), create_args.end());
    argv.insert(argv.end(), {file.string(), "1M"});
    ASSERT_TRUE(RunTool(argv).ok());
    std::ifstream bin(file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(bin)), std::istreambuf_iterator<char>());
    auto put = service_->PutImagePart(name + "@1", 0, static_cast<int64_t>(bytes.size()), bytes);
    EXPECT_EQ(put.status().code(), StatusCode::kInvalidArgument) << name;
    EXPECT_NE(put.status().message().find(why), std::string::npos) << put.status().ToString();
    EXPECT_EQ(service_->ImageState(name + "@1")->bytes, 0) << name;
  };
  // One that names a backing file of its own, or keeps its data in an external file (either could
  // be any file on the host).
  refused("sneaky", {"-F", "raw", "-b", "/etc/passwd"}, "backing file");
  refused("outside", {"-o", "data_file=" + (dir_ / "data.raw").string()}, "external data file");
}

// A stopped guest's local disk grows with qemu-img (a running one's through libvirt: the
// test-bed test); it only grows, and only local disks grow here.
TEST_F(AgentServiceTest, ALocalDiskGrowsAndOnlyGrows) {
  CreateRequest c = Tiny("as-grow", /*start=*/false);
  DiskSpec disk;
  disk.size_mib = 16;
  c.spec.disks.push_back(disk);
  ASSERT_TRUE(service_->Create(c).ok());
  auto grown = service_->ResizeDisk("as-grow", "vda", 48);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  auto info = RunTool({"qemu-img", "info", "-U", "--output=json", (dir_ / "state/disks/as-grow-vda.qcow2").string()});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(Json::parse(*info).value("virtual-size", int64_t{0}), int64_t{48} << 20);
  auto smaller = service_->ResizeDisk("as-grow", "vda", 32);
  EXPECT_EQ(smaller.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(smaller.status().message().find("only grows"), std::string::npos) << smaller.status().ToString();
  EXPECT_EQ(service_->ResizeDisk("as-grow", "vdz", 64).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(service_->ResizeDisk("as-none", "vda", 64).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(service_->Delete("as-grow", true).ok());
}

// A disk carried here by a cold move: a backing file is rebased onto this host's copy of the
// disk's image; one naming any other file, or keeping its data outside, is refused and removed.
TEST_F(AgentServiceTest, ACarriedDiskIsRebasedOntoThisHostsImageCopyOrRefused) {
  // This host's copy of image base@5.
  const fs::path base = dir_ / "base.qcow2";
  ASSERT_TRUE(RunTool({"qemu-img", "create", "-q", "-f", "qcow2", base.string(), "8M"}).ok());
  auto read = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::string image = read(base);
  ASSERT_TRUE(service_->PutImagePart("base@5", 0, static_cast<int64_t>(image.size()), image).ok());
  // Carries a qcow2 made with `create_args` as disk vda of guest `name` (on an image or not) and
  // creates the guest with it.
  auto carry = [&](const std::string& name, std::vector<std::string> create_args, bool on_image) {
    const fs::path file = dir_ / (name + ".src.qcow2");
    std::vector<std::string> argv = {"qemu-img", "create", "-q", "-f", "qcow2"};
    argv.insert(argv.end(), create_args.begin(), create_args.end());
    argv.insert(argv.end(), {file.string(), "16M"});
    EXPECT_TRUE(RunTool(argv).ok());
    const std::string bytes = read(file);
    auto put = service_->PutIncomingDisk(name, "vda", 0, static_cast<int64_t>(bytes.size()), bytes);
    EXPECT_TRUE(put.ok() && put->complete) << put.status().ToString();
    CreateRequest c = Tiny(name, /*start=*/false);
    DiskSpec disk;
    disk.size_mib = 16;
    if (on_image) disk.base_image = "base@5";
    c.spec.disks.push_back(disk);
    c.disks_carried = true;
    return service_->Create(c).status();
  };
  // Made on the source's copy (another path): rebased onto this host's.
  Status s = carry("cd-ok", {"-u", "-F", "qcow2", "-b", "/var/lib/elsewhere/images/base@5.qcow2"}, true);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto info = RunTool({"qemu-img", "info", "-U", "--output=json", (dir_ / "state/disks/cd-ok-vda.qcow2").string()});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(Json::parse(*info).value("backing-filename", ""), (dir_ / "state/images/base@5.qcow2").string());
  EXPECT_FALSE(fs::exists(dir_ / "state/incoming/cd-ok-vda"));
  // A flat disk (one a live migration left) is taken as it is.
  s = carry("cd-flat", {}, true);
  ASSERT_TRUE(s.ok()) << s.ToString();
  // Refused, and nothing stays: a backing file on a disk made on no image, an external data file,
  // a file that is not the disk's format.
  auto refused = [&](const std::string& name, const Status& st, const std::string& why) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << name << ": " << st.ToString();
    EXPECT_NE(st.message().find(why), std::string::npos) << st.ToString();
    EXPECT_FALSE(fs::exists(dir_ / ("state/incoming/" + name + "-vda"))) << name;
    EXPECT_FALSE(fs::exists(dir_ / ("state/disks/" + name + "-vda.qcow2"))) << name;
    EXPECT_EQ(service_->Get(name).status().code(), StatusCode::kNotFound) << name;
  };
  refused("cd-sneaky", carry("cd-sneaky", {"-u", "-F", "raw", "-b", "/etc/passwd"}, false), "backing file");
  refused("cd-outside", carry("cd-outside", {"-o", "data_file=" + (dir_ / "cd.raw").string()}, true),
          "external data file");
  const std::string raw(1 << 20, 'r');
  ASSERT_TRUE(service_->PutIncomingDisk("cd-raw", "vda", 0, static_cast<int64_t>(raw.size()), raw).ok());
  CreateRequest c = Tiny("cd-raw", /*start=*/false);
  DiskSpec disk;
  disk.size_mib = 16;
  c.spec.disks.push_back(disk);
  c.disks_carried = true;
  refused("cd-raw", service_->Create(c).status(), "not a qcow2");
  // Bad names and pieces.
  EXPECT_EQ(service_->PutIncomingDisk("../x", "vda", 0, 1, "x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->PutIncomingDisk("x", "../../etc", 0, 1, "x").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->PutIncomingDisk("x", "vda", 0, 1, "xy").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->ReadLocalDisk("cd-ok", "vda", -1, 10).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->ReadLocalDisk("cd-ok", "vda", 1 << 30, 10).status().code(), StatusCode::kInvalidArgument);
  // A carried disk no create took is pruned with the image copies; the files of another guest
  // whose name starts with this one's are not this one's.
  ASSERT_TRUE(service_->PutIncomingDisk("cd-left", "vda", 0, 4, "abcd").ok());
  EXPECT_TRUE(AgentService::IsDiskFileOf("cd-left-vda", "cd-left"));
  EXPECT_TRUE(AgentService::IsDiskFileOf(".cd-left-vda.part", "cd-left"));
  EXPECT_TRUE(AgentService::IsDiskFileOf("cd-left-vdb.qcow2", "cd-left"));
  EXPECT_FALSE(AgentService::IsDiskFileOf("cd-left-x-vda.qcow2", "cd-left"));
  EXPECT_FALSE(AgentService::IsDiskFileOf("cd-ok-vda.qcow2", "cd"));
  EXPECT_EQ(service_->PruneImages(std::chrono::hours(1)), 0);
  EXPECT_GE(service_->PruneImages(std::chrono::seconds(0)), 1);
  EXPECT_FALSE(fs::exists(dir_ / "state/incoming/cd-left-vda"));
  EXPECT_TRUE(fs::exists(dir_ / "state/disks/cd-ok-vda.qcow2"));
}

}  // namespace
}  // namespace uw::vmm
