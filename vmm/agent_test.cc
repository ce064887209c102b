// The agent's HTTP API end to end over a real socket, on libvirt's in-process test driver.
// The same API against real QEMU and LXC guests is tested in tests/agent_integration_test.cc.
#include "vmm/agent.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "vmm/libvirt_driver.h"

namespace uw::vmm {
namespace {

namespace fs = std::filesystem;
constexpr const char* kToken = "test-token-0123456789abcdef";

// Plays a guest's control channel on `path` (what QEMU's unix socket would be): answers every
// request with "pong" while `answering` is set, stays silent otherwise. Accepts reconnects.
class FakeGuestChannel {
 public:
  explicit FakeGuestChannel(std::string path) : path_(std::move(path)) {
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    unlink(path_.c_str());
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << path_;
    EXPECT_EQ(listen(listen_fd_, 4), 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeGuestChannel() {
    stop_ = true;
    thread_.join();
    close(listen_fd_);
    unlink(path_.c_str());
  }
  std::atomic<bool> answering{false};
  std::atomic<int> requests{0};

 private:
  void Serve() {
    std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
    std::map<int, std::string> bufs;
    while (!stop_) {
      if (poll(fds.data(), fds.size(), 50) <= 0) continue;
      for (size_t i = 0; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP))) continue;
        if (fds[i].fd == listen_fd_) {
          int c = accept(listen_fd_, nullptr, nullptr);
          if (c >= 0) fds.push_back({c, POLLIN, 0});
          continue;
        }
        char buf[512];
        ssize_t n = read(fds[i].fd, buf, sizeof buf);
        if (n <= 0) {
          close(fds[i].fd);
          fds.erase(fds.begin() + static_cast<long>(i));
          break;
        }
        std::string& b = bufs[fds[i].fd];
        b.append(buf, static_cast<size_t>(n));
        for (size_t nl; (nl = b.find('\n')) != std::string::npos;) {
          const std::string id = b.substr(0, b.find(' '));
          b.erase(0, nl + 1);
          ++requests;
          if (!answering) continue;
          const std::string reply = id + " 0 cG9uZwo=\n";  // "pong\n"
          (void)!write(fds[i].fd, reply.data(), reply.size());
        }
      }
    }
    for (const auto& p : fds) {
      if (p.fd != listen_fd_) close(p.fd);
    }
  }
  const std::string path_;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Polls `done` every 20 ms for up to `timeout`.
bool Eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("uw-agent-test-" + std::to_string(getpid()));
    fs::create_directories(dir_ / "images/tiny");
    std::ofstream(dir_ / "images/tiny/vmlinux") << "kernel";
    std::ofstream(dir_ / "images/tiny/initrd.img") << "initrd";
    AgentConfig c;
    c.host_name = "t1";
    c.listen_port = 0;
    c.token = kToken;
    c.libvirt_uri = "test:///default";
    c.state_dir = (dir_ / "state").string();
    c.images["tiny"] = (dir_ / "images/tiny").string();
    c.max_body_bytes = 4096;
    c.sample_interval_ms = 100;
    c.monitor_interval_s = 1;
    c.monitor_timeout_s = 2;
    c.shutdown_command = {"/bin/sh", "-c", "echo done > '" + (dir_ / "shutdown.done").string() + "'"};
    c.network = AgentConfig::Network{.ovsdb = "unix:" + (dir_ / "no-ovsdb.sock").string()};
    auto h = LibvirtHypervisor::Open("test:///default");
    ASSERT_TRUE(h.ok());
    KvmSupport kvm;
    kvm.reason = "no KVM in unit tests";
    agent_ = std::make_unique<Agent>(c, std::move(*h), nullptr, kvm);
    ASSERT_TRUE(agent_->Start().ok());
    client_ = std::make_unique<api::HttpClient>(
        api::ClientOptions{"http://127.0.0.1:" + std::to_string(agent_->port()), kToken});
  }
  void TearDown() override {
    agent_.reset();
    fs::remove_all(dir_);
  }
  api::ClientResponse Do(const std::string& method, const std::string& path, const std::string& body = "") {
    auto r = client_->Do(method, path, body, {{"Content-Type", "application/json"}});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : api::ClientResponse{};
  }
  static std::string ErrorCode(const api::ClientResponse& r) {
    auto j = Json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("error") ? j["error"]["code"].get<std::string>() : "<no error body>";
  }
  int GuestCount() {
    auto r = Do("GET", "/api/v1/guests");
    int n = 0;
    const Json body = Json::parse(r.body);
    for (const auto& g : body["guests"]) n += g["name"].get<std::string>().rfind("ag-", 0) == 0;
    return n;
  }

