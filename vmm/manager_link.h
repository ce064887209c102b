// The agent's side of a host session with uw-manager: join the cluster with the join token, keep
// the host token it returns, and send heartbeats carrying usage (the agent's /api/v1/stats) and the
// guests it runs (/api/v1/guests) so that the manager can reconcile its records.
//
//   ManagerLink thread: join (retry with backoff) -> heartbeat every interval -> on 401/404 join again
//
// The link reads what it reports through an AgentSource (GET paths of the agent API), so the same
// code serves uw-agent (in-process dispatch on its router) and tests (HTTP to a remote agent).
// Thread safety: Start/Stop from one thread; the other methods from any thread.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "api/http.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"

namespace uw::vmm {

struct ManagerLinkOptions {
  std::string manager_url;  // "http://10.77.0.254:7800"
  std::string join_token;   // the cluster join token from the manager's config
  std::string host_name;
  std::string agent_url;             // where the manager reaches this agent
  std::string agent_token;           // the bearer token the manager must present to the agent
  int heartbeat_interval_ms = 2000;  // until the manager says otherwise on join
  int request_timeout_ms = 10000;
};

// Answers GET `path` of the agent API ("/api/v1/host", "/api/v1/stats", "/api/v1/guests").
using AgentSource = std::function<Result<Json>(std::string_view path)>;

// The heartbeat body from the agent's /api/v1/stats and /api/v1/guests answers: only the fields
// the manager reads (manager/manager.cc Heartbeat and Reconcile), so that a host with 1,024 guests
// stays well under the manager's max_body_bytes (256 KiB). The full answers took about 775 bytes
// per guest (592 guests made 459 KB, so a host with more than about 340 guests could never
// heartbeat again); this takes about 190. A field the manager starts to read must be added here.
//   {"stats": {"sampled_at", "guests": [{"name", "cpu_cores", "memory_used_mib"}]},
//    "guests": [{"name", "state", "kind", "vcpus", "max_vcpus", "memory_mib", "max_memory_mib",
//                "health", "unresponsive_since"?, "crash"?: {"at", "console_tail"}}]}
Json HeartbeatBody(const Json& stats, const Json& guests);

// An AgentSource that dispatches on an agent's router in-process, with its token.
AgentSource RouterSource(const api::Router& router, std::string agent_token);

class ManagerLink {
 public:
  ManagerLink(ManagerLinkOptions options, AgentSource source);
  ~ManagerLink();  // Stops.
  ManagerLink(const ManagerLink&) = delete;
  ManagerLink& operator=(const ManagerLink&) = delete;

  // One join: reads /api/v1/host for capacity and POSTs /api/v1/hosts/join. kUnauthenticated for
  // a wrong join token, kUnavailable when the manager is unreachable.
  Status Join();
  // One heartbeat (joins first when not joined). A 401/404 answer drops the host token so that the
  // next call joins again (the manager lost or replaced this host's session).
  Status Heartbeat();
  // Runs Join/Heartbeat on a thread until Stop.
  void Start();
  void Stop();
  bool joined() const;
  int heartbeats_sent() const;

 private:
  ManagerLinkOptions options_;
  AgentSource source_;
  api::HttpClient client_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string host_token_;  // guarded by mu_; "" until joined
  int interval_ms_;         // guarded by mu_
  int heartbeats_ = 0;      // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  std::thread thread_;
};

}  // namespace uw::vmm
