// One migration's thread (see migration_run.h and migration/README.md).
#include "manager/migration_run.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>

#include "common/id.h"
#include "manager/internal.h"
#include "placement/placement.h"

namespace uw::manager::internal {

namespace mg = uw::migration;

namespace {

std::string Mib(int64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// The job's figures into the record (a downtime libvirt does not know yet, -1, keeps the last).
void MergeJobStats(const mg::Stats& job, mg::Stats& st) {
  const int64_t downtime = st.downtime_ms;
  st = job;
  if (job.downtime_ms < 0) st.downtime_ms = downtime;
}

}  // namespace

MigrationRun::MigrationRun(Manager& manager, std::string task_id) : m_(manager), task_(std::move(task_id)) {}

std::shared_ptr<AgentClient> MigrationRun::Source() { return m_.AgentOf(rec_.source); }
std::shared_ptr<AgentClient> MigrationRun::Destination() { return m_.AgentOf(rec_.destination); }

void MigrationRun::Run(bool resume) {
  auto task = m_.store_->QueryOne("SELECT subject, tenant, request FROM tasks WHERE id = ?", {task_}, "task vanished");
  if (!task.ok()) return;
  tenant_ = task->Str("tenant");
  request_ = task->JsonOf("request");
  recommendation_ = request_.value("recommendation", "");
  options_ = request_.value("options", Json::object());
  guest_ = task->Str("subject");
  if ((resume ? Resume() : Begin()) == Step::kEnded) return;
  LoadGuestMemory();
  if (rec_.mode == mg::Mode::kCold) return ColdMove(resume);
  Live(resume);
}

// ---------------------------------------------------------------------------------------------
// The record

Status MigrationRun::Persist() {
  return m_.store_->Exec("UPDATE migrations SET phase = ?, record = ?, updated_ms = ? WHERE id = ?",
                         {std::string(mg::PhaseName(rec_.phase)), Dump(mg::RecordToJson(rec_)), m_.NowMs(), rec_.id});
}

Status MigrationRun::Advance(mg::Phase phase, const std::string& note) {
  UW_RETURN_IF_ERROR(mg::Advance(rec_, phase, note));
  return Persist();
}

void MigrationRun::Pass(mg::Phase phase, const std::string& note) {
  if (rec_.phase == phase) return;
  if (Status s = mg::Advance(rec_, phase, note); !s.ok()) {
    spdlog::error("migration {}: {} -> {}: {}", rec_.id, mg::PhaseName(rec_.phase), mg::PhaseName(phase), s.ToString());
  }
}

bool MigrationRun::Record(mg::Phase phase, const std::string& note) {
  Pass(phase, note);
  Status s = Persist();
  if (s.ok()) return true;
  Finish(Outcome::kUnknown, s.WithContext("recording the " + std::string(mg::PhaseName(phase)) + " phase"));
  return false;
}

void MigrationRun::Progress(double fraction, const std::string& message) {
  if (Status s = m_.SetTaskProgress(task_, fraction, message); !s.ok())
    spdlog::warn("task {}: {}", task_, s.ToString());
}

bool MigrationRun::SleepPoll() { return m_.poll_sleeper_(std::chrono::milliseconds(m_.config_.migration_poll_ms)); }

double MigrationRun::SecondsSince(Duration start) const {
  return std::chrono::duration<double>(m_.clock_.Monotonic() - start).count();
}

// ---------------------------------------------------------------------------------------------
// Beginning

void MigrationRun::FailEarly(const Status& why) {
  if (Status s = m_.FinishTask(task_, why, nullptr); !s.ok()) spdlog::error("task {}: {}", task_, s.ToString());
  if (!recommendation_.empty()) {
    Status s = m_.store_->Exec("UPDATE recommendations SET state = 'failed', note = ? WHERE id = ?",
                               {why.message(), recommendation_});
    if (!s.ok()) spdlog::error("recommendation {}: {}", recommendation_, s.ToString());
  }
}

// The step, verified on the current state (plan, verify, apply).
Status MigrationRun::CheckStillFits(bool cold) {
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, m_.BuildSnapshot());
  placement::Plan one;
  placement::Move m;
  m.vm = guest_;
  m.from = request_.value("from", "");
  m.to = request_.value("to", "");
  m.cold = cold;
  one.moves.push_back(m);
  if (Status s = placement::CheckPlan(snap, one); !s.ok()) {
    return AbortedError("the move no longer fits the cluster: " + s.message());
  }
  return Status::Ok();
}

MigrationRun::Step MigrationRun::Begin() {
  const std::string from = request_.value("from", ""), to = request_.value("to", "");
  auto g = m_.store_->QueryOne("SELECT * FROM guests WHERE name = ?", {guest_}, "guest '" + guest_ + "' not found");
  if (!g.ok()) return FailEarly(g.status()), Step::kEnded;
  if (g->IsNull("host") || g->Str("host") != from) {
    FailEarly(AbortedError("guest " + guest_ + " is on " + (g->IsNull("host") ? "no host" : g->Str("host")) +
                           " now, not " + from + " (the plan is stale)"));
    return Step::kEnded;
  }
  const bool cold = request_.value("mode", "live") == "cold";
  if (!cold && g->Str("state") != "running") {
    FailEarly(FailedPreconditionError("guest " + guest_ + " is " + g->Str("state") + "; it must run to migrate live"));
    return Step::kEnded;
  }
  std::lock_guard l(m_.placement_mu_);
  if (Status s = CheckStillFits(cold); !s.ok()) return FailEarly(s), Step::kEnded;
  rec_.id = NewId("mig");
  rec_.guest = guest_;
  rec_.source = from;
  rec_.destination = to;
  rec_.mode = cold ? mg::Mode::kCold : mg::Mode::kLive;
  rec_.bandwidth_mib_s = options_.value("bandwidth_mib_s", m_.config_.convergence.bandwidth_mib_s);
  rec_.downtime_limit_ms = options_.value("downtime_limit_ms", m_.config_.convergence.downtime_limit_ms);
  rec_.history.push_back("begin: " + request_.value("reason", std::string("")));
  Status s = m_.store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(m_.store_->Exec(
        "INSERT INTO migrations(id, task, guest, source, destination, mode, phase, record, created_ms, updated_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, 'begin', ?, ?, ?)",
        {rec_.id, task_, guest_, from, to, std::string(mg::ModeName(rec_.mode)), Dump(mg::RecordToJson(rec_)),
         m_.NowMs(), m_.NowMs()}));
    // The destination's capacity is held from now on (memory counts on both hosts).
    UW_RETURN_IF_ERROR(m_.store_->Exec("UPDATE guests SET migrating_to = ? WHERE name = ?", {to, guest_}));
    return m_.AddEvent(
        "migration.started", guest_, tenant_,
        {{"from", from}, {"to", to}, {"mode", mg::ModeName(rec_.mode)}, {"migration", rec_.id}, {"task", task_}});
  });
  if (!s.ok()) return FailEarly(s), Step::kEnded;
  return Step::kGoOn;
}