  fs::path dir_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<api::HttpClient> client_;
};

TEST_F(AgentTest, HealthIsPublicButTheApiNeedsTheToken) {
  api::HttpClient anonymous({"http://127.0.0.1:" + std::to_string(agent_->port()), ""});
  EXPECT_EQ(anonymous.Do("GET", "/healthz")->status, 200);
  auto r = anonymous.Do("GET", "/api/v1/guests");
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(ErrorCode(*r), "unauthenticated");
  api::HttpClient wrong({"http://127.0.0.1:" + std::to_string(agent_->port()), "wrong-token-0123456789"});
  EXPECT_EQ(wrong.Do("GET", "/api/v1/guests")->status, 401);
}

// The image-copy routes over HTTP: pieces of raw bytes; bad queries and oversized pieces refused.
TEST_F(AgentTest, ImageCopiesTakeRawPiecesAndRefuseBadOnes) {
  auto put = [&](const std::string& query, const std::string& body) {
    auto r = client_->Do("PUT", "/api/v1/images/base@5" + query, body, {{"Content-Type", "application/octet-stream"}});
    return r.ok() ? *r : api::ClientResponse{};
  };
  auto r = put("?offset=0&total=100", std::string(40, 'x'));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body), Json({{"image", "base@5"}, {"bytes", 40}, {"complete", false}}));
  EXPECT_EQ(Json::parse(Do("GET", "/api/v1/images/base@5").body)["bytes"], 40);
  EXPECT_EQ(put("?offset=0&total=100", "y").status, 409);  // not where the copy ended
  EXPECT_EQ(put("?offset=-1&total=100", "y").status, 400);
  EXPECT_EQ(put("?offset=40", "y").status, 400);  // no total
  EXPECT_EQ(put("?offset=40&total=1e9", "y").status, 400);
  EXPECT_EQ(put("?offset=40&total=100", std::string((4 << 20) + 1, 'z')).status, 413);
  // 100 bytes of x are no qcow2: the whole copy is refused and removed.
  r = put("?offset=40&total=100", std::string(60, 'x'));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(Json::parse(Do("GET", "/api/v1/images/base@5").body)["bytes"], 0);
  EXPECT_EQ(Do("GET", "/api/v1/images/..%2Fetc@1").status, 400);
}

// A cold move's disk pieces over HTTP: raw bytes both ways, bad queries and names refused.
TEST_F(AgentTest, CarriedDiskPiecesAreRawAndBadOnesRefused) {
  auto put = [&](const std::string& path, const std::string& body) {
    auto r = client_->Do("PUT", path, body, {{"Content-Type", "application/octet-stream"}});
    return r.ok() ? *r : api::ClientResponse{};
  };
  auto r = put("/api/v1/incoming/ag-c/disks/vda?offset=0&total=100", std::string(40, 'x'));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body), Json({{"guest", "ag-c"}, {"target", "vda"}, {"bytes", 40}, {"complete", false}}));
  EXPECT_EQ(put("/api/v1/incoming/ag-c/disks/vda?offset=20&total=100", "y").status, 409);
  EXPECT_EQ(put("/api/v1/incoming/ag-c/disks/vda?offset=40", "y").status, 400);
  EXPECT_EQ(put("/api/v1/incoming/ag-c/disks/vda?offset=40&total=100", std::string((4 << 20) + 1, 'z')).status, 413);
  EXPECT_EQ(put("/api/v1/incoming/ag-c/disks/..%2F..%2Fetc?offset=0&total=1", "y").status, 400);
  EXPECT_EQ(put("/api/v1/incoming/..%2Fx/disks/vda?offset=0&total=1", "y").status, 400);
  // Reading: only a shut-off guest's local disk, up to 4 MiB a piece, the file's size in a header.
  r = Do("POST", "/api/v1/guests",
         R"({"name": "ag-d", "kind": "qemu", "image": "tiny", "memory_mib": 128, "disks": [{"size_mib": 8}]})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Do("GET", "/api/v1/guests/ag-d/disks/vda/file?offset=0&length=10").status, 409);
  ASSERT_EQ(Do("POST", "/api/v1/guests/ag-d/stop", R"({"force": true})").status, 200);
  auto got = client_->Do("GET", "/api/v1/guests/ag-d/disks/vda/file?offset=0&length=4");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->status, 200) << got->body;
  EXPECT_EQ(got->body, "QFI\xfb");  // a qcow2's magic
  EXPECT_EQ(got->headers["content-type"], "application/octet-stream");
  EXPECT_GT(std::stoll(got->headers["x-uw-file-bytes"]), 4);
  EXPECT_EQ(Do("GET", "/api/v1/guests/ag-d/disks/vda/file?offset=0&length=4194305").status, 400);
  EXPECT_EQ(Do("GET", "/api/v1/guests/ag-d/disks/vda/file?offset=0").status, 400);
  EXPECT_EQ(Do("GET", "/api/v1/guests/ag-d/disks/vdq/file?offset=0&length=4").status, 404);
  EXPECT_EQ(Do("DELETE", "/api/v1/guests/ag-d").status, 200);
}

