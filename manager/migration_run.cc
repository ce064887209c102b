// One migration's thread (see migration_run.h and migration/README.md).
#include "manager/migration_run.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>

#include "common/id.h"
#include "manager/drs_tables.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/lease_service.h"
#include "manager/migration_table.h"
#include "manager/storage_service.h"
#include "manager/task_journal.h"
#include "placement/placement.h"

namespace uw::manager::internal {

namespace mg = uw::migration;

MigrationRun::MigrationRun(Manager& manager, std::string task_id) : m_(manager), task_(std::move(task_id)) {}

std::shared_ptr<AgentClient> MigrationRun::Source() { return m_.AgentOf(rec_.source); }
std::shared_ptr<AgentClient> MigrationRun::Destination() { return m_.AgentOf(rec_.destination); }

void MigrationRun::Run(bool resume) {
  auto task = m_.tasks_->Get(task_);
  if (!task.ok()) {
    spdlog::error("migration task {}: {}", task_, task.status().ToString());
    return;
  }
  tenant_ = task->tenant;
  request_ = task->request;
  recommendation_ = request_.value("recommendation", "");
  options_ = request_.value("options", Json::object());
  guest_ = task->subject;
  if ((resume ? Resume() : Begin()) == Step::kEnded) return;
  if (!resume) {
    // The guest is told before it is moved (its lease's `migrate` notice), outside the placement lock.
    Progress(0.02, "notice to the guest before the move");
    m_.leases_->BeforeMove(guest_, rec_.source, rec_.destination, request_.value("reason", std::string()),
                           [this](Duration d) { return m_.poll_sleeper_(d); });
  }
  LoadGuestMemory();
  if (rec_.mode == mg::Mode::kCold) return ColdMove(resume);
  Live(resume);
}

// ---------------------------------------------------------------------------------------------
// The record

Status MigrationRun::Persist() { return internal::MigrationTable(*m_.store_).Save(rec_, m_.NowMs()); }

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
  if (Status s = m_.tasks_->SetProgress(task_, fraction, message); !s.ok())
    spdlog::warn("task {}: {}", task_, s.ToString());
}

bool MigrationRun::SleepPoll() { return m_.poll_sleeper_(std::chrono::milliseconds(m_.config_.migration_poll_ms)); }

double MigrationRun::SecondsSince(Duration start) const {
  return std::chrono::duration<double>(m_.clock_.Monotonic() - start).count();
}

// ---------------------------------------------------------------------------------------------
// Beginning

void MigrationRun::FailEarly(const Status& why) {
  if (Status s = m_.tasks_->Finish(task_, why, nullptr); !s.ok()) spdlog::error("task {}: {}", task_, s.ToString());
  if (!recommendation_.empty()) {
    Status s = RecommendationTable(*m_.store_).Close(recommendation_, RecommendationTable::End::kFailed, why.message());
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
  auto g = m_.guests_->Get(guest_);
  if (!g.ok()) return FailEarly(g.status()), Step::kEnded;
  if (g->host != from) {
    FailEarly(AbortedError("guest " + guest_ + " is on " + g->host.value_or("no host") + " now, not " + from +
                           " (the plan is stale)"));
    return Step::kEnded;
  }
  const bool cold = request_.value("mode", "live") == "cold";
  if (!cold && g->state != "running") {
    FailEarly(FailedPreconditionError("guest " + guest_ + " is " + g->state + "; it must run to migrate live"));
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
    UW_RETURN_IF_ERROR(internal::MigrationTable(*m_.store_).Insert(rec_, task_, m_.NowMs()));
    // The destination's capacity is held from now on (memory counts on both hosts).
    UW_RETURN_IF_ERROR(m_.guests_->HoldMove(guest_, to));
    return m_.AddEvent(
        "migration.started", guest_, tenant_,
        {{"from", from}, {"to", to}, {"mode", mg::ModeName(rec_.mode)}, {"migration", rec_.id}, {"task", task_}});
  });
  if (!s.ok()) return FailEarly(s), Step::kEnded;
  return Step::kGoOn;
}

