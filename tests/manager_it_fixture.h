// The fixture of the manager's integration tests on the real test bed (manager_integration_test.cc,
// lease_integration_test.cc: one binary, one uw-manager process for the whole suite): the
// test-bed agents join through vmm::ManagerLink, guests are created through the manager's REST API
// onto real hosts (libvirtd + emulated guests).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "api/http.h"
#include "tests/ceph_config.h"
#include "tests/testbed_client.h"
#include "vmm/manager_link.h"

namespace uw {
namespace it {

using testing::Testbed;
using testing::TickWatcher;
using testing::WaitFor;
constexpr const char* kAdmin = "it-admin-token-0123456789";
constexpr const char* kJoin = "it-join-token-0123456789";

// The host's power interface as testbed.json describes it, in the shape of the manager's power
// driver: `bmc` (ipmi: address, port, username, password), `redfish` (url, username, password,
// ca_cert) or `wol` (mac, broadcast, port).
inline Json BmcOf(const std::string& testbed_dir, const std::string& host, const std::string& key = "bmc") {
  std::ifstream in(testbed_dir + "/testbed.json");
  Json doc = Json::parse(in, nullptr, false);
  for (const auto& h : doc.value("hosts", Json::array())) {
    if (h.value("name", "") == host) return h.value(key, Json());
  }
  return Json();
}

inline int64_t MsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

class ManagerIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tb = Testbed::Load();
    ASSERT_TRUE(tb.ok()) << tb.status().ToString();
    testbed_ = new Testbed(*tb);
    // Guests an interrupted earlier run left on the hosts would be adopted and take the names.
    for (size_t i = 0; i < testbed_->hosts.size(); ++i) {
      auto listed = testbed_->Agent(i).Call("GET", "/api/v1/guests");
      if (!listed.ok()) continue;
      for (const auto& g : (*listed)["guests"]) {
        const std::string n = g.value("name", "");
        if (n.rfind("mit-", 0) == 0 || n.find(":mit-") != std::string::npos)
          (void)testbed_->Agent(i).Do("DELETE", "/api/v1/guests/" + n + "?force=true");
      }
    }
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     ("uw-manager-it-" + std::to_string(::getpid())));
    std::filesystem::create_directories(*dir_);
    port_ = 17800 + ::getpid() % 1000;
    Json cfg = {{"db_path", (*dir_ / "manager.db").string()},
                {"listen", {{"address", "127.0.0.1"}, {"port", port_}}},
                {"join_token", kJoin},
                {"admin_token", kAdmin},
                {"heartbeat_interval_ms", 500},
                {"heartbeat_timeout_ms", 5000},
                {"drs_interval_ms", 0},
                {"max_body_bytes", 65536},
                // Short escalation stages so that a transfer stuck on a cut network ends quickly.
                // A 3 s verification window: every move still ends `done` only after the guest ran and
                // answered its control channel on the destination.
                {"migration",
                 {{"agent_grace_ms", 30000},
                  {"verify_window_ms", 3000},
                  {"convergence", {{"base_timeout_s", 15}, {"timeout_s_per_gib", 0}}}}},
                {"log_file", (*dir_ / "manager.log").string()}};
    if (local_storage_) {
      // The local backend: images here, guests' disks made on copies of them on their hosts.
      cfg["storage"] = {{"local", {{"dir", (*dir_ / "storage").string()}}}};
    } else if (testbed_->ceph.is_object()) {
      // The storage catalogue on the test bed's Ceph, as the client user the agents use.
      const storage::RbdConfig c = uw::testing::RbdConfigOf(testbed_->ceph);
      cfg["storage"] = {{"rbd", {{"conf", c.config_file}, {"user", c.user}, {"keyring", c.keyring}, {"pool", c.pool}}}};
    }
    std::ofstream(*dir_ / "manager.json") << cfg.dump(2);
    StartManagerProcess();
    links_ = new std::vector<std::unique_ptr<vmm::ManagerLink>>();
    StartLinks();
  }
  // Each test-bed agent joins through a ManagerLink run here (reading the agent over HTTP), as an
  // agent with a manager_url would; again after agents restarted (they get new tokens).
  static void StartLinks() {
    for (auto& l : *links_) l->Stop();
    links_->clear();
    for (size_t i = 0; i < testbed_->hosts.size(); ++i) {
      ASSERT_FALSE(testbed_->hosts[i].agent_url.empty()) << "the test bed runs no agents (start it with --agent)";
      links_->push_back(MakeLink(i));
      links_->back()->Start();
    }
  }
  // Host i's link alone, started again as a killed agent's: with the samples it kept, not its counters.
  static void RestartLink(size_t i) {
    links_->at(i)->Stop();
    links_->at(i) = MakeLink(i);
    links_->at(i)->Start();
  }
  static std::unique_ptr<vmm::ManagerLink> MakeLink(size_t i) {
    const auto& h = testbed_->hosts[i];
    vmm::ManagerLinkOptions o;
    o.manager_url = "http://127.0.0.1:" + std::to_string(port_);
    o.join_token = kJoin;
    o.host_name = h.name;
    o.agent_url = h.agent_url;
    o.agent_token = h.agent_token;
    o.heartbeat_interval_ms = 500;
    o.samples_path = (*dir_ / ("samples-" + h.name + ".log")).string();  // as an agent keeps it
    api::HttpClient agent = testbed_->Agent(i);
    return std::make_unique<vmm::ManagerLink>(
        o, [agent](std::string_view path) { return agent.Call("GET", std::string(path)); });
  }
  static void StartManagerProcess() {
    const char* bin = std::getenv("UW_MANAGER_BIN");
    ASSERT_NE(bin, nullptr) << "UW_MANAGER_BIN is set by ctest";
    pid_ = fork();
    if (pid_ == 0) {
      std::string config = (*dir_ / "manager.json").string();
      execl(bin, bin, "--config", config.c_str(), nullptr);
      _exit(127);
    }
    ASSERT_TRUE(WaitFor([] { return Client().Do("GET", "/healthz").ok(); }, std::chrono::seconds(20)))
        << "uw-manager did not answer; see " << (*dir_ / "manager.log");
  }
  static void TearDownTestSuite() {
    if (links_) {
      for (auto& l : *links_) l->Stop();
      delete links_;
    }
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    delete testbed_;
    if (dir_) std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static api::HttpClient Client(const std::string& token = kAdmin) {
    return api::HttpClient({"http://127.0.0.1:" + std::to_string(port_), token, 180000, 3000});
  }
  static Json WaitTask(const Json& task, int seconds = 300) {
    Json t = task;
    WaitFor(
        [&] {
          auto r = Client().Call("GET", "/api/v1/tasks/" + task["id"].get<std::string>());
          if (r.ok()) t = *r;
          std::string s = t.value("state", "");
          return s == "succeeded" || s == "failed" || s == "cancelled";
        },
        std::chrono::seconds(seconds), std::chrono::milliseconds(250));
    return t;
  }
  // Guest names on every test-bed agent.
  static std::set<std::string> AgentGuests() {
    std::set<std::string> out;
    for (size_t i = 0; i < testbed_->hosts.size(); ++i) {
      auto r = testbed_->Agent(i).Call("GET", "/api/v1/guests");
      if (!r.ok()) continue;
      for (const auto& g : (*r)["guests"]) out.insert(g["name"].get<std::string>());
    }
    return out;
  }

  // --- live migration helpers -------------------------------------------------------------
  static api::HttpClient AgentOf(const std::string& host) {
    for (size_t i = 0; i < testbed_->hosts.size(); ++i) {
      if (testbed_->hosts[i].name == host) return testbed_->Agent(i);
    }
    return testbed_->Agent(0);
  }
  static size_t IndexOf(const std::string& host) {
    for (size_t i = 0; i < testbed_->hosts.size(); ++i) {
      if (testbed_->hosts[i].name == host) return i;
    }
    return 0;
  }
  // Runs `command` in guest `g` through its host's agent; its output, or why not.
  static std::string GuestExec(api::HttpClient agent, const std::string& g, const std::string& command) {
    Json body = {{"command", command}, {"timeout_s", 30}};
    auto r = agent.Call("POST", "/api/v1/guests/" + g + "/exec", &body);
    if (!r.ok()) return "<exec failed: " + r.status().ToString() + ">";
    return r->value("output", "");
  }
  static std::string Console(const std::string& host, const std::string& g) {
    auto r = AgentOf(host).Do("GET", "/api/v1/guests/" + g + "/console");
    return r.ok() ? r->body : std::string();
  }
  // Powers host `index` off through `driver` (a PUT /power-driver body) until the manager has it in
  // standby, then on until its agent is back; prints the figures (power_integration_test.cc).
  static void StandbyAndWake(size_t index, const Json& driver);
  // Every event so far, as the SSE stream sends them.
  static std::string Events() {
    std::string events;
    Status s = Client().Stream("GET", "/api/v1/events?follow=false", [&](std::string_view d) {
      events += d;
      return true;
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return events;
  }
  // Where host i's agent keeps guest g's serial console log (its state_dir, as the test bed sets it).
  static std::string ConsoleLog(size_t i, const std::string& g) { return testing::ConsoleLogOf(*testbed_, i, g); }
  static std::string HostOf(const std::string& g) {
    return (*Client().Call("GET", "/api/v1/guests/" + g))["host"].get<std::string>();
  }
  static std::string Other(const std::string& host) {
    return host == testbed_->hosts[0].name ? testbed_->hosts[1].name : testbed_->hosts[0].name;
  }
  // Creates a booted emulated guest through the manager.
  static void CreateBooted(const std::string& name, int64_t mib, bool local_disk, const Json& extra = Json::object()) {
    Json body = {{"name", name}, {"kind", "qemu"}, {"image", "tiny"}, {"vcpus", 1}, {"memory_mib", mib}};
    body.update(extra);
    if (local_disk) body["disks"] = Json::array({{{"size_mib", 64}}});
    auto t = Client().Call("POST", "/api/v1/guests", &body);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    const Json task = WaitTask(*t);
    ASSERT_EQ(task["state"], "succeeded") << task.dump();
    std::string host = HostOf(name);
    // The manager's word: ready once the guest answered its control channel; a crash ends the wait
    // at once, with the console's last lines.
    Json g;
    ASSERT_TRUE(WaitFor(
        [&] {
          auto r = Client().Call("GET", "/api/v1/guests/" + name);
          if (r.ok()) g = *r;
          return r.ok() && (g["state"] == "crashed" || g["health"] == "ready");
        },
        std::chrono::seconds(120)))
        << name << " did not become ready (" << g.dump() << "); console:\n"
        << Console(host, name);
    ASSERT_NE(g["state"], "crashed") << name << " crashed while booting:\n" << g["crash"].dump(2);
  }
  // Exactly one host runs the guest, the one the manager names, and no other keeps a copy.
  static void ExpectOnce(const std::string& g) {
    int running = 0, defined = 0;
    std::string where, seen;
    for (size_t i = 0; i < testbed_->hosts.size(); ++i) {
      auto r = testbed_->Agent(i).Call("GET", "/api/v1/guests/" + g);
      defined += r.ok();
      seen += " " + testbed_->hosts[i].name + ":" + (r.ok() ? (*r).value("state", "?") : r.status().ToString());
      if (r.ok() && (*r)["state"] == "running") {
        ++running;
        where = testbed_->hosts[i].name;
      }
    }
    EXPECT_EQ(running, 1) << g;
    EXPECT_EQ(defined, 1) << g << ": a copy was left behind;" << seen;
    EXPECT_EQ(where, HostOf(g)) << g;
  }
  // Starts a slow migration of `g` to the other host and waits until it transfers.
  static Json StartSlowMigration(const std::string& g, double mib_s) {
    Json body = {{"host", Other(HostOf(g))}, {"bandwidth_mib_s", mib_s}};
    auto t = Client().Call("POST", "/api/v1/guests/" + g + "/migrate", &body);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    if (!t.ok()) return Json{{"id", "none"}};
    const std::string id = (*t)["id"];
    EXPECT_TRUE(WaitFor(
        [&] {
          auto r = Client().Call("GET", "/api/v1/tasks/" + id);
          return r.ok() && (*r)["message"].get<std::string>().rfind("transfer", 0) == 0;
        },
        std::chrono::seconds(60)))
        << "no transfer progress for " << g;
    return *t;
  }
  // Every host connected in the manager's view (after agents restarted), and every guest's state
  // known again: a guest whose move ended while its host's agent was down is 'unknown' until a
  // heartbeat names it, and the first beats after a task ended may not (their list can predate it).
  static void WaitConnected() {
    std::string why;
    EXPECT_TRUE(WaitFor(
        [&] {
          auto hosts = Client().Call("GET", "/api/v1/hosts");
          if (!hosts.ok()) return false;
          why = std::to_string((*hosts)["hosts"].size()) + " hosts joined";
          if ((*hosts)["hosts"].size() < testbed_->hosts.size()) return false;
          for (const auto& h : (*hosts)["hosts"]) {
            why = "host " + h["name"].get<std::string>() + " is " + h["state"].get<std::string>();
            if (h["state"] != "connected") return false;
          }
          auto guests = Client().Call("GET", "/api/v1/guests");
          if (!guests.ok()) return false;
          for (const auto& g : (*guests)["guests"]) {
            why = "guest " + g["name"].get<std::string>() + " is " + g["state"].get<std::string>();
            if (g["state"] == "unknown") return false;
          }
          return true;
        },
        std::chrono::seconds(60)))
        << "the manager's view did not settle: " << why;
  }
  static void DeleteGuest(const std::string& g) {
    Json force = {{"force", true}};
    auto stop = Client().Call("POST", "/api/v1/guests/" + g + "/stop", &force);
    if (stop.ok()) WaitTask(*stop, 120);
    auto del = Client().Call("DELETE", "/api/v1/guests/" + g);
    ASSERT_TRUE(del.ok()) << del.status().ToString();
    EXPECT_EQ(WaitTask(*del, 120)["state"], "succeeded");
  }

  // A suite that sets it before SetUpTestSuite runs its manager on the local storage backend
  // instead of the test bed's Ceph.
  inline static bool local_storage_ = false;
  inline static Testbed* testbed_ = nullptr;
  inline static std::filesystem::path* dir_ = nullptr;
  inline static int port_ = 0;
  inline static pid_t pid_ = -1;
  inline static std::vector<std::unique_ptr<vmm::ManagerLink>>* links_ = nullptr;
};

}  // namespace it
}  // namespace uw