TEST_F(AgentTest, CreateListResizeStopDelete) {
  auto r = Do("POST", "/api/v1/guests",
              R"({"name": "ag-1", "kind": "qemu", "image": "tiny", "vcpus": 1, "max_vcpus": 2,
                  "memory_mib": 128, "max_memory_mib": 256, "cpu": {"shares": 512}})");
  ASSERT_EQ(r.status, 201) << r.body;
  auto g = Json::parse(r.body);
  EXPECT_EQ(g["state"], "running");
  EXPECT_EQ(g["channels"][0]["name"], "org.underware.guest.0");
  EXPECT_EQ(GuestCount(), 1);

  r = Do("GET", "/api/v1/guests/ag-1");
  ASSERT_EQ(r.status, 200);
  auto spec = Json::parse(r.body)["spec"];
  EXPECT_EQ(spec["boot"]["kernel"], (dir_ / "images/tiny/vmlinux").string());
  EXPECT_EQ(spec["cpu"]["shares"], 512);

  r = Do("POST", "/api/v1/guests/ag-1/resize", R"({"memory_mib": 200, "vcpus": 2})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["memory_mib"], 200);
  EXPECT_EQ(Json::parse(r.body)["vcpus"], 2);

  r = Do("DELETE", "/api/v1/guests/ag-1");
  EXPECT_EQ(r.status, 409) << r.body;  // running
  r = Do("POST", "/api/v1/guests/ag-1/stop", R"({"force": true})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["state"], "shutoff");
  r = Do("DELETE", "/api/v1/guests/ag-1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(GuestCount(), 0);
}

TEST_F(AgentTest, HostShutdownIsRefusedWhileAGuestRunsThenRunsTheCommand) {
  auto r = Do("POST", "/api/v1/host/shutdown");
  ASSERT_EQ(r.status, 409) << r.body;  // the test driver's own domain "test" runs
  EXPECT_NE(r.body.find("test (running)"), std::string::npos) << r.body;
  EXPECT_FALSE(fs::exists(dir_ / "shutdown.done"));
  const Json before = Json::parse(Do("GET", "/api/v1/guests").body);
  for (const auto& g : before["guests"]) {
    if (g["state"] != "shutoff") {
      ASSERT_EQ(Do("POST", "/api/v1/guests/" + g["name"].get<std::string>() + "/stop", R"({"force": true})").status,
                200);
    }
  }
  r = Do("POST", "/api/v1/host/shutdown");
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(Json::parse(r.body)["status"], "shutting_down");
  for (int i = 0; i < 500 && !fs::exists(dir_ / "shutdown.done"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(fs::exists(dir_ / "shutdown.done"));
}

TEST_F(AgentTest, BadRequestsGetClearErrorsAndChangeNothing) {
  struct Case {
    std::string method, path, body;
    int status;
    std::string code, message_part;
  } cases[] = {
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "memory_mib": )", 400, "invalid_argument", "line 1"},
      {"POST", "/api/v1/guests", R"([1, 2])", 400, "invalid_argument", "object"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "vcpus": "two", "image": "tiny"})", 400, "invalid_argument",
       "spec.vcpus"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "image": "windows"})", 400, "invalid_argument",
       "no image 'windows'"},
      {"POST", "/api/v1/guests", R"({"name": "ag x", "image": "tiny"})", 400, "invalid_argument", "guest name"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "image": "tiny", "memory_mib": 9999999})", 409,
       "resource_exhausted", "MiB in all"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "image": "tiny", "vcpus": 4000})", 409, "resource_exhausted",
       "vCPUs"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "kind": "kvm", "image": "tiny"})", 409, "failed_precondition",
       "no KVM"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "kind": "lxc", "image": "tiny"})", 409, "failed_precondition",
       "container"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "boot": {"kernel": "/no/such/kernel"}})", 400, "invalid_argument",
       "boot.kernel"},
      {"POST", "/api/v1/guests", "{\"name\": \"ag-x\", \"pad\": \"" + std::string(8000, 'x') + "\"}", 413,
       "resource_exhausted", ""},
      {"GET", "/api/v1/guests/ag-missing", "", 404, "not_found", "ag-missing"},
      {"POST", "/api/v1/guests/ag-missing/start", "", 404, "not_found", "ag-missing"},
      {"POST", "/api/v1/guests/ag-missing/resize", R"({"memory_mib": "lots"})", 400, "invalid_argument",
       "body.memory_mib"},
      {"POST", "/api/v1/guests/ag-missing/resize", R"({})", 400, "invalid_argument", "nothing to change"},
      {"DELETE", "/api/v1/guests", "", 405, "method_not_allowed", ""},
      {"GET", "/api/v1/nothing-here", "", 404, "not_found", ""},
  };
  for (const auto& c : cases) {
    auto r = Do(c.method, c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.method << " " << c.path << " " << c.body.substr(0, 80) << " -> " << r.body;
    EXPECT_EQ(ErrorCode(r), c.code) << r.body;
    EXPECT_NE(r.body.find(c.message_part), std::string::npos) << r.body;
  }
  EXPECT_EQ(GuestCount(), 0);
}

