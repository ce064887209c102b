// uw-manager through its REST API, in one process: the manager on a SQLite file in a temp dir,
// its HTTP server on a free port, agents either fake uw-agents over HTTP (manager/fake_agent.h) or
// in-memory agents (manager/in_memory_agent.h, no HTTP to the agent).
//   BM_ListGuests/10000        GET /api/v1/guests with 10,000 guests, whole (requests/s in items_per_second)
//   BM_ListGuestsPage/10000    GET /api/v1/guests?limit=100&after=..., every page in turn
//   BM_ListGuestsPageCore/10000  the same pages at the server: Manager::ListGuestsBody, no HTTP
//   BM_ListHosts/1000          GET /api/v1/hosts with 1,000 hosts (10 guests each)
//   BM_ListGuestsWrk/10000     the whole list under wrk (Debian's wrk, 2 threads, 8 connections, 3 s)
//   BM_ListGuestsPageWrk/10000 a page of 100 (after g5000) under wrk -t2 -c16 -d3s
//   BM_ListHostsWrk/1000       the 1,000-host list under wrk -t2 -c16 -d3s
//                              (wrk: requests/s and latency percentiles as counters, one iteration)
//   BM_CreateToRunning         POST /api/v1/guests, then poll the task until the guest runs (fake HTTP agent)
//   BM_CreateToRunningInMemory the same on in-memory agents: the manager's own cost of a create
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
#include "manager/in_memory_agent.h"
#include "manager/manager.h"

namespace uw::manager {
namespace {

constexpr const char* kAdmin = "bench-admin-token-0123456789";

enum class Agents { kFakeHttp, kInMemory };

struct Cluster {
  std::filesystem::path dir;
  std::unique_ptr<Manager> manager;
  api::Router router;
  std::unique_ptr<api::HttpServer> server;
  std::vector<std::unique_ptr<testing::FakeAgent>> agents;
  InMemoryCluster in_memory;  // outlives manager (its agent clients point into it)
  std::vector<std::string> hosts;

