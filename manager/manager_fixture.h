// The manager's test fixture (issue 13): a Manager serving its REST API on a free port over a
// SQLite file in a temp dir, with in-memory agents (manager/in_memory_agent.h) and a FakeClock.
// The REST API stays HTTP (the tests are its clients); only the agents are in memory.
// Nothing sleeps: migration polls advance the clock (PollGate), a test that needs time to pass
// (heartbeat deadlines, the window in which a task's word stands, a DRS timer, a cooldown)
// advances it, and a test that waits for the manager's threads waits on a condition.
//
// Shared by the manager's test files (manager_test.cc, hosts_test.cc, drs_test.cc,
// migrations_test.cc, authz_test.cc); not a public header.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "api/http.h"
#include "common/clock.h"
#include "manager/http_api.h"
#include "manager/in_memory_agent.h"
#include "manager/manager.h"
#include "manager/views.h"

namespace uw::manager::testing {

inline constexpr const char* kAdmin = "admin-token-0123456789";
inline constexpr const char* kJoin = "join-token-0123456789";

// The manager's migration poll sleeper on a FakeClock: each poll advances the clock by the poll
// interval instead of sleeping. While held, polls wait at the gate, so that a test can look at (or
// cancel) a migration in flight and let its polls through one at a time. Once closed, every poll
// answers false (the manager is stopping). Thread-safe.
class PollGate {
 public:
  explicit PollGate(FakeClock& clock) : clock_(clock) {}
  bool Sleep(Duration d) {
    {
      std::unique_lock l(mu_);
      ++waiting_;
      changed_.notify_all();
      changed_.wait(l, [this] { return !held_ || passes_ > 0 || closed_; });
      --waiting_;
      if (closed_) return false;
      if (held_ && passes_ > 0) --passes_;
    }
    clock_.Advance(d);
    std::this_thread::yield();
    return true;
  }
  void Hold(bool held) {
    std::lock_guard l(mu_);
    held_ = held;
    changed_.notify_all();
  }
  void Close() {
    std::lock_guard l(mu_);
    closed_ = true;
    changed_.notify_all();
  }
  // With the gate held and a poll waiting at it: lets that one poll through, then blocks until a
  // poll waits again (the migration has acted on the poll: read the job, recorded progress);
  // false after 20 s.
  bool Pass() {
    std::unique_lock l(mu_);
    ++passes_;
    changed_.notify_all();
    return changed_.wait_for(l, std::chrono::seconds(20), [this] { return passes_ == 0 && waiting_ >= 1; });
  }
  // Blocks until `n` polls wait at the (held) gate; false after 20 s.
  bool WaitForWaiting(int n) {
    std::unique_lock l(mu_);
    return changed_.wait_for(l, std::chrono::seconds(20), [&] { return waiting_ >= n; });
  }

