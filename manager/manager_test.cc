#include "manager/manager.h"

#include <filesystem>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "api/http.h"
#include "manager/fake_agent.h"
#include "manager/http_api.h"

namespace uw::manager {
namespace {

using testing::FakeAgent;
constexpr const char* kAdmin = "admin-token-0123456789";
constexpr const char* kJoin = "join-token-0123456789";

// A manager serving HTTP on a free port over a SQLite file in a temp dir, plus fake agents.
class ManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("uw-manager-test-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_.db_path = (dir_ / "state.db").string();
    config_.join_token = kJoin;
    config_.admin_token = kAdmin;
    config_.drs_interval_ms = 0;
    config_.heartbeat_interval_ms = 100;
    config_.heartbeat_timeout_ms = 30000;
    config_.agent_timeout_ms = 5000;
    config_.max_body_bytes = 64 << 10;
    config_.migration_verify_window_ms = 0;  // fake guests have no channel: running once is enough
  }
  void TearDown() override {
    StopManager();
    for (auto& a : agents_) a->Stop();
    std::filesystem::remove_all(dir_);
  }
  void StartManager(Clock& clock = Clock::Real()) {
    manager_ = std::make_unique<Manager>(config_, clock);
    ASSERT_TRUE(manager_->Start().ok());
    router_ = std::make_unique<api::Router>();
    BuildRoutes(*manager_, *router_);
    api::ServerOptions opts;
    opts.max_body_bytes = config_.max_body_bytes;
    opts.worker_threads = 8;
    server_ = std::make_unique<api::HttpServer>(opts, router_.get());
    ASSERT_TRUE(server_->Start().ok());
  }
  void StopManager() {
    if (server_) server_->Stop();
    if (manager_) manager_->Stop();
    server_.reset();
    router_.reset();
    manager_.reset();
  }
  api::HttpClient Client(const std::string& token = kAdmin) {
    return api::HttpClient({"http://127.0.0.1:" + std::to_string(server_->port()), token, 10000, 3000});
  }
  // Starts a fake agent and joins it; returns its host token.
  std::string AddHost(const std::string& name, double cores = 4, int64_t mib = 4096) {
    agents_.push_back(std::make_unique<FakeAgent>(name));
    EXPECT_TRUE(agents_.back()->Start().ok());
    Json join = {{"name", name}, {"agent_url", agents_.back()->url()}, {"agent_token", agents_.back()->token()},
                 {"capacity", {{"cpu_cores", cores}, {"memory_mib", mib}}}};
    auto r = Client(kJoin).Call("POST", "/api/v1/hosts/join", &join);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? (*r)["host_token"].get<std::string>() : "";
  }
  FakeAgent& Agent(size_t i) { return *agents_.at(i); }
  Json WaitTask(const Json& task) {
    auto r = manager_->WaitTask(task["id"].get<std::string>(), std::chrono::seconds(20));
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : Json();
  }
  int64_t Count(const std::string& sql) { return (*manager_->store().Query(sql))[0].Int("n"); }
  std::string TenantToken(const std::string& tenant) {
    Json body = {{"name", tenant + "-key"}, {"role", "tenant"}, {"tenant", tenant}};
    auto r = Client().Call("POST", "/api/v1/tokens", &body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return (*r)["token"].get<std::string>();
  }

  std::filesystem::path dir_;
  ManagerConfig config_;
  FakeClock fake_clock_;  // outlives manager_ (its threads read it until TearDown stops them)
  std::unique_ptr<Manager> manager_;
  std::unique_ptr<api::Router> router_;
  std::unique_ptr<api::HttpServer> server_;
  std::vector<std::unique_ptr<FakeAgent>> agents_;
};

TEST_F(ManagerTest, AgentJoinsOnlyWithTheClusterJoinToken) {
  StartManager();
  agents_.push_back(std::make_unique<FakeAgent>("h1"));
  ASSERT_TRUE(agents_[0]->Start().ok());
  Json join = {{"name", "h1"}, {"agent_url", agents_[0]->url()}, {"agent_token", "t"},
               {"capacity", {{"cpu_cores", 4}, {"memory_mib", 4096}}}};
  auto bad = Client("wrong-join-token-xxxx").Call("POST", "/api/v1/hosts/join", &join);
  EXPECT_EQ(bad.status().code(), StatusCode::kUnauthenticated);
  Json wrong_type = join;
  wrong_type["capacity"]["memory_mib"] = "lots";
  auto typed = Client(kJoin).Call("POST", "/api/v1/hosts/join", &wrong_type);
  EXPECT_EQ(typed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(typed.status().message().find("capacity.memory_mib"), std::string::npos) << typed.status().message();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM hosts"), 0);
  auto ok = Client(kJoin).Call("POST", "/api/v1/hosts/join", &join);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  std::string host_token = (*ok)["host_token"];
  EXPECT_GE(host_token.size(), 32u);
  // Heartbeat with the host token (not the join token).
  Json hb = {{"stats", {{"guests", Json::array()}}}, {"guests", Json::array()}};
  EXPECT_EQ(Client(kJoin).Call("POST", "/api/v1/hosts/h1/heartbeat", &hb).status().code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(Client(host_token).Call("POST", "/api/v1/hosts/h1/heartbeat", &hb).ok());
  auto hosts = Client().Call("GET", "/api/v1/hosts");
  ASSERT_TRUE(hosts.ok());
  ASSERT_EQ((*hosts)["hosts"].size(), 1u);
  EXPECT_EQ((*hosts)["hosts"][0]["state"], "connected");
  EXPECT_EQ((*hosts)["hosts"][0]["capacity"]["memory_mib"], 4096);
}

TEST_F(ManagerTest, CreateGuestPlacesReservesAndCallsTheAgent) {
  StartManager();
  AddHost("h1");
  AddHost("h2");
  Json body = {{"name", "web1"}, {"vcpus", 2}, {"memory_mib", 1024}, {"image", "tiny"}};
  auto r = Client().Do("POST", "/api/v1/guests", body.dump());
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status, 202) << r->body;
  Json task = Json::parse(r->body);
  EXPECT_EQ(r->headers["location"], "/api/v1/tasks/" + task["id"].get<std::string>());
  Json done = WaitTask(task);
  EXPECT_EQ(done["state"], "succeeded") << done.dump();
  auto g = Client().Call("GET", "/api/v1/guests/web1");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)["state"], "running");
  std::string host = (*g)["host"];
  EXPECT_TRUE(host == "h1" || host == "h2");
  EXPECT_NE((*g)["placement_reason"].get<std::string>().find("next best"), std::string::npos) << g->dump();
  EXPECT_EQ((*g)["devices"], "virtio");
  EXPECT_EQ((*g)["leases"].size(), 2u);
  EXPECT_TRUE(Agent(host == "h1" ? 0 : 1).Has("web1"));
  Json emu = {{"name", "emu1"}, {"image", "tiny"}, {"memory_mib", 256}, {"paravirt", false}};
  EXPECT_EQ(WaitTask(*Client().Call("POST", "/api/v1/guests", &emu))["state"], "succeeded");
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/emu1"))["devices"], "emulated");
  ASSERT_EQ(WaitTask(*Client().Call("DELETE", "/api/v1/guests/emu1?force=true"))["state"], "succeeded");
  // Same name again: conflict, nothing new.
  auto dup = Client().Call("POST", "/api/v1/guests", &body);
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 1);
}

TEST_F(ManagerTest, AdmissionControlRefusesWhatDoesNotFitAndReservesForParallelCreates) {
  StartManager();
  AddHost("h1", 4, 2048);
  Agent(0).SetDelayMs(200);  // keep creations in flight so reservations must do the work
  auto c = Client();
  std::vector<Json> tasks;
  for (int i = 0; i < 2; ++i) {
    Json body = {{"name", "g" + std::to_string(i)}, {"image", "tiny"}, {"memory_mib", 1024}};
    auto r = c.Call("POST", "/api/v1/guests", &body);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    tasks.push_back(*r);
  }
  Json third = {{"name", "g2"}, {"image", "tiny"}, {"memory_mib", 1024}};
  auto refused = c.Call("POST", "/api/v1/guests", &third);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted) << refused.status().ToString();
  for (auto& t : tasks) EXPECT_EQ(WaitTask(t)["state"], "succeeded");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 2);
  EXPECT_EQ(Agent(0).GuestCount(), 2u);
}

TEST_F(ManagerTest, FailedCreationReleasesTheReservation) {
  StartManager();
  AddHost("h1", 4, 1024);
  Agent(0).FailCreates("libvirt is down");
  Json body = {{"name", "doomed"}, {"image", "tiny"}, {"memory_mib", 1024}};
  auto r = Client().Call("POST", "/api/v1/guests", &body);
  ASSERT_TRUE(r.ok());
  Json done = WaitTask(*r);
  EXPECT_EQ(done["state"], "failed");
  EXPECT_EQ(done["error"]["code"], "unavailable");
  EXPECT_NE(done["error"]["message"].get<std::string>().find("libvirt is down"), std::string::npos);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM leases"), 0);
  // The capacity is free again.
  Agent(0).FailCreates("");
  auto again = Client().Call("POST", "/api/v1/guests", &body);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(WaitTask(*again)["state"], "succeeded");
}

TEST_F(ManagerTest, LifecycleOperationsAreTasks) {
  StartManager();
  AddHost("h1");
  Json body = {{"name", "vm1"}, {"image", "tiny"}, {"memory_mib", 512}, {"max_memory_mib", 1024}, {"vcpus", 1}, {"max_vcpus", 2}};
  auto c = Client();
  auto created = c.Call("POST", "/api/v1/guests", &body);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ(WaitTask(*created)["state"], "succeeded");
  auto stop = c.Call("POST", "/api/v1/guests/vm1/stop");
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  ASSERT_EQ(WaitTask(*stop)["state"], "succeeded");
  auto stopped = c.Call("GET", "/api/v1/guests/vm1");
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  EXPECT_EQ((*stopped)["state"], "shutoff");
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/vm1/start"))["state"], "succeeded");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/vm1"))["state"], "running");
  Json grow = {{"memory_mib", 1024}, {"vcpus", 2}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/vm1/resize", &grow))["state"], "succeeded");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/vm1"))["memory_mib"], 1024);
  Json too_big = {{"memory_mib", 4096}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/vm1/resize", &too_big).status().code(), StatusCode::kInvalidArgument);
  // A running guest is deleted only with ?force=true: without it, 409 before any task is made.
  const int64_t tasks = Count("SELECT COUNT(*) AS n FROM tasks");
  auto refused = c.Do("DELETE", "/api/v1/guests/vm1");
  EXPECT_EQ(refused->status, 409) << refused->body;
  EXPECT_NE(refused->body.find("force=true"), std::string::npos) << refused->body;
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), tasks);
  EXPECT_EQ(c.Do("DELETE", "/api/v1/guests/vm1?force=maybe")->status, 400);
  EXPECT_TRUE(Agent(0).Has("vm1"));
  Json forced = WaitTask(*c.Call("DELETE", "/api/v1/guests/vm1?force=true"));
  ASSERT_EQ(forced["state"], "succeeded") << forced.dump();
  EXPECT_EQ(c.Call("GET", "/api/v1/guests/vm1").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(Agent(0).Has("vm1"));
}