MigrationRun::Step MigrationRun::Resume() {
  auto row = m_.store_->QueryOne("SELECT record FROM migrations WHERE task = ?", {task_}, "migration record");
  if (!row.ok()) return FailEarly(row.status()), Step::kEnded;
  auto parsed = mg::ParseRecord(row->JsonOf("record"));
  if (!parsed.ok()) return FailEarly(parsed.status().WithContext("migration record of task " + task_)), Step::kEnded;
  rec_ = *parsed;
  if (mg::IsTerminal(rec_.phase)) {
    // Crashed after the record but before the task: finish from the record.
    Finish(rec_.phase == mg::Phase::kDone                    ? Outcome::kDone
           : rec_.phase == mg::Phase::kFailedAfterSwitchover ? Outcome::kFailedAfterSwitchover
           : rec_.phase == mg::Phase::kRolledBack            ? Outcome::kRolledBack
                                                             : Outcome::kLost,
           rec_.error.empty() ? Status::Ok() : AbortedError(rec_.error));
    return Step::kEnded;
  }
  rec_.history.push_back("resumed after a manager restart in " + std::string(mg::PhaseName(rec_.phase)));
  return Step::kGoOn;
}

void MigrationRun::LoadGuestMemory() {
  auto g = m_.store_->Query("SELECT memory_mib FROM guests WHERE name = ?", {guest_});
  memory_mib_ = g.ok() && !g->empty() ? (*g)[0].Int("memory_mib") : 0;
}

// ---------------------------------------------------------------------------------------------
// Cold moves: stop, define and start on the destination, delete on the source.

void MigrationRun::ColdResume(const Result<AgentGuest>& on_src, const Result<AgentGuest>& on_dest) {
  if (PresenceOf(on_dest) == mg::Presence::kRunning) {
    if (on_src.ok()) (void)Source()->Delete(guest_, true);  // best effort: its heartbeat reports a leftover
    return VerifyAndFinish();
  }
  if (on_src.ok()) {
    if (on_dest.ok()) (void)Destination()->Delete(guest_, true);
    if (PresenceOf(on_src) != mg::Presence::kRunning) (void)Source()->Start(guest_);
    return Finish(Outcome::kRolledBack,
                  AbortedError("manager restarted during a cold move; started again on the source"));
  }
  Finish(Outcome::kLost, InternalError("guest on neither host after a manager restart"));
}

