// 1,000 hosts heartbeating every second into one real uw-manager (issue 12, "heartbeats that
// scale"). Starts the uw-manager binary on a temp dir, joins the hosts through the REST API, then
// sends each host's heartbeat (10 running guests, in the form uw-agent sends: vmm::HeartbeatBody)
// once a second, spread evenly over the second, each host on its own keep-alive connection.
//   BM_Hosts/hosts/guests/seconds   after 5 s of warm-up (the first beats record the guests):
//     manager_cpu_percent   uw-manager's user+system CPU over the measured window (/proc/PID/stat),
//                           in % of one core
//     heartbeats_per_s, latency_p50_ms / p99_ms / max_ms, errors, late_beats (sent > 1 s late)
//     hosts_connected       at the end (GET /api/v1/hosts)
// The binary is $UW_MANAGER, else $UW_BINARY_DIR/manager/uw-manager, else ./manager/uw-manager.
// The simulator shares the machine with the manager: its own CPU is reported too (sim_cpu_percent).
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "common/json.h"

namespace uw {
namespace {

constexpr const char* kAdmin = "sim-admin-token-0123456789";
constexpr const char* kJoin = "sim-join-token-0123456789";
constexpr int kSenders = 32;
constexpr int kWarmUpSeconds = 5;

std::string ManagerBinary() {
  if (const char* p = std::getenv("UW_MANAGER")) return p;
  if (const char* b = std::getenv("UW_BINARY_DIR")) return std::string(b) + "/manager/uw-manager";
  return "./manager/uw-manager";
}

// utime + stime of `pid` in seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t close = all.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(all.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; rest >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::atof(field.c_str());
    if (i == 15) {
      stime = std::atof(field.c_str());
      break;
    }
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

struct ManagerProcess {
  pid_t pid = -1;
  int port = 0;
  std::filesystem::path dir;