MigrationRun::Step MigrationRun::Resume() {
  auto stored = internal::MigrationTable(*m_.store_).OfTask(task_);
  if (!stored.ok()) return FailEarly(stored.status().WithContext("migration record of task " + task_)), Step::kEnded;
  if (!*stored) return FailEarly(NotFoundError("task " + task_ + " has no migration record")), Step::kEnded;
  rec_ = std::move(**stored);
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
  auto g = m_.guests_->Get(guest_);
  memory_mib_ = g.ok() ? g->reserved_memory_mib : 0;
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
    (void)Destination()->AbandonIncoming(guest_);  // local disks carried there, if any
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
  auto stored_spec = m_.guests_->SpecOf(guest_);
  if (!stored_spec.ok()) return Finish(Outcome::kRolledBack, stored_spec.status());
  if (!on_src.ok()) return Finish(Outcome::kRolledBack, on_src.status());
  const std::vector<LocalDisk> disks = on_src->local_disks;
  const bool was_running = PresenceOf(on_src) == mg::Presence::kRunning;
  if (!Record(mg::Phase::kPrepare, "cold: stop on " + rec_.source)) return;
  Progress(0.2, "cold move: stopping the guest on " + rec_.source);
  const Duration t0 = m_.clock_.Monotonic();
  if (was_running) {
    auto s = source->Stop(guest_, StopRequest{});
    if (!s.ok()) return Finish(Outcome::kRolledBack, s.status());
  }
  // Back to where it was: what reached the destination removed, the guest started again.
  const auto roll_back = [&](const Status& why) {
    if (!disks.empty()) (void)destination->AbandonIncoming(guest_);
    if (was_running) (void)source->Start(guest_);  // best effort: the rollback is reported either way
    Finish(Outcome::kRolledBack, why);
  };
  Json spec = std::move(*stored_spec);
  spec["start"] = was_running;
  if (!Record(mg::Phase::kTransfer,
              (disks.empty() ? "cold: define on "
                             : "cold: copy " + std::to_string(disks.size()) + " local disk(s) to and define on ") +
                  rec_.destination)) {
    return;
  }
  if (!disks.empty()) {
    Progress(0.3, "cold move: copying the guest's local disks to " + rec_.destination);
    Status copied = m_.storage_->CopyBaseImages(*destination, spec);  // what the disks are made on
    if (copied.ok()) {
      rec_.stats.disk_total_bytes = 0;
      copied =
          internal::StorageService::CarryLocalDisks(*source, *destination, guest_, disks, &rec_.stats.disk_total_bytes);
    }
    if (!copied.ok()) return roll_back(copied);
    spec["disks_carried"] = true;
  }
  Progress(0.5, "cold move: starting the guest on " + rec_.destination);
  auto made = destination->Create(spec);
  if (!made.ok()) return roll_back(made.status().WithContext("creating the guest on " + rec_.destination));
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
        UW_RETURN_IF_ERROR(m_.guests_->EndMove(guest_, rec_.destination, arrived_state_, now));
        return m_.AddEvent("guest.migrated", guest_, tenant_,
                           {{"from", rec_.source},
                            {"to", rec_.destination},
                            {"mode", mg::ModeName(rec_.mode)},
                            {"total_ms", rec_.stats.total_ms},
                            {"downtime_ms", rec_.stats.downtime_ms},
                            {"migration", rec_.id},
                            {"task", task_}});
      case Outcome::kRolledBack:
        UW_RETURN_IF_ERROR(m_.guests_->EndMove(guest_, std::nullopt, std::nullopt, now));
        return m_.AddEvent(cancelled ? "migration.cancelled" : "migration.rolled_back", guest_, tenant_,
                           {{"host", rec_.source},
                            {"destination", rec_.destination},
                            {"error", rec_.error},
                            {"migration", rec_.id},
                            {"task", task_}});
      case Outcome::kLost:
        UW_RETURN_IF_ERROR(m_.guests_->EndMove(guest_, std::nullopt, "lost", now));
        return m_.AddEvent(
            "guest.lost", guest_, tenant_,
            {{"reason", "migration " + rec_.id + ": on neither " + rec_.source + " nor " + rec_.destination},
             {"error", rec_.error}});
      case Outcome::kFailedAfterSwitchover:
        // The guest is on the destination (its source copy is gone) but not alive there.
        UW_RETURN_IF_ERROR(m_.guests_->EndMove(guest_, rec_.destination, dead_state_, now));
        return m_.AddEvent("migration.failed_after_switchover", guest_, tenant_,
                           {{"from", rec_.source},
                            {"to", rec_.destination},
                            {"state", dead_state_},
                            {"reason", rec_.error},
                            {"console_tail", rec_.console_tail},
                            {"migration", rec_.id},
                            {"task", task_}});
      case Outcome::kUnknown:
        UW_RETURN_IF_ERROR(m_.guests_->EndMove(guest_, std::nullopt, "unknown", now));
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
    ended = m_.store_->Transact(
        [&] { return m_.tasks_->Cancel(task_, "cancelled: the guest stays on its source", result); });
  } else if (outcome == Outcome::kDone) {
    ended = m_.tasks_->Finish(task_, Status::Ok(), result);
  } else {
    Status err = why.ok() ? InternalError("migration ended in " + std::string(mg::PhaseName(rec_.phase))) : why;
    ended = m_.tasks_->Finish(task_, err, result);
    if (ended.ok() && !recommendation_.empty()) {
      ended = RecommendationTable(*m_.store_).Close(recommendation_, RecommendationTable::End::kFailed, err.message());
    }
  }
  if (!ended.ok()) spdlog::error("migration {}: recording the task's end: {}", rec_.id, ended.ToString());
  if (outcome == Outcome::kDone) {
    m_.leases_->AfterMove(guest_, rec_.source, rec_.destination, rec_.stats.downtime_ms, rec_.stats.total_ms);
  }
  spdlog::info("migration {} of {} {} -> {}: {} ({} ms, downtime {} ms){}", rec_.id, guest_, rec_.source,
               rec_.destination, mg::PhaseName(rec_.phase), rec_.stats.total_ms, rec_.stats.downtime_ms,
               why.ok() ? "" : ": " + why.message());
}

}  // namespace uw::manager::internal