  explicit Cluster(int host_count, Agents kind = Agents::kFakeHttp) {
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
    if (kind == Agents::kInMemory) manager->SetAgentFactory(in_memory.Factory());
    if (!manager->Start().ok()) std::abort();
    BuildRoutes(*manager, router);
    api::ServerOptions opts;
    opts.worker_threads = 4;
    server = std::make_unique<api::HttpServer>(opts, &router);
    if (!server->Start().ok()) std::abort();
    for (int i = 0; i < host_count; ++i) {
      HostJoin j{"b" + std::to_string(i), "inmem://b" + std::to_string(i), "bench-agent-token-0123456789", 256, 1 << 22,
                 Json::object()};
      if (kind == Agents::kFakeHttp) {
        agents.push_back(std::make_unique<testing::FakeAgent>(j.name));
        if (!agents.back()->Start().ok()) std::abort();
        j.agent_url = agents.back()->url();
        j.agent_token = agents.back()->token();
      } else {
        in_memory.AddHost(j.name, 1 << 22);
      }
      if (!manager->JoinHost(cfg.join_token, j).ok()) std::abort();
      hosts.push_back(j.name);
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
            {name, hosts[i % hosts.size()], Json({{"name", name}, {"vcpus", 1}, {"memory_mib", 256}}).dump()}));
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

// Pages of 100, following `next` through the whole list and starting again.
void BM_ListGuestsPage(benchmark::State& state) {
  Cluster c(4, Agents::kInMemory);
  c.AddGuests(static_cast<int>(state.range(0)));
  auto client = c.Client();
  std::string after;
  size_t bytes = 0;
  for (auto _ : state) {
    auto r = client.Call("GET", "/api/v1/guests?limit=100" + (after.empty() ? "" : "&after=" + after));
    if (!r.ok() || (*r)["guests"].size() > 100) {
      state.SkipWithError("GET /api/v1/guests?limit=100 failed");
      break;
    }
    after = (*r)["next"].is_string() ? (*r)["next"].get<std::string>() : "";
    bytes = (*r)["guests"].size();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["guests_per_page"] = static_cast<double>(bytes);
}
BENCHMARK(BM_ListGuestsPage)->Arg(10000)->Unit(benchmark::kMicrosecond)->UseRealTime();

// The same pages at the server, without HTTP: what the manager spends on one.
void BM_ListGuestsPageCore(benchmark::State& state) {
  Cluster c(4, Agents::kInMemory);
  c.AddGuests(static_cast<int>(state.range(0)));
  const Principal admin{"admin", Role::kAdmin, "", {}};
  PageQuery page{100, ""};
  for (auto _ : state) {
    auto body = c.manager->ListGuestsBody(admin, page);
    if (!body.ok()) {
      state.SkipWithError(body.status().ToString().c_str());
      break;
    }
    // The next cursor, read without timing the parse.
    state.PauseTiming();
    Json tree = Json::parse(*body);
    page.after = tree["next"].is_string() ? tree["next"].get<std::string>() : "";
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ListGuestsPageCore)->Arg(10000)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_ListHosts(benchmark::State& state) {
  Cluster c(static_cast<int>(state.range(0)), Agents::kInMemory);
  c.AddGuests(static_cast<int>(state.range(0)) * 10);
  auto client = c.Client();
  size_t bytes = 0;
  for (auto _ : state) {
    auto r = client.Do("GET", "/api/v1/hosts");
    if (!r.ok() || r->status != 200) {
      state.SkipWithError("GET /api/v1/hosts failed");
      break;
    }
    bytes = r->body.size();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["body_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_ListHosts)->Arg(1000)->Unit(benchmark::kMillisecond)->UseRealTime();

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

// wrk -t2 -cN -d3s against `path` of a cluster of `hosts` hosts and `guests` guests.
void RunWrk(benchmark::State& state, int hosts, int guests, const std::string& path, int connections) {
  if (std::system("command -v wrk >/dev/null 2>&1") != 0) {
    state.SkipWithError("wrk is not installed (scripts/install-deps installs Debian's wrk)");
    return;
  }
  Cluster c(hosts, Agents::kInMemory);
  c.AddGuests(guests);
  const std::string cmd = "wrk -t2 -c" + std::to_string(connections) + " -d3s --latency -H 'Authorization: Bearer " +
                          kAdmin + "' 'http://127.0.0.1:" + std::to_string(c.server->port()) + path + "' 2>&1";
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
void BM_ListGuestsWrk(benchmark::State& state) {
  RunWrk(state, 4, static_cast<int>(state.range(0)), "/api/v1/guests", 8);
}
void BM_ListGuestsPageWrk(benchmark::State& state) {
  RunWrk(state, 4, static_cast<int>(state.range(0)), "/api/v1/guests?limit=100&after=g5000", 16);
}
void BM_ListHostsWrk(benchmark::State& state) {
  RunWrk(state, static_cast<int>(state.range(0)), static_cast<int>(state.range(0)) * 10, "/api/v1/hosts", 16);
}
BENCHMARK(BM_ListGuestsWrk)->Arg(10000)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ListGuestsPageWrk)->Arg(10000)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ListHostsWrk)->Arg(1000)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// A create through the API (a kernel + initramfs guest, as uwctl sends it), then polls of its task
// until the guest runs.
void CreateToRunning(benchmark::State& state, Agents kind) {
  Cluster c(4, kind);
  auto client = c.Client();
  int i = 0;
  int64_t polls = 0;
  for (auto _ : state) {
    Json body = {{"name", "c" + std::to_string(i++)},
                 {"memory_mib", 256},
                 {"boot", {{"kernel", "/var/lib/uw/images/vmlinuz"}, {"initrd", "/var/lib/uw/images/initrd"}}}};
    auto r = client.Call("POST", "/api/v1/guests", &body);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
    std::string id = (*r)["id"];
    while (true) {
      ++polls;
      auto t = client.Call("GET", "/api/v1/tasks/" + id);
      if (!t.ok() || (*t)["state"] == "failed") {
        state.SkipWithError(("task failed: " + (t.ok() ? t->dump() : t.status().ToString())).c_str());
        return;
      }
      if ((*t)["state"] == "succeeded") break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["task_polls"] = benchmark::Counter(static_cast<double>(polls), benchmark::Counter::kAvgIterations);
}
void BM_CreateToRunning(benchmark::State& state) { CreateToRunning(state, Agents::kFakeHttp); }
void BM_CreateToRunningInMemory(benchmark::State& state) { CreateToRunning(state, Agents::kInMemory); }
BENCHMARK(BM_CreateToRunning)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CreateToRunningInMemory)->Unit(benchmark::kMillisecond)->UseRealTime();

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