TEST_F(AgentTest, DuplicateNamesAreRefused) {
  ASSERT_EQ(Do("POST", "/api/v1/guests", R"({"name": "ag-dup", "image": "tiny", "start": false})").status, 201);
  auto r = Do("POST", "/api/v1/guests", R"({"name": "ag-dup", "image": "tiny"})");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(ErrorCode(r), "already_exists");
  EXPECT_EQ(Json::parse(Do("GET", "/api/v1/guests/ag-dup").body)["state"], "shutoff");  // untouched
  EXPECT_EQ(Do("DELETE", "/api/v1/guests/ag-dup").status, 200);
}

TEST_F(AgentTest, StatsAndEvents) {
  ASSERT_EQ(Do("POST", "/api/v1/guests", R"({"name": "ag-st", "image": "tiny"})").status, 201);
  auto r = Do("GET", "/api/v1/stats?fresh=1");
  ASSERT_EQ(r.status, 200);
  auto stats = Json::parse(r.body);
  EXPECT_EQ(stats["host"]["name"], "t1");
  bool found = false;
  for (const auto& g : stats["guests"]) found = found || g["name"] == "ag-st";
  EXPECT_TRUE(found);
  EXPECT_EQ(Do("GET", "/api/v1/guests/ag-st/stats").status, 200);
  r = Do("GET", "/api/v1/host");
  ASSERT_EQ(r.status, 200);
  auto host = Json::parse(r.body);
  EXPECT_FALSE(host["kvm"]["usable"]);
  EXPECT_EQ(host["kinds"], Json::array({"qemu"}));
  EXPECT_EQ(Do("GET", "/api/v1/events?since=abc").status, 400);
  EXPECT_EQ(Do("POST", "/api/v1/guests/ag-st/stop", R"({"force": true})").status, 200);
  EXPECT_EQ(Do("DELETE", "/api/v1/guests/ag-st").status, 200);
}