TEST_F(ManagerTest, BadInputGetsTheRightStatusAndChangesNothing) {
  StartManager();
  AddHost("h1");
  auto c = Client();
  auto malformed = c.Do("POST", "/api/v1/guests", "{\"name\": ");
  ASSERT_TRUE(malformed.ok());
  EXPECT_EQ(malformed->status, 400);
  EXPECT_NE(malformed->body.find("invalid_argument"), std::string::npos);
  auto wrong_type = c.Do("POST", "/api/v1/guests", R"({"name": "x", "memory_mib": "big"})");
  EXPECT_EQ(wrong_type->status, 400);
  EXPECT_NE(wrong_type->body.find("memory_mib"), std::string::npos) << wrong_type->body;
  auto unknown_field = c.Do("POST", "/api/v1/guests", R"({"name": "x", "memroy_mib": 5})");
  EXPECT_EQ(unknown_field->status, 400);
  EXPECT_NE(unknown_field->body.find("memroy_mib"), std::string::npos);
  auto bad_name = c.Do("POST", "/api/v1/guests", R"({"name": "../etc"})");
  EXPECT_EQ(bad_name->status, 400);
  EXPECT_EQ(c.Do("GET", "/api/v1/guests/nope")->status, 404);
  EXPECT_EQ(c.Do("GET", "/api/v1/tasks/task-nope")->status, 404);
  EXPECT_EQ(c.Do("POST", "/api/v1/guests/nope/start")->status, 404);
  EXPECT_EQ(c.Do("GET", "/api/v1/hosts/nope")->status, 404);
  std::string huge = R"({"name": "x", "labels": ")" + std::string(100 << 10, 'a') + "\"}";
  EXPECT_EQ(c.Do("POST", "/api/v1/guests", huge)->status, 413);
  EXPECT_EQ(Client("").Do("GET", "/api/v1/guests")->status, 401);
  EXPECT_EQ(Client("wrong-token-0123456789").Do("GET", "/api/v1/guests")->status, 401);
  EXPECT_EQ(Client("").Do("POST", "/api/v1/guests", R"({"name": "x"})")->status, 401);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), 0);
  EXPECT_EQ(Agent(0).creates(), 0);
}

TEST_F(ManagerTest, TenantsSeeAndTouchOnlyTheirOwnGuests) {
  StartManager();
  AddHost("h1");
  std::string alice = TenantToken("alice"), bob = TenantToken("bob");
  Json a = {{"name", "alice-vm"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto r = Client(alice).Call("POST", "/api/v1/guests", &a);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(WaitTask(*r)["state"], "succeeded");
  EXPECT_EQ((*Client(alice).Call("GET", "/api/v1/guests/alice-vm"))["tenant"], "alice");
  // Bob cannot see, stop or delete it, nor read its task; the answers do not reveal it exists.
  EXPECT_EQ(Client(bob).Do("GET", "/api/v1/guests/alice-vm")->status, 404);
  EXPECT_EQ(Client(bob).Do("POST", "/api/v1/guests/alice-vm/stop")->status, 404);
  EXPECT_EQ(Client(bob).Do("DELETE", "/api/v1/guests/alice-vm")->status, 404);
  EXPECT_EQ(Client(bob).Do("GET", "/api/v1/tasks/" + (*r)["id"].get<std::string>())->status, 404);
  EXPECT_EQ((*Client(bob).Call("GET", "/api/v1/guests"))["guests"].size(), 0u);
  Json impersonate = {{"name", "b2"}, {"image", "tiny"}, {"tenant", "alice"}};
  EXPECT_EQ(Client(bob).Do("POST", "/api/v1/guests", impersonate.dump())->status, 403);
  // Tenants cannot reach cluster-wide routes.
  EXPECT_EQ(Client(bob).Do("GET", "/api/v1/hosts")->status, 403);
  EXPECT_EQ(Client(bob).Do("POST", "/api/v1/tokens", R"({"name": "x", "role": "admin"})")->status, 403);
  EXPECT_EQ((*Client(alice).Call("GET", "/api/v1/guests/alice-vm"))["state"], "running");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), 1);
  // A billing reader reads but never writes.
  Json br = {{"name", "billing"}, {"role", "billing-reader"}};
  std::string reader = (*Client().Call("POST", "/api/v1/tokens", &br))["token"];
  EXPECT_EQ((*Client(reader).Call("GET", "/api/v1/guests"))["guests"].size(), 1u);
  EXPECT_EQ(Client(reader).Do("POST", "/api/v1/guests/alice-vm/stop")->status, 403);
}

// Issue 12: a tenant creating a guest named like another tenant's got 409 "already exists" while
// GET of it said 404, so names leaked. Names are unique per tenant now.
TEST_F(ManagerTest, TenantGuestNamesNeitherCollideNorLeak) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  Json web = {{"name", "web1"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto a = Client(acme).Call("POST", "/api/v1/guests", &web);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ((*a)["subject"], "web1");
  EXPECT_EQ(WaitTask(*a)["state"], "succeeded");
  auto b = Client(beta).Call("POST", "/api/v1/guests", &web);
  ASSERT_TRUE(b.ok()) << "beta's web1 collided with acme's: " << b.status().ToString();
  EXPECT_EQ(WaitTask(*b)["state"], "succeeded");
  // Each tenant sees its own by the short name; the host runs both under their full names.
  auto mine = Client(acme).Call("GET", "/api/v1/guests/web1");
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ((*mine)["name"], "web1");
  EXPECT_EQ((*mine)["tenant"], "acme");
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/guests"))["guests"][0]["name"], "web1");
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/guests"))["guests"][0]["tenant"], "beta");
  EXPECT_EQ(Agent(0).GuestCount(), 2u);
  // A second web1 of the same tenant is refused; another tenant's full name is simply not found.
  EXPECT_EQ(Client(acme).Call("POST", "/api/v1/guests", &web).status().code(), StatusCode::kAlreadyExists);
  auto probe = Client(acme).Do("GET", "/api/v1/guests/beta:web1");
  EXPECT_EQ(probe->status, 404);
  EXPECT_EQ(Client(acme).Do("GET", "/api/v1/guests/ghost")->body.find("beta"), std::string::npos);
  // Operators use the full name; the short one is ambiguous here and says so.
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/beta:web1"))["tenant"], "beta");
  auto ambiguous = Client().Call("GET", "/api/v1/guests/web1");
  EXPECT_EQ(ambiguous.status().code(), StatusCode::kFailedPrecondition) << ambiguous.status().ToString();
  EXPECT_NE(ambiguous.status().message().find("acme:web1"), std::string::npos);
  // Events and tasks show the tenant its own short names.
  auto events = manager_->EventsSince(*manager_->Authenticate(acme), 0, 100);
  ASSERT_TRUE(events.ok());
  bool placed = false;
  for (const auto& e : *events) {
    EXPECT_EQ(e.dump().find("beta"), std::string::npos) << e.dump();
    if (e["type"] == "guest.placed") placed = e["subject"] == "web1";
  }
  EXPECT_TRUE(placed);
  auto stop = Client(acme).Call("POST", "/api/v1/guests/web1/stop");
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  EXPECT_EQ(WaitTask(*stop)["state"], "succeeded");
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/guests/web1"))["state"], "running");
}

// Issue 12: the unauthenticated heartbeat route answered 404 for unknown hosts and 401 for known
// ones, so anyone could list host names.
TEST_F(ManagerTest, HeartbeatAnswersTheSameForUnknownHostsAndBadTokens) {
  StartManager();
  AddHost("h1");
  Json hb = {{"stats", {{"guests", Json::array()}}}, {"guests", Json::array()}};
  auto known = Client("not-the-host-token").Do("POST", "/api/v1/hosts/h1/heartbeat", hb.dump());
  auto unknown = Client("not-the-host-token").Do("POST", "/api/v1/hosts/h9/heartbeat", hb.dump());
  ASSERT_TRUE(known.ok() && unknown.ok());
  EXPECT_EQ(known->status, 401);
  EXPECT_EQ(unknown->status, known->status);
  EXPECT_EQ(unknown->body, known->body);
}

// Issue 12 (found by the agent-reply fuzzer): a heartbeat whose guest had "vcpus": "2" or
// "crash": 5 threw from nlohmann inside the reconcile transaction, which stayed open: every later
// write failed ("cannot start a transaction within a transaction") until a restart.
TEST_F(ManagerTest, AMalformedHeartbeatIsRefusedAndTheStoreKeepsWorking) {
  StartManager();
  std::string token = AddHost("h1");
  const std::vector<Json> bad_guests = {
      {{"name", "g"}, {"state", "running"}, {"vcpus", "2"}},
      {{"name", "g"}, {"state", "crashed"}, {"crash", 5}},
      {{"name", "g"}, {"state", "crashed"}, {"crash", {{"at", "yesterday"}}}},
      {{"name", "g"}, {"state", "running"}, {"health", 1}},
      {{"name", "g"}, {"state", "running"}, {"memory_mib", -1}},
      {{"name", "g"}, {"state", 7}},
  };
  for (const auto& g : bad_guests) {
    Json hb = {{"stats", {{"guests", Json::array()}}}, {"guests", {g}}};
    auto r = Client(token).Do("POST", "/api/v1/hosts/h1/heartbeat", hb.dump());
    EXPECT_EQ(r->status, 400) << g.dump() << " -> " << r->body;
  }
  Json overflow = {{"stats", {{"guests", {{{"name", "a"}, {"memory_used_mib", INT64_MAX}},
                                          {{"name", "b"}, {"memory_used_mib", INT64_MAX}}}}}},
                   {"guests", Json::array()}};
  EXPECT_EQ(Client(token).Do("POST", "/api/v1/hosts/h1/heartbeat", overflow.dump())->status, 400);
  // The store still takes writes: a good heartbeat, a guest.
  Json hb = {{"stats", {{"guests", Json::array()}}}, {"guests", Json::array()}};
  EXPECT_TRUE(Client(token).Call("POST", "/api/v1/hosts/h1/heartbeat", &hb).ok());
  Json vm = {{"name", "after"}, {"image", "tiny"}, {"memory_mib", 64}};
  auto created = Client().Call("POST", "/api/v1/guests", &vm);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(WaitTask(*created)["state"], "succeeded");
}

// Issue 12: the manager accepted what the agent then rejected (a 202 and a failed task instead of
// a 400): it now runs the agent's own spec parser first.
TEST_F(ManagerTest, CreateRefusesWhatTheAgentWouldRefuse) {
  StartManager();
  AddHost("h1");
  struct Case {
    std::string body, mention;
  };
  const std::vector<Case> cases = {
      {R"({"name": "x", "image": "tiny", "boot": "x"})", "boot"},
      {R"({"name": "x", "image": "tiny", "labels": "x"})", "labels"},
      {R"({"name": "x", "image": "tiny", "labels": {"k": 5}})", "labels.k"},
      {R"({"name": "x", "image": "tiny", "nics": {}})", "nics"},
      {R"({"name": "x", "image": "tiny", "nics": [{"type": "tap"}]})", "nics[0].type"},
      {R"({"name": "x", "image": "tiny", "nics": [{"type": "bridge"}]})", "source"},
      {R"({"name": "x", "image": "tiny", "nics": [{"type": "ovs", "source": "br0", "vlan": 5000}]})", "vlan"},
      {R"({"name": "x", "image": "tiny", "cpu": {"shares": 1099511627776}})", "cpu.shares"},
      {R"({"name": "x", "image": "tiny", "cpu": {"period_us": 5}})", "cpu.period_us"},
      {R"({"name": "x", "image": "tiny", "cpu": {"quota_us": 1099511627776}})", "cpu.quota_us"},
      {R"({"name": "x", "image": "tiny", "cpu": {"burst": 1}})", "cpu.burst"},
      {R"({"name": "x", "image": "tiny", "disks": [{"size_mib": 0}]})", "size_mib"},
      {R"({"name": "x"})", "nothing to boot"},
      {R"({"name": "x", "kind": "lxc"})", "lxc.root"},
      {R"({"name": "x", "image": 7})", "image"},
  };
  for (const auto& c : cases) {
    auto r = Client().Do("POST", "/api/v1/guests", c.body);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 400) << c.body << " -> " << r->body;
    EXPECT_NE(r->body.find(c.mention), std::string::npos) << c.body << " -> " << r->body;
  }
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), 0);
  EXPECT_EQ(Agent(0).creates(), 0);
}

