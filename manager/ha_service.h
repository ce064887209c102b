// High availability: a host that stops heartbeating is looked at a second way (its agent, its
// BMC), fenced through its power driver, and its guests are restarted on other hosts. Private to
// manager/ (Manager owns one, made by Start, with a thread of its own: BMC calls and fencing take
// seconds and must not hold up the heartbeat monitor).
//
//   monitor: no heartbeat --> host disconnected
//   HA pass (every second, when ha.enabled):
//     disconnected, agent silent, BMC on   --> isolated --(ha.isolation_s)--> Fence
//     disconnected, agent silent, BMC off  --> Fence at once (power off, confirmed)
//     Fence: off confirmed --> failed;  error --> stays isolated, host.fence_failed, tried again
//     failed --> its guests: local disk or container --> lost (they come back with the host);
//                restart_priority disabled --> guest.not_restarted; the others placed by the
//                engine (restart priority, rules, capacity) --> guest.recover task on the new
//                host, with the lease's urgent repossession record; guests it puts on a standby
//                host wait while HA powers that host on (ha.power_on), and restart once it joined
//   no power driver, or a BMC that does not answer --> nothing restarts; host.fence_failed says why
//
// With the catalogue on Ceph, the hosts' storage heartbeats (storage/heartbeat.h, written by each
// agent in the pool) are read every pass and change these steps:
//   BMC on,  storage heartbeat stopped --> fenced at once (down on both paths)
//   BMC on,  storage heartbeat live    --> isolated (it runs, cut off from the manager)
//   BMC off, storage heartbeat live    --> isolated, not fenced at once (the BMC is not this host's)
//   isolated, storage heartbeat stops  --> fenced without waiting for ha.isolation_s
//   failed: restarts wait until the storage heartbeat is no longer live; one that changed after
//           the fence was confirmed means the host still runs --> host.fence_suspect, isolated
//           again, nothing restarts (a power driver that reaches another host's BMC)
//
// A guest is never restarted while its host may still run it: only a host whose BMC confirmed it
// off (phase failed) has its guests restarted. A host that heartbeats again before it is fenced is
// on again (PowerService::Heard) and keeps its guests.
//
// Thread safety: every method may be called from any thread; passes are serialized.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "manager/agent_client.h"
#include "manager/manager.h"
#include "manager/store.h"
#include "placement/placement.h"
#include "storage/heartbeat.h"

namespace uw::manager::internal {

class EventLog;
class GuestTable;
class LeaseService;
class PowerService;
class TaskJournal;

// Whether a guest can run on another host from what its spec names: not a container (its root is
// the host's), and no writable disk (those are local files on its host until storage/ has shared
// volumes). Read-only disks, kernels and images are found on every host.
bool CanRunElsewhere(std::string_view kind, const Json& spec);

class HaService {
 public:
  struct Deps {
    Store& store;
    EventLog& events;
    GuestTable& guests;
    TaskJournal& tasks;
    LeaseService& leases;
    PowerService& power;
    Clock& clock;
    const ManagerConfig& config;  // heartbeat_interval_ms (the pass interval)
    std::function<std::shared_ptr<AgentClient>(const std::string& host)> agent_of;
    std::function<Result<DrsConfig>()> drs_config;            // ha settings, the placement policy
    std::mutex& placement_mu;                                 // held while restarts are placed
    std::function<Result<placement::Snapshot>()> snapshot;    // Manager::BuildSnapshot
    std::function<void(const std::string& task_id)> enqueue;  // a journalled guest.recover task
  };
  explicit HaService(Deps deps) : d_(std::move(deps)) {}
  ~HaService() { Stop(); }
  HaService(const HaService&) = delete;
  HaService& operator=(const HaService&) = delete;

  void Start();
  void Stop();  // idempotent
  void Wake();  // a pass now (a host was just disconnected)
  // One pass over the hosts that stopped heartbeating (see the diagram). Errors of one host are
  // logged and do not stop the others; the returned status is the store's.
  Status Pass();

 private:
  struct Silent {
    std::string name;
    int64_t last_heartbeat_ms = 0;
    std::string phase;  // "" when the host has no power driver
    int64_t phase_since_ms = 0;
  };
  Status Detect(const Silent& h, const DrsConfig& cfg);
  Status FenceNow(const std::string& host, const std::string& why, const DrsConfig& cfg);
  // The guests of `host`, failed (fenced) since `failed_since_ms`, restarted elsewhere.
  Status Restart(const std::string& host, int64_t failed_since_ms, const DrsConfig& cfg);
  // Puts the guests of `host` that HA restarts in `todo`; marks the others lost or not restarted.
  Status Sort(const std::string& host, int64_t failed_since_ms, std::vector<Guest>& todo);
  Status Rehome(const Guest& g, const std::string& from, const placement::PlacementStep& step);
  // Powers on standby host a.host, which the engine chose for guests of `failed` (ha.power_on).
  Status PowerOnFor(const placement::PowerAction& a, const std::string& failed);
  // An alert event once per (host or guest, what): the pass runs every second.
  Status Once(const std::string& subject, const std::string& tenant, const std::string& type, const Json& data);
  void Loop();
  int64_t NowMs() const;
  // Storage heartbeats: read every pass when the catalogue is on Ceph (connecting as needed).
  void ReadStorageBeats();
  storage::BeatState BeatOf(const std::string& host) const;
  std::string BeatNote(const std::string& host) const;  // ", its storage heartbeat ..." or ""
  // Whether the guests of fenced `host` may be restarted now (see the diagram); a host found still
  // running is isolated again.
  Result<bool> FenceHeld(const std::string& host);

  Deps d_;
  std::mutex pass_mu_;                                 // one pass at a time
  std::map<std::string, std::string> alerted_;         // subject -> the last alert's type and reason
  std::map<std::string, int64_t> next_try_ms_;         // host -> when its fence is tried again
  std::map<std::string, int64_t> backoff_ms_;          // host -> its current fence backoff
  std::unique_ptr<storage::StorageHeartbeats> beats_;  // null: not on Ceph, or not connected yet
  int64_t beats_retry_ms_ = 0;                         // when to connect again
  std::string beats_error_;                            // the last error reading them (logged once)
  std::optional<storage::HeartbeatWatch> watch_;       // set once storage heartbeats are read
  std::map<std::string, std::string> fenced_beat_;     // fenced host -> its storage heartbeat then
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  bool woken_ = false;     // guarded by mu_
  std::thread thread_;
};

}  // namespace uw::manager::internal
