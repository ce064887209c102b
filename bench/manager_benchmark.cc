// uw-manager through its REST API, in one process: the manager on a SQLite file in a temp dir,
// its HTTP server on a free port, fake agents playing uw-agent.
//   BM_ListGuests/10000   GET /api/v1/guests with 10,000 guests (requests/s in items_per_second)
//   BM_CreateToRunning    POST /api/v1/guests, then poll the task until the guest runs
//   BM_ListGuestsWrk/10000  the same list under wrk (Debian's wrk, 2 threads, 8 connections, 3 s):
//                           requests/s and latency percentiles as counters, one iteration
#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

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

// Parses a wrk latency like "1.23ms", "850.00us" or "1.02s" into ms (-1 when not a latency).
double WrkMs(const std::string& v) {
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  std::string unit = end ? end : "";
  if (unit == "us") return x / 1000;
  if (unit == "ms") return x;
  if (unit == "s") return x * 1000;
  return -1;
}

void BM_ListGuestsWrk(benchmark::State& state) {
  if (std::system("command -v wrk >/dev/null 2>&1") != 0) {
    state.SkipWithError("wrk is not installed (scripts/install-deps installs Debian's wrk)");
    return;
  }
  Cluster c(4);
  c.AddGuests(static_cast<int>(state.range(0)));
  const std::string cmd = std::string("wrk -t2 -c8 -d3s --latency -H 'Authorization: Bearer ") + kAdmin +
                          "' http://127.0.0.1:" + std::to_string(c.server->port()) + "/api/v1/guests 2>&1";
  for (auto _ : state) {
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) {
      state.SkipWithError("cannot run wrk");
      return;
    }
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    if (pclose(p) != 0) {
      state.SkipWithError(("wrk failed: " + out).c_str());
      return;
    }
    // "Requests/sec:   1234.56", latency distribution lines "     50%    1.23ms", errors as
    // "Non-2xx or 3xx responses: N".
    auto after = [&](const std::string& key) -> std::string {
      size_t at = out.find(key);
      if (at == std::string::npos) return "";
      at += key.size();
      while (at < out.size() && out[at] == ' ') ++at;
      size_t end = out.find_first_of(" \n", at);
      return out.substr(at, end == std::string::npos ? std::string::npos : end - at);
    };
    if (!after("Non-2xx or 3xx responses:").empty()) {
      state.SkipWithError(("wrk saw errors: " + out).c_str());
      return;
    }
    state.counters["requests_per_s"] = std::atof(after("Requests/sec:").c_str());
    for (const char* pct : {"50%", "90%", "99%"}) {
      state.counters[std::string("latency_p") + std::string(pct, 2) + "_ms"] = WrkMs(after(std::string("     ") + pct));
    }
  }
}
BENCHMARK(BM_ListGuestsWrk)->Arg(10000)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

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

// The manager logs through spdlog to stdout; benchmarks print JSON there, so only warnings go out.
int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
