// Open event streams against /healthz (issue 12, "event streams freeze the manager": with a thread
// per stream, 16 open streams blocked every route). The manager and its HTTP server (2 workers) run
// in this process; streams are raw sockets (no thread each on this side either).
//   BM_OpenStreams/N   N open GET /api/v1/events streams: /healthz latency (p50, p99, max over 200
//                      requests on new connections), the time one event takes to reach all N, and
//                      the process's resident memory per stream (client sockets hold no user memory)
// The soft descriptor limit is raised to the hard one first (each stream takes two descriptors
// here, one in uw-manager). Results as JSON with --benchmark_format=json.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "manager/http_api.h"
#include "manager/manager.h"

namespace uw::manager {
namespace {

constexpr const char* kAdmin = "bench-admin-token-0123456789";

int64_t RssKib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

int OpenStream(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string req =
      std::string("GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ") + kAdmin + "\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads from every stream until each has shown `needle` or `timeout` passed; returns how many did.
size_t AwaitAll(const std::vector<int>& fds, const std::string& needle, std::chrono::milliseconds timeout) {
  std::vector<std::string> got(fds.size());
  std::vector<bool> done(fds.size(), false);
  size_t n_done = 0;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<pollfd> pfds(fds.size());
  while (n_done < fds.size() && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < fds.size(); ++i) pfds[i] = {done[i] ? -1 : fds[i], POLLIN, 0};
    if (::poll(pfds.data(), pfds.size(), 50) <= 0) continue;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(pfds[i].revents & POLLIN)) continue;
      char buf[8192];
      ssize_t r = ::recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
      if (r <= 0) continue;
      got[i].append(buf, static_cast<size_t>(r));
      if (got[i].find(needle) != std::string::npos) {
        done[i] = true;
        ++n_done;
        got[i].clear();
      } else if (got[i].size() > 1 << 16) {
        got[i].erase(0, got[i].size() - needle.size());
      }
    }
  }
  return n_done;
}

void BM_OpenStreams(benchmark::State& state) {
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  nofile.rlim_cur = nofile.rlim_max;
  setrlimit(RLIMIT_NOFILE, &nofile);
  const int n = static_cast<int>(state.range(0));
  if (static_cast<rlim_t>(2 * n + 100) > nofile.rlim_cur) {
    state.SkipWithError(("descriptor limit " + std::to_string(nofile.rlim_cur) + " is too low").c_str());
    return;
  }
  auto dir = std::filesystem::temp_directory_path() / ("uw-events-bench-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  ManagerConfig cfg;
  cfg.db_path = (dir / "state.db").string();
  cfg.join_token = "bench-join-token-0123456789";
  cfg.admin_token = kAdmin;
  cfg.drs_interval_ms = 0;
  cfg.http_workers = 2;
  Manager manager(cfg);
  if (!manager.Start().ok()) std::abort();
  api::Router router;
  BuildRoutes(manager, router);
  api::ServerOptions opts;
  opts.worker_threads = cfg.http_workers;
  opts.max_connections = 20000;  // every stream comes from 127.0.0.1 here
  opts.max_connections_per_client = 20000;
  api::HttpServer server(opts, &router);
  if (!server.Start().ok()) std::abort();
  api::HttpClient warm({"http://127.0.0.1:" + std::to_string(server.port()), "", 5000, 3000});
  (void)warm.Do("GET", "/healthz");
  const int64_t rss_before = RssKib();

  std::vector<int> fds;
  fds.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    int fd = OpenStream(server.port());
    if (fd < 0) break;
    fds.push_back(fd);
  }
  for (int i = 0; i < 1000 && manager.event_subscribers() < fds.size(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const size_t subscribed = manager.event_subscribers();
  // Each stream has its backlog (manager.started) by now; drain it.
  AwaitAll(fds, "event: manager.started", std::chrono::seconds(30));
  const int64_t rss_open = RssKib();

  std::vector<double> ms;
  for (auto _ : state) {
    ms.clear();
    for (int i = 0; i < 200; ++i) {
      api::HttpClient c({"http://127.0.0.1:" + std::to_string(server.port()), "", 5000, 3000});
      auto t0 = std::chrono::steady_clock::now();
      auto r = c.Do("GET", "/healthz");
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      if (!r.ok() || r->status != 200) ms.back() = 1e9;
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  if (!manager.AddEvent("bench.ping", "bench", "", Json::object()).ok()) std::abort();
  const size_t reached = AwaitAll(fds, "event: bench.ping", std::chrono::seconds(30));
  const double fanout_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  std::sort(ms.begin(), ms.end());
  state.counters["streams"] = static_cast<double>(subscribed);
  state.counters["healthz_p50_ms"] = ms[ms.size() / 2];
  state.counters["healthz_p99_ms"] = ms[ms.size() * 99 / 100];
  state.counters["healthz_max_ms"] = ms.back();
  state.counters["event_reached"] = static_cast<double>(reached);
  state.counters["event_to_all_ms"] = fanout_ms;
  state.counters["rss_kib_per_stream"] = subscribed ? static_cast<double>(rss_open - rss_before) / subscribed : 0;
  for (int fd : fds) ::close(fd);
  server.Stop();
  manager.Stop();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_OpenStreams)
    ->Arg(1000)
    ->Arg(2000)
    ->Arg(4000)
    ->Arg(8000)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace uw::manager

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
