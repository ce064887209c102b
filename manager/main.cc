// uw-manager: the cluster manager. Usage: uw-manager --config /etc/underware/manager.json
// SIGTERM or SIGINT stops it; it is crash-only, so kill -9 is also safe (tasks resume on start).
#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "api/http.h"
#include "common/log.h"
#include "manager/http_api.h"
#include "manager/manager.h"

namespace {

int Main(int argc, char** argv) {
  // glibc hands freed memory back to the kernel whenever an arena's top passes 128 KiB (and
  // mmaps every block over 128 KiB): under 1,000 heartbeats/s that was 30% of uw-manager's CPU in
  // madvise, the TLB shootdowns it sends to every core, and the page faults after it. Keep up to
  // 64 MiB free per arena and serve blocks up to 4 MiB (a listing's body) from the heap.
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  std::string config_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--help" || a == "-h") {
      std::printf("usage: uw-manager --config FILE\n");
      return 0;
    } else {
      std::fprintf(stderr, "uw-manager: unknown argument '%s'\nusage: uw-manager --config FILE\n", a.c_str());
      return 2;
    }
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "usage: uw-manager --config FILE\n");
    return 2;
  }
  auto config = uw::manager::LoadManagerConfig(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "uw-manager: %s\n", config.status().ToString().c_str());
    return 2;
  }
  if (auto s = uw::InitLogging("uw-manager", config->log_level, config->log_file); !s.ok()) {
    std::fprintf(stderr, "uw-manager: %s\n", s.ToString().c_str());
    return 2;
  }
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  uw::manager::Manager manager(*config);
  if (auto s = manager.Start(); !s.ok()) {
    spdlog::error("cannot start: {}", s.ToString());
    return 1;
  }
  uw::api::Router router;
  uw::manager::BuildRoutes(manager, router);
  uw::api::ServerOptions opts;
  opts.address = config->listen_address;
  opts.port = config->listen_port;
  opts.max_body_bytes = config->max_body_bytes;
  opts.worker_threads = config->http_workers;
  opts.max_connections = config->max_connections;
  opts.max_connections_per_client = config->max_connections_per_client;
  opts.header_timeout_ms = config->header_timeout_ms;
  opts.body_timeout_ms = config->body_timeout_ms;
  uw::api::HttpServer server(opts, &router);
  if (auto s = server.Start(); !s.ok()) {
    spdlog::error("cannot serve: {}", s.ToString());
    manager.Stop();
    return 1;
  }
  spdlog::info("uw-manager serving on {}:{} (state {})", config->listen_address, server.port(), config->db_path);
  // Tests and scripts read the port from here when they asked for port 0.
  std::printf("listening on %s:%d\n", config->listen_address.c_str(), server.port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("received {}; stopping", strsignal(sig));
  server.Stop();
  manager.Stop();
  return 0;
}

}  // namespace

// Anything thrown past Main (allocation failure, a library's exception) is reported, not a crash
// with an unexplained abort.
int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", "uw-manager", e.what());
    return 1;
  }
}
