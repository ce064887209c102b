// Host sessions: a host joins with the cluster's join token and gets a host token; its agent then
// heartbeats with its usage and its guests, which are reconciled with the store (lost, found,
// changed, unresponsive, crashed and duplicate guests; a crash's on_crash policy; the shut-off copy
// a move left on a source whose agent was down); a host whose heartbeats stop is disconnected.
// Private to manager/ (Manager owns one, made by Start, and its join, heartbeat and deadline calls
// are this class's).
//
//   agent --join--> Join --> hosts row + host token
//   agent --heartbeat--> Heartbeat --> Reconcile (one transaction) --> crash policies, leftovers
//   monitor loop --> CheckHeartbeats --> overdue hosts disconnected
//
// Guests with a task in flight, or whose task ended within two heartbeat intervals, are the task's
// business: reconcile leaves them alone.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "manager/agent_client.h"
#include "manager/manager.h"
#include "manager/store.h"

namespace uw::manager::internal {

class EventLog;
class GuestTable;
class HostTable;
class TaskJournal;
struct KnownGuest;

class HostSessions {
 public:
  struct Deps {
    Store& store;
    EventLog& events;
    HostTable& hosts;
    GuestTable& guests;
    TaskJournal& tasks;
    Clock& clock;
    const ManagerConfig& config;  // join token, heartbeat interval and timeout
    // The client of a host's agent (Manager::AgentOf).
    std::function<std::shared_ptr<AgentClient>(const std::string& host)> agent_of;
    // Journals a task and hands it to the workers (Manager::NewTask): a crash policy's restart or stop.
    std::function<Result<Task>(std::string_view kind, std::string_view subject, std::string_view tenant,
                               const Json& request)>
        new_task;
    // Inside the reconcile's transaction: a lease for a guest found on a host (LeaseService::Reopen).
    std::function<Status(std::string_view guest, int64_t now_ms, std::string_view why)> open_lease;
    // A guest asked to be told what it holds, at `asked_at_ms` (LeaseService::Asked).
    std::function<void(std::string_view guest, int64_t asked_at_ms)> asked;
    // Inside the transaction of a join (`joined`) or of a heartbeat after a silence
    // (PowerService::Heard: a waking host is on again).
    std::function<Status(std::string_view host, bool joined)> power_heard;
  };
  explicit HostSessions(Deps deps) : d_(std::move(deps)) {}

  // See Manager::JoinHost.
  Result<HostJoined> Join(std::string_view join_token, const HostJoin& join);
  // See Manager::Heartbeat.
  Result<HeartbeatAck> Heartbeat(std::string_view name, std::string_view host_token, const Json& body);
  // Marks hosts whose last heartbeat is older than heartbeat_timeout_ms disconnected.
  void CheckHeartbeats();

 private:
  struct CrashedGuest {
    std::string name, host, tenant, on_crash;
  };
  void Reconcile(const std::string& host, const Json& reported);
  // The guest.recover task that restarted `guest` elsewhere after `host` failed (HA), if any.
  Result<std::optional<std::string>> RecoveredFrom(const std::string& guest, const std::string& host);
  // A known guest as its host reports it now: health, state, and what a change of state sets off
  // (events; a crash is recorded and its policy queued in `crashed`). Inside Reconcile's transaction.
  Status UpdateReportedGuest(const std::string& host, const KnownGuest& r, const Json& g, int64_t now,
                             std::vector<CrashedGuest>& crashed);
  Status HandleCrash(const CrashedGuest& c);
  // A guest known on `known_on` is reported by `host` too: the guest's alert (once per host, with
  // one guest.duplicate event). Inside Reconcile's transaction.
  Status RaiseDuplicate(const std::string& guest, const std::string& host, const std::string& known_on);
  // Duplicates `host` no longer reports: off the alert; the alert clears (guest.duplicate_cleared)
  // when no second copy is left. Inside Reconcile's transaction.
  Status ClearDuplicates(const std::string& host, const Json& reported);
  int64_t NowMs() const;

  Deps d_;
};

}  // namespace uw::manager::internal
