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
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include "common/clock.h"
#include "common/status.h"
#include "lease/broker.h"
#include "lease/lease.h"
#include "manager/agent_client.h"
#include "manager/host_table.h"
#include "manager/lease_table.h"
#include "manager/manager.h"
#include "manager/store.h"
#include "placement/placement.h"

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
  // A guest started with no live lease (it was released or preempted), or found on a host without
  // a create (`why` says so): a new open-ended one like its last, at what the guest has now
  // (guaranteed when it never had one: nothing is taken from a guest Underware did not place).
  Status Reopen(std::string_view guest, int64_t now_ms, std::string_view why = "the guest was started");
  // An operator's forced stop, urgent: in one transaction an open notice is withdrawn, a stop notice
  // is sent and acted on at once (no wait), the lease closes, the repossession record is written
  // and the guest.stop task that powers the guest off is journalled (and then queued). Returns that
  // task, or nullopt when the guest is not running or holds no active lease (nothing is recorded;
  // the caller stops the guest itself).
  Result<std::optional<std::string>> ForceStop(const Guest& g, std::string reason);
  // Inside the caller's transaction: the guest's host failed and was fenced (HA), so its place
  // there is taken at once: an urgent evacuate notice (an open one is withdrawn), acted on now, and
  // the repossession record. The lease keeps its amounts (the guest restarts elsewhere with them).
  // Nothing is recorded for a guest with no active lease.
  Status HostFailed(const Guest& g, std::string reason);
  // Admission by reclaim (lease_admission.cc). When no host has room for a new guest whose lease is
  // `lease_class`: a host where leases the broker may take from (lease_reclaim_policy; elastic above
  // their floor, preemptible ones whole) can give what is missing, and what each gives. nullopt
  // when no host can make room so, when the guest would be preemptible itself, or when
  // lease_admission is "refuse".
  struct Admission {
    std::string host;
    std::vector<lease::Take> takes;
    lease::Resources taken;  // the sum
  };
  Result<std::optional<Admission>> PlanAdmission(const placement::Snapshot& snap, const placement::Vm& vm,
                                                 std::string_view lease_class, std::string_view placement_policy);
  // Inside the create's transaction: a notice to each lease of the plan, making room for `guest`.
  // Returns their ids (the create task's `waits_for`).
  Result<std::vector<std::string>> SendAdmissionNotices(const Admission& a, std::string_view guest);
  // Whether a waiting create may run: every notice it waits for was acted on (or withdrawn) and
  // the guest task that carried it out has ended.
  Result<bool> AdmissionDone(const Json& waits_for);
  // Inside a transaction: the notices a cancelled create waited for are withdrawn (nothing is taken
  // for a guest that will not come).
  Status WithdrawAdmission(const Json& waits_for);
  // A resize that carried out a lease change failed (RunOperation): the guest holds more than its
  // lease grants. Recorded (lease.unenforced) and tried again by the loop, with a backoff, until the
  // guest holds what its lease grants.
  void Unenforced(const std::string& guest, const Status& why);
  // What the guest holds changed (its lease, a notice, a record) or it started: the loop sends it
  // its holdings (lease_holdings.cc) at the next tick, and again with a backoff until it has them.
  void Changed(std::string_view guest);
  // The guest asked its daemon (uw-holdings --ask; its host's heartbeat says when): when that ask is
  // new, it is sent its holdings at the next tick.
  void Asked(std::string_view guest, int64_t asked_at_ms);
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
  // Replies are rate-limited per tenant (per token for operators): kRepliesPerSecond, in bursts of
  // kReplyBurst; past that kResourceExhausted (HTTP 429) and nothing is recorded.
  Result<NoticeRecord> Answer(const Principal& p, std::string_view id, const NoticeAnswer& answer);
  static constexpr double kRepliesPerSecond = 2, kReplyBurst = 10;
  Result<Page<lease::Repossession>> ListRepossessions(const Principal& p, std::string_view guest,
                                                      const PageQuery& page);
  Result<std::vector<Budget>> ListBudgets(const Principal& p);
  Result<Budget> SetBudget(const Principal& p, std::string_view tenant, int64_t per_hour);
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
  Status TakeReplyToken(const Principal& p);  // Answer's rate limit
  // Inside a transaction: the tenant's live leases, with `changed` in place of its stored self
  // (or added), within the tenant's budget. kFailedPrecondition naming the figures.
  Status CheckBids(std::string_view tenant, const lease::Lease& changed);
  // The lease or notice as `p` may see it (kNotFound for another tenant's).
  Result<LeaseRecord> VisibleLease(const Principal& p, std::string_view id);
  Result<NoticeRecord> VisibleNotice(const Principal& p, std::string_view id);
  // The guest task that carries out a lease change: a resize, a clean stop (30 s) or a power-off.
  enum class GuestTask { kResize, kStop, kPowerOff };
  // Inside a transaction: journals the guest task that carries out `after`; nullopt when the guest
  // has no host or nothing changes (nothing to do on an agent).
  Result<std::optional<std::string>> JournalGuestTask(const Guest& g, const lease::Resources& before,
                                                      const lease::Resources& after, GuestTask how);
  // Inside a transaction: the notice open against the lease, if any, is withdrawn (an event says why).
  Status WithdrawOpen(const lease::Lease& l, std::string_view why);
  // Inside a transaction: `n` is withdrawn (an event says why).
  Status Withdraw(NoticeRecord& n, std::string_view why);
  // The notices a waiting create names (its `waits_for`), those that still exist.
  Result<std::vector<NoticeRecord>> WaitedFor(const Json& waits_for);
  Status TermEnds(int64_t now_ms);
  Status ApplyDueRenewal(LeaseRecord l, int64_t now_ms);
  Status EndTerm(LeaseRecord l, int64_t now_ms);
  Status Deliver(int64_t now_ms);
  Status DeliverOne(const NoticeRecord& n, int64_t now_ms);
  Status DecideCounters(int64_t now_ms);
  // The lease_broker "policy": the reclaim policy weighs a counter against the leases on the
  // countering guest's host that it ranks below (lease::JudgeCounter).
  Result<lease::CounterVerdict> JudgeByPolicy(const NoticeRecord& n);
  // The live leases of the guests on `host` with no notice open: what a reclaim may take from.
  Result<std::vector<lease::Lease>> ReclaimableOn(std::string_view host);
  Status ActDue(int64_t now_ms);
  // Sends the holdings of guests whose holdings changed (a few per tick; those that cannot take
  // them now are tried again later).
  Status Publish(int64_t now_ms);
  // What `g` holds, as its daemon gets it: its live lease, its open notice, its latest records.
  Result<Json> HoldingsOf(const Guest& g, int64_t now_ms);
  static bool Running(const Guest& g) { return g.state == "running" || g.state == "paused"; }
  // Guests holding more than their lease grants: the resize again when its retry is due (after a
  // start, every running guest is checked once).
  Status Enforce(int64_t now_ms);
  Status ActOne(const std::string& notice_id, int64_t now_ms);
  // Inside a transaction: acts on `n` (lease, record, event) and journals its guest task (a stop
  // or eviction is carried out as `stop_how`). Returns the task to queue after the commit.
  Result<std::optional<std::string>> ActIn(NoticeRecord n, int64_t now_ms, GuestTask stop_how);
  // Stores a notice and wakes the loop.
  Result<NoticeRecord> Send(const LeaseRecord& l, lease::NoticeAction action, const lease::Resources& after,
                            std::string reason, int64_t not_before_ms, int64_t deadline_ms, bool urgent);
  // Send's body, inside the caller's transaction (no wake).
  Result<NoticeRecord> SendIn(const LeaseRecord& l, lease::NoticeAction action, const lease::Resources& after,
                              std::string reason, int64_t not_before_ms, int64_t deadline_ms, bool urgent,
                              std::string makes_room_for = "");
  Status AdmitWaiting();  // the loop: waiting creates whose notices were acted on go to the workers

  Deps d_;
  LeaseTable table_;
  HostTable hosts_{d_.store};
  std::mutex pass_mu_;  // one Tick at a time
  std::mutex tick_mu_;  // the act lock: term ends, counters, acts (not deliveries) and a move's notice
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  bool woken_ = false;     // guarded by mu_
  struct Retry {
    int64_t at_ms = 0, delay_ms = 0;
    uint64_t generation = 0;  // holdings: bumped by each change
  };
  std::map<std::string, Retry, std::less<>> unenforced_;   // guarded by mu_; by guest
  std::map<std::string, Retry, std::less<>> unpublished_;  // guarded by mu_; by guest
  std::map<std::string, int64_t, std::less<>> asked_;      // guarded by mu_; by guest: the last ask seen
  struct ReplyBucket {
    double tokens = 0;
    int64_t at_ms = 0;
  };
  std::map<std::string, ReplyBucket, std::less<>> reply_buckets_;  // guarded by mu_; by who replies
  std::set<std::string, std::less<>> delivering_;                  // guarded by mu_; notices on their way
  bool checked_all_ = false;                                       // ticks only
  std::thread loop_;
};

}  // namespace uw::manager::internal