TEST_F(AgentTest, HostInfoSaysTheCgroupLayoutAndTheMonitorSettings) {
  auto host = Json::parse(Do("GET", "/api/v1/host").body);
  ASSERT_TRUE(host.contains("cgroups")) << host.dump();
  const std::string version = host["cgroups"]["version"];
  EXPECT_TRUE(version == "v1" || version == "v2" || version == "hybrid" || version == "none") << version;
  EXPECT_FALSE(host["cgroups"]["notes"].get<std::string>().empty());
  // The same detection as the parser's, on this machine's own mountinfo.
  std::stringstream mi;
  mi << std::ifstream("/proc/self/mountinfo").rdbuf();
  EXPECT_EQ(host["cgroups"], CgroupLayoutToJson(DetectCgroupLayout(mi.str())));
  EXPECT_EQ(host["monitor"]["timeout_s"], 2);
  EXPECT_EQ(host["monitor"]["interval_s"], 1);
}

// The health watch end to end: starting until the channel answers (exec refused with "not ready
// yet" meanwhile), ready, unresponsive after monitor.timeout_s of silence, ready again; events for
// each change.
TEST_F(AgentTest, HealthWatchFollowsTheControlChannel) {
  FakeGuestChannel guest((dir_ / "state/channels/ag-hw.sock").string());
  ASSERT_EQ(Do("POST", "/api/v1/guests", R"({"name": "ag-hw", "image": "tiny"})").status, 201);
  auto get = [this] { return Json::parse(Do("GET", "/api/v1/guests/ag-hw").body); };
  auto g = get();
  EXPECT_EQ(g["health"], "starting") << g.dump();
  EXPECT_EQ(g["ready"], false);
  EXPECT_FALSE(g.contains("unresponsive_since"));
  auto r = Do("POST", "/api/v1/guests/ag-hw/exec", R"({"command": "ping", "timeout_s": 1})");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(ErrorCode(r), "failed_precondition");
  EXPECT_NE(r.body.find("guest ag-hw is not ready yet (its control channel has not answered since it started"),
            std::string::npos)
      << r.body;
  EXPECT_GT(guest.requests.load(), 0) << "the watch did not ping a starting guest";

  guest.answering = true;
  EXPECT_TRUE(Eventually([&] { return get()["ready"] == true; }, std::chrono::seconds(5))) << get().dump();
  EXPECT_EQ(get()["health"], "ready");
  r = Do("POST", "/api/v1/guests/ag-hw/exec", R"({"command": "ping"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["output"], "pong\n");

  guest.answering = false;
  EXPECT_TRUE(Eventually([&] { return get()["health"] == "unresponsive"; }, std::chrono::seconds(8))) << get().dump();
  g = get();
  EXPECT_EQ(g["ready"], false);
  ASSERT_TRUE(g.contains("unresponsive_since")) << g.dump();
  EXPECT_LE(g["unresponsive_since"].get<int64_t>(), g["health_since"].get<int64_t>());

  guest.answering = true;
  EXPECT_TRUE(Eventually([&] { return get()["health"] == "ready"; }, std::chrono::seconds(5))) << get().dump();
  auto events = Json::parse(Do("GET", "/api/v1/events?since=0").body)["events"];
  std::vector<std::string> health_events;
  for (const auto& e : events) {
    if (e["guest"] == "ag-hw" && e["source"] == "agent") health_events.push_back(e["event"]);
  }
  EXPECT_EQ(health_events, (std::vector<std::string>{"ready", "unresponsive", "ready"})) << events.dump();

  // Stopped: not watched.
  ASSERT_EQ(Do("POST", "/api/v1/guests/ag-hw/stop", R"({"force": true})").status, 200);
  g = get();
  EXPECT_EQ(g["health"], "none");
  EXPECT_EQ(g["ready"], false);
  EXPECT_EQ(Do("DELETE", "/api/v1/guests/ag-hw").status, 200);
}

// The migration routes keep their wire shapes (the manager's migrations.cc reads them); libvirt's
// test driver cannot migrate, so only what is answered before a transfer is checked here.
TEST_F(AgentTest, MigrationRoutesKeepTheirShapes) {
  ASSERT_EQ(Do("POST", "/api/v1/guests", R"({"name": "ag-mig", "image": "tiny"})").status, 201);
  auto r = Do("GET", "/api/v1/guests/ag-mig/migration");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["guest"], "ag-mig");
  EXPECT_EQ(j["host"], "t1");
  EXPECT_EQ(j["state"], "none");
  EXPECT_EQ(j["guest_state"], "running");
  EXPECT_FALSE(j.contains("destination"));
  r = Do("GET", "/api/v1/guests/ag-gone/migration");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["guest_state"], "absent");

  r = Do("POST", "/api/v1/migrations/prepare", R"({"guest": "ag-in", "kind": "lxc", "memory_mib": 64})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("body.kind: containers do not live-migrate"), std::string::npos) << r.body;
  r = Do("POST", "/api/v1/migrations/prepare", R"({"guest": "ag-mig", "memory_mib": 64})");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(ErrorCode(r), "already_exists");
  // Port NICs come with a prepare as a guest spec has them, checked by the spec's own parser; a
  // bridge NIC is the host's own business; this host's Open vSwitch is not there (a clear 503).
  r = Do("POST", "/api/v1/migrations/prepare",
         R"({"guest": "ag-in", "memory_mib": 64, "nics": [{"type": "bridge", "source": "br0"}]})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("only port NICs are prepared"), std::string::npos) << r.body;
  r = Do("POST", "/api/v1/migrations/prepare",
         R"({"guest": "ag-in", "memory_mib": 64, "nics": [{"type": "port", "port": "port-12"}]})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("body.nics[0].port"), std::string::npos) << r.body;
  r = Do("POST", "/api/v1/migrations/prepare",
         R"({"guest": "ag-in", "memory_mib": 1, "nics": [{"type": "port", "port": "port-0123456789abcdef",
             "network": "acme:net", "mac": "52:54:00:00:00:09", "address": "10.0.0.9/24"}]})");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("host t1: Open vSwitch: "), std::string::npos) << r.body;
  r = Do("POST", "/api/v1/migrations/abandon", R"({"guest": "ag-in"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body), Json({{"guest", "ag-in"}, {"removed", false}}));
  r = Do("POST", "/api/v1/migrations/abandon", R"({"guest": "ag-mig"})");
  EXPECT_EQ(r.status, 409) << r.body;  // a running copy may be the only one

  r = Do("POST", "/api/v1/guests/ag-mig/migrate",
         R"({"destination": {"migration_uri": "qemu+tcp://10.0.0.9/system", "state_dir": "relative"}})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("body.destination.state_dir"), std::string::npos) << r.body;
  r = Do("POST", "/api/v1/guests/ag-mig/migration/rewind");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_NE(r.body.find("no migration action 'rewind'"), std::string::npos) << r.body;
  r = Do("POST", "/api/v1/guests/ag-gone/migration/rewind");
  EXPECT_NE(r.body.find("guest 'ag-gone'"), std::string::npos) << r.body;  // the guest is checked first
  r = Do("POST", "/api/v1/guests/ag-mig/migration/bandwidth", R"({"bandwidth_mib_s": 0})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("body.bandwidth_mib_s: expected a positive number"), std::string::npos) << r.body;
  EXPECT_EQ(Do("DELETE", "/api/v1/guests/ag-mig?force=true").status, 200);
}

TEST_F(AgentTest, StopDoesNotWaitForLongPolls) {
  std::thread poller([this] { (void)client_->Do("GET", "/api/v1/events?since=999999&wait_ms=30000"); });
  // The poll is in flight once the server has accepted it; a short grace lets it reach the wait.
  ASSERT_TRUE(Do("GET", "/healthz").status == 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto start = std::chrono::steady_clock::now();
  agent_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  poller.join();
}

TEST(AgentConfigTest, ErrorsNameFileAndField) {
  auto bad = [](const char* text) { return AgentConfigFromJson(Json::parse(text), "agent.json").status().message(); };
  EXPECT_EQ(bad(R"({"token": "0123456789abcdef0"})"), "agent.json: host_name: required string is missing");
  EXPECT_EQ(bad(R"({"host_name": "h1", "token": "short"})"), "agent.json: token: must be at least 16 characters");
  EXPECT_EQ(bad(R"({"host_name": "h1", "token": "0123456789abcdef0", "listen": {"port": 70000}})"),
            "agent.json: listen.port: expected 0..65535");
  EXPECT_EQ(bad(R"({"host_name": "h1", "token": "0123456789abcdef0", "lsiten": {}})"),
            "agent.json: lsiten: unknown field");
  EXPECT_EQ(bad(R"({"host_name": "h1", "token": "0123456789abcdef0", "shutdown_command": [""]})"),
            "agent.json: shutdown_command: the program (first element) is empty");
  auto ok = AgentConfigFromJson(Json::parse(R"({"host_name": "h1", "token": "0123456789abcdef0",
      "listen": {"address": "10.77.0.1", "port": 7700}, "guest_assets": "/g", "allow_emulated_kvm": true})"),
                                "x");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->images.at("tiny"), "/g");
  EXPECT_TRUE(ok->allow_emulated_kvm);
  EXPECT_EQ(LoadAgentConfig("/nonexistent.json").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(ok->monitor_timeout_s, 30);
  EXPECT_EQ(ok->monitor_interval_s, 5);
  EXPECT_EQ(bad(R"({"host_name": "h1", "token": "0123456789abcdef0", "monitor": {"timeout_s": 1}})"),
            "agent.json: monitor.timeout_s: expected 2..3600");
  EXPECT_EQ(bad(R"({"host_name": "h1", "token": "0123456789abcdef0", "monitor": {"timout_s": 10}})"),
            "agent.json: monitor.timout_s: unknown field");
  auto tuned = AgentConfigFromJson(Json::parse(R"({"host_name": "h1", "token": "0123456789abcdef0",
      "monitor": {"timeout_s": 12, "interval_s": 3}})"),
                                   "x");
  ASSERT_TRUE(tuned.ok()) << tuned.status().ToString();
  EXPECT_EQ(tuned->monitor_timeout_s, 12);
  EXPECT_EQ(tuned->monitor_interval_s, 3);
}

TEST_F(AgentTest, AnRbdDiskOnAHostWithoutCephIsRefusedAndNothingIsMade) {
  auto r = Do("POST", "/api/v1/guests",
              R"({"name": "ag-rbd", "kind": "qemu", "image": "tiny", "memory_mib": 128,
                  "disks": [{"rbd": "rbd/uw-vol-x"}]})");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body.find("has no Ceph"), std::string::npos) << r.body;
  EXPECT_EQ(GuestCount(), 0);
}