  bool Start() {
    dir = std::filesystem::temp_directory_path() / ("uw-heartbeat-sim-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    Json cfg = {{"db_path", (dir / "state.db").string()},
                {"listen", {{"address", "127.0.0.1"}, {"port", 0}}},
                {"join_token", kJoin},
                {"admin_token", kAdmin},
                {"heartbeat_interval_ms", 1000},
                {"heartbeat_timeout_ms", 10000},
                {"max_connections_per_client", 4096},  // every host connects from 127.0.0.1 here
                {"log_level", "warn"},
                {"log_file", (dir / "manager.log").string()}};
    std::ofstream(dir / "manager.json") << cfg.dump();
    int out[2];
    if (pipe(out) != 0) return false;
    pid = fork();
    if (pid == 0) {
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      const std::string bin = ManagerBinary();
      const std::string conf = (dir / "manager.json").string();
      execl(bin.c_str(), bin.c_str(), "--config", conf.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    FILE* f = fdopen(out[0], "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
      if (std::sscanf(line, "listening on 127.0.0.1:%d", &port) == 1) break;
    }
    // The pipe stays open (and unread) after this: the manager writes nothing more to stdout.
    return port > 0;
  }
  void Stop() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
    std::filesystem::remove_all(dir);
  }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(port); }
};

// The heartbeat of `host` with `guests` running guests on beat `beat` (usage moves a little).
std::string HeartbeatBody(int host, int guests, int beat) {
  Json usage = Json::array(), list = Json::array();
  for (int g = 0; g < guests; ++g) {
    const std::string name = "h" + std::to_string(host) + "-g" + std::to_string(g);
    usage.push_back({{"name", name}, {"cpu_cores", 0.05 * g + 0.001 * (beat % 7)}, {"memory_used_mib", 900 + g}});
    list.push_back({{"name", name},
                    {"state", "running"},
                    {"kind", "qemu"},
                    {"vcpus", 2},
                    {"max_vcpus", 2},
                    {"memory_mib", 2048},
                    {"max_memory_mib", 2048},
                    {"health", "ready"}});
  }
  Json body = {{"stats", {{"sampled_at", "2026-12-04T01:00:00.000Z"}, {"guests", usage}}}, {"guests", list}};
  return body.dump();
}

void BM_Hosts(benchmark::State& state) {
  const int hosts = static_cast<int>(state.range(0));
  const int guests = static_cast<int>(state.range(1));
  const int seconds = static_cast<int>(state.range(2));
  ManagerProcess m;
  if (!m.Start()) {
    m.Stop();
    state.SkipWithError(("cannot start " + ManagerBinary()).c_str());
    return;
  }
  // Join every host; each keeps its host token and its own connection.
  std::vector<std::unique_ptr<api::HttpClient>> clients;
  api::HttpClient joiner({m.Url(), kJoin, 10000, 3000});
  for (int i = 0; i < hosts; ++i) {
    Json join = {{"name", "h" + std::to_string(i)},
                 {"agent_url", "http://127.0.0.1:1"},
                 {"agent_token", "t"},
                 {"capacity", {{"cpu_cores", 64}, {"memory_mib", 262144}}}};
    auto r = joiner.Call("POST", "/api/v1/hosts/join", &join);
    if (!r.ok()) {
      m.Stop();
      state.SkipWithError(("join failed: " + r.status().ToString()).c_str());
      return;
    }
    clients.push_back(std::make_unique<api::HttpClient>(
        api::ClientOptions{m.Url(), (*r)["host_token"].get<std::string>(), 10000, 3000}));
  }

  std::mutex mu;
  std::vector<double> latencies;  // guarded by mu: measured window only
  std::atomic<int64_t> errors{0}, late{0}, sent{0};
  double cpu0 = 0, sim0 = 0;
  const auto start = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  const auto measure_from = start + std::chrono::seconds(kWarmUpSeconds);
  const auto end = start + std::chrono::seconds(seconds);
  for (auto _ : state) {
    std::vector<std::thread> senders;
    for (int t = 0; t < kSenders; ++t) {
      senders.emplace_back([&, t] {
        std::vector<double> mine;
        for (int beat = 0;; ++beat) {
          for (int i = t; i < hosts; i += kSenders) {
            const auto due = start + std::chrono::seconds(beat) + std::chrono::microseconds(1'000'000LL * i / hosts);
            if (due >= end) {
              std::lock_guard l(mu);
              latencies.insert(latencies.end(), mine.begin(), mine.end());
              return;
            }
            auto now = std::chrono::steady_clock::now();
            if (now < due) {
              std::this_thread::sleep_until(due);
            } else if (now - due > std::chrono::seconds(1)) {
              ++late;
            }
            const std::string body = HeartbeatBody(i, guests, beat);
            auto t0 = std::chrono::steady_clock::now();
            auto r =
                clients[static_cast<size_t>(i)]->Do("POST", "/api/v1/hosts/h" + std::to_string(i) + "/heartbeat", body);
            auto t1 = std::chrono::steady_clock::now();
            if (!r.ok() || r->status != 200) ++errors;
            if (t0 >= measure_from) {
              mine.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
              ++sent;
            }
          }
        }
      });
    }
    std::this_thread::sleep_until(measure_from);
    cpu0 = CpuSeconds(m.pid);
    sim0 = SelfCpuSeconds();
    for (auto& s : senders) s.join();
  }
  const double window = std::chrono::duration<double>(std::chrono::steady_clock::now() - measure_from).count();
  const double cpu = CpuSeconds(m.pid) - cpu0;
  const double sim = SelfCpuSeconds() - sim0;
  auto listed = api::HttpClient({m.Url(), kAdmin, 30000, 3000}).Call("GET", "/api/v1/hosts");
  int connected = 0;
  if (listed.ok()) {
    for (const auto& h : (*listed)["hosts"]) connected += h["state"] == "connected";
  }
  m.Stop();
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) {
    return latencies.empty() ? -1.0
                             : latencies[std::min(latencies.size() - 1, static_cast<size_t>(p * latencies.size()))];
  };
  state.counters["manager_cpu_percent"] = 100.0 * cpu / window;
  state.counters["sim_cpu_percent"] = 100.0 * sim / window;
  state.counters["heartbeats_per_s"] = static_cast<double>(sent.load()) / window;
  state.counters["latency_p50_ms"] = pct(0.5);
  state.counters["latency_p99_ms"] = pct(0.99);
  state.counters["latency_max_ms"] = latencies.empty() ? -1 : latencies.back();
  state.counters["errors"] = static_cast<double>(errors.load());
  state.counters["late_beats"] = static_cast<double>(late.load());
  state.counters["hosts_connected"] = connected;
}
BENCHMARK(BM_Hosts)->Args({1000, 10, 30})->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace uw

BENCHMARK_MAIN();