void MigrationRun::ColdMove(bool resume) {
  auto source = Source(), destination = Destination();
  auto on_dest = destination->Get(guest_);
  auto on_src = source->Get(guest_);
  if (resume) return ColdResume(on_src, on_dest);
  auto spec_row = m_.store_->QueryOne("SELECT spec FROM guests WHERE name = ?", {guest_}, "guest row");
  if (!spec_row.ok()) return Finish(Outcome::kRolledBack, spec_row.status());
  if (!on_src.ok()) return Finish(Outcome::kRolledBack, on_src.status());
  if (!on_src->local_disks.empty()) {
    return Finish(
        Outcome::kRolledBack,
        FailedPreconditionError("guest " + guest_ + " has local disks: cold moves carry shared storage only"));
  }
  const bool was_running = PresenceOf(on_src) == mg::Presence::kRunning;
  if (!Record(mg::Phase::kPrepare, "cold: stop on " + rec_.source)) return;
  Progress(0.2, "cold move: stopping the guest on " + rec_.source);
  const Duration t0 = m_.clock_.Monotonic();
  if (was_running) {
    auto s = source->Stop(guest_, StopRequest{});
    if (!s.ok()) return Finish(Outcome::kRolledBack, s.status());
  }
  if (!Record(mg::Phase::kTransfer, "cold: define on " + rec_.destination)) return;
  Progress(0.5, "cold move: starting the guest on " + rec_.destination);
  Json spec = spec_row->JsonOf("spec");
  spec["start"] = was_running;
  auto made = destination->Create(spec);
  if (!made.ok()) {
    if (was_running) (void)source->Start(guest_);  // best effort: the rollback is reported either way
    return Finish(Outcome::kRolledBack, made.status().WithContext("creating the guest on " + rec_.destination));
  }
  if (!Record(mg::Phase::kSwitchOver, "cold: running on " + rec_.destination)) return;
  if (!Record(mg::Phase::kConfirm, "cold: delete on " + rec_.source)) return;
  Status del = source->Delete(guest_, true);
  if (!del.ok() && del.code() != StatusCode::kNotFound) {
    spdlog::warn("migration {}: removing the source copy: {}", rec_.id, del.ToString());
  }
  rec_.stats.total_ms = std::chrono::duration_cast<std::chrono::milliseconds>(m_.clock_.Monotonic() - t0).count();
  rec_.stats.downtime_ms = was_running ? rec_.stats.total_ms : 0;
  if (!was_running) return Finish(Outcome::kDone, Status::Ok());
  VerifyAndFinish();
}

// ---------------------------------------------------------------------------------------------
// Verification: the guest runs on the destination and its source copy is gone. Watched through
// the verification window (migration::VerifyCheck), then done or failed_after_switchover.

// libvirt leaves a shut-off definition on the source when nobody confirmed the move there (the
// source agent restarted mid-transfer): it is removed here, and the move is done only once the
// source has no copy (an unreachable source is cleaned by its next heartbeat instead).
bool MigrationRun::SourceClean() {
  auto src = Source()->Get(guest_);
  if (!src.ok()) return true;  // gone (not found), or unreachable: Reconcile removes it later
  if (PresenceOf(src) != mg::Presence::kAbsent) return false;  // paused until libvirt confirms
  Status del = Source()->Delete(guest_, false);
  if (!del.ok() && del.code() != StatusCode::kNotFound) {
    spdlog::warn("migration {}: removing the shut-off source copy: {}", rec_.id, del.ToString());
    return false;
  }
  return true;
}