TEST_F(AgentTest, HostSaysWhyItsIntegrationBridgeIsNotReady) {
  // No ovsdb-server at the configured socket: the agent says so and goes on (retrying every 5 s).
  Json network;
  for (int i = 0; i < 100; ++i) {
    network = Json::parse(Do("GET", "/api/v1/host").body)["network"];
    if (network.value("error", Json()) != "not made yet") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(network["bridge"], "uw-int");
  EXPECT_EQ(network["ready"], false);
  EXPECT_NE(network["error"].dump().find("no-ovsdb.sock"), std::string::npos) << network.dump();
}

TEST(AgentConfigTest, NetworkNamesTheOvsdbSocketAndTheBridge) {
  auto parse = [](const std::string& network) {
    return AgentConfigFromJson(
        Json::parse(R"({"host_name": "h1", "token": "0123456789abcdef0", "network": )" + network + "}"), "agent.json");
  };
  auto ok = parse("{}");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ASSERT_TRUE(ok->network.has_value());
  EXPECT_EQ(ok->network->ovsdb, "unix:/run/openvswitch/db.sock");
  EXPECT_EQ(ok->network->bridge, "uw-int");
  EXPECT_EQ(ok->network->datapath_type, "netdev");
  EXPECT_EQ(parse(R"({"datapath_type": "dpdk"})").status().message(),
            "agent.json: network.datapath_type: expected netdev or system");
  EXPECT_EQ(parse(R"({"ovsdb": ""})").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse(R"({"tunnel": "vxlan"})").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(AgentConfigFromJson(Json::parse(R"({"host_name": "h1", "token": "0123456789abcdef0"})"), "x")
                   ->network.has_value());
}

TEST(AgentConfigTest, CephNamesItsKeyringAndASecretUuid) {
  auto bad = [](const char* ceph) {
    return AgentConfigFromJson(
               Json::parse(std::string(R"({"host_name": "h1", "token": "0123456789abcdef0", "ceph": )") + ceph + "}"),
               "agent.json")
        .status()
        .message();
  };
  EXPECT_EQ(bad(R"({"conf": "/c", "keyring": "/k", "secret_uuid": "nope"})"),
            "agent.json: ceph.secret_uuid: expected a UUID");
  EXPECT_EQ(bad(R"({"conf": "/c", "secret_uuid": "5d3a1c9e-0000-4000-8000-000000000001"})"),
            "agent.json: ceph.keyring: required string is missing");
  EXPECT_EQ(bad(R"({"conf": "/c", "keyring": "/k", "user": "client.uw",
                    "secret_uuid": "5d3a1c9e-0000-4000-8000-000000000001"})"),
            "agent.json: ceph.user: expected a cephx user name without 'client.'");
  EXPECT_EQ(bad(R"({"conf": "/c", "keyring": "/k", "pool": "../p",
                    "secret_uuid": "5d3a1c9e-0000-4000-8000-000000000001"})"),
            "agent.json: ceph.pool: expected a pool name");
  EXPECT_EQ(bad(R"({"conf": "/c", "keyring": "/k", "storage_heartbeat": "yes",
                    "secret_uuid": "5d3a1c9e-0000-4000-8000-000000000001"})")
                .find("ceph.storage_heartbeat"),
            0u + std::string("agent.json: ").size());
  auto ok = AgentConfigFromJson(Json::parse(R"({"host_name": "h1", "token": "0123456789abcdef0",
      "ceph": {"conf": "/c", "keyring": "/k", "secret_uuid": "5d3a1c9e-0000-4000-8000-000000000001"}})"),
                                "x");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ASSERT_TRUE(ok->ceph.has_value());
  EXPECT_EQ(ok->ceph->user, "uw");
  EXPECT_EQ(ok->ceph->keyring, "/k");
  EXPECT_EQ(ok->ceph->pool, "rbd");
  EXPECT_TRUE(ok->ceph->storage_heartbeat) << "HA's storage heartbeat is on wherever Ceph is";
}