// Issue 12: a tenant's create body reached the agent unchecked (host paths, any bridge and VLAN,
// CPU tuning, any pool, automation: disabled to pin a guest against DRS). Those fields need rights
// an admin grants per token.
TEST_F(ManagerTest, SpecRightsAreGrantedByAnAdmin) {
  StartManager();
  AddHost("h1");
  Json pool = {{"name", "gold"}};
  ASSERT_TRUE(Client().Call("POST", "/api/v1/pools", &pool).ok());
  std::string plain = TenantToken("acme");
  struct Case {
    Json extra;
    std::string right, field;
  };
  const std::vector<Case> cases = {
      {{{"boot", {{"kernel", "/etc/shadow"}}}}, "host_paths", "boot.kernel"},
      {{{"nics", {{{"type", "bridge"}, {"source", "br-mgmt"}}}}}, "bridges", "nics[0].source"},
      {{{"nics", {{{"type", "user"}, {"vlan", 7}}}}}, "vlans", "nics[0].vlan"},
      {{{"cpu", {{"shares", 262144}}}}, "cpu_tuning", "cpu"},
      {{{"pool", "gold"}}, "pools", "pool"},
      {{{"automation", "disabled"}}, "automation", "automation"},
  };
  for (const auto& c : cases) {
    Json body = {{"name", "g-" + c.right}, {"image", "tiny"}, {"memory_mib", 64}};
    body.update(c.extra);
    auto r = Client(plain).Do("POST", "/api/v1/guests", body.dump());
    EXPECT_EQ(r->status, 403) << body.dump() << " -> " << r->body;
    EXPECT_NE(r->body.find(c.field), std::string::npos) << r->body;
    EXPECT_NE(r->body.find("'" + c.right + "'"), std::string::npos) << r->body;
    // The same request with the right granted is accepted (and an operator holds every right).
    Json grant = {{"name", "granted-" + c.right}, {"role", "tenant"}, {"tenant", "acme"}, {"rights", {c.right}}};
    auto granted = Client().Call("POST", "/api/v1/tokens", &grant);
    ASSERT_TRUE(granted.ok()) << granted.status().ToString();
    EXPECT_EQ((*granted)["rights"], Json::array({c.right}));
    auto ok = Client((*granted)["token"].get<std::string>()).Do("POST", "/api/v1/guests", body.dump());
    EXPECT_EQ(ok->status, 202) << body.dump() << " -> " << ok->body;
  }
  EXPECT_EQ(Client().Do("POST", "/api/v1/tokens", R"({"name": "t", "role": "tenant", "tenant": "acme", "rights": ["root"]})")
                ->status,
            400);
  EXPECT_EQ(Client().Do("POST", "/api/v1/tokens", R"({"name": "t", "role": "operator", "rights": ["pools"]})")->status,
            400);
  // Rights survive a restart (they are stored with the token).
  Json grant = {{"name", "durable"}, {"role", "tenant"}, {"tenant", "acme"}, {"rights", {"vlans"}}};
  std::string durable = (*Client().Call("POST", "/api/v1/tokens", &grant))["token"];
  StopManager();
  StartManager();
  EXPECT_TRUE(manager_->Authenticate(durable)->Holds("vlans"));
  EXPECT_FALSE(manager_->Authenticate(durable)->Holds("pools"));
  auto listed = Client().Call("GET", "/api/v1/tokens");
  bool found = false;
  for (const auto& t : (*listed)["tokens"]) found |= t["name"] == "durable" && t["rights"] == Json::array({"vlans"});
  EXPECT_TRUE(found);
}

// Issue 12: join accepted 1e308 cores and 2^63-1 MiB (after which every placement score was 0),
// and a 200,000-character token name was accepted.
TEST_F(ManagerTest, AbsurdCapacitiesAndNamesAreRefused) {
  StartManager();
  auto join = [&](const Json& capacity) {
    Json body = {{"name", "hx"}, {"agent_url", "http://127.0.0.1:1"}, {"agent_token", "t"}, {"capacity", capacity}};
    return Client(kJoin).Do("POST", "/api/v1/hosts/join", body.dump());
  };
  EXPECT_EQ(join({{"cpu_cores", 1e308}, {"memory_mib", 4096}})->status, 400);
  EXPECT_EQ(join({{"cpu_cores", 4}, {"memory_mib", INT64_MAX}})->status, 400);
  EXPECT_EQ(join({{"cpu_cores", -1}, {"memory_mib", 4096}})->status, 400);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM hosts"), 0);
  Json token = {{"name", std::string(60000, 'n')}, {"role", "operator"}};  // under this test's body limit
  auto long_name = Client().Do("POST", "/api/v1/tokens", token.dump());
  EXPECT_EQ(long_name->status, 400) << long_name->body.substr(0, 200);
  token["name"] = "bell\a";
  EXPECT_EQ(Client().Do("POST", "/api/v1/tokens", token.dump())->status, 400);
}

TEST_F(ManagerTest, IdempotencyKeyReplaysTheFirstAnswer) {
  StartManager();
  AddHost("h1");
  auto c = Client();
  std::string body = R"({"name": "idem", "image": "tiny", "memory_mib": 256})";
  auto first = c.Do("POST", "/api/v1/guests", body, {{"Idempotency-Key", "k1"}});
  auto second = c.Do("POST", "/api/v1/guests", body, {{"Idempotency-Key", "k1"}});
  ASSERT_EQ(first->status, 202);
  EXPECT_EQ(second->status, 202);
  EXPECT_EQ(first->body, second->body);
  EXPECT_EQ(second->headers["idempotent-replayed"], "true");
  auto other = c.Do("POST", "/api/v1/guests", R"({"name": "idem2", "image": "tiny"})", {{"Idempotency-Key", "k1"}});
  EXPECT_EQ(other->status, 400);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), 1);
}

TEST_F(ManagerTest, MissedHeartbeatsDisconnectAndReturningHostIsReconciled) {
  StartManager(fake_clock_);
  std::string token = AddHost("h1");
  auto c = Client();
  Json body = {{"name", "keep"}, {"image", "tiny"}, {"memory_mib", 256}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &body))["state"], "succeeded");
  body["name"] = "vanish";
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &body))["state"], "succeeded");
  fake_clock_.Advance(std::chrono::seconds(60));
  manager_->CheckHeartbeats();
  EXPECT_EQ((*c.Call("GET", "/api/v1/hosts/h1"))["state"], "disconnected");
  EXPECT_EQ(c.Do("POST", "/api/v1/guests/keep/stop")->status, 409);
  // While away: one guest vanished, one stopped, one appeared.
  Agent(0).Erase("vanish");
  Agent(0).Put({{"name", "keep"}, {"state", "shutoff"}, {"kind", "qemu"}, {"vcpus", 1}, {"memory_mib", 256}});
  Agent(0).Put({{"name", "stranger"}, {"state", "running"}, {"kind", "qemu"}, {"vcpus", 1}, {"memory_mib", 128}});
  Json hb = {{"stats", {{"guests", {{{"name", "stranger"}, {"cpu_cores", 0.5}, {"memory_used_mib", 100}}}}}},
             {"guests", Agent(0).Guests()}};
  ASSERT_TRUE(Client(token).Call("POST", "/api/v1/hosts/h1/heartbeat", &hb).ok());
  EXPECT_EQ((*c.Call("GET", "/api/v1/hosts/h1"))["state"], "connected");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/vanish"))["state"], "lost");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/keep"))["state"], "shutoff");
  auto stranger = c.Call("GET", "/api/v1/guests/stranger");
  ASSERT_TRUE(stranger.ok());
  EXPECT_EQ((*stranger)["host"], "h1");
  EXPECT_DOUBLE_EQ((*stranger)["usage"]["cpu_cores"].get<double>(), 0.5);
  auto events = manager_->EventsSince(Principal{"x", Role::kAdmin, "", {}}, 0, 1000);
  std::set<std::string> types;
  for (const auto& e : *events) types.insert(e["type"].get<std::string>());
  for (const char* t : {"host.disconnected", "host.reconnected", "guest.lost", "guest.changed", "guest.found"}) {
    EXPECT_TRUE(types.count(t)) << "missing event " << t;
  }
}

