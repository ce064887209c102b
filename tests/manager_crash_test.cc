// Crash-only manager: kill -9 uw-manager while 20 guest creations are in flight against fake
// agents, restart it on the same state file, and check that no guest is lost or duplicated, that
// every task reaches a final state and that capacity accounting matches the guests.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "api/http.h"
#include "manager/fake_agent.h"
#include "tests/testbed_client.h"

namespace uw {
namespace {

using manager::testing::FakeAgent;
using testing::WaitFor;
constexpr const char* kAdmin = "crash-admin-token-0123456789";
constexpr const char* kJoin = "crash-join-token-0123456789";
constexpr int kGuests = 20;

class ManagerCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("uw-manager-crash-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    port_ = 18800 + ::getpid() % 1000;
    Json cfg = {{"db_path", (dir_ / "manager.db").string()},
                {"listen", {{"address", "127.0.0.1"}, {"port", port_}}},
                {"join_token", kJoin},
                {"admin_token", kAdmin},
                {"heartbeat_interval_ms", 1000},
                {"heartbeat_timeout_ms", 600000},
                {"drs_interval_ms", 0},
                {"task_workers", 8},
                {"log_file", (dir_ / "manager.log").string()}};
    std::ofstream(dir_ / "manager.json") << cfg.dump(2);
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    for (auto& a : agents_) a->Stop();
    std::filesystem::remove_all(dir_);
  }
  void StartManager() {
    const char* bin = std::getenv("UW_MANAGER_BIN");
    ASSERT_NE(bin, nullptr) << "UW_MANAGER_BIN is set by ctest";
    pid_ = fork();
    if (pid_ == 0) {
      std::string config = (dir_ / "manager.json").string();
      execl(bin, bin, "--config", config.c_str(), nullptr);
      _exit(127);
    }
    ASSERT_TRUE(WaitFor([this] { return Client().Do("GET", "/healthz").ok(); }, std::chrono::seconds(20)))
        << "uw-manager did not answer; see " << (dir_ / "manager.log");
  }
  void KillManager() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  api::HttpClient Client(const std::string& token = kAdmin) {
    return api::HttpClient({"http://127.0.0.1:" + std::to_string(port_), token, 20000, 1000});
  }

  std::filesystem::path dir_;
  int port_ = 0;
  pid_t pid_ = -1;
  std::vector<std::unique_ptr<FakeAgent>> agents_;
};

TEST_F(ManagerCrashTest, Kill9DuringTwentyCreationsLosesAndDuplicatesNothing) {
  for (const char* name : {"c1", "c2", "c3"}) {
    agents_.push_back(std::make_unique<FakeAgent>(name));
    ASSERT_TRUE(agents_.back()->Start().ok());
    agents_.back()->SetDelayMs(400);  // keep creations in flight when the manager dies
  }
  StartManager();
  for (auto& a : agents_) {
    Json join = {{"name", a->name()},
                 {"agent_url", a->url()},
                 {"agent_token", a->token()},
                 {"capacity", {{"cpu_cores", 16}, {"memory_mib", 16384}}}};
    ASSERT_TRUE(Client(kJoin).Call("POST", "/api/v1/hosts/join", &join).ok());
  }
  // 20 concurrent creations, each with its own Idempotency-Key (as a careful client would send).
  std::vector<int> status(kGuests, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kGuests; ++i) {
    threads.emplace_back([&, i] {
      std::string body = Json({{"name", "crash-" + std::to_string(i)}, {"image", "tiny"}, {"memory_mib", 512}}).dump();
      auto r = Client().Do("POST", "/api/v1/guests", body, {{"Idempotency-Key", "create-" + std::to_string(i)}});
      status[i] = r.ok() ? r->status : -1;
    });
  }
  // Kill as soon as a few creations reached the agents, while the rest are queued or running.
  ASSERT_TRUE(WaitFor(
      [&] {
        int n = 0;
        for (auto& a : agents_) n += a->creates();
        return n >= 4;
      },
      std::chrono::seconds(30), std::chrono::milliseconds(5)));
  KillManager();
  for (auto& t : threads) t.join();
  StartManager();
  // Clients retry what got no answer (same key); a name the manager already holds is a 409.
  for (int i = 0; i < kGuests; ++i) {
    if (status[i] == 202) continue;
    std::string body = Json({{"name", "crash-" + std::to_string(i)}, {"image", "tiny"}, {"memory_mib", 512}}).dump();
    auto r = Client().Do("POST", "/api/v1/guests", body, {{"Idempotency-Key", "create-" + std::to_string(i)}});
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->status == 202 || r->status == 409) << r->status << " " << r->body;
  }
  // Every task reaches a final state.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto t = Client().Call("GET", "/api/v1/tasks?limit=1000");
        if (!t.ok()) return false;
        for (const auto& task : (*t)["tasks"]) {
          std::string s = task["state"];
          if (s != "succeeded" && s != "failed" && s != "cancelled") return false;
        }
        return true;
      },
      std::chrono::seconds(60)));
  auto tasks = *Client().Call("GET", "/api/v1/tasks?limit=1000");
  auto guests = *Client().Call("GET", "/api/v1/guests");
  auto hosts = *Client().Call("GET", "/api/v1/hosts");
  // No guest lost: all 20 exist in the manager, running, on the host the manager names.
  std::map<std::string, std::string> where;  // guest -> host, per manager
  for (const auto& g : guests["guests"]) where[g["name"]] = g["host"];
  EXPECT_EQ(where.size(), static_cast<size_t>(kGuests)) << guests.dump();
  for (const auto& g : guests["guests"]) EXPECT_EQ(g["state"], "running") << g.dump();
  // No guest duplicated: each is on exactly one agent, the one the manager says; agents hold
  // nothing the manager does not know.
  std::map<std::string, int> copies;
  for (auto& a : agents_) {
    for (const auto& g : a->Guests()) {
      std::string n = g["name"];
      copies[n]++;
      ASSERT_TRUE(where.count(n)) << "agent " << a->name() << " runs " << n << " unknown to the manager";
      EXPECT_EQ(where[n], a->name()) << n;
    }
  }
  for (const auto& [n, host] : where) EXPECT_EQ(copies[n], 1) << n;
  // Exactly one successful create task per guest; none left unfinished.
  std::map<std::string, int> succeeded;
  for (const auto& t : tasks["tasks"]) {
    if (t["kind"] == "guest.create" && t["state"] == "succeeded") succeeded[t["subject"]]++;
  }
  for (const auto& [n, host] : where) EXPECT_EQ(succeeded[n], 1) << n;
  // The crash really interrupted work: some task was resumed after the restart.
  int resumed = 0;
  for (const auto& t : tasks["tasks"]) resumed += t["attempts"].get<int>() >= 2 ? 1 : 0;
  EXPECT_GE(resumed, 1) << "no task was in flight at the kill; the test proved nothing";
  // Capacity accounting: each host's reservation is the sum of its guests' memory.
  std::map<std::string, int64_t> expected;
  for (const auto& g : guests["guests"]) expected[g["host"]] += g["reserved"]["memory_mib"].get<int64_t>();
  for (const auto& h : hosts["hosts"]) {
    EXPECT_EQ(h["reserved"]["memory_mib"].get<int64_t>(), expected[h["name"]]) << h.dump();
    EXPECT_LE(h["reserved"]["memory_mib"].get<int64_t>(), h["capacity"]["memory_mib"].get<int64_t>());
  }
}

