// uw-manager through its REST API, in one process: the manager on a SQLite file in a temp dir,
// its HTTP server on a free port, fake agents playing uw-agent.
//   BM_ListGuests/10000   GET /api/v1/guests with 10,000 guests (requests/s in items_per_second)
//   BM_CreateToRunning    POST /api/v1/guests, then poll the task until the guest runs
// For wrk: `wrk -t2 -c8 -d10s -H 'Authorization: Bearer TOKEN' http://127.0.0.1:PORT/api/v1/guests`
// against a uw-manager whose store was filled the same way.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>

#include "api/http.h"
#include "manager/fake_agent.h"
#include "manager/http_api.h"
#include "manager/manager.h"

namespace uw::manager {
namespace {

constexpr const char* kAdmin = "bench-admin-token-0123456789";

struct Cluster {
  std::filesystem::path dir;
  std::unique_ptr<Manager> manager;
  api::Router router;
  std::unique_ptr<api::HttpServer> server;
  std::vector<std::unique_ptr<testing::FakeAgent>> agents;

  explicit Cluster(int hosts) {
    dir = std::filesystem::temp_directory_path() / ("uw-manager-bench-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    ManagerConfig cfg;
    cfg.db_path = (dir / "state.db").string();
    cfg.join_token = "bench-join-token-0123456789";
    cfg.admin_token = kAdmin;
    cfg.drs_interval_ms = 0;
    cfg.heartbeat_timeout_ms = 3'600'000;
    manager = std::make_unique<Manager>(cfg);
    if (!manager->Start().ok()) std::abort();
    BuildRoutes(*manager, router);
    api::ServerOptions opts;
    opts.worker_threads = 4;
    server = std::make_unique<api::HttpServer>(opts, &router);
    if (!server->Start().ok()) std::abort();
    for (int i = 0; i < hosts; ++i) {
      agents.push_back(std::make_unique<testing::FakeAgent>("b" + std::to_string(i)));
      if (!agents.back()->Start().ok()) std::abort();
      HostJoin j{agents.back()->name(), agents.back()->url(), agents.back()->token(), 256, 1 << 22, Json::object()};
      if (!manager->JoinHost(cfg.join_token, j).ok()) std::abort();
    }
  }
  ~Cluster() {
    server->Stop();
    manager->Stop();
    for (auto& a : agents) a->Stop();
    std::filesystem::remove_all(dir);
  }
  api::HttpClient Client() const {
    return api::HttpClient({"http://127.0.0.1:" + std::to_string(server->port()), kAdmin, 60000, 3000});
  }
  // Fills the store directly (the guests' creation path is measured by BM_CreateToRunning).
  void AddGuests(int n) {
    Status s = manager->store().Transact([&]() -> Status {
      for (int i = 0; i < n; ++i) {
        std::string name = "g" + std::to_string(i);
        UW_RETURN_IF_ERROR(manager->store().Exec(
            "INSERT INTO guests(name, tenant, host, kind, vcpus, memory_mib, spec, state, created_ms, updated_ms) "
            "VALUES (?, 't', ?, 'qemu', 1, 256, ?, 'running', 0, 0)",
            {name, agents[i % agents.size()]->name(), Json({{"name", name}, {"vcpus", 1}, {"memory_mib", 256}}).dump()}));
      }
      return Status::Ok();
    });
    if (!s.ok()) std::abort();
  }
};

void BM_ListGuests(benchmark::State& state) {
  Cluster c(4);
  c.AddGuests(static_cast<int>(state.range(0)));
  auto client = c.Client();
  size_t bytes = 0;
  for (auto _ : state) {
    auto r = client.Do("GET", "/api/v1/guests");
    if (!r.ok() || r->status != 200) {
      state.SkipWithError("GET /api/v1/guests failed");
      break;
    }
    bytes = r->body.size();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["body_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_ListGuests)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_CreateToRunning(benchmark::State& state) {
  Cluster c(4);
  auto client = c.Client();
  int i = 0;
  for (auto _ : state) {
    Json body = {{"name", "c" + std::to_string(i++)}, {"memory_mib", 256}};
    auto r = client.Call("POST", "/api/v1/guests", &body);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
    std::string id = (*r)["id"];
    while (true) {
      auto t = client.Call("GET", "/api/v1/tasks/" + id);
      if (!t.ok() || (*t)["state"] == "failed") {
        state.SkipWithError("task failed");
        return;
      }
      if ((*t)["state"] == "succeeded") break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CreateToRunning)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace uw::manager

BENCHMARK_MAIN();