TEST_F(ManagerTest, RestartResumesOrFailsEveryUnfinishedTask) {
  StartManager();
  AddHost("h1");
  Json body = {{"name", "survivor"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto c = Client();
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &body))["state"], "succeeded");
  StopManager();
  {
    // Simulate a crash mid-way: a create journalled and running (reservation in place, agent not
    // yet called), a create the agent did finish before the crash, and a task that kept crashing.
    auto st = Store::Open(config_.db_path);
    ASSERT_TRUE(st.ok());
    Store& s = **st;
    for (const char* g : {"pending1", "halfdone"}) {
      ASSERT_TRUE(s.Exec("INSERT INTO guests(name, host, kind, vcpus, memory_mib, spec, state, created_ms, updated_ms) "
                         "VALUES (?, 'h1', 'qemu', 1, 256, '{}', 'creating', 0, 0)",
                         {std::string(g)})
                      .ok());
      Json req = {{"guest", g}, {"host", "h1"}, {"spec", {{"name", g}, {"memory_mib", 256}}}};
      ASSERT_TRUE(s.Exec("INSERT INTO tasks(id, kind, subject, state, request, attempts, created_ms, updated_ms) "
                         "VALUES (?, 'guest.create', ?, 'running', ?, 1, 0, 0)",
                         {"task-" + std::string(g), std::string(g), req.dump()})
                      .ok());
    }
    ASSERT_TRUE(s.Exec("INSERT INTO tasks(id, kind, subject, state, request, attempts, created_ms, updated_ms) "
                       "VALUES ('task-loop', 'guest.stop', 'survivor', 'running', '{}', 3, 0, 0)")
                    .ok());
  }
  Agent(0).Put({{"name", "halfdone"}, {"state", "running"}, {"kind", "qemu"}});
  StartManager();
  EXPECT_EQ(manager_->WaitTask("task-pending1", std::chrono::seconds(10))->at("state"), "succeeded");
  EXPECT_EQ(manager_->WaitTask("task-halfdone", std::chrono::seconds(10))->at("state"), "succeeded");
  auto looped = manager_->WaitTask("task-loop", std::chrono::seconds(1));
  EXPECT_EQ((*looped)["state"], "failed");
  EXPECT_NE((*looped)["error"]["message"].get<std::string>().find("restarted"), std::string::npos);
  EXPECT_TRUE(Agent(0).Has("pending1"));
  EXPECT_EQ(Agent(0).GuestCount(), 3u);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE state NOT IN ('succeeded', 'failed', 'cancelled')"), 0);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/halfdone"))["state"], "running");
}

TEST_F(ManagerTest, EventStreamResumesFromLastEventId) {
  StartManager();
  AddHost("h1");
  std::string seen;
  auto c = Client();
  ASSERT_TRUE(c.Stream("GET", "/api/v1/events?follow=false", [&](std::string_view d) {
                 seen += d;
                 return true;
               }).ok());
  EXPECT_NE(seen.find("event: host.joined"), std::string::npos) << seen;
  std::string after;
  ASSERT_TRUE(c.Stream("GET", "/api/v1/events?follow=false", [&](std::string_view d) {
                 after += d;
                 return true;
               }, {{"Last-Event-ID", "1"}}).ok());
  EXPECT_EQ(after.find("id: 1\n"), std::string::npos);
  EXPECT_NE(after.find("id: 2\n"), std::string::npos) << after;
  EXPECT_NE(seen.find("id: 1\n"), std::string::npos) << seen;
  EXPECT_EQ(c.Do("GET", "/api/v1/events", "", {{"Last-Event-ID", "abc"}})->status, 400);
}

TEST_F(ManagerTest, DrsManualModeStoresRecommendationsWithReasons) {
  StartManager();
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  auto c = Client();
  // Pin both guests to h1 by putting h2 in maintenance, then bring h2 back: DRS should recommend.
  ASSERT_TRUE(c.Call("POST", "/api/v1/hosts/h2/maintenance").ok());
  for (int i = 0; i < 4; ++i) {
    Json body = {{"name", "busy" + std::to_string(i)}, {"image", "tiny"}, {"vcpus", 2}, {"memory_mib", 1024}};
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &body))["state"], "succeeded");
  }
  ASSERT_TRUE(c.Call("DELETE", "/api/v1/hosts/h2/maintenance").ok());
  auto plan = c.Call("POST", "/api/v1/drs/run");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  auto recs = c.Call("GET", "/api/v1/drs/recommendations");
  ASSERT_TRUE(recs.ok());
  ASSERT_FALSE((*recs)["recommendations"].empty()) << plan->dump();
  const Json& rec = (*recs)["recommendations"][0];
  EXPECT_EQ(rec["from"], "h1");
  EXPECT_EQ(rec["to"], "h2");
  EXPECT_FALSE(rec["reason"].get<std::string>().empty());
  EXPECT_GT(rec["imbalance_before"].get<double>(), rec["imbalance_after"].get<double>());
  // Applying starts a live migration task; the fake agents move the guest after two progress polls.
  const std::string moved = rec["guest"];
  auto apply = c.Call("POST", "/api/v1/drs/recommendations/" + rec["id"].get<std::string>() + "/apply");
  ASSERT_TRUE(apply.ok()) << apply.status().ToString();
  EXPECT_EQ((*apply)["kind"], "guest.migrate");
  Json done = WaitTask(*apply);
  ASSERT_EQ(done["state"], "succeeded") << done.dump();
  EXPECT_EQ(done["result"]["downtime_ms"], 10);
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/" + moved))["host"], "h2");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/" + moved))["migrating_to"], nullptr);
  EXPECT_TRUE(Agent(1).Has(moved));
  EXPECT_FALSE(Agent(0).Has(moved));
  auto migs = c.Call("GET", "/api/v1/migrations?guest=" + moved);
  ASSERT_TRUE(migs.ok());
  ASSERT_EQ((*migs)["migrations"].size(), 1u);
  EXPECT_EQ((*migs)["migrations"][0]["phase"], "done");
  EXPECT_EQ(c.Call("POST", "/api/v1/drs/recommendations/" + rec["id"].get<std::string>() + "/apply").status().code(),
            StatusCode::kFailedPrecondition)
      << "an applied recommendation cannot be applied twice";
  Json bad = {{"automation", "sometimes"}};
  EXPECT_EQ(c.Call("PUT", "/api/v1/drs/config", &bad).status().code(), StatusCode::kInvalidArgument);
  Json automatic = {{"automation", "automatic"}};
  EXPECT_EQ((*c.Call("PUT", "/api/v1/drs/config", &automatic))["automation"], "automatic");
  // Automatic mode applies through the same path.
  ASSERT_TRUE(c.Call("POST", "/api/v1/drs/run").ok());
  for (int i = 0; i < 200 && Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.migrate' AND state IN "
                                   "('pending', 'running')") > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.migrate' AND state <> 'succeeded'"), 0);
  EXPECT_EQ(Agent(0).GuestCount() + Agent(1).GuestCount(), 4u) << "every guest runs exactly once";
  // The dry-run plan on an uploaded snapshot and the exported snapshot parse with the engine.
  auto snap = c.Call("GET", "/api/v1/cluster/snapshot");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ((*snap)["vms"].size(), 4u);
  Json req = {{"snapshot", *snap}};
  auto dry = c.Call("POST", "/api/v1/drs/plan", &req);
  ASSERT_TRUE(dry.ok()) << dry.status().ToString();
  EXPECT_TRUE((*dry)["moves"].empty()) << "automatic mode balanced the cluster: " << dry->dump();
}

