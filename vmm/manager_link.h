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
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
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
  // Where the numbered samples are kept until the manager stored them (SampleBook::Open); empty:
  // in memory only.
  std::string samples_path;
};

// Answers GET `path` of the agent API ("/api/v1/host", "/api/v1/stats", "/api/v1/guests").
using AgentSource = std::function<Result<Json>(std::string_view path)>;

// The heartbeat body from the agent's /api/v1/stats and /api/v1/guests answers: only the fields
// the manager reads (manager/manager.cc Heartbeat and Reconcile), so that a host with 1,024 guests
// stays well under the manager's max_body_bytes (256 KiB). The full answers took about 775 bytes
// per guest (592 guests made 459 KB, so a host with more than about 340 guests could never
// heartbeat again); this takes about 190. A field the manager starts to read must be added here.
//   {"stats": {"sampled_at", "guests": [{"name", "cpu_cores", "memory_used_mib"}]}  (or "samples"),
//    "guests": [{"name", "state", "kind", "vcpus", "max_vcpus", "memory_mib", "max_memory_mib",
//                "health", "unresponsive_since"?, "crash"?: {"at", "console_tail"}}]}
// With `samples` (an array from SampleBook::Pending), stats carries those numbered samples instead
// of stats.guests: {"stats": {"sampled_at", "samples": [...]}, "guests": [...]}.
Json HeartbeatBody(const Json& stats, const Json& guests, const Json& samples = Json());

// The agent's usage samples, numbered, kept until the manager says it stored them, so that
// metering (issue 18) loses nothing while the manager is down or a heartbeat fails, and counts
// nothing twice (the manager keeps one sample per host, guest and sampled_at). Each sample is
//   {"seq", "sampled_at", "guests": [{"name", "cpu_cores", "memory_used_mib",
//                                     "cpu_us", "net_bytes", "disk_bytes"}]}
// where cpu_us, net_bytes (NICs in and out) and disk_bytes (reads and writes) are what libvirt's
// counters counted since the guest's previous numbered sample: 0 in a guest's first (after its
// start, its arrival on the host or the agent's restart), and a counter that went back (the guest
// restarted) counts from 0. Not thread-safe: ManagerLink guards it.
//
// Opened on a file, the book also keeps its pending samples there: an append-only log of a line
// per sample and {"ack": N} lines, rewritten when mostly acknowledged. An agent killed (-9) and
// started again delivers what it had taken and not delivered, and numbers on from there. Its
// counters are not kept: each guest's next sample is a baseline, and the manager records the time
// the agent was down as a gap.
class SampleBook {
 public:
  SampleBook() = default;
  ~SampleBook();
  SampleBook(const SampleBook&) = delete;
  SampleBook& operator=(const SampleBook&) = delete;
  // Loads the samples `path` kept (if it exists) and keeps them there from now on. An unreadable
  // line ends the log (a write the agent did not finish); an error says which file and why.
  Status Open(const std::string& path);
  // 15 minutes at the agent's 1 s sampling, or 64 MiB of samples (7 minutes of a host with 1,024
  // guests); then the oldest go.
  static constexpr size_t kMaxPending = 900;
  static constexpr size_t kMaxPendingBytes = size_t{64} << 20;
  // Numbers the agent's /api/v1/stats answer as a new sample unless it is the one seen last.
  void Add(const Json& stats);
  // The oldest pending samples, as many as fit `budget` bytes of JSON (at least one). With none
  // pending, the newest sample again: the manager keeps it once, and reads the host's usage from it.
  Json Pending(size_t budget) const;
  // Drops the samples numbered up to `seq`.
  void Ack(int64_t seq);
  size_t size() const { return pending_.size(); }
  int64_t dropped() const { return dropped_; }

 private:
  struct Counters {
    uint64_t cpu_ns = 0, net = 0, disk = 0;
  };
  struct Sample {
    int64_t seq = 0;
    std::string json;  // kept as text: a parsed sample of 1,024 guests takes about 5 times more
  };
  std::map<std::string, Counters> last_;  // by guest name, as of its last numbered sample
  std::deque<Sample> pending_;
  size_t pending_bytes_ = 0;
  std::string newest_;  // the newest sample, pending or not
  int64_t next_seq_ = 1;
  int64_t dropped_ = 0;
  std::string last_sampled_at_;
  void DropOverflow();  // the oldest go while over kMaxPending or kMaxPendingBytes
  void Log(const std::string& line);
  void Compact();  // the log rewritten as the pending samples alone
  // Most of the log is samples acknowledged or dropped: worth rewriting.
  bool LogMostlyDone() const { return log_bytes_ > 2 * pending_bytes_ + (size_t{1} << 20); }
  std::string path_;
  std::FILE* log_ = nullptr;
  size_t log_bytes_ = 0;
};

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
  SampleBook samples_;      // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  std::thread thread_;
};

}  // namespace uw::vmm
