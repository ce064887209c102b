// The lease service: the exokernel interface's side of the manager. It keeps every guest's grant
// as a lease (lease/lease.h) with a term, renews or ends it at the term end by its class, sends
// the guest a notice before anything is taken from it, delivers the notice through the guest's
// control channel (its daemon's hook answers), weighs counter-offers with the broker policy, acts
// at the answer or the deadline through a journalled guest task, and writes the repossession
// record. Private to manager/ (Manager owns one, made by Start; its lease calls are this class's).
//
//   guest create --Open (nascent)--> RunCreate --Activate--> active --resize--> Regrant
//   POST /leases/{id}/extend --> renewal (now, or pending until the term end: shrinks first)
//   POST /leases/{id}/reclaim, term end --> notice --Tick: deliver--> agent Exec "uw-notice ..."
//        --> guest hook answers ack | release | counter --> broker --> act at ActAt:
//        { notice acted + repossession + lease regranted/closed + guest.resize/stop task } --> worker
//
// Everything is in the store: a restarted manager's first tick carries on from where the last one
// stopped (a notice acted on is never acted on again: the act and its task are one transaction).
//
// Thread safety: every method may be called from any thread; ticks are serialized.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/clock.h"
#include "common/status.h"
#include "lease/lease.h"
#include "manager/agent_client.h"
#include "manager/lease_table.h"
#include "manager/manager.h"
#include "manager/store.h"

namespace uw::manager::internal {

class EventLog;
class GuestTable;
class TaskJournal;

class LeaseService {
 public:
  struct Deps {
    Store& store;
    EventLog& events;
    TaskJournal& tasks;
    GuestTable& guests;
    Clock& clock;
    const ManagerConfig& config;  // lease_notice_ms, lease_tick_ms, lease_broker
    std::function<std::shared_ptr<AgentClient>(const std::string& host)> agent_of;
    // Hands a journalled task to the workers.
    std::function<void(const std::string& task_id)> enqueue;
    // The guest `name` names for `p` (GuestService::Visible).
    std::function<Result<Guest>(const Principal& p, std::string_view name)> visible;
  };
  explicit LeaseService(Deps deps);
  ~LeaseService();
  LeaseService(const LeaseService&) = delete;
  LeaseService& operator=(const LeaseService&) = delete;

  // The loop (one Tick every lease_tick_ms, or when woken). Stop is idempotent.
  void Start();
  void Stop();
  void Wake();

  // Inside the guests' transactions.
  // A new guest's lease, nascent until its create succeeds.
  Status Open(const GuestCreate& req, std::string_view guest, std::string_view tenant, int64_t now_ms);
  Status Activate(std::string_view guest, int64_t now_ms);                     // nascent -> active
  Status Fail(std::string_view guest, int64_t now_ms, std::string_view why);   // nascent -> failed
  Status Close(std::string_view guest, int64_t now_ms, std::string_view why);  // -> closed (deleted)
  // A resize done: the live lease grants what the guest has now (no-op when it does already).
  Status Regrant(std::string_view guest, std::optional<int64_t> vcpus, std::optional<int64_t> memory_mib,
                 int64_t now_ms, std::string_view why);
  // A guest started with no live lease (it was released or preempted): a new open-ended one like
  // its last, at what the guest has now.
  Status Reopen(std::string_view guest, int64_t now_ms);
  // The guest's leases, newest first (GET /api/v1/guests/{name}).
  Result<std::vector<LeaseRecord>> OfGuest(std::string_view guest) { return table_.OfGuest(guest); }

  // See Manager's lease calls.
  Result<Page<LeaseRecord>> List(const Principal& p, std::string_view guest, const PageQuery& page);
  Result<LeaseRecord> Get(const Principal& p, std::string_view id);
  Result<LeaseRecord> Extend(const Principal& p, std::string_view id, const LeaseExtend& req);
  Result<LeaseRecord> Release(const Principal& p, std::string_view id);
  Result<NoticeRecord> Reclaim(const Principal& p, std::string_view id, const LeaseReclaim& req);
  Result<HostReclaim> ReclaimFromHost(const Principal& p, std::string_view host, const HostReclaimRequest& req);
  Result<Page<NoticeRecord>> ListNotices(const Principal& p, std::string_view guest, const PageQuery& page);
  Result<NoticeRecord> GetNotice(const Principal& p, std::string_view id);
  Result<NoticeRecord> Answer(const Principal& p, std::string_view id, const NoticeAnswer& answer);
  Result<Page<lease::Repossession>> ListRepossessions(const Principal& p, std::string_view guest,
                                                      const PageQuery& page);
  // One pass: renewals and term ends, deliveries, counters, due actions.
  Status Tick();

  // Moves (MigrationRun). Before one: a `migrate` notice to the guest, delivered at once; returns
  // when the guest answered ack or release, when lease_move_notice_ms passed, at once when it
  // could not be reached, or when `sleep` says the manager stops; the notice is then acted on
  // (a record: the guest's place on `from`). Never fails the move: what goes wrong is logged.
  void BeforeMove(const std::string& guest, const std::string& from, const std::string& to, const std::string& reason,
                  const std::function<bool(Duration)>& sleep);
  // After a move that ended done: a `moved` message to the guest on `host` with the measured pause,
  // and a lease.moved event.
  void AfterMove(const std::string& guest, const std::string& from, const std::string& host, int64_t pause_ms,
                 int64_t total_ms);

 private:
  int64_t NowMs() const;
  Result<LeaseScope> ScopeOf(const Principal& p, std::string_view guest);
  // The lease or notice as `p` may see it (kNotFound for another tenant's).
  Result<LeaseRecord> VisibleLease(const Principal& p, std::string_view id);
  Result<NoticeRecord> VisibleNotice(const Principal& p, std::string_view id);
  // Inside a transaction: journals the guest task that carries out `after` (a resize, or a stop
  // when `stop`); nullopt when the guest has no host (nothing to do on an agent).
  Result<std::optional<std::string>> JournalGuestTask(const Guest& g, const lease::Resources& before,
                                                      const lease::Resources& after, bool stop);
  Status TermEnds(int64_t now_ms);
  Status ApplyDueRenewal(LeaseRecord l, int64_t now_ms);
  Status EndTerm(LeaseRecord l, int64_t now_ms);
  Status Deliver(int64_t now_ms);
  Status DeliverOne(const NoticeRecord& n, int64_t now_ms);
  Status DecideCounters(int64_t now_ms);
  Status ActDue(int64_t now_ms);
  Status ActOne(const std::string& notice_id, int64_t now_ms);
  // Stores a notice and wakes the loop.
  Result<NoticeRecord> Send(const LeaseRecord& l, lease::NoticeAction action, const lease::Resources& after,
                            std::string reason, int64_t not_before_ms, int64_t deadline_ms, bool urgent);

  Deps d_;
  LeaseTable table_;
  std::mutex tick_mu_;  // one Tick at a time
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  bool woken_ = false;     // guarded by mu_
  std::thread loop_;
};

}  // namespace uw::manager::internal