TEST_F(ManagerTest, MaintenanceRecommendsMandatoryEvacuationAndTheLoopRunsDrsOnATimer) {
  config_.drs_interval_ms = 100;
  StartManager();
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  auto c = Client();
  Json pinned = {{"name", "pinned"}, {"image", "tiny"}, {"memory_mib", 512}, {"automation", "disabled"}};
  Json mobile = {{"name", "mobile"}, {"image", "tiny"}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &pinned))["state"], "succeeded");
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &mobile))["state"], "succeeded");
  // Cold moves allowed: still never for a disabled guest, nor for one whose migration is running
  // (the evacuation spans several DRS passes: each migration answers 3 progress polls first).
  Json cold = {{"allow_cold_moves", true}};
  auto cfg = c.Call("PUT", "/api/v1/drs/config", &cold);
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ((*cfg)["allow_cold_moves"], true);
  Json bad = {{"allow_cold_moves", "yes"}};
  EXPECT_EQ(c.Call("PUT", "/api/v1/drs/config", &bad).status().code(), StatusCode::kInvalidArgument);
  Agent(0).SetMigration(3);
  Agent(1).SetMigration(3);
  std::string host = (*c.Call("GET", "/api/v1/guests/mobile"))["host"];
  auto m = c.Call("POST", "/api/v1/hosts/" + host + "/maintenance");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE((*m)["maintenance"].get<bool>());
  EXPECT_GE((*m)["evacuation"]["remaining"].get<int>(), 1);
  // New guests avoid a host in maintenance.
  Json next = {{"name", "next"}, {"image", "tiny"}, {"memory_mib", 256}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &next))["state"], "succeeded");
  EXPECT_NE((*c.Call("GET", "/api/v1/guests/next"))["host"], host);
  // The evacuation of `mobile` is a mandatory (priority 1) move, recorded and applied.
  bool found = false;
  for (int i = 0; i < 100 && !found; ++i) {
    auto recs = c.Call("GET", "/api/v1/drs/recommendations?all=true");
    for (const auto& r : (*recs)["recommendations"]) {
      if (r["guest"] == "mobile" && r["from"] == host && r["priority"] == 1) found = true;
      EXPECT_NE(r["guest"], "pinned") << "automation=disabled guests are never moved";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(found);
  // ... and evacuates it for real even in manual mode (mandatory moves), leaving the pinned guest.
  for (int i = 0; i < 400 && (*c.Call("GET", "/api/v1/guests/mobile"))["host"] == host; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_NE((*c.Call("GET", "/api/v1/guests/mobile"))["host"], host);
  for (int i = 0; i < 100 && Count("SELECT COUNT(*) AS n FROM events WHERE type = 'drs.pass'") < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GE(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'drs.pass'"), 3) << "the timer loop runs DRS";
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM recommendations WHERE note LIKE '%in flight%'"), 0)
      << "a guest being migrated was recommended again";
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM recommendations WHERE guest = 'pinned'"), 0);
  ASSERT_TRUE(c.Call("DELETE", "/api/v1/hosts/" + host + "/maintenance").ok());
  EXPECT_FALSE((*c.Call("GET", "/api/v1/hosts/" + host))["maintenance"].get<bool>());
}

// Issue 11: the DRS cooldown works on a live cluster. A guest that just moved (an operator's
// live move here) is not proposed again within min_move_interval_s; once it has passed, it is.
TEST_F(ManagerTest, DrsCooldownHoldsBackAGuestThatJustMoved) {
  config_.heartbeat_timeout_ms = 1'000'000'000;  // the fake clock jumps; the hosts stay connected
  StartManager(fake_clock_);
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  auto c = Client();
  Json bad = {{"min_move_interval_s", -1}};
  EXPECT_EQ(c.Call("PUT", "/api/v1/drs/config", &bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*c.Call("GET", "/api/v1/drs/config"))["min_move_interval_s"], 3600) << "the engine's default";
  Json cooldown = {{"min_move_interval_s", 600}};
  EXPECT_EQ((*c.Call("PUT", "/api/v1/drs/config", &cooldown))["min_move_interval_s"], 600);
  // Two guests on one host: `anchor` never moves (automation disabled), `mover` arrives by a live move.
  Json anchor = {{"name", "anchor"}, {"image", "tiny"}, {"vcpus", 2}, {"memory_mib", 1024}, {"automation", "disabled"}};
  Json mover = {{"name", "mover"}, {"image", "tiny"}, {"vcpus", 2}, {"memory_mib", 1024}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &anchor))["state"], "succeeded");
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &mover))["state"], "succeeded");
  const std::string full = (*c.Call("GET", "/api/v1/guests/anchor"))["host"];
  const std::string empty = full == "h1" ? "h2" : "h1";
  if ((*c.Call("GET", "/api/v1/guests/mover"))["host"] != full) {
    Json to = {{"host", full}};
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/mover/migrate", &to))["state"], "succeeded");
  } else {
    // Placed together: move it away and back so that it has just moved.
    Json away = {{"host", empty}}, back = {{"host", full}};
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/mover/migrate", &away))["state"], "succeeded");
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/mover/migrate", &back))["state"], "succeeded");
  }
  auto moved_ago = [&] {
    const Json snap = *c.Call("GET", "/api/v1/cluster/snapshot");
    for (const auto& vm : snap["vms"]) {
      if (vm["name"] == "mover") return vm.value("last_moved_ago_s", -1.0);
    }
    return -2.0;
  };
  auto proposals = [&] {
    EXPECT_TRUE(c.Call("POST", "/api/v1/drs/run").ok());
    int n = 0;
    const Json recs = *c.Call("GET", "/api/v1/drs/recommendations");
    for (const auto& r : recs["recommendations"]) n += r["guest"] == "mover";
    return n;
  };
  EXPECT_DOUBLE_EQ(moved_ago(), 0.0);
  fake_clock_.Advance(std::chrono::seconds(300));
  EXPECT_DOUBLE_EQ(moved_ago(), 300.0);
  EXPECT_EQ(proposals(), 0) << "moved 300 s ago, cooldown 600 s";
  fake_clock_.Advance(std::chrono::seconds(301));
  EXPECT_EQ(proposals(), 1) << "the cooldown has passed; the host is still unbalanced";
  auto rec = (*c.Call("GET", "/api/v1/drs/recommendations"))["recommendations"][0];
  EXPECT_EQ(rec["from"], full);
  EXPECT_EQ(rec["to"], empty);
}

// Issue 11: rules may name guests before they exist (and apply to their placement); deleting a
// guest takes it out of every rule, and the cluster keeps working: create, plan and migrate.
TEST_F(ManagerTest, RulesNameFutureGuestsAndForgetDeletedOnes) {
  StartManager();
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  AddHost("h3", 4, 8192);
  auto c = Client();
  Json together = {{"name", "together"}, {"type", "vm-affinity"}, {"vms", {"x", "y"}}, {"required", true}};
  Json apart = {{"name", "apart"}, {"type", "vm-anti-affinity"}, {"vms", {"x", "z"}}, {"required", true}};
  Json pin = {{"name", "pin"}, {"type", "vm-host"}, {"vms", {"x"}}, {"hosts", {"h1", "h2", "h3"}}, {"mode", "must"}};
  for (const Json* r : {&together, &apart, &pin}) {
    auto made = c.Call("POST", "/api/v1/rules", r);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
  }
  EXPECT_EQ((*c.Call("GET", "/api/v1/rules/together"))["pending_guests"], Json({"x", "y"}));
  Json typo = {{"name", "typo"}, {"type", "vm-host"}, {"vms", {"x"}}, {"hosts", {"h9"}}, {"mode", "must"}};
  EXPECT_EQ(c.Call("POST", "/api/v1/rules", &typo).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Call("GET", "/api/v1/rules/typo").status().code(), StatusCode::kNotFound);
  // The rule applies to y's initial placement: with x, not on an empty host.
  Json x = {{"name", "x"}, {"image", "tiny"}, {"vcpus", 2}, {"memory_mib", 1024}}, y = {{"name", "y"}, {"image", "tiny"}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &x))["state"], "succeeded");
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &y))["state"], "succeeded");
  const std::string xhost = (*c.Call("GET", "/api/v1/guests/x"))["host"];
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/y"))["host"], xhost);
  EXPECT_EQ((*c.Call("GET", "/api/v1/rules/together"))["pending_guests"], Json::array());
  // Delete x: it leaves every rule; a rule left without guests goes.
  ASSERT_EQ(WaitTask(*c.Call("DELETE", "/api/v1/guests/x?force=true"))["state"], "succeeded");
  EXPECT_EQ((*c.Call("GET", "/api/v1/rules/together"))["vms"], Json({"y"}));
  EXPECT_EQ((*c.Call("GET", "/api/v1/rules/apart"))["vms"], Json({"z"}));
  EXPECT_EQ(c.Call("GET", "/api/v1/rules/pin").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'rule.changed'"), 2);
  // ... and the cluster keeps working: snapshot, create, plan, migrate.
  auto snap = c.Call("GET", "/api/v1/cluster/snapshot");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  Json z = {{"name", "z"}, {"image", "tiny"}, {"memory_mib", 512}};
  auto zt = c.Call("POST", "/api/v1/guests", &z);
  ASSERT_TRUE(zt.ok()) << zt.status().ToString();
  ASSERT_EQ(WaitTask(*zt)["state"], "succeeded");
  Json empty = Json::object();
  auto plan = c.Call("POST", "/api/v1/drs/plan", &empty);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const std::string yhost = (*c.Call("GET", "/api/v1/guests/y"))["host"];
  Json to = {{"host", yhost == "h1" ? "h2" : "h1"}};
  auto mt = c.Call("POST", "/api/v1/guests/y/migrate", &to);
  ASSERT_TRUE(mt.ok()) << mt.status().ToString();
  EXPECT_EQ(WaitTask(*mt)["state"], "succeeded");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/y"))["host"], to["host"]);
}

// Issue 11: host groups reach the snapshot, so vm-host rules on groups place guests for real.
TEST_F(ManagerTest, HostGroupsReachTheSnapshotForVmHostRules) {
  StartManager();
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  AddHost("h3", 4, 8192);
  auto c = Client();
  Json wrong = {{"groups", "ssd"}};
  auto bad = c.Call("PUT", "/api/v1/hosts/h3/groups", &wrong);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("groups"), std::string::npos) << bad.status().message();
  Json ssd = {{"groups", {"ssd", "rack-b"}}};
  EXPECT_EQ(c.Call("PUT", "/api/v1/hosts/nope/groups", &ssd).status().code(), StatusCode::kNotFound);
  auto set = c.Call("PUT", "/api/v1/hosts/h3/groups", &ssd);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ((*set)["groups"], Json({"ssd", "rack-b"}));
  Json nogroup = {{"name", "r0"}, {"type", "vm-host"}, {"vms", {"db"}}, {"groups", {"nvme"}}, {"mode", "must"}};
  EXPECT_EQ(c.Call("POST", "/api/v1/rules", &nogroup).status().code(), StatusCode::kInvalidArgument);
  Json rule = {{"name", "db-on-ssd"}, {"type", "vm-host"}, {"vms", {"db", "db2"}}, {"groups", {"ssd"}},
               {"mode", "must"}};
  ASSERT_TRUE(c.Call("POST", "/api/v1/rules", &rule).ok());
  // A filler makes h3 the least attractive host by balance: only the rule puts db there.
  Json filler = {{"name", "filler"}, {"image", "tiny"}, {"vcpus", 3}, {"memory_mib", 4096}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &filler))["state"], "succeeded");
  if ((*c.Call("GET", "/api/v1/guests/filler"))["host"] != "h3") {
    Json to = {{"host", "h3"}};
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/filler/migrate", &to))["state"], "succeeded");
  }
  for (const char* n : {"db", "db2"}) {
    Json db = {{"name", n}, {"image", "tiny"}, {"memory_mib", 512}};
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &db))["state"], "succeeded");
    EXPECT_EQ((*c.Call("GET", std::string("/api/v1/guests/") + n))["host"], "h3") << n;
  }
  Json snap = *c.Call("GET", "/api/v1/cluster/snapshot");
  EXPECT_EQ(snap["hosts"][2]["groups"], Json({"ssd", "rack-b"}));
  ASSERT_EQ(snap["rules"].size(), 1u);
  EXPECT_EQ(snap["rules"][0]["groups"], Json({"ssd"}));
  // A move against the rule is refused; the groups survive the agent joining again.
  Json off = {{"host", "h1"}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/db/migrate", &off).status().code(), StatusCode::kAborted);
  Json rejoin = {{"name", "h3"}, {"agent_url", Agent(2).url()}, {"agent_token", Agent(2).token()},
                 {"capacity", {{"cpu_cores", 4}, {"memory_mib", 8192}}}};
  ASSERT_TRUE(Client(kJoin).Call("POST", "/api/v1/hosts/join", &rejoin).ok());
  EXPECT_EQ((*c.Call("GET", "/api/v1/hosts/h3"))["groups"], Json({"ssd", "rack-b"}));
}

