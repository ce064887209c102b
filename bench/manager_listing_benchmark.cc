// The listing routes against a static file server serving the same bytes, in one run (issue 12,
// "listing is slow": GET /api/v1/guests at 2,000 guests served 23-63 requests/s where Python's
// http.server served the same 939 KB at 473; GET /api/v1/hosts fell from 16,000 to 900 requests/s
// when the cluster had 2,000 guests).
//   BM_GuestsVsStatic/2000   GET /api/v1/guests with 2,000 guests on 20 hosts, and `python3 -m
//                            http.server` serving that body from a file: requests/s of both and
//                            their ratio (target >= 0.5); the route again while a guest row
//                            changes every 5 ms (the kept body is rebuilt after each change)
//   BM_Hosts/N               GET /api/v1/hosts (20 hosts) with N guests: requests/s
//   BM_GuestsCore/2000       the core alone, no HTTP: the JSON tree (ListGuests + dump, the old
//                            path), the direct writer after a guest row changed, and the kept
//                            body (no change since the last listing), ms per listing
//   BM_HostsCore/2000        the host query with correlated sums over guests (the old one) and with
//                            the trigger-kept totals, ms per listing
// Load comes from Debian's wrk (1 thread, 4 connections, 2 s per route) when it is installed, else
// from one keep-alive client in this process. Results as JSON with --benchmark_format=json.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "api/http.h"
#include "manager/http_api.h"
#include "manager/manager.h"
#include "manager/views.h"

namespace uw::manager {
namespace {

constexpr const char* kAdmin = "bench-admin-token-0123456789";
constexpr int kHosts = 20;

struct Cluster {
  std::filesystem::path dir;
  std::unique_ptr<Manager> manager;
  api::Router router;
  std::unique_ptr<api::HttpServer> server;