TEST(CrashConsoleTailTest, LastTwoKibOrFromThePanicLine) {
  // A short console: all of it.
  EXPECT_EQ(CrashConsoleTail("boot\nKernel panic - not syncing: x\n"), "boot\nKernel panic - not syncing: x\n");
  // The panic line 2.5 KiB before the end (sysrq: the stack dump follows it): from that line.
  const std::string boot(3000, 'b');
  const std::string dump(2500, 'd');
  const std::string panic_line = "[    3.4] Kernel panic - not syncing: sysrq triggered crash\n";
  std::string tail = CrashConsoleTail(boot + "\n" + panic_line + dump);
  EXPECT_EQ(tail, panic_line + dump);
  // No panic line, or one too far back: the last 2 KiB.
  EXPECT_EQ(CrashConsoleTail(boot + dump).size(), 2048u);
  EXPECT_EQ(CrashConsoleTail(panic_line + std::string(10000, 'd')).size(), 2048u);
  // Bytes that are not UTF-8 (a cut multi-byte character) are replaced.
  EXPECT_EQ(CrashConsoleTail("\xa9ok \xc3\xa9"), "?ok \xc3\xa9");
}

TEST(InitCmdlineTest, TheInitOrItsInterpreter) {
  using namespace std::string_literals;
  EXPECT_TRUE(InitCmdlineMatches("/sbin/uw-container-init\0"s, "/sbin/uw-container-init"));
  EXPECT_TRUE(InitCmdlineMatches("/bin/sh\0/sbin/uw-container-init\0"s, "/sbin/uw-container-init"));
  EXPECT_TRUE(InitCmdlineMatches("/bin/sh\0-c\0while :; do sleep 3600; done\0"s, "/bin/sh"));
  // libvirt_lxc's clone before it execs the init.
  EXPECT_FALSE(
      InitCmdlineMatches("/usr/lib/libvirt/libvirt_lxc\0--name\0ct1\0--console\0"s, "/sbin/uw-container-init"));
  EXPECT_FALSE(InitCmdlineMatches(""s, "/sbin/uw-container-init"));
  EXPECT_FALSE(InitCmdlineMatches("/bin/sh\0"s, ""));
  EXPECT_FALSE(InitCmdlineMatches("/bin/sh\0-c\0/sbin/uw-container-init\0"s, "/sbin/uw-container-init"));
}

}  // namespace
}  // namespace uw::vmm