 private:
  FakeClock& clock_;
  std::mutex mu_;
  std::condition_variable changed_;  // held_, closed_ or waiting_ changed
  bool held_ = false;                // guarded by mu_
  bool closed_ = false;              // guarded by mu_
  int waiting_ = 0;                  // guarded by mu_
  int passes_ = 0;                   // polls Pass lets through the held gate; guarded by mu_
};

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
    // Migration polls move the fake clock: no host misses a beat unless a test sets a timeout.
    config_.heartbeat_timeout_ms = 24 * 3600 * 1000;
    config_.agent_timeout_ms = 5000;
    config_.max_body_bytes = 64 << 10;
    config_.migration_verify_window_ms = 0;  // running once (and answering its channel) is enough
    config_.lease_move_notice_ms = 0;        // moves do not wait on their notice unless a test says so
  }
  void TearDown() override {
    for (const auto& [host, token] : host_tokens_) cluster_.HoldCreates(host, false);
    gate_.Close();
    StopManager();
    std::filesystem::remove_all(dir_);
  }
  void StartManager() {
    manager_ = std::make_unique<Manager>(config_, clock_);
    manager_->SetAgentFactory(cluster_.Factory());
    manager_->SetPollSleeper([this](Duration d) { return gate_.Sleep(d); });
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
  // The agent URL a test host joins with. A join takes only http(s) URLs; the agent factory picks
  // the in-memory agent by host name, so this one is never dialled (and .invalid never resolves).
  static std::string AgentUrl(const std::string& host) { return "http://" + host + ".inmem.invalid"; }
  // Adds an in-memory host and joins it over the API; returns its host token.
  std::string AddHost(const std::string& name, double cores = 4, int64_t mib = 4096) {
    cluster_.AddHost(name, mib);
    Json join = {{"name", name},
                 {"agent_url", AgentUrl(name)},
                 {"agent_token", "agent-token-0123456789"},
                 {"capacity", {{"cpu_cores", cores}, {"memory_mib", mib}}}};
    auto r = Client(kJoin).Call("POST", "/api/v1/hosts/join", &join);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    host_tokens_[name] = r.ok() ? (*r)["host_token"].get<std::string>() : "";
    return host_tokens_[name];
  }
  // The host's heartbeat (what its guests are now, as uw-agent reports them), with `usage` as the
  // stats' guests. Fails the test unless the manager accepts it.
  void Heartbeat(const std::string& host, const Json& usage = Json::array()) {
    Json hb = cluster_.HeartbeatBody(host);
    hb["stats"]["guests"] = usage;
    auto r = Client(host_tokens_[host]).Call("POST", "/api/v1/hosts/" + host + "/heartbeat", &hb);
    EXPECT_TRUE(r.ok()) << host << ": " << r.status().ToString();
  }
  // Lets the window in which a task that just ended has the last word on its guest pass
  // (2 heartbeat intervals): the next heartbeat counts.
  void LetTasksSettle() { clock_.Advance(std::chrono::milliseconds(3 * config_.heartbeat_interval_ms)); }
  bool HasGuest(const std::string& host, const std::string& guest) { return cluster_.GuestsOn(host).count(guest) > 0; }
  // A running or stopped guest as an agent reports it (1 vCPU), for cluster_.Place.
  static AgentGuest Guest(const std::string& name, const std::string& state, int64_t memory_mib) {
    AgentGuest g;
    g.name = name;
    g.state = state;
    g.vcpus = g.max_vcpus = 1;
    g.memory_mib = g.max_memory_mib = memory_mib;
    return g;
  }
  Json WaitTask(const Json& task) {
    auto r = manager_->WaitTask(task["id"].get<std::string>(), std::chrono::seconds(20));
    EXPECT_TRUE(r.ok());
    return r.ok() ? TaskJson(*r) : Json();
  }
  // Waits for a condition the manager's threads make true; false after 20 s.
  static bool Eventually(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }
  // Every event as "type subject data" lines.
  std::string AllEvents() {
    std::string out;
    auto rows = manager_->store().Query("SELECT type, subject, data FROM events ORDER BY seq");
    for (const auto& r : *rows) {
      out += r.Str("type") + " " + r.Str("subject") + " " + r.Str("data") + "\n";
    }
    return out;
  }
  // POST /api/v1/images as the admin, and the image.import task it started, waited for ("state":
  // "refused" with the error when the request itself was refused).
  Json ImportImage(const std::string& name, const std::string& source) {
    Json body = {{"name", name}, {"source", source}};
    auto r = Client().Call("POST", "/api/v1/images", &body);
    if (!r.ok()) return {{"state", "refused"}, {"error", r.status().ToString()}, {"code", r.status().code()}};
    return WaitTask(*r);
  }
  int64_t Count(const std::string& sql) { return (*manager_->store().Query(sql))[0].Int("n"); }
  // An exec power driver for `host` whose BMC is the file bmc-HOST ("on" / "off"); with
  // `off_fails` its off command exits 1 saying why (and naming the secret, which must not show).
  Json ExecDriver(const std::string& host, bool off_fails = false) {
    const std::string state = (dir_ / ("bmc-" + host)).string();
    std::ofstream(state) << "on\n";
    return {{"driver", "exec"},
            {"status_command", {"cat", state}},
            {"on_command", {"sh", "-c", "echo on > " + state}},
            {"off_command", off_fails ? Json({"sh", "-c", "echo \"BMC busy ($UW_POWER_SECRET)\" >&2; exit 1"})
                                      : Json({"sh", "-c", "echo off > " + state})},
            {"password", "pw-0123456789"},
            {"timeout_ms", 5000}};
  }
  std::string Bmc(const std::string& host) {
    std::ifstream in(dir_ / ("bmc-" + host));
    std::string s;
    in >> s;
    return s;
  }
  std::string TenantToken(const std::string& tenant) {
    Json body = {{"name", tenant + "-key"}, {"role", "tenant"}, {"tenant", tenant}};
    auto r = Client().Call("POST", "/api/v1/tokens", &body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return (*r)["token"].get<std::string>();
  }

  std::filesystem::path dir_;
  ManagerConfig config_;
  FakeClock clock_;          // outlives manager_ (its threads read it until TearDown stops them)
  InMemoryCluster cluster_;  // likewise (the manager's agent clients point into it)
  PollGate gate_{clock_};
  std::map<std::string, std::string> host_tokens_;  // by host name
  std::unique_ptr<Manager> manager_;
  std::unique_ptr<api::Router> router_;
  std::unique_ptr<api::HttpServer> server_;
};

}  // namespace uw::manager::testing