// Issue 11: pool limits are enforced at admission (naming the pool and the figures), pool
// reservations must be backed, and a pool's shares and CPU limit reach the guest's cputune.
TEST_F(ManagerTest, PoolLimitsAndReservationsAtAdmissionAndCputuneFromThePool) {
  StartManager();
  AddHost("h1", 8, 16384);
  auto c = Client();
  Json batch = {{"name", "batch"},
                {"cpu", {{"limit_cores", 3}, {"shares", 8000}}},
                {"memory", {{"limit_mib", 2048}}}};
  ASSERT_TRUE(c.Call("POST", "/api/v1/pools", &batch).ok());
  Json child = {{"name", "batch-low"}, {"parent", "batch"}, {"cpu", {{"shares", 2000}}}};
  ASSERT_TRUE(c.Call("POST", "/api/v1/pools", &child).ok());
  Json b1 = {{"name", "b1"}, {"image", "tiny"}, {"pool", "batch"}, {"vcpus", 2}, {"memory_mib", 1024}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &b1))["state"], "succeeded");
  // cputune: shares 1024 * 8000 / 4000; each of its 2 vCPUs capped at one core (min(3, 2) / 2).
  EXPECT_EQ(Agent(0).CreateSpec("b1")["cpu"], Json({{"shares", 2048}, {"period_us", 100000}, {"quota_us", 100000}}))
      << Agent(0).CreateSpec("b1").dump();
  auto refused = [&](const Json& body) {
    auto r = c.Call("POST", "/api/v1/guests", &body);
    EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << body.dump();
    return r.status().message();
  };
  std::string cpu = refused({{"name", "b2"}, {"image", "tiny"}, {"pool", "batch"}, {"vcpus", 2}, {"memory_mib", 256}});
  EXPECT_NE(cpu.find("pool 'batch' CPU limit"), std::string::npos) << cpu;
  EXPECT_NE(cpu.find("4 > limit of 3 cores"), std::string::npos) << cpu;
  std::string mem = refused({{"name", "b3"}, {"image", "tiny"}, {"pool", "batch"}, {"memory_mib", 1536}});
  EXPECT_NE(mem.find("pool 'batch' memory limit"), std::string::npos) << mem;
  EXPECT_NE(mem.find("2560 > limit of 2048 MiB"), std::string::npos) << mem;
  // A container in the child pool: the parent's limit applies, its own shares (low: 512), and a
  // container's quota covers all of it.
  Json ct = {{"name", "ct1"}, {"image", "tiny"}, {"pool", "batch-low"}, {"kind", "lxc"}, {"vcpus", 1}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &ct))["state"], "succeeded");
  EXPECT_EQ(Agent(0).CreateSpec("ct1")["cpu"], Json({{"shares", 512}, {"period_us", 100000}, {"quota_us", 100000}}));
  std::string parent = refused({{"name", "b4"}, {"image", "tiny"}, {"pool", "batch-low"}, {"vcpus", 1}, {"memory_mib", 256}});
  EXPECT_NE(parent.find("pool 'batch' CPU limit"), std::string::npos) << parent;
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 2);
  EXPECT_EQ(Agent(0).creates(), 2);
  // Outside pools the agent's own defaults stay.
  Json free = {{"name", "free"}, {"image", "tiny"}, {"memory_mib", 256}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &free))["state"], "succeeded");
  EXPECT_FALSE(Agent(0).CreateSpec("free").contains("cpu"));
  // Reservations: a pool reserving more than the powered-on hosts have is refused ...
  Json huge = {{"name", "huge"}, {"cpu", {{"reservation_cores", 100}}}};
  auto h = c.Call("POST", "/api/v1/pools", &huge);
  EXPECT_EQ(h.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(h.status().message().find("pool 'huge'"), std::string::npos) << h.status().message();
  EXPECT_NE(h.status().message().find("100.00 cores"), std::string::npos) << h.status().message();
  // ... and what a pool reserves is kept from guests outside it.
  Json gold = {{"name", "gold"}, {"memory", {{"reservation_mib", 14000}}}};
  ASSERT_TRUE(c.Call("POST", "/api/v1/pools", &gold).ok());
  std::string kept = refused({{"name", "outsider"}, {"image", "tiny"}, {"memory_mib", 1024}});
  EXPECT_NE(kept.find("exceed the powered-on capacity"), std::string::npos) << kept;
  EXPECT_EQ((*c.Call("GET", "/api/v1/pools/batch"))["guests"], Json({"b1"}));
  EXPECT_EQ(c.Call("GET", "/api/v1/pools/nope").status().code(), StatusCode::kNotFound);
}

// Issue 11: maintenance off while the evacuation runs cancels its migrations that have not
// switched over; the guests stay where they are.
TEST_F(ManagerTest, MaintenanceOffCancelsTheEvacuation) {
  config_.migration_caps.per_host = 1;  // one evacuation move runs, the next waits
  config_.migration_poll_ms = 50;
  StartManager();
  AddHost("h1", 4, 8192);
  AddHost("h2", 4, 8192);
  auto c = Client();
  ASSERT_TRUE(c.Call("POST", "/api/v1/hosts/h2/maintenance").ok());
  for (const char* n : {"a", "b"}) {
    Json g = {{"name", n}, {"image", "tiny"}, {"memory_mib", 512}};
    ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &g))["state"], "succeeded");
  }
  ASSERT_TRUE(c.Call("DELETE", "/api/v1/hosts/h2/maintenance").ok());
  Agent(0).SetMigration(1'000'000);  // transfers that never finish by themselves
  ASSERT_TRUE(c.Call("POST", "/api/v1/hosts/h1/maintenance").ok());
  for (int i = 0; i < 200 && Count("SELECT COUNT(*) AS n FROM migrations WHERE phase = 'transfer'") == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(Count("SELECT COUNT(*) AS n FROM migrations WHERE phase = 'transfer'"), 1);
  ASSERT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.migrate' AND state = 'pending'"), 1);
  ASSERT_TRUE(c.Call("DELETE", "/api/v1/hosts/h1/maintenance").ok());
  for (int i = 0; i < 200 && Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.migrate' AND state IN "
                                   "('pending', 'running')") > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.migrate' AND state = 'cancelled'"), 2);
  for (const char* n : {"a", "b"}) {
    Json g = *c.Call("GET", std::string("/api/v1/guests/") + n);
    EXPECT_EQ(g["host"], "h1") << n;
    EXPECT_EQ(g["migrating_to"], nullptr) << n;
    EXPECT_TRUE(Agent(0).Has(n)) << n;
    EXPECT_FALSE(Agent(1).Has(n)) << n;
  }
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'host.evacuation_cancelled'"), 1);
}

// Issue 11: placement never chooses a disconnected host (it did: "best score of N feasible
// hosts" with the disconnected host chosen and its create task failing).
TEST_F(ManagerTest, PlacementSkipsDisconnectedHosts) {
  StartManager(fake_clock_);
  AddHost("big", 16, 65536);
  std::string small = AddHost("small", 2, 4096);
  fake_clock_.Advance(std::chrono::seconds(60));
  manager_->CheckHeartbeats();
  Json hb = {{"guests", Json::array()}};
  ASSERT_TRUE(Client(small).Call("POST", "/api/v1/hosts/small/heartbeat", &hb).ok());
  auto c = Client();
  ASSERT_EQ((*c.Call("GET", "/api/v1/hosts/big"))["state"], "disconnected");
  Json g = {{"name", "g"}, {"image", "tiny"}, {"memory_mib", 512}};
  Json done = WaitTask(*c.Call("POST", "/api/v1/guests", &g));
  EXPECT_EQ(done["state"], "succeeded") << done.dump();
  Json guest = *c.Call("GET", "/api/v1/guests/g");
  EXPECT_EQ(guest["host"], "small");
  EXPECT_NE(guest["placement_reason"].get<std::string>().find("of 1 feasible"), std::string::npos) << guest.dump();
  EXPECT_EQ(Agent(0).creates(), 0);
}

// Issue 11: a guest found on two hosts raises one guest.duplicate event and an alert on the guest,
// not one per heartbeat; when the second copy goes the alert clears, with an event.
TEST_F(ManagerTest, DuplicateGuestRaisesOneEventAndAnAlertThatClears) {
  StartManager();
  std::string t1 = AddHost("h1");
  std::string t2 = AddHost("h2");
  auto c = Client();
  Json g = {{"name", "twin"}, {"image", "tiny"}, {"memory_mib", 256}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &g))["state"], "succeeded");
  const std::string home = (*c.Call("GET", "/api/v1/guests/twin"))["host"];
  FakeAgent& other = Agent(home == "h1" ? 1 : 0);
  const std::string other_name = other.name(), other_token = home == "h1" ? t2 : t1;
  const std::string home_token = home == "h1" ? t1 : t2;
  other.Put({{"name", "twin"}, {"state", "running"}, {"kind", "qemu"}, {"vcpus", 1}, {"memory_mib", 256}});
  auto beat = [&](const std::string& host, const std::string& token, FakeAgent& a) {
    Json hb = {{"guests", a.Guests()}};
    ASSERT_TRUE(Client(token).Call("POST", "/api/v1/hosts/" + host + "/heartbeat", &hb).ok());
  };
  for (int i = 0; i < 5; ++i) {
    beat(other_name, other_token, other);
    beat(home, home_token, Agent(home == "h1" ? 0 : 1));
  }
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.duplicate'"), 1);
  Json twin = *c.Call("GET", "/api/v1/guests/twin");
  ASSERT_TRUE(twin["alert"].is_object()) << twin.dump();
  EXPECT_EQ(twin["alert"]["type"], "duplicate");
  EXPECT_EQ(twin["alert"]["also_on"], Json({other_name}));
  EXPECT_EQ(twin["host"], home);
  EXPECT_EQ(twin["state"], "running");
  other.Erase("twin");
  for (int i = 0; i < 3; ++i) beat(other_name, other_token, other);
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/twin"))["alert"], nullptr);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.duplicate_cleared'"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.duplicate'"), 1);
}