void MigrationRun::VerifyAndFinish() {
  if (rec_.phase != mg::Phase::kVerify) {
    if (!mg::PastSwitchOver(rec_.phase)) {
      if (rec_.phase != mg::Phase::kSwitchOver) Pass(mg::Phase::kSwitchOver, "");
      Pass(mg::Phase::kConfirm, "");
    }
    if (!Record(mg::Phase::kVerify, "watching the guest on " + rec_.destination)) return;
  }
  bool clean = false;
  Progress(0.97, "verifying the guest on " + rec_.destination);
  const mg::VerifyPolicy policy{m_.config_.migration_verify_window_ms / 1000.0,
                                m_.config_.migration_verify_timeout_ms / 1000.0,
                                m_.config_.migration_agent_grace_ms / 1000.0};
  const Duration t0 = m_.clock_.Monotonic();
  mg::VerifyObservation o;
  while (true) {
    o.since_switchover_s = SecondsSince(t0);
    auto dst = Destination()->Get(guest_);
    o.reachable = dst.ok() || dst.status().code() == StatusCode::kNotFound;
    o.state = dst.ok() ? dst->state : "";
    o.has_channel = dst.ok() && dst->has_channel;
    if (o.reachable && o.has_channel && !o.answered && o.state == "running") {
      auto r = Destination()->Exec(guest_, ExecRequest{.command = "true", .timeout_s = 5});
      o.answered = r.ok() && r->exit_code == 0;
    }
    if (!clean) clean = SourceClean();
    std::string why;
    mg::Verdict verdict = mg::VerifyCheck(o, policy, &why);
    if (verdict == mg::Verdict::kVerified && !clean && o.since_switchover_s < policy.timeout_s) {
      verdict = mg::Verdict::kWait;
    }
    switch (verdict) {
      case mg::Verdict::kWait:
        if (!SleepPoll()) return;  // manager stopping: the next start verifies again
        continue;
      case mg::Verdict::kVerified:
        if (!clean)
          rec_.history.push_back("verify: the source " + rec_.source + " still has a copy; its heartbeat removes it");
        rec_.history.push_back("verify: running on " + rec_.destination +
                               (o.has_channel ? " and answering its control channel" : ""));
        return Finish(Outcome::kDone, Status::Ok());
      case mg::Verdict::kUnreachable:
        // libvirt resumed it there (peer-to-peer, without the agents), but nobody can look: the
        // guest is on the destination in an unknown state until that host's heartbeats say.
        rec_.history.push_back("verify: not possible: " + why + "; the host's heartbeats will tell");
        arrived_state_ = "unknown";
        return Finish(Outcome::kDone, Status::Ok());
      case mg::Verdict::kDied:
        rec_.console_tail = m_.ConsoleTail(rec_.destination, guest_, 2048);
        dead_state_ = o.state.empty() ? "lost" : o.state == "running" ? "unresponsive" : o.state;
        spdlog::error("migration {}: {} failed after the switch-over: {}; console:\n{}", rec_.id, guest_, why,
                      rec_.console_tail);
        return Finish(Outcome::kFailedAfterSwitchover,
                      InternalError("guest " + guest_ + " failed after the move to " + rec_.destination + ": " + why));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Live migration

// Removes what an incoming copy left on the destination (best effort: the destination's
// heartbeat reconcile reports leftovers when it cannot be reached now).
void MigrationRun::AbandonDestination() {
  Status r = Destination()->AbandonIncoming(guest_);
  if (!r.ok()) spdlog::warn("migration {}: cleaning the destination: {}", rec_.id, r.ToString());
}

// Prepares the destination and starts the transfer (also for an auto-converge restart).
Status MigrationRun::StartTransfer() {
  UW_ASSIGN_OR_RETURN(AgentGuest src, Source()->Get(guest_));
  IncomingRequest prep;
  prep.guest = guest_;
  prep.kind = src.kind;
  prep.memory_mib = std::max<int64_t>(1, src.max_memory_mib);
  prep.vcpus = std::max<int64_t>(1, src.max_vcpus);
  prep.disks = src.local_disks;
  auto dest = Destination()->PrepareIncoming(prep);
  if (!dest.ok()) return dest.status().WithContext("preparing " + rec_.destination);
  rec_.copy_storage = !prep.disks.empty();
  if (rec_.phase == mg::Phase::kBegin) UW_RETURN_IF_ERROR(Advance(mg::Phase::kPrepare, "destination ready"));
  TransferRequest transfer;
  transfer.destination_host = rec_.destination;
  transfer.destination = *dest;
  transfer.bandwidth_mib_s = rec_.bandwidth_mib_s;
  transfer.downtime_limit_ms = rec_.downtime_limit_ms;
  transfer.auto_converge = rec_.auto_converge;
  transfer.postcopy = postcopy_armed_;
  // Recorded before it is asked for: a restart finds "transfer" and asks the hosts.
  UW_RETURN_IF_ERROR(Advance(mg::Phase::kTransfer, rec_.attempt > 1
                                                       ? "attempt " + std::to_string(rec_.attempt) +
                                                             (rec_.auto_converge ? " with auto-converge" : "")
                                                       : "started"));
  Status started = Source()->StartMigration(guest_, transfer);
  if (!started.ok()) return started.WithContext("starting the transfer on " + rec_.source);
  return Status::Ok();
}

// Where things stand when the monitor cannot tell (agent restarted, manager restarted): both
// hosts are asked and migration::Reconcile decides. kEnded when it finished the migration.
MigrationRun::Step MigrationRun::Settle(const Status& cause) {
  const Duration deadline = m_.clock_.Monotonic() + std::chrono::milliseconds(m_.config_.migration_agent_grace_ms);
  while (true) {
    auto source = Source();
    auto src = source->Get(guest_);
    auto dst = Destination()->Get(guest_);
    auto job = source->MigrationStatus(guest_);
    if (mg::PastSwitchOver(rec_.phase) && dst.ok() && !(job.ok() && job->state == "running")) {
      // The destination has it, in whatever state: the verification says whether it lives (and
      // removes a shut-off source copy).
      VerifyAndFinish();
      return Step::kEnded;
    }
    mg::Observation o{PresenceOf(src), PresenceOf(dst), job.ok() && job->state == "running"};
    mg::Recovery r = mg::Reconcile(rec_.phase, o);
    spdlog::info("migration {}: source {}, destination {}, job {} -> {}", rec_.id,
                 src.ok() ? src->state : src.status().ToString(), dst.ok() ? dst->state : dst.status().ToString(),
                 o.job_active ? "active" : "none", mg::RecoveryName(r));
    if (r == mg::Recovery::kWait) {
      if (o.job_active) return Step::kGoOn;  // libvirt is still migrating: back to monitoring
    } else {
      return SettleBy(r, o, cause);
    }
    if (m_.clock_.Monotonic() >= deadline) {
      Finish(Outcome::kUnknown,
             UnavailableError("hosts did not answer for " + std::to_string(m_.config_.migration_agent_grace_ms / 1000) +
                              " s; last error: " + (src.ok() ? dst.status() : src.status()).message()));
      return Step::kEnded;
    }
    if (!SleepPoll()) return Step::kEnded;  // manager stopping: the next start recovers it
  }
}

MigrationRun::Step MigrationRun::SettleBy(mg::Recovery r, const mg::Observation& o, const Status& cause) {
  const Status why = cause.ok() ? AbortedError("migration did not complete") : cause;
  switch (r) {
    case mg::Recovery::kWait:
      return Step::kGoOn;
    case mg::Recovery::kRollBack:
      Pass(mg::Phase::kRollingBack, cause.ok() ? "rolled back" : cause.message());
      if (Status s = Persist(); !s.ok()) {
        Finish(Outcome::kUnknown, s.WithContext("recording the rollback"));
        return Step::kEnded;
      }
      AbandonDestination();
      if (o.source == mg::Presence::kPaused) (void)Source()->Resume(guest_);  // its heartbeat shows the outcome
      Finish(Outcome::kRolledBack, why);
      return Step::kEnded;
    case mg::Recovery::kFinishOnSource:
      AbandonDestination();
      Finish(Outcome::kRolledBack, why);
      return Step::kEnded;
    case mg::Recovery::kConfirm:
      if (!mg::PastSwitchOver(rec_.phase)) {
        if (rec_.phase != mg::Phase::kSwitchOver) Pass(mg::Phase::kSwitchOver, "found on the destination");
        if (!Record(mg::Phase::kConfirm, "removing the source copy")) return Step::kEnded;
      }
      (void)Source()->Delete(guest_, true);  // the verification checks the source is clean
      VerifyAndFinish();
      return Step::kEnded;
    case mg::Recovery::kFinishOnDestination:
      // A shut-off source definition is what libvirt leaves when nobody confirmed (the source
      // agent restarted mid-transfer): the verification removes it.
      VerifyAndFinish();
      return Step::kEnded;
    case mg::Recovery::kLost:
      Finish(Outcome::kLost, InternalError("guest " + guest_ + " runs on neither " + rec_.source + " nor " +
                                           rec_.destination + (cause.ok() ? "" : ": " + cause.message())));
      return Step::kEnded;
  }
  return Step::kGoOn;
}

void MigrationRun::Live(bool resume) {
  postcopy_armed_ = options_.value("allow_postcopy", m_.config_.convergence.allow_postcopy);
  policy_ = m_.config_.convergence;
  policy_.allow_postcopy = postcopy_armed_;
  if (rec_.bandwidth_mib_s > policy_.max_bandwidth_mib_s) policy_.max_bandwidth_mib_s = rec_.bandwidth_mib_s;
  if (!resume) {
    Progress(0.05, "preparing " + rec_.destination);
    if (Status s = StartTransfer(); !s.ok()) {
      if (rec_.phase == mg::Phase::kTransfer) {
        if (Settle(s) == Step::kEnded) return;
      } else {
        Pass(mg::Phase::kRollingBack, s.message());
        AbandonDestination();
        return Finish(Outcome::kRolledBack, s);
      }
    }
  } else if (rec_.phase == mg::Phase::kBegin || rec_.phase == mg::Phase::kPrepare) {
    // Nothing was started: clean the destination and leave the guest where it is.
    Pass(mg::Phase::kRollingBack, "manager restarted before the transfer");
    AbandonDestination();
    return Finish(Outcome::kRolledBack, AbortedError("the manager restarted before the transfer began"));
  } else if (Settle(Status::Ok()) == Step::kEnded) {
    return;
  }
  Monitor();
}

void MigrationRun::Monitor() {
  convergence_.bandwidth_raised = rec_.bandwidth_mib_s >= policy_.max_bandwidth_mib_s;
  convergence_.auto_converge = rec_.auto_converge;
  convergence_.postcopy_started = rec_.postcopy;
  attempt_start_ = m_.clock_.Monotonic();
  std::optional<Duration> unreachable_since;
  while (true) {
    if (!SleepPoll()) return;  // stopping: recovered on the next start
    if (!cancel_sent_ && m_.CancelRequested(task_)) {
      cancel_sent_ = true;
      abort_reason_ = "cancelled by request";
      Status c = Source()->CancelMigration(guest_);
      if (!c.ok()) spdlog::warn("migration {}: cancel: {}", rec_.id, c.ToString());
      Progress(0.5, "cancelling");
    }
    auto st = Source()->MigrationStatus(guest_);
    if (!st.ok()) {
      if (!unreachable_since) unreachable_since = m_.clock_.Monotonic();
      Progress(0.5, "source agent unreachable: " + st.status().message());
      if (m_.clock_.Monotonic() - *unreachable_since < std::chrono::seconds(5)) continue;
      if (Settle(st.status()) == Step::kEnded) return;
      unreachable_since.reset();
      continue;
    }
    unreachable_since.reset();
    if (st->stats) MergeJobStats(*st->stats, rec_.stats);
    if (st->state == "running") {
      if (OnTransferRunning(rec_.stats) == Step::kEnded) return;
      continue;
    }
    if (st->state == "completed" || st->state == "failed" || st->state == "cancelled") {
      if (OnTransferEnded(*st) == Step::kEnded) return;
      continue;
    }
    // "none": the agent restarted and libvirt has no job: see what is where.
    if (Settle(UnavailableError("the source agent lost track of the migration (restarted?)")) == Step::kEnded) return;
  }
}

// Progress, and the convergence policy's escalation (migration::Decide).
MigrationRun::Step MigrationRun::OnTransferRunning(const mg::Stats& s) {
  const double done =
      s.memory_total_bytes > 0
          ? static_cast<double>(s.memory_processed_bytes) /
                static_cast<double>(std::max<int64_t>(1, s.memory_processed_bytes + s.memory_remaining_bytes))
          : 0;
  char msg[200];
  std::snprintf(msg, sizeof msg, "transfer to %s: %s left of %s, dirty %lld pages/s, expected downtime %lld ms%s",
                rec_.destination.c_str(), Mib(s.memory_remaining_bytes + s.disk_remaining_bytes).c_str(),
                Mib(s.memory_total_bytes + s.disk_total_bytes).c_str(), static_cast<long long>(s.dirty_rate_pages_s),
                static_cast<long long>(std::max<int64_t>(0, s.expected_downtime_ms)),
                rec_.attempt > 1 ? (" (attempt " + std::to_string(rec_.attempt) + ")").c_str() : "");
  Progress(0.1 + 0.85 * std::min(1.0, done), msg);
  if (cancel_sent_ || restarting_ || !abort_reason_.empty()) return Step::kGoOn;
  mg::ConvergenceInput in;
  in.elapsed_s = SecondsSince(attempt_start_);
  in.memory_mib = memory_mib_;
  in.stats = s;
  in.bandwidth_mib_s = rec_.bandwidth_mib_s;
  in.postcopy_armed = postcopy_armed_;
  mg::Decision d = mg::Decide(convergence_, in, policy_);
  if (d.action == mg::Action::kContinue) return Step::kGoOn;
  rec_.history.push_back("transfer: " + std::string(mg::ActionName(d.action)) + " (" + d.reason + ")");
  spdlog::info("migration {}: {} ({})", rec_.id, mg::ActionName(d.action), d.reason);
  if (Status e = m_.AddEvent("migration.escalated", guest_, tenant_,
                             {{"migration", rec_.id}, {"action", mg::ActionName(d.action)}, {"reason", d.reason}});
      !e.ok()) {
    spdlog::warn("migration {}: event: {}", rec_.id, e.ToString());
  }
  switch (d.action) {
    case mg::Action::kRaiseBandwidth:
      if (Source()->SetMigrationBandwidth(guest_, d.bandwidth_mib_s).ok()) rec_.bandwidth_mib_s = d.bandwidth_mib_s;
      break;
    case mg::Action::kRestartWithAutoConverge:
      restarting_ = true;
      (void)Source()->CancelMigration(guest_);  // the job's end (cancelled) restarts it
      break;
    case mg::Action::kStartPostCopy:
      if (Source()->StartPostCopy(guest_).ok()) rec_.postcopy = true;
      break;
    case mg::Action::kAbort:
      abort_reason_ = d.reason;
      (void)Source()->CancelMigration(guest_);  // the job's end (cancelled) rolls back
      break;
    case mg::Action::kContinue:
      break;
  }
  if (Status s = Persist(); !s.ok()) {
    Finish(Outcome::kUnknown, s.WithContext("recording the escalation"));
    return Step::kEnded;
  }
  return Step::kGoOn;
}

MigrationRun::Step MigrationRun::OnTransferEnded(const MigrationJob& job) {
  if (job.state == "completed") {
    if (!Record(mg::Phase::kSwitchOver,
                "libvirt completed; downtime " + std::to_string(rec_.stats.downtime_ms) + " ms")) {
      return Step::kEnded;
    }
    if (!Record(mg::Phase::kConfirm, "source copy removed by " + rec_.source)) return Step::kEnded;
    // Completed is not alive: the destination must show the guest running (and answering).
    VerifyAndFinish();
    return Step::kEnded;
  }
  if (restarting_ && !cancel_sent_) {
    restarting_ = false;
    ++rec_.attempt;
    rec_.auto_converge = true;
    AbandonDestination();
    attempt_start_ = m_.clock_.Monotonic();
    if (Status s = StartTransfer(); !s.ok()) return Settle(s);
    return Step::kGoOn;
  }
  Status why = cancel_sent_ ? AbortedError("cancelled by request")
               : !abort_reason_.empty()
                   ? DeadlineExceededError("migration " + abort_reason_ + "; the guest stays on " + rec_.source)
                   : UnavailableError("libvirt: " + job.error);
  Pass(mg::Phase::kRollingBack, why.message());
  if (Status s = Persist(); !s.ok()) {
    Finish(Outcome::kUnknown, s.WithContext("recording the rollback"));
    return Step::kEnded;
  }
  return Settle(why);
}

// ---------------------------------------------------------------------------------------------
// The end

void MigrationRun::EndPhases(Outcome outcome, const Status& why) {
  if ((outcome == Outcome::kDone || outcome == Outcome::kFailedAfterSwitchover) && !mg::IsTerminal(rec_.phase)) {
    if (!mg::PastSwitchOver(rec_.phase)) {
      if (rec_.phase != mg::Phase::kSwitchOver) Pass(mg::Phase::kSwitchOver, "");
      Pass(mg::Phase::kConfirm, "");
    }
    if (rec_.phase == mg::Phase::kConfirm) Pass(mg::Phase::kVerify, "");
    Pass(outcome == Outcome::kDone ? mg::Phase::kDone : mg::Phase::kFailedAfterSwitchover,
         why.ok() ? "" : why.message());
  } else if (outcome == Outcome::kRolledBack && !mg::IsTerminal(rec_.phase)) {
    if (rec_.phase != mg::Phase::kRollingBack) Pass(mg::Phase::kRollingBack, why.message());
    Pass(mg::Phase::kRolledBack, "");
  } else if (!mg::IsTerminal(rec_.phase)) {
    Pass(mg::Phase::kFailed, why.message());
  }
  if (!why.ok()) rec_.error = why.message();
}

Status MigrationRun::RecordOutcome(Outcome outcome, bool cancelled) {
  Store& store = *m_.store_;
  return store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(Persist());
    const int64_t now = m_.NowMs();
    switch (outcome) {
      case Outcome::kDone:
        UW_RETURN_IF_ERROR(
            store.Exec("UPDATE guests SET host = ?, migrating_to = NULL, state = ?, updated_ms = ? WHERE name = ?",
                       {rec_.destination, arrived_state_, now, guest_}));
        return m_.AddEvent("guest.migrated", guest_, tenant_,
                           {{"from", rec_.source},
                            {"to", rec_.destination},
                            {"mode", mg::ModeName(rec_.mode)},
                            {"total_ms", rec_.stats.total_ms},
                            {"downtime_ms", rec_.stats.downtime_ms},
                            {"migration", rec_.id},
                            {"task", task_}});
      case Outcome::kRolledBack:
        UW_RETURN_IF_ERROR(
            store.Exec("UPDATE guests SET migrating_to = NULL, updated_ms = ? WHERE name = ?", {now, guest_}));
        return m_.AddEvent(cancelled ? "migration.cancelled" : "migration.rolled_back", guest_, tenant_,
                           {{"host", rec_.source},
                            {"destination", rec_.destination},
                            {"error", rec_.error},
                            {"migration", rec_.id},
                            {"task", task_}});
      case Outcome::kLost:
        UW_RETURN_IF_ERROR(store.Exec(
            "UPDATE guests SET migrating_to = NULL, state = 'lost', updated_ms = ? WHERE name = ?", {now, guest_}));
        return m_.AddEvent(
            "guest.lost", guest_, tenant_,
            {{"reason", "migration " + rec_.id + ": on neither " + rec_.source + " nor " + rec_.destination},
             {"error", rec_.error}});
      case Outcome::kFailedAfterSwitchover:
        // The guest is on the destination (its source copy is gone) but not alive there.
        UW_RETURN_IF_ERROR(
            store.Exec("UPDATE guests SET host = ?, migrating_to = NULL, state = ?, updated_ms = ? WHERE name = ?",
                       {rec_.destination, dead_state_, now, guest_}));
        return m_.AddEvent("migration.failed_after_switchover", guest_, tenant_,
                           {{"from", rec_.source},
                            {"to", rec_.destination},
                            {"state", dead_state_},
                            {"reason", rec_.error},
                            {"console_tail", rec_.console_tail},
                            {"migration", rec_.id},
                            {"task", task_}});
      case Outcome::kUnknown:
        UW_RETURN_IF_ERROR(store.Exec(
            "UPDATE guests SET migrating_to = NULL, state = 'unknown', updated_ms = ? WHERE name = ?", {now, guest_}));
        return m_.AddEvent("migration.failed", guest_, tenant_,
                           {{"reason", "hosts unreachable; the heartbeats will tell where the guest runs"},
                            {"error", rec_.error},
                            {"migration", rec_.id}});
    }
    return Status::Ok();
  });
}

Json MigrationRun::ResultJson(Outcome outcome) const {
  const bool moved = outcome == Outcome::kDone || outcome == Outcome::kFailedAfterSwitchover;
  return {{"migration", rec_.id},
          {"guest", guest_},
          {"from", rec_.source},
          {"to", rec_.destination},
          {"host", moved ? rec_.destination : rec_.source},
          {"phase", mg::PhaseName(rec_.phase)},
          {"mode", mg::ModeName(rec_.mode)},
          {"total_ms", rec_.stats.total_ms},
          {"downtime_ms", rec_.stats.downtime_ms},
          {"attempts", rec_.attempt}};
}

void MigrationRun::Finish(Outcome outcome, const Status& why) {
  const bool cancelled = m_.CancelRequested(task_) && outcome == Outcome::kRolledBack;
  EndPhases(outcome, why);
  if (Status s = RecordOutcome(outcome, cancelled); !s.ok()) {
    // The task stays running in the store: the next start resumes it from the record and asks the hosts.
    spdlog::error("migration {}: recording the outcome: {}", rec_.id, s.ToString());
    Progress(0.99, "ended " + std::string(mg::PhaseName(rec_.phase)) + " but the outcome could not be recorded (" +
                       s.message() + "); the manager's next start resumes it");
    return;
  }
  const Json result = ResultJson(outcome);
  Status ended;
  if (cancelled) {
    ended = m_.store_->Exec(
        "UPDATE tasks SET state = 'cancelled', message = 'cancelled: the guest stays on its source', error_code = "
        "'aborted', error_message = 'cancelled by request', result = ?, updated_ms = ? WHERE id = ?",
        {Dump(result), m_.NowMs(), task_});
    if (ended.ok())
      ended = m_.AddEvent("task.cancelled", task_, tenant_, {{"kind", "guest.migrate"}, {"subject", guest_}});
    m_.tasks_cv_.notify_all();
  } else if (outcome == Outcome::kDone) {
    ended = m_.FinishTask(task_, Status::Ok(), result);
  } else {
    Status err = why.ok() ? InternalError("migration ended in " + std::string(mg::PhaseName(rec_.phase))) : why;
    ended = m_.FinishTask(task_, err, result);
    if (ended.ok() && !recommendation_.empty()) {
      ended = m_.store_->Exec("UPDATE recommendations SET state = 'failed', note = ? WHERE id = ?",
                              {err.message(), recommendation_});
    }
  }
  if (!ended.ok()) spdlog::error("migration {}: recording the task's end: {}", rec_.id, ended.ToString());
  spdlog::info("migration {} of {} {} -> {}: {} ({} ms, downtime {} ms){}", rec_.id, guest_, rec_.source,
               rec_.destination, mg::PhaseName(rec_.phase), rec_.stats.total_ms, rec_.stats.downtime_ms,
               why.ok() ? "" : ": " + why.message());
}

}  // namespace uw::manager::internal