// kill -9 while an image.import task downloads its source: the restarted manager runs the task
// again and the image is recorded once.
TEST_F(ManagerCrashTest, Kill9DuringAnImageImportResumesItAndRecordsTheImageOnce) {
  Json cfg = Json::parse(std::ifstream(dir_ / "manager.json"));
  cfg["storage"] = {{"local", {{"dir", (dir_ / "storage").string()}}}};
  std::ofstream(dir_ / "manager.json") << cfg.dump(2);
  // The source: held (no answer) until `release`, so the first download is cut by the kill.
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> asked{0};
  const std::string bytes(1 << 20, 'u');
  api::Router router;
  router.AddPublic("GET", "/golden.raw", [&](const api::Request&) {
    ++asked;
    std::unique_lock l(mu);
    cv.wait_for(l, std::chrono::seconds(60), [&] { return release; });
    api::Response r;
    r.content_type = "application/octet-stream";
    r.body = bytes;
    return r;
  });
  api::HttpServer source({}, &router);
  ASSERT_TRUE(source.Start().ok());
  StartManager();
  Json body = {{"name", "golden"}, {"source", "http://127.0.0.1:" + std::to_string(source.port()) + "/golden.raw"}};
  auto started = Client().Call("POST", "/api/v1/images", &body);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  const std::string id = (*started)["id"];
  ASSERT_TRUE(WaitFor([&] { return asked.load() >= 1; }, std::chrono::seconds(20))) << "the download never began";
  KillManager();
  {
    std::lock_guard l(mu);
    release = true;
  }
  cv.notify_all();
  StartManager();
  Json task;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto t = Client().Call("GET", "/api/v1/tasks/" + id);
        if (t.ok()) task = *t;
        return task.value("state", "") == "succeeded" || task.value("state", "") == "failed";
      },
      std::chrono::seconds(60)))
      << task.dump();
  EXPECT_EQ(task["state"], "succeeded") << task.dump();
  EXPECT_EQ(task["result"]["size_bytes"], 1 << 20) << task.dump();
  EXPECT_GE(asked.load(), 2) << "the restarted manager did not download again";
  auto images = Client().Call("GET", "/api/v1/images");
  ASSERT_TRUE(images.ok()) << images.status().ToString();
  ASSERT_EQ((*images)["images"].size(), 1u) << images->dump();
  EXPECT_EQ((*images)["images"][0]["name"], "golden");
  std::string imported;
  ASSERT_TRUE(Client()
                  .Stream("GET", "/api/v1/events?follow=false",
                          [&](std::string_view d) {
                            imported += d;
                            return true;
                          })
                  .ok());
  size_t n = 0;
  for (size_t at = imported.find("event: image.imported"); at != std::string::npos;
       at = imported.find("event: image.imported", at + 1)) {
    ++n;
  }
  EXPECT_EQ(n, 1u) << imported;
  source.Stop();
}

}  // namespace
}  // namespace uw