TEST_F(ManagerTest, CancelReleasesAPendingCreation) {
  config_.task_workers = 1;
  StartManager();
  AddHost("h1", 4, 4096);
  Agent(0).SetDelayMs(500);
  auto c = Client();
  Json a = {{"name", "first"}, {"image", "tiny"}, {"memory_mib", 256}}, b = {{"name", "second"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto t1 = c.Call("POST", "/api/v1/guests", &a);
  auto t2 = c.Call("POST", "/api/v1/guests", &b);
  ASSERT_TRUE(t1.ok() && t2.ok());
  auto cancelled = c.Call("POST", "/api/v1/tasks/" + (*t2)["id"].get<std::string>() + "/cancel");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status().ToString();
  EXPECT_EQ((*cancelled)["state"], "cancelled");
  EXPECT_EQ(WaitTask(*t1)["state"], "succeeded");
  EXPECT_EQ(c.Call("GET", "/api/v1/guests/second").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c.Call("POST", "/api/v1/tasks/" + (*t1)["id"].get<std::string>() + "/cancel").status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_FALSE(Agent(0).Has("second"));
}

TEST_F(ManagerTest, MigrationCancelFailureAndOrder) {
  StartManager();
  AddHost("h1", 4, 4096);
  AddHost("h2", 4, 4096);
  auto c = Client();
  Json a = {{"name", "a"}, {"image", "tiny"}, {"memory_mib", 1024}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &a))["state"], "succeeded");
  std::string src = (*c.Call("GET", "/api/v1/guests/a"))["host"];
  std::string dst = src == "h1" ? "h2" : "h1";
  FakeAgent& from = Agent(src == "h1" ? 0 : 1);
  // Bad requests change nothing.
  Json nohost = {{"mode", "live"}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/a/migrate", &nohost).status().code(), StatusCode::kInvalidArgument);
  Json same = {{"host", src}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/a/migrate", &same).status().code(), StatusCode::kFailedPrecondition);
  Json ghost = {{"host", "h9"}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/a/migrate", &ghost).status().code(), StatusCode::kAborted);
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/nope/migrate", &same).status().code(), StatusCode::kNotFound);

  // Cancel a running migration: the guest stays on its source and the task ends cancelled.
  from.SetMigration(1000);
  Json to = {{"host", dst}};
  auto t = c.Call("POST", "/api/v1/guests/a/migrate", &to);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  for (int i = 0; i < 200 && (*c.Call("GET", "/api/v1/tasks/" + (*t)["id"].get<std::string>()))["message"]
                                  .get<std::string>().rfind("transfer", 0) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["migrating_to"], dst) << "the destination's capacity is held";
  ASSERT_TRUE(c.Call("POST", "/api/v1/tasks/" + (*t)["id"].get<std::string>() + "/cancel").ok());
  Json cancelled = WaitTask(*t);
  EXPECT_EQ(cancelled["state"], "cancelled") << cancelled.dump();
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["host"], src);
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["migrating_to"], nullptr);

  // A failing transfer rolls back with libvirt's reason.
  from.SetMigration(1, "unable to connect to the destination");
  Json failed = WaitTask(*c.Call("POST", "/api/v1/guests/a/migrate", &to));
  EXPECT_EQ(failed["state"], "failed");
  EXPECT_NE(failed["error"]["message"].get<std::string>().find("unable to connect"), std::string::npos) << failed.dump();
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["host"], src);
  auto migs = c.Call("GET", "/api/v1/migrations?guest=a");
  ASSERT_EQ((*migs)["migrations"].size(), 2u);
  EXPECT_EQ((*migs)["migrations"][0]["phase"], "rolled_back");

  // Containers move only cold; a cold move stops, recreates and deletes.
  Json ct = {{"name", "ct"}, {"image", "tiny"}, {"kind", "lxc"}, {"memory_mib", 256}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &ct))["state"], "succeeded");
  std::string ct_host = (*c.Call("GET", "/api/v1/guests/ct"))["host"];
  Json ct_to = {{"host", ct_host == "h1" ? "h2" : "h1"}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/ct/migrate", &ct_to).status().code(), StatusCode::kFailedPrecondition);
  ct_to["mode"] = "cold";
  Json cold = WaitTask(*c.Call("POST", "/api/v1/guests/ct/migrate", &ct_to));
  EXPECT_EQ(cold["state"], "succeeded") << cold.dump();
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/ct"))["host"], ct_to["host"]);
  EXPECT_EQ(Agent(0).Has("ct") + Agent(1).Has("ct"), 1);
}

// Regression: a guest that died on its destination right after a live move was reported
// `running` and its migration `done` (issue 11: a TCG guest panicked after arrival).
TEST_F(ManagerTest, AGuestThatDiesAfterTheSwitchOverFailsItsMigration) {
  StartManager();
  AddHost("h1", 4, 4096);
  AddHost("h2", 4, 4096);
  auto c = Client();
  Json a = {{"name", "a"}, {"image", "tiny"}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &a))["state"], "succeeded");
  const std::string src = (*c.Call("GET", "/api/v1/guests/a"))["host"];
  const std::string dst = src == "h1" ? "h2" : "h1";
  Agent(dst == "h1" ? 0 : 1).SetArrivalState("crashed");
  Json to = {{"host", dst}};
  Json task = WaitTask(*c.Call("POST", "/api/v1/guests/a/migrate", &to));
  EXPECT_EQ(task["state"], "failed") << task.dump();
  EXPECT_NE(task["error"]["message"].get<std::string>().find("crashed on the destination"), std::string::npos)
      << task.dump();
  Json guest = *c.Call("GET", "/api/v1/guests/a");
  EXPECT_EQ(guest["host"], dst) << "the source copy is gone: the guest is where it died";
  EXPECT_EQ(guest["state"], "crashed") << "never `running` while it is dead";
  Json mig = (*c.Call("GET", "/api/v1/migrations?guest=a"))["migrations"][0];
  EXPECT_EQ(mig["phase"], "failed_after_switchover") << mig.dump();
  EXPECT_NE(mig["console_tail"].get<std::string>().find("state crashed"), std::string::npos) << mig.dump();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'migration.failed_after_switchover'"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.migrated'"), 0);

  // A healthy arrival verifies and ends done.
  Agent(dst == "h1" ? 0 : 1).SetArrivalState("");
  Json b = {{"name", "b"}, {"image", "tiny"}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &b))["state"], "succeeded");
  const std::string bsrc = (*c.Call("GET", "/api/v1/guests/b"))["host"];
  Json bto = {{"host", bsrc == "h1" ? "h2" : "h1"}};
  EXPECT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/b/migrate", &bto))["state"], "succeeded");
  Json bmig = (*c.Call("GET", "/api/v1/migrations?guest=b"))["migrations"][0];
  EXPECT_EQ(bmig["phase"], "done");
  EXPECT_NE(bmig["history"].dump().find("verify"), std::string::npos) << bmig.dump();
}

// Crashed guests are noticed from the heartbeat and handled by their on_crash policy: restarted
// where they were (at most 3 times in 10 minutes), or kept for inspection.
TEST_F(ManagerTest, CrashedGuestsAreRestartedWithABackOffOrKept) {
  StartManager();
  const std::string token = AddHost("h1", 4, 4096);
  auto c = Client();
  Json bad = {{"name", "x"}, {"image", "tiny"}, {"on_crash", "reboot"}};
  auto refused = c.Call("POST", "/api/v1/guests", &bad);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("on_crash"), std::string::npos) << refused.status().message();
  Json a = {{"name", "a"}, {"image", "tiny"}, {"memory_mib", 256}};
  Json k = {{"name", "k"}, {"image", "tiny"}, {"memory_mib", 256}, {"on_crash", "keep"}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &a))["state"], "succeeded");
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &k))["state"], "succeeded");
  EXPECT_EQ(Agent(0).Guests()[0].value("on_crash", "absent"), "absent") << "on_crash is the manager's, not the agent's";
  auto heartbeat = [&] {
    Json hb = {{"stats", {{"guests", Json::array()}}}, {"guests", Agent(0).Guests()}};
    ASSERT_TRUE(Client(token).Call("POST", "/api/v1/hosts/h1/heartbeat", &hb).ok());
  };
  auto crash = [&](const std::string& name) {
    Json g;
    for (const auto& x : Agent(0).Guests()) {
      if (x["name"] == name) g = x;
    }
    g["state"] = "crashed";
    g["crash"] = {{"at", 1}, {"console_tail", "Kernel panic - not syncing: sysrq triggered crash"}};
    Agent(0).Put(g);
    // Heartbeats right after a task ends do not override the task's word: send until one counts.
    for (int i = 0; i < 100 && (*c.Call("GET", "/api/v1/guests/" + name))["state"] != "crashed"; ++i) {
      heartbeat();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  auto restarts = [&] { return Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.restart'"); };
  auto wait_running = [&](const std::string& name) {
    for (int i = 0; i < 200 && (*c.Call("GET", "/api/v1/guests/" + name))["state"] != "running"; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return (*c.Call("GET", "/api/v1/guests/" + name))["state"];
  };
  for (int attempt = 1; attempt <= 3; ++attempt) {
    crash("a");
    EXPECT_EQ(restarts(), attempt);
    EXPECT_EQ(wait_running("a"), "running") << "restart " << attempt;
  }
  Json shown = *c.Call("GET", "/api/v1/guests/a");
  EXPECT_NE(shown["crash"]["console_tail"].get<std::string>().find("Kernel panic"), std::string::npos) << shown.dump();
  EXPECT_EQ(shown["crash"]["restarts"].size(), 3u);
  EXPECT_EQ(shown["on_crash"], "restart");
  // A fourth crash within 10 minutes: left crashed, with a crash-loop event.
  crash("a");
  EXPECT_EQ(restarts(), 3);
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["state"], "crashed");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.crash_loop'"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.crashed'"), 4);
  // on_crash keep: crashed, kept, no task.
  crash("k");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/k"))["state"], "crashed");
  EXPECT_EQ(restarts(), 3);
  // An operator's start of a crashed guest powers it off and boots it.
  Json started = WaitTask(*c.Call("POST", "/api/v1/guests/k/start"));
  EXPECT_EQ(started["state"], "succeeded") << started.dump();
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/k"))["state"], "running");
}

// Regression: a heartbeat whose guest list was read while libvirt was still starting a guest
// ("paused") arrived after the create task ended and turned the new guest `paused` (seen on the
// test bed with QEMU 10). The task's word stands for two heartbeat intervals.
TEST_F(ManagerTest, AStaleHeartbeatDoesNotOverrideATaskThatJustEnded) {
  StartManager();
  const std::string token = AddHost("h1", 4, 4096);
  auto c = Client();
  Json a = {{"name", "a"}, {"image", "tiny"}, {"memory_mib", 256}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &a))["state"], "succeeded");
  Json stale = Agent(0).Guests();
  stale[0]["state"] = "paused";
  Json hb = {{"stats", {{"guests", Json::array()}}}, {"guests", stale}};
  ASSERT_TRUE(Client(token).Call("POST", "/api/v1/hosts/h1/heartbeat", &hb).ok());
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["state"], "running");
  // Later reports count again.
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * config_.heartbeat_interval_ms));
  ASSERT_TRUE(Client(token).Call("POST", "/api/v1/hosts/h1/heartbeat", &hb).ok());
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["state"], "paused");
}

