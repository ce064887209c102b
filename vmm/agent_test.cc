// The agent's HTTP API end to end over a real socket, on libvirt's in-process test driver.
// The same API against real QEMU and LXC guests is tested in tests/agent_integration_test.cc.
#include "vmm/agent.h"

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "vmm/libvirt_driver.h"

namespace uw::vmm {
namespace {

namespace fs = std::filesystem;
constexpr const char* kToken = "test-token-0123456789abcdef";

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

TEST_F(AgentTest, BadRequestsGetClearErrorsAndChangeNothing) {
  struct Case {
    std::string method, path, body;
    int status;
    std::string code, message_part;
  } cases[] = {
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "memory_mib": )", 400, "invalid_argument", "line 1"},
      {"POST", "/api/v1/guests", R"([1, 2])", 400, "invalid_argument", "object"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "vcpus": "two", "image": "tiny"})", 400, "invalid_argument", "spec.vcpus"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "image": "windows"})", 400, "invalid_argument", "no image 'windows'"},
      {"POST", "/api/v1/guests", R"({"name": "ag x", "image": "tiny"})", 400, "invalid_argument", "guest name"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "image": "tiny", "memory_mib": 99999999})", 409, "resource_exhausted", "MiB in all"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "image": "tiny", "vcpus": 4000})", 409, "resource_exhausted", "vCPUs"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "kind": "kvm", "image": "tiny"})", 409, "failed_precondition", "no KVM"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "kind": "lxc", "image": "tiny"})", 409, "failed_precondition", "container"},
      {"POST", "/api/v1/guests", R"({"name": "ag-x", "boot": {"kernel": "/no/such/kernel"}})", 400, "invalid_argument", "boot.kernel"},
      {"POST", "/api/v1/guests", "{\"name\": \"ag-x\", \"pad\": \"" + std::string(8000, 'x') + "\"}", 413, "resource_exhausted", ""},
      {"GET", "/api/v1/guests/ag-missing", "", 404, "not_found", "ag-missing"},
      {"POST", "/api/v1/guests/ag-missing/start", "", 404, "not_found", "ag-missing"},
      {"POST", "/api/v1/guests/ag-missing/resize", R"({"memory_mib": "lots"})", 400, "invalid_argument", "body.memory_mib"},
      {"POST", "/api/v1/guests/ag-missing/resize", R"({})", 400, "invalid_argument", "nothing to change"},
      {"DELETE", "/api/v1/guests", "", 405, "invalid_argument", ""},
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
  auto bad = [](const char* text) {
    return AgentConfigFromJson(Json::parse(text), "agent.json").status().message();
  };
  EXPECT_EQ(bad(R"({"token": "0123456789abcdef0"})"), "agent.json: host_name: required string is missing");
  EXPECT_EQ(bad(R"({"host_name": "h1", "token": "short"})"), "agent.json: token: must be at least 16 characters");
  EXPECT_EQ(bad(R"({"host_name": "h1", "token": "0123456789abcdef0", "listen": {"port": 70000}})"),
            "agent.json: listen.port: expected 0..65535");
  EXPECT_EQ(bad(R"({"host_name": "h1", "token": "0123456789abcdef0", "lsiten": {}})"), "agent.json: lsiten: unknown field");
  auto ok = AgentConfigFromJson(Json::parse(R"({"host_name": "h1", "token": "0123456789abcdef0",
      "listen": {"address": "10.77.0.1", "port": 7700}, "guest_assets": "/g", "allow_emulated_kvm": true})"), "x");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->images.at("tiny"), "/g");
  EXPECT_TRUE(ok->allow_emulated_kvm);
  EXPECT_EQ(LoadAgentConfig("/nonexistent.json").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace uw::vmm