  explicit Cluster(int guests) {
    dir = std::filesystem::temp_directory_path() / ("uw-listing-bench-" + std::to_string(::getpid()));
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
    for (int i = 0; i < kHosts; ++i) {
      HostJoin j{"host-" + std::to_string(i), "http://127.0.0.1:1", "t", 64, 1 << 20, Json::object()};
      if (!manager->JoinHost(cfg.join_token, j).ok()) std::abort();
    }
    // Guests as a create leaves them: a full spec, a placement reason, usage from heartbeats.
    Status s = manager->store().Transact([&]() -> Status {
      for (int i = 0; i < guests; ++i) {
        char name[64];
        std::snprintf(name, sizeof(name), "acme:web-frontend-%04d", i);
        Json spec = {{"name", name},
                     {"kind", "qemu"},
                     {"vcpus", 2},
                     {"memory_mib", 2048},
                     {"image", "/var/lib/underware/images/debian-12-genericcloud-amd64.qcow2"},
                     {"labels", {{"app", "web"}, {"tier", "frontend"}}},
                     {"nics", {{{"type", "user"}}}},
                     {"on_crash", "restart"}};
        UW_RETURN_IF_ERROR(manager->store().Exec(
            "INSERT INTO guests(name, tenant, host, kind, vcpus, memory_mib, spec, state, placement_reason, cpu_used, "
            "memory_used_mib, health, created_ms, updated_ms) VALUES (?, 'acme', ?, 'qemu', 2, 2048, ?, 'running', "
            "'best score 0.8123 of 20 hosts (drs: balance cpu and memory)', ?, 1234, 'ready', 1764810000000, 0)",
            {std::string(name), "host-" + std::to_string(i % kHosts), spec.dump(), 0.01 * (i % 97)}));
      }
      return Status::Ok();
    });
    if (!s.ok()) std::abort();
  }
  ~Cluster() {
    server->Stop();
    manager->Stop();
    std::filesystem::remove_all(dir);
  }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(server->port()); }
};

bool HaveWrk() { return std::system("command -v wrk >/dev/null 2>&1") == 0; }

// Requests/s of GET `url` over `seconds`; -1 on errors (non-2xx answers or a failed run).
double RequestsPerSecond(const std::string& url, const std::string& token, int seconds) {
  if (HaveWrk()) {
    std::string cmd = "wrk -t1 -c4 -d" + std::to_string(seconds) + "s " +
                      (token.empty() ? "" : "-H 'Authorization: Bearer " + token + "' ") + url + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return -1;
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    if (pclose(p) != 0 || out.find("Non-2xx") != std::string::npos) return -1;
    size_t at = out.find("Requests/sec:");
    return at == std::string::npos ? -1 : std::atof(out.c_str() + at + 13);
  }
  size_t slash = url.find('/', 7);
  api::HttpClient client({url.substr(0, slash), token, 60000, 3000});
  const std::string path = url.substr(slash);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  int64_t done = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < end) {
    auto r = client.Do("GET", path);
    if (!r.ok() || r->status != 200) return -1;
    ++done;
  }
  return done / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// `python3 -m http.server` on a free port serving `dir` (stopped with the object).
struct StaticServer {
  pid_t pid = -1;
  int port = 0;
  explicit StaticServer(const std::filesystem::path& dir) {
    for (int attempt = 0; attempt < 5 && pid < 0; ++attempt) {
      port = 20000 + static_cast<int>((::getpid() * 7 + attempt * 131) % 20000);
      pid = fork();
      if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        freopen("/dev/null", "w", stdout);
        execlp("python3", "python3", "-m", "http.server", std::to_string(port).c_str(), "--bind", "127.0.0.1",
               "--directory", dir.c_str(), static_cast<char*>(nullptr));
        _exit(127);
      }
      api::HttpClient probe({"http://127.0.0.1:" + std::to_string(port), "", 1000, 200});
      bool up = false;
      for (int i = 0; i < 100 && !up; ++i) {
        auto r = probe.Do("GET", "/body.json");
        up = r.ok() && r->status == 200;
        if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (!up) {
        Stop();
        pid = -1;
      }
    }
  }
  ~StaticServer() { Stop(); }
  void Stop() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
};

void BM_GuestsVsStatic(benchmark::State& state) {
  Cluster c(static_cast<int>(state.range(0)));
  auto body = api::HttpClient({c.Url(), kAdmin, 60000, 3000}).Do("GET", "/api/v1/guests");
  if (!body.ok() || body->status != 200) {
    state.SkipWithError("GET /api/v1/guests failed");
    return;
  }
  { std::ofstream(c.dir / "body.json", std::ios::binary) << body->body; }
  StaticServer python(c.dir);
  if (python.pid < 0) {
    state.SkipWithError("python3 -m http.server did not start");
    return;
  }
  double api = 0, files = 0, api_writes = 0;
  for (auto _ : state) {
    api = RequestsPerSecond(c.Url() + "/api/v1/guests", kAdmin, 2);
    files = RequestsPerSecond("http://127.0.0.1:" + std::to_string(python.port) + "/body.json", "", 2);
    // Again while guest rows change every 5 ms (heartbeats reporting new usage): the kept body is
    // rebuilt after each change.
    std::atomic<bool> stop{false};
    std::thread writer([&] {
      for (int i = 0; !stop; ++i) {
        char name[64];
        std::snprintf(name, sizeof(name), "acme:web-frontend-%04d", i % static_cast<int>(state.range(0)));
        if (!c.manager->store()
                 .Exec("UPDATE guests SET cpu_used = ? WHERE name = ?", {0.001 * (i % 1000), name})
                 .ok()) {
          std::abort();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    api_writes = RequestsPerSecond(c.Url() + "/api/v1/guests", kAdmin, 2);
    stop = true;
    writer.join();
  }
  if (api < 0 || files <= 0) {
    state.SkipWithError("a load run failed");
    return;
  }
  state.counters["body_bytes"] = static_cast<double>(body->body.size());
  state.counters["guests_requests_per_s"] = api;
  state.counters["static_requests_per_s"] = files;
  state.counters["ratio_to_static"] = api / files;
  state.counters["guests_requests_per_s_rows_changing"] = api_writes;
  state.counters["ratio_to_static_rows_changing"] = api_writes / files;
}
BENCHMARK(BM_GuestsVsStatic)->Arg(2000)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Hosts(benchmark::State& state) {
  Cluster c(static_cast<int>(state.range(0)));
  double rps = 0;
  for (auto _ : state) rps = RequestsPerSecond(c.Url() + "/api/v1/hosts", kAdmin, 2);
  if (rps < 0) {
    state.SkipWithError("a load run failed");
    return;
  }
  state.counters["requests_per_s"] = rps;
}
BENCHMARK(BM_Hosts)->Arg(0)->Arg(2000)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

template <typename Fn>
double MsPerCall(int calls, Fn fn) {
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / calls;
}

void BM_GuestsCore(benchmark::State& state) {
  Cluster c(static_cast<int>(state.range(0)));
  const Principal admin{"admin", Role::kAdmin, "", {}};
  size_t sink = 0;
  double tree = 0, direct = 0, rebuilt = 0;
  for (auto _ : state) {
    tree = MsPerCall(10, [&] {
      sink += PageView("guests", *c.manager->ListGuests(admin), [&](const Guest& g) { return GuestJson(g, admin); })
                  .dump()
                  .size();
    });
    direct = MsPerCall(50, [&] { sink += c.manager->ListGuestsBody(admin)->size(); });
    int i = 0;
    rebuilt = MsPerCall(50, [&] {
      if (!c.manager->store()
               .Exec("UPDATE guests SET cpu_used = ? WHERE name = 'acme:web-frontend-0001'", {0.01 * ++i})
               .ok()) {
        std::abort();
      }
      sink += c.manager->ListGuestsBody(admin)->size();
    });
  }
  benchmark::DoNotOptimize(sink);
  state.counters["json_tree_ms"] = tree;
  state.counters["kept_body_ms"] = direct;
  state.counters["direct_after_a_change_ms"] = rebuilt;
}
BENCHMARK(BM_GuestsCore)->Arg(2000)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_HostsCore(benchmark::State& state) {
  Cluster c(static_cast<int>(state.range(0)));
  constexpr const char* kCorrelated =
      "SELECT h.*, (SELECT COUNT(*) FROM guests g WHERE g.host = h.name) AS n, "
      "(SELECT COALESCE(SUM(vcpus), 0) FROM guests g WHERE g.host = h.name) AS rc, "
      "(SELECT COALESCE(SUM(memory_mib), 0) FROM guests g WHERE g.host = h.name) AS rm FROM hosts h ORDER BY h.name";
  size_t sink = 0;
  double old_ms = 0, now_ms = 0;
  for (auto _ : state) {
    old_ms = MsPerCall(50, [&] { sink += c.manager->store().Query(kCorrelated)->size(); });
    now_ms = MsPerCall(200, [&] { sink += c.manager->ListHosts()->items.size(); });
  }
  benchmark::DoNotOptimize(sink);
  state.counters["correlated_sums_ms"] = old_ms;
  state.counters["kept_totals_ms"] = now_ms;
}
BENCHMARK(BM_HostsCore)->Arg(2000)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace uw::manager

int main(int argc, char** argv) {
  // The manager runs in this process: give it uw-manager's malloc settings (manager/main.cc).
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  spdlog::set_level(spdlog::level::warn);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
