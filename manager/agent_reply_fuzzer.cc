// libFuzzer target for what agents send the manager (issue 12): an agent's HTTP answer as
// api::HttpClient::Call reads it, its join body (ParseHostJoin) and its heartbeat (the host's
// stats and guest list, which Manager::Heartbeat reconciles against the store). Build with
// -DUW_FUZZ=ON and clang; docs/fuzzing.md.
//
// Input layout: byte 0 picks the HTTP status of the answer, the rest is the body. One Manager over
// a SQLite file in a temporary directory serves every input; before each, the host "h1" reports a
// fixed set of guests (running, paused, crashed, shut off) so that the fuzzed heartbeat changes
// known guests as well as finding new ones. Invariants checked (a failure aborts):
//   - nothing throws across a component's API (errors are Status values); a heartbeat that throws
//     is reported after the health check below, which shows what the exception left behind;
//   - a non-2xx answer is an error, a 2xx answer that is not JSON is kInvalidArgument from the
//     parser (HttpClient::Call turns it into kInternal);
//   - join and heartbeat bodies are accepted or refused with kInvalidArgument;
//   - whatever a heartbeat carried, the manager still works afterwards: a plain heartbeat
//     succeeds and the host reads back connected.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "api/http.h"
#include "common/json.h"
#include "manager/manager.h"

namespace {

using uw::Json;
using uw::StatusCode;

#define FUZZ_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      __builtin_fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

constexpr int kStatuses[] = {200, 201, 202, 204, 400, 401, 404, 409, 500, 502, 503};
constexpr const char* kJoinToken = "join-token-0123456789";

// The heartbeat every input starts from: guests the manager then knows on h1.
const char kBaseline[] = R"({"stats": {"guests": [{"name": "g-run", "cpu_cores": 0.5, "memory_used_mib": 100}]},
  "guests": [{"name": "g-run", "state": "running", "kind": "qemu", "vcpus": 1, "memory_mib": 128},
             {"name": "g-paused", "state": "paused", "kind": "qemu", "vcpus": 2, "memory_mib": 256},
             {"name": "g-crashed", "state": "crashed", "kind": "kvm", "vcpus": 1, "memory_mib": 64},
             {"name": "g-off", "state": "shutoff", "kind": "lxc", "vcpus": 1, "memory_mib": 32}]})";

struct Cluster {
  std::filesystem::path dir;
  std::unique_ptr<uw::manager::Manager> manager;
  std::string host_token;
};

Cluster* TheCluster() {
  static Cluster* cluster = [] {
    auto* c = new Cluster;
    c->dir = std::filesystem::temp_directory_path() / ("uw-agent-reply-fuzzer-" + std::to_string(::getpid()));
    std::filesystem::remove_all(c->dir);
    std::filesystem::create_directories(c->dir);
    uw::manager::ManagerConfig config;
    config.db_path = (c->dir / "state.db").string();
    config.join_token = kJoinToken;
    config.admin_token = "admin-token-0123456789";
    config.drs_interval_ms = 0;
    config.heartbeat_timeout_ms = 3600 * 1000;
    config.task_workers = 1;
    config.agent_timeout_ms = 200;
    c->manager = std::make_unique<uw::manager::Manager>(config);
    FUZZ_CHECK(c->manager->Start().ok());
    // Port 9 (discard) refuses: tasks the heartbeat starts (crash restarts) fail at once.
    auto join = uw::manager::ParseHostJoin(Json::parse(
        R"({"name": "h1", "agent_url": "http://127.0.0.1:9", "agent_token": "agent-token",
            "capacity": {"cpu_cores": 8, "memory_mib": 16384}})"));
    FUZZ_CHECK(join.ok());
    auto joined = c->manager->JoinHost(kJoinToken, *join);
    FUZZ_CHECK(joined.ok());
    c->host_token = joined->host_token;
    std::atexit([] { std::filesystem::remove_all(TheCluster()->dir); });
    return c;
  }();
  return cluster;
}

void CheckHeartbeat(Cluster& c, const Json& body) {
  // Start from the same known guests every time (inputs must not depend on earlier ones).
  FUZZ_CHECK(c.manager->store().Exec("DELETE FROM guests").ok());
  FUZZ_CHECK(c.manager->Heartbeat("h1", c.host_token, Json::parse(kBaseline)).ok());
  // The router turns an exception into a 500, so the manager lives on: check what state it is in
  // before failing for the exception itself.
  const char* thrown = nullptr;
  std::string what;
  try {
    auto beat = c.manager->Heartbeat("h1", c.host_token, body);
    if (!beat.ok()) FUZZ_CHECK(beat.status().code() == StatusCode::kInvalidArgument);
  } catch (const std::exception& e) {
    what = e.what();
    thrown = what.c_str();
    __builtin_fprintf(stderr, "Manager::Heartbeat threw: %s\n", thrown);
  }
  // Still healthy: the next ordinary heartbeat goes through.
  const Json plain = {{"stats", {{"guests", Json::array()}}}, {"guests", Json::array()}};
  auto after = c.manager->Heartbeat("h1", c.host_token, plain);
  if (!after.ok()) __builtin_fprintf(stderr, "%s\n", after.status().ToString().c_str());
  FUZZ_CHECK(after.ok());
  auto host = c.manager->GetHost("h1");
  FUZZ_CHECK(host.ok());
  FUZZ_CHECK(host->host.state == "connected");
  FUZZ_CHECK(thrown == nullptr);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  TheCluster();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int status = kStatuses[data[0] % std::size(kStatuses)];
  std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);

  // The client's reading of the answer (HttpClient::Call after the transfer).
  if (status < 200 || status >= 300) {
    FUZZ_CHECK(!uw::api::StatusFromHttp(status, body).ok());
    return 0;
  }
  auto json = uw::ParseJson(body, "POST /api/v1/hosts/h1/heartbeat: request body");
  if (!json.ok()) {
    FUZZ_CHECK(json.status().code() == StatusCode::kInvalidArgument);
    return 0;
  }
  auto join = uw::manager::ParseHostJoin(*json);
  if (!join.ok()) FUZZ_CHECK(join.status().code() == StatusCode::kInvalidArgument);
  CheckHeartbeat(*TheCluster(), *json);
  return 0;
}