// Regression: a move that ended while the source agent was down left libvirt's shut-off source
// definition behind (the guest was then defined on two hosts). The source host's next heartbeat
// has it removed; a running second copy is still a duplicate.
TEST_F(ManagerTest, TheShutOffCopyAMoveLeftOnItsSourceIsRemoved) {
  StartManager();
  const std::string t1 = AddHost("h1", 4, 4096), t2 = AddHost("h2", 4, 4096);
  auto c = Client();
  Json a = {{"name", "a"}, {"image", "tiny"}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &a))["state"], "succeeded");
  const std::string src = (*c.Call("GET", "/api/v1/guests/a"))["host"];
  const size_t si = src == "h1" ? 0 : 1;
  Json to = {{"host", src == "h1" ? "h2" : "h1"}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/a/migrate", &to))["state"], "succeeded");
  ASSERT_FALSE(Agent(si).Has("a"));
  Json copy = {{"name", "a"}, {"kind", "qemu"}, {"state", "shutoff"}, {"vcpus", 1}, {"max_vcpus", 1},
               {"memory_mib", 512}, {"max_memory_mib", 512}};
  Agent(si).Put(copy);
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * config_.heartbeat_interval_ms));
  Json hb = {{"stats", {{"guests", Json::array()}}}, {"guests", Agent(si).Guests()}};
  ASSERT_TRUE(Client(si == 0 ? t1 : t2).Call("POST", "/api/v1/hosts/" + src + "/heartbeat", &hb).ok());
  EXPECT_FALSE(Agent(si).Has("a")) << "the leftover was not removed";
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'migration.leftover_removed'"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.duplicate'"), 0);
  // A running copy is not a leftover.
  copy["state"] = "running";
  Agent(si).Put(copy);
  hb["guests"] = Agent(si).Guests();
  ASSERT_TRUE(Client(si == 0 ? t1 : t2).Call("POST", "/api/v1/hosts/" + src + "/heartbeat", &hb).ok());
  EXPECT_TRUE(Agent(si).Has("a"));
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.duplicate'"), 1);
}


namespace authz {

// Issue 12: every route with admin, operator, read-only, billing-reader and two tenant tokens,
// asserting exactly who may do what. Outcomes: Y passed the checks (any answer but 401/403/404),
// D refused (403), N not found for this caller (404), U unauthenticated (401). Requests that pass
// are built to change nothing (a body that fails validation, a name that does not exist).
struct RouteCase {
  std::string route;  // "METHOD pattern" as registered
  std::string method, path, body;
  std::string expect;  // one outcome per caller: admin, operator, read-only, billing-reader, tenant A, tenant B
};

char Outcome(int status) {
  if (status == 401) return 'U';
  if (status == 403) return 'D';
  if (status == 404) return 'N';
  return 'Y';
}

}  // namespace authz

TEST_F(ManagerTest, EveryRouteAnswersExactlyTheRolesItShould) {
  StartManager();
  AddHost("h1");
  auto token = [&](const std::string& name, const std::string& role) {
    Json body = {{"name", name}, {"role", role}};
    return (*Client().Call("POST", "/api/v1/tokens", &body))["token"].get<std::string>();
  };
  const std::vector<std::string> callers = {kAdmin,      token("op", "operator"), token("ro", "read-only"),
                                            token("bill", "billing-reader"), TenantToken("acme"), TenantToken("beta")};
  Json vm = {{"name", "acme-vm"}, {"image", "tiny"}, {"memory_mib", 64}};
  auto created = Client(callers[4]).Call("POST", "/api/v1/guests", &vm);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ(WaitTask(*created)["state"], "succeeded");
  const std::string task = "/api/v1/tasks/" + (*created)["id"].get<std::string>();
  using authz::RouteCase;
  const std::vector<RouteCase> table = {
      {"GET /healthz", "GET", "/healthz", "", "YYYYYY"},
      {"GET /api/v1/version", "GET", "/api/v1/version", "", "YYYYYY"},
      {"POST /api/v1/hosts/join", "POST", "/api/v1/hosts/join",
       R"({"name": "h9", "agent_url": "http://127.0.0.1:1", "agent_token": "t", "capacity": {"cpu_cores": 1, "memory_mib": 64}})",
       "UUUUUU"},
      {"POST /api/v1/hosts/{name}/heartbeat", "POST", "/api/v1/hosts/h1/heartbeat", "{}", "UUUUUU"},
      {"GET /api/v1/hosts", "GET", "/api/v1/hosts", "", "YYYYDD"},
      {"GET /api/v1/hosts/{name}", "GET", "/api/v1/hosts/h1", "", "YYYYDD"},
      {"PUT /api/v1/hosts/{name}/groups", "PUT", "/api/v1/hosts/h1/groups", R"({"groups": 5})", "YYDDDD"},
      {"POST /api/v1/hosts/{name}/maintenance", "POST", "/api/v1/hosts/h9/maintenance", "", "NNDDDD"},
      {"DELETE /api/v1/hosts/{name}/maintenance", "DELETE", "/api/v1/hosts/h9/maintenance", "", "NNDDDD"},
      {"GET /api/v1/guests", "GET", "/api/v1/guests", "", "YYYYYY"},
      {"POST /api/v1/guests", "POST", "/api/v1/guests", R"({"name": "x"})", "YYDDYY"},
      {"GET /api/v1/guests/{name}", "GET", "/api/v1/guests/acme-vm", "", "YYYYYN"},
      {"DELETE /api/v1/guests/{name}", "DELETE", "/api/v1/guests/acme-vm", "", "YYDDYN"},
      {"POST /api/v1/guests/{name}/start", "POST", "/api/v1/guests/ghost/start", "", "NNDDNN"},
      {"POST /api/v1/guests/{name}/stop", "POST", "/api/v1/guests/acme-vm/stop", R"({"bogus": 1})", "YYDDYN"},
      {"POST /api/v1/guests/{name}/resize", "POST", "/api/v1/guests/acme-vm/resize", "{}", "YYDDYN"},
      {"POST /api/v1/guests/{name}/migrate", "POST", "/api/v1/guests/acme-vm/migrate", R"({"host": "h1", "mode": "warp"})",
       "YYDDDD"},
      {"GET /api/v1/tasks", "GET", "/api/v1/tasks", "", "YYYYYY"},
      {"GET /api/v1/tasks/{id}", "GET", task, "", "YYYYYN"},
      {"POST /api/v1/tasks/{id}/cancel", "POST", "/api/v1/tasks/task-nope/cancel", "", "NNDDNN"},
      {"GET /api/v1/events", "GET", "/api/v1/events?follow=false", "", "YYYYYY"},
      {"GET /api/v1/tokens", "GET", "/api/v1/tokens", "", "YDDDDD"},
      {"POST /api/v1/tokens", "POST", "/api/v1/tokens", R"({"name": ""})", "YDDDDD"},
      {"DELETE /api/v1/tokens/{id}", "DELETE", "/api/v1/tokens/tok-nope", "", "NDDDDD"},
      {"GET /api/v1/pools", "GET", "/api/v1/pools", "", "YYYYDD"},
      {"POST /api/v1/pools", "POST", "/api/v1/pools", "{}", "YYDDDD"},
      {"GET /api/v1/pools/{name}", "GET", "/api/v1/pools/p9", "", "NNNNDD"},
      {"DELETE /api/v1/pools/{name}", "DELETE", "/api/v1/pools/p9", "", "NNDDDD"},
      {"GET /api/v1/rules", "GET", "/api/v1/rules", "", "YYYYDD"},
      {"POST /api/v1/rules", "POST", "/api/v1/rules", "{}", "YYDDDD"},
      {"GET /api/v1/rules/{name}", "GET", "/api/v1/rules/r9", "", "NNNNDD"},
      {"DELETE /api/v1/rules/{name}", "DELETE", "/api/v1/rules/r9", "", "NNDDDD"},
      {"GET /api/v1/drs/config", "GET", "/api/v1/drs/config", "", "YYYYDD"},
      {"PUT /api/v1/drs/config", "PUT", "/api/v1/drs/config", R"({"mode": 5})", "YYDDDD"},
      {"GET /api/v1/drs/recommendations", "GET", "/api/v1/drs/recommendations", "", "YYYYDD"},
      {"POST /api/v1/drs/recommendations/{id}/apply", "POST", "/api/v1/drs/recommendations/rec-nope/apply", "",
       "NNDDDD"},
      {"POST /api/v1/drs/apply", "POST", "/api/v1/drs/apply", "", "YYDDDD"},
      {"POST /api/v1/drs/run", "POST", "/api/v1/drs/run", "", "YYDDDD"},
      {"POST /api/v1/drs/plan", "POST", "/api/v1/drs/plan", "", "YYYYDD"},
      {"GET /api/v1/migrations", "GET", "/api/v1/migrations", "", "YYYYDD"},
      {"GET /api/v1/migrations/{id}", "GET", "/api/v1/migrations/mig-nope", "", "NNNNDD"},
      {"GET /api/v1/cluster/snapshot", "GET", "/api/v1/cluster/snapshot", "", "YYYYDD"},
  };
  std::set<std::string> covered;
  for (const auto& c : table) {
    covered.insert(c.route);
    std::string got;
    for (const auto& caller : callers) {
      auto r = Client(caller).Do(c.method, c.path, c.body);
      ASSERT_TRUE(r.ok()) << c.route;
      got += authz::Outcome(r->status);
    }
    EXPECT_EQ(got, c.expect) << c.method << " " << c.path
                             << " (callers: admin, operator, read-only, billing-reader, tenant acme, tenant beta)";
  }
  for (const auto& route : router_->Routes()) EXPECT_TRUE(covered.count(route)) << route << " is not in the table";
  // Nothing the table did changed anything.
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 1);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/acme-vm"))["state"], "running");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), 1);
}

}  // namespace
}  // namespace uw::manager
