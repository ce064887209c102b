// One migration's live path (see migration_run.h): starting the transfer, monitoring it, and
// settling a transfer that failed, was cancelled or lost an agent by asking both hosts.
#include <spdlog/spdlog.h>

#include <cstdio>

#include "manager/migration_run.h"

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
  prep.nics = src.port_nics;
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

}  // namespace uw::manager::internal
