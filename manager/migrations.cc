// Executing moves: guest.migrate tasks, ordered by migration::OrderMoves, started by one
// dispatcher under the concurrency caps, each driven through its persisted phases by its own
// thread (see migration/README.md). Crash-only: a restarted manager asks both hosts where the
// guest is and lets migration::Reconcile decide.
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <set>

#include <spdlog/spdlog.h>

#include "common/id.h"
#include "manager/internal.h"
#include "manager/manager.h"
#include "placement/placement.h"

namespace uw::manager {

using internal::Dump;
using internal::Wrap;
namespace mg = uw::migration;

namespace {

std::string Mib(int64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// The job's figures into the record (a downtime libvirt does not know yet, -1, keeps the last).
void MergeJobStats(const mg::Stats& job, mg::Stats& st) {
  const int64_t downtime = st.downtime_ms;
  st = job;
  if (job.downtime_ms < 0) st.downtime_ms = downtime;
}

enum class Outcome { kDone, kRolledBack, kLost, kUnknown, kFailedAfterSwitchover };

}  // namespace

Json Manager::MigrationConfigJson() const {
  return {{"per_host", config_.migration_caps.per_host},
          {"cluster", config_.migration_caps.cluster},
          {"poll_ms", config_.migration_poll_ms},
          {"agent_grace_ms", config_.migration_agent_grace_ms},
          {"verify_window_ms", config_.migration_verify_window_ms},
          {"verify_timeout_ms", config_.migration_verify_timeout_ms},
          {"convergence", mg::ConvergencePolicyToJson(config_.convergence)}};
}

// ---------------------------------------------------------------------------------------------
// Starting moves

Result<Json> Manager::MigrateGuest(const Principal& p, std::string_view name, const Json& body) {
  if (!p.IsOperator()) {
    return PermissionDeniedError("moving guests between hosts needs an operator or admin token");
  }
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, "body"));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"host", "mode", "bandwidth_mib_s", "downtime_limit_ms", "allow_postcopy"}));
  UW_ASSIGN_OR_RETURN(std::string to, v.String("host"));
  UW_ASSIGN_OR_RETURN(std::string mode, v.String("mode", "live"));
  if (mode != "live" && mode != "cold") return v.FieldError("mode", "expected live or cold");
  Json options = Json::object();
  if (v.Has("bandwidth_mib_s")) {
    UW_ASSIGN_OR_RETURN(double bw, v.Number("bandwidth_mib_s"));
    if (!(bw > 0)) return v.FieldError("bandwidth_mib_s", "expected a positive number");
    options["bandwidth_mib_s"] = bw;
  }
  if (v.Has("downtime_limit_ms")) {
    UW_ASSIGN_OR_RETURN(int64_t d, v.PositiveInt("downtime_limit_ms"));
    options["downtime_limit_ms"] = d;
  }
  if (v.Has("allow_postcopy")) {
    UW_ASSIGN_OR_RETURN(bool pc, v.Bool("allow_postcopy"));
    options["allow_postcopy"] = pc;
  }
  UW_ASSIGN_OR_RETURN(SqlRow g, VisibleGuest(p, name));
  if (g.IsNull("host")) return FailedPreconditionError("guest '" + std::string(name) + "' is not placed on a host");
  std::string from = g.Str("host");
  if (from == to) return FailedPreconditionError("guest '" + std::string(name) + "' is already on host " + to);
  if (mode == "live" && g.Str("kind") == "lxc") {
    return FailedPreconditionError("guest '" + std::string(name) +
                                   "' is a container: containers cannot live-migrate; move it with mode cold");
  }
  if (mode == "live" && g.Str("state") != "running") {
    return FailedPreconditionError("guest '" + std::string(name) + "' is " + g.Str("state") +
                                   "; only a running guest migrates live (use mode cold)");
  }
  placement::Move m;
  m.vm = g.Str("name");  // the full name (a short one may have named it)
  m.from = from;
  m.to = to;
  m.priority = 1;
  m.reason = "operator request";
  m.cold = mode == "cold";
  UW_ASSIGN_OR_RETURN(Json started, StartMoves({m}, {""}, options));
  if (!started["unschedulable"].empty()) {
    return AbortedError("cannot move " + std::string(name) + ": " +
                        started["unschedulable"][0].value("reason", std::string("not schedulable")));
  }
  return started["tasks"][0];
}

Result<Json> Manager::StartMoves(const std::vector<placement::Move>& moves, const std::vector<std::string>& recs,
                                 const Json& options) {
  std::lock_guard l(placement_mu_);
  UW_ASSIGN_OR_RETURN(Json snap_json, BuildSnapshotJson());
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, placement::ParseSnapshot(snap_json));
  // Guests already busy (a task in flight) are not moved again.
  UW_ASSIGN_OR_RETURN(const std::set<std::string> busy, GuestsWithTaskInFlight());
  std::vector<placement::Move> candidates;
  std::vector<std::string> candidate_recs;
  Json unschedulable = Json::array();
  auto refuse = [&](const std::string& rec, const placement::Move& m, const std::string& why) -> Status {
    unschedulable.push_back({{"guest", m.vm}, {"from", m.from}, {"to", m.to}, {"reason", why}});
    if (!rec.empty()) {
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE recommendations SET state = 'superseded', note = ? WHERE id = ?",
                                      {"not schedulable: " + why, rec}));
    }
    return Status::Ok();
  };
  for (size_t i = 0; i < moves.size(); ++i) {
    if (busy.count(moves[i].vm)) {
      UW_RETURN_IF_ERROR(refuse(recs[i], moves[i], "guest " + moves[i].vm + " has a task in flight"));
      continue;
    }
    candidates.push_back(moves[i]);
    candidate_recs.push_back(recs[i]);
  }
  UW_ASSIGN_OR_RETURN(mg::Schedule sched, mg::OrderMoves(snap, candidates, config_.migration_caps));
  for (const auto& u : sched.unschedulable) {
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (candidates[i].vm == u.subject) UW_RETURN_IF_ERROR(refuse(candidate_recs[i], candidates[i], u.reason));
    }
  }
  Json tasks = Json::array();
  std::vector<std::string> task_of_step;
  for (const mg::Step& st : sched.steps) {
    Json deps = Json::array();
    for (int d : st.depends_on) deps.push_back(task_of_step[d]);
    const std::string& rec = candidate_recs[st.plan_index];
    Json request = {{"from", st.move.from},         {"to", st.move.to},
                    {"mode", st.move.cold ? "cold" : "live"}, {"priority", st.move.priority},
                    {"reason", st.move.reason},     {"recommendation", rec},
                    {"depends_on", deps},           {"wave", st.wave},
                    {"options", options}};
    auto g = store_->Query("SELECT tenant FROM guests WHERE name = ?", {st.move.vm});
    std::string tenant = g.ok() && !g->empty() ? (*g)[0].Str("tenant") : "";
    UW_ASSIGN_OR_RETURN(Json task, NewTask("guest.migrate", st.move.vm, tenant, request));
    task_of_step.push_back(task["id"].get<std::string>());
    if (!rec.empty()) {
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE recommendations SET state = 'applied', note = ? WHERE id = ?",
                                      {"task " + task_of_step.back(), rec}));
    }
    tasks.push_back(std::move(task));
  }
  migrator_cv_.notify_all();
  return Json{{"tasks", tasks}, {"unschedulable", unschedulable}, {"waves", sched.waves}};
}

// ---------------------------------------------------------------------------------------------
// The dispatcher

void Manager::MigratorLoop() {
  std::unique_lock l(mu_);
  while (!stopping_) {
    l.unlock();
    DispatchMigrations();
    {
      std::unique_lock ml(migrator_mu_);
      migrator_cv_.wait_for(ml, std::chrono::milliseconds(250));
      for (const auto& id : migrations_finished_) {
        auto it = migration_threads_.find(id);
        if (it == migration_threads_.end()) continue;
        it->second.join();
        migration_threads_.erase(it);
      }
      migrations_finished_.clear();
    }
    l.lock();
  }
}

void Manager::SpawnMigration(const std::string& task_id, bool resume) {
  if (migration_threads_.count(task_id)) return;
  migration_threads_[task_id] = std::thread([this, task_id, resume] {
    // An agent's malformed answer must fail the move, never the process; the migration record
    // keeps its last persisted phase, and recovery at the next start reconciles it.
    try {
      RunMigration(task_id, resume);
    } catch (const std::exception& e) {
      spdlog::error("migration task {}: {}", task_id, e.what());
      if (Status s = FinishTask(task_id, InternalError(std::string("migration aborted: ") + e.what()), nullptr);
          !s.ok()) {
        spdlog::error("migration task {}: cannot record its failure: {}", task_id, s.ToString());
      }
    }
    {
      std::lock_guard l(migrator_mu_);
      migrations_finished_.insert(task_id);
      cancel_requested_.erase(task_id);
    }
    migrator_cv_.notify_all();
  });
}

void Manager::DispatchMigrations() {
  auto rows = store_->Query(
      "SELECT id, subject, state, request FROM tasks WHERE kind = 'guest.migrate' AND state IN ('pending', 'running') "
      "ORDER BY created_ms, rowid");
  if (!rows.ok()) {
    spdlog::warn("migration dispatcher: {}", rows.status().ToString());
    return;
  }
  // The unfinished migrations as one schedule; NextRunnable applies dependencies and caps. A
  // dependency on a task that already finished is met (succeeded) or fatal (failed, cancelled).
  std::map<std::string, int> index;
  for (const auto& r : *rows) index[r.Str("id")] = static_cast<int>(index.size());
  mg::Schedule sched;
  std::vector<mg::StepState> states;
  for (const auto& r : *rows) {
    const std::string id = r.Str("id");
    Json req = r.JsonOf("request");
    mg::Step st;
    st.move.vm = r.Str("subject");
    st.move.from = req.value("from", "");
    st.move.to = req.value("to", "");
    std::string failed_dep;
    for (const auto& d : req.value("depends_on", Json::array())) {
      const std::string dep_id = d.get<std::string>();
      if (auto it = index.find(dep_id); it != index.end()) {
        st.depends_on.push_back(it->second);
        continue;
      }
      auto dep = store_->Query("SELECT state, subject FROM tasks WHERE id = ?", {dep_id});
      if (!dep.ok() || dep->empty()) continue;
      std::string state = (*dep)[0].Str("state");
      if (state == "failed" || state == "cancelled") failed_dep = dep_id + " (move of " + (*dep)[0].Str("subject") + ")";
    }
    states.push_back(r.Str("state") == "running" ? mg::StepState::kRunning : mg::StepState::kPending);
    if (!failed_dep.empty() && states.back() == mg::StepState::kPending) {
      states.back() = mg::StepState::kFailed;
      Status s = FinishTask(id, AbortedError("not started: it depends on task " + failed_dep + ", which did not succeed"),
                            nullptr);
      if (!s.ok()) spdlog::warn("task {}: {}", id, s.ToString());
      if (std::string rec = req.value("recommendation", ""); !rec.empty()) {
        (void)store_->Exec("UPDATE recommendations SET state = 'failed', note = ? WHERE id = ?",
                           {"a move it depends on failed", rec});
      }
    }
    sched.steps.push_back(std::move(st));
  }
  for (int i : mg::NextRunnable(sched, states, config_.migration_caps)) {
    const std::string& id = (*rows)[i].Str("id");
    auto claimed = store_->Query(
        "UPDATE tasks SET state = 'running', attempts = attempts + 1, message = 'starting', updated_ms = ? WHERE id = ? "
        "AND state = 'pending' RETURNING id",
        {NowMs(), id});
    if (!claimed.ok() || claimed->empty()) continue;
    std::lock_guard l(migrator_mu_);
    SpawnMigration(id, false);
  }
}

bool Manager::CancelRequested(const std::string& task_id) {
  std::lock_guard l(migrator_mu_);
  return cancel_requested_.count(task_id) > 0;
}

Status Manager::RecoverMigrations() {
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT id FROM tasks WHERE kind = 'guest.migrate' AND state = 'running'"));
  for (const auto& r : rows) {
    const std::string id = r.Str("id");
    UW_ASSIGN_OR_RETURN(auto mig, store_->Query("SELECT id FROM migrations WHERE task = ?", {id}));
    if (mig.empty()) {
      // Claimed but nothing recorded yet: nothing was done; start it again.
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE tasks SET state = 'pending', message = ?, updated_ms = ? WHERE id = ?",
                                      {"resumed after a manager restart (nothing was done yet)", NowMs(), id}));
      continue;
    }
    UW_RETURN_IF_ERROR(AddEvent("task.resumed", id, "", {{"kind", "guest.migrate"}, {"migration", mig[0].Str("id")}}));
    spdlog::info("recovering migration task {} (migration {})", id, mig[0].Str("id"));
    std::lock_guard l(migrator_mu_);
    SpawnMigration(id, true);
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// One migration

namespace {

// The state of one running migration thread: its record and how to persist it.
struct Run {
  std::string task;
  std::string recommendation;
  std::string tenant;
  mg::Record rec;
  Json options;
  int64_t memory_mib = 0;
  std::string dead_state = "crashed";  // the guest's state when it failed after the switch-over
  std::string arrived_state = "running";  // its state when done ("unknown" when it could not be verified)
};

}  // namespace

void Manager::RunMigration(const std::string& task_id, bool resume) {
  auto task = store_->QueryOne("SELECT subject, tenant, request FROM tasks WHERE id = ?", {task_id}, "task vanished");
  if (!task.ok()) return;
  Run run;
  run.task = task_id;
  run.tenant = task->Str("tenant");
  const Json request = task->JsonOf("request");
  run.recommendation = request.value("recommendation", "");
  run.options = request.value("options", Json::object());
  const std::string guest = task->Str("subject");
  const std::string from = request.value("from", ""), to = request.value("to", "");
  mg::Record& rec = run.rec;

  auto persist = [&]() -> Status {
    return store_->Exec("UPDATE migrations SET phase = ?, record = ?, updated_ms = ? WHERE id = ?",
                        {std::string(mg::PhaseName(rec.phase)), Dump(mg::RecordToJson(rec)), NowMs(), rec.id});
  };
  auto advance = [&](mg::Phase ph, const std::string& note) -> Status {
    UW_RETURN_IF_ERROR(mg::Advance(rec, ph, note));
    return persist();
  };
  auto progress = [&](double f, const std::string& msg) {
    if (Status s = SetTaskProgress(task_id, f, msg); !s.ok()) spdlog::warn("task {}: {}", task_id, s.ToString());
  };
  auto fail_early = [&](const Status& why) {
    if (Status s = FinishTask(task_id, why, nullptr); !s.ok()) spdlog::error("task {}: {}", task_id, s.ToString());
    if (!run.recommendation.empty()) {
      (void)store_->Exec("UPDATE recommendations SET state = 'failed', note = ? WHERE id = ?",
                         {why.message(), run.recommendation});
    }
  };

  // The end of every path: the state store says where the guest is, the task says how it went.
  auto finish = [&](Outcome outcome, const Status& why) {
    const bool cancelled = CancelRequested(task_id) && outcome == Outcome::kRolledBack;
    if ((outcome == Outcome::kDone || outcome == Outcome::kFailedAfterSwitchover) && !mg::IsTerminal(rec.phase)) {
      if (!mg::PastSwitchOver(rec.phase)) {
        if (rec.phase != mg::Phase::kSwitchOver) (void)mg::Advance(rec, mg::Phase::kSwitchOver, "");
        (void)mg::Advance(rec, mg::Phase::kConfirm, "");
      }
      if (rec.phase == mg::Phase::kConfirm) (void)mg::Advance(rec, mg::Phase::kVerify, "");
      (void)mg::Advance(rec, outcome == Outcome::kDone ? mg::Phase::kDone : mg::Phase::kFailedAfterSwitchover,
                        why.ok() ? "" : why.message());
    } else if (outcome == Outcome::kRolledBack && !mg::IsTerminal(rec.phase)) {
      if (rec.phase != mg::Phase::kRollingBack) (void)mg::Advance(rec, mg::Phase::kRollingBack, why.message());
      (void)mg::Advance(rec, mg::Phase::kRolledBack, "");
    } else if (!mg::IsTerminal(rec.phase)) {
      (void)mg::Advance(rec, mg::Phase::kFailed, why.message());
    }
    if (!why.ok()) rec.error = why.message();
    Status s = store_->Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(persist());
      const int64_t now = NowMs();
      switch (outcome) {
        case Outcome::kDone:
          UW_RETURN_IF_ERROR(store_->Exec(
              "UPDATE guests SET host = ?, migrating_to = NULL, state = ?, updated_ms = ? WHERE name = ?",
              {rec.destination, run.arrived_state, now, guest}));
          return AddEvent("guest.migrated", guest, run.tenant,
                          {{"from", rec.source}, {"to", rec.destination}, {"mode", mg::ModeName(rec.mode)},
                           {"total_ms", rec.stats.total_ms}, {"downtime_ms", rec.stats.downtime_ms},
                           {"migration", rec.id}, {"task", task_id}});
        case Outcome::kRolledBack:
          UW_RETURN_IF_ERROR(
              store_->Exec("UPDATE guests SET migrating_to = NULL, updated_ms = ? WHERE name = ?", {now, guest}));
          return AddEvent(cancelled ? "migration.cancelled" : "migration.rolled_back", guest, run.tenant,
                          {{"host", rec.source}, {"destination", rec.destination}, {"error", rec.error},
                           {"migration", rec.id}, {"task", task_id}});
        case Outcome::kLost:
          UW_RETURN_IF_ERROR(store_->Exec(
              "UPDATE guests SET migrating_to = NULL, state = 'lost', updated_ms = ? WHERE name = ?", {now, guest}));
          return AddEvent("guest.lost", guest, run.tenant,
                          {{"reason", "migration " + rec.id + ": on neither " + rec.source + " nor " + rec.destination},
                           {"error", rec.error}});
        case Outcome::kFailedAfterSwitchover:
          // The guest is on the destination (its source copy is gone) but not alive there.
          UW_RETURN_IF_ERROR(store_->Exec(
              "UPDATE guests SET host = ?, migrating_to = NULL, state = ?, updated_ms = ? WHERE name = ?",
              {rec.destination, run.dead_state, now, guest}));
          return AddEvent("migration.failed_after_switchover", guest, run.tenant,
                          {{"from", rec.source}, {"to", rec.destination}, {"state", run.dead_state},
                           {"reason", rec.error}, {"console_tail", rec.console_tail}, {"migration", rec.id},
                           {"task", task_id}});
        case Outcome::kUnknown:
          UW_RETURN_IF_ERROR(store_->Exec(
              "UPDATE guests SET migrating_to = NULL, state = 'unknown', updated_ms = ? WHERE name = ?", {now, guest}));
          return AddEvent("migration.failed", guest, run.tenant,
                          {{"reason", "hosts unreachable; the heartbeats will tell where the guest runs"},
                           {"error", rec.error}, {"migration", rec.id}});
      }
      return Status::Ok();
    });
    if (!s.ok()) spdlog::error("migration {}: recording the outcome: {}", rec.id, s.ToString());
    Json result = {{"migration", rec.id},       {"guest", guest},
                   {"from", rec.source},        {"to", rec.destination},
                   {"host", outcome == Outcome::kDone || outcome == Outcome::kFailedAfterSwitchover ? rec.destination
                                                                                                     : rec.source},
                   {"phase", mg::PhaseName(rec.phase)}, {"mode", mg::ModeName(rec.mode)},
                   {"total_ms", rec.stats.total_ms}, {"downtime_ms", rec.stats.downtime_ms},
                   {"attempts", rec.attempt}};
    if (cancelled) {
      (void)store_->Exec(
          "UPDATE tasks SET state = 'cancelled', message = 'cancelled: the guest stays on its source', error_code = "
          "'aborted', error_message = 'cancelled by request', result = ?, updated_ms = ? WHERE id = ?",
          {Dump(result), NowMs(), task_id});
      (void)AddEvent("task.cancelled", task_id, run.tenant, {{"kind", "guest.migrate"}, {"subject", guest}});
      tasks_cv_.notify_all();
    } else if (outcome == Outcome::kDone) {
      (void)FinishTask(task_id, Status::Ok(), result);
    } else {
      Status err = why.ok() ? InternalError("migration ended in " + std::string(mg::PhaseName(rec.phase))) : why;
      (void)FinishTask(task_id, err, result);
      if (!run.recommendation.empty()) {
        (void)store_->Exec("UPDATE recommendations SET state = 'failed', note = ? WHERE id = ?",
                           {err.message(), run.recommendation});
      }
    }
    spdlog::info("migration {} of {} {} -> {}: {} ({} ms, downtime {} ms){}", rec.id, guest, rec.source, rec.destination,
                 mg::PhaseName(rec.phase), rec.stats.total_ms, rec.stats.downtime_ms,
                 why.ok() ? "" : ": " + why.message());
  };

  // --- begin ---------------------------------------------------------------------------------
  if (!resume) {
    auto g = store_->QueryOne("SELECT * FROM guests WHERE name = ?", {guest}, "guest '" + guest + "' not found");
    if (!g.ok()) return fail_early(g.status());
    if (g->IsNull("host") || g->Str("host") != from) {
      return fail_early(AbortedError("guest " + guest + " is on " + (g->IsNull("host") ? "no host" : g->Str("host")) +
                                     " now, not " + from + " (the plan is stale)"));
    }
    const bool cold = request.value("mode", "live") == "cold";
    if (!cold && g->Str("state") != "running") {
      return fail_early(FailedPreconditionError("guest " + guest + " is " + g->Str("state") + "; it must run to migrate live"));
    }
    // Verify the step on the current state (plan, verify, apply).
    {
      std::lock_guard l(placement_mu_);
      auto snap_json = BuildSnapshotJson();
      if (!snap_json.ok()) return fail_early(snap_json.status());
      auto snap = placement::ParseSnapshot(*snap_json);
      if (!snap.ok()) return fail_early(snap.status());
      placement::Plan one;
      placement::Move m;
      m.vm = guest;
      m.from = from;
      m.to = to;
      m.cold = cold;
      one.moves.push_back(m);
      if (Status s = placement::CheckPlan(*snap, one); !s.ok()) {
        return fail_early(AbortedError("the move no longer fits the cluster: " + s.message()));
      }
      rec.id = NewId("mig");
      rec.guest = guest;
      rec.source = from;
      rec.destination = to;
      rec.mode = cold ? mg::Mode::kCold : mg::Mode::kLive;
      rec.bandwidth_mib_s = run.options.value("bandwidth_mib_s", config_.convergence.bandwidth_mib_s);
      rec.downtime_limit_ms = run.options.value("downtime_limit_ms", config_.convergence.downtime_limit_ms);
      rec.history.push_back("begin: " + request.value("reason", std::string("")));
      Status s = store_->Transact([&]() -> Status {
        UW_RETURN_IF_ERROR(store_->Exec(
            "INSERT INTO migrations(id, task, guest, source, destination, mode, phase, record, created_ms, updated_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, 'begin', ?, ?, ?)",
            {rec.id, task_id, guest, from, to, std::string(mg::ModeName(rec.mode)), Dump(mg::RecordToJson(rec)), NowMs(),
             NowMs()}));
        // The destination's capacity is held from now on (memory counts on both hosts).
        UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET migrating_to = ? WHERE name = ?", {to, guest}));
        return AddEvent("migration.started", guest, run.tenant,
                        {{"from", from}, {"to", to}, {"mode", mg::ModeName(rec.mode)}, {"migration", rec.id},
                         {"task", task_id}});
      });
      if (!s.ok()) return fail_early(s);
    }
  } else {
    auto row = store_->QueryOne("SELECT record FROM migrations WHERE task = ?", {task_id}, "migration record");
    if (!row.ok()) return fail_early(row.status());
    auto parsed = mg::ParseRecord(row->JsonOf("record"));
    if (!parsed.ok()) return fail_early(parsed.status().WithContext("migration record of task " + task_id));
    rec = *parsed;
    if (mg::IsTerminal(rec.phase)) {
      // Crashed after the record but before the task: finish from the record.
      return finish(rec.phase == mg::Phase::kDone                    ? Outcome::kDone
                    : rec.phase == mg::Phase::kFailedAfterSwitchover ? Outcome::kFailedAfterSwitchover
                    : rec.phase == mg::Phase::kRolledBack            ? Outcome::kRolledBack
                                                                     : Outcome::kLost,
                    rec.error.empty() ? Status::Ok() : AbortedError(rec.error));
    }
    rec.history.push_back("resumed after a manager restart in " + std::string(mg::PhaseName(rec.phase)));
  }
  {
    auto g = store_->Query("SELECT memory_mib FROM guests WHERE name = ?", {guest});
    run.memory_mib = g.ok() && !g->empty() ? (*g)[0].Int("memory_mib") : 0;
  }
  const auto poll = std::chrono::milliseconds(config_.migration_poll_ms);
  auto sleep_poll = [&] {
    std::unique_lock l(mu_);
    cv_.wait_for(l, poll, [this] { return stopping_; });
    return !stopping_;
  };
  // Removes what an incoming copy left on the destination (best effort: the destination's
  // heartbeat reconcile reports leftovers when it cannot be reached now).
  auto abandon_destination = [&] {
    Status r = AgentOf(rec.destination)->AbandonIncoming(guest);
    if (!r.ok()) spdlog::warn("migration {}: cleaning the destination: {}", rec.id, r.ToString());
  };

  // The guest runs on the destination and its source copy is gone: watch it there through the
  // verification window (mg::VerifyCheck), then finish done or failed_after_switchover.
  auto verify_and_finish = [&] {
    if (rec.phase != mg::Phase::kVerify) {
      if (!mg::PastSwitchOver(rec.phase)) {
        if (rec.phase != mg::Phase::kSwitchOver) (void)mg::Advance(rec, mg::Phase::kSwitchOver, "");
        (void)mg::Advance(rec, mg::Phase::kConfirm, "");
      }
      if (Status s = advance(mg::Phase::kVerify, "watching the guest on " + rec.destination); !s.ok()) {
        return finish(Outcome::kUnknown, s.WithContext("recording the verify phase"));
      }
    }
    // libvirt leaves a shut-off definition on the source when nobody confirmed the move there (the
    // source agent restarted mid-transfer): it is removed here, and the move is done only once the
    // source has no copy (an unreachable source is cleaned by its next heartbeat instead).
    auto source_clean = [&]() -> bool {
      auto src = AgentOf(rec.source)->Get(guest);
      if (!src.ok()) return true;  // gone (not found), or unreachable: Reconcile removes it later
      if (PresenceOf(src) != mg::Presence::kAbsent) return false;  // paused until libvirt confirms
      Status del = AgentOf(rec.source)->Delete(guest, false);
      if (!del.ok() && del.code() != StatusCode::kNotFound) {
        spdlog::warn("migration {}: removing the shut-off source copy: {}", rec.id, del.ToString());
        return false;
      }
      return true;
    };
    bool clean = false;
    progress(0.97, "verifying the guest on " + rec.destination);
    const mg::VerifyPolicy policy{config_.migration_verify_window_ms / 1000.0,
                                  config_.migration_verify_timeout_ms / 1000.0,
                                  config_.migration_agent_grace_ms / 1000.0};
    const auto t0 = std::chrono::steady_clock::now();
    mg::VerifyObservation o;
    while (true) {
      o.since_switchover_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      auto dst = AgentOf(rec.destination)->Get(guest);
      o.reachable = dst.ok() || dst.status().code() == StatusCode::kNotFound;
      o.state = dst.ok() ? dst->state : "";
      o.has_channel = dst.ok() && dst->has_channel;
      if (o.reachable && o.has_channel && !o.answered && o.state == "running") {
        auto r = AgentOf(rec.destination)->Exec(guest, ExecRequest{.command = "true", .timeout_s = 5});
        o.answered = r.ok() && r->exit_code == 0;
      }
      if (!clean) clean = source_clean();
      std::string why;
      mg::Verdict verdict = mg::VerifyCheck(o, policy, &why);
      if (verdict == mg::Verdict::kVerified && !clean && o.since_switchover_s < policy.timeout_s) {
        verdict = mg::Verdict::kWait;
      }
      switch (verdict) {
        case mg::Verdict::kWait:
          if (!sleep_poll()) return;  // manager stopping: the next start verifies again
          continue;
        case mg::Verdict::kVerified:
          if (!clean) rec.history.push_back("verify: the source " + rec.source + " still has a copy; its heartbeat removes it");
          rec.history.push_back("verify: running on " + rec.destination +
                                (o.has_channel ? " and answering its control channel" : ""));
          return finish(Outcome::kDone, Status::Ok());
        case mg::Verdict::kUnreachable:
          // libvirt resumed it there (peer-to-peer, without the agents), but nobody can look: the
          // guest is on the destination in an unknown state until that host's heartbeats say.
          rec.history.push_back("verify: not possible: " + why + "; the host's heartbeats will tell");
          run.arrived_state = "unknown";
          return finish(Outcome::kDone, Status::Ok());
        case mg::Verdict::kDied:
          rec.console_tail = ConsoleTail(rec.destination, guest, 2048);
          run.dead_state = o.state.empty() ? "lost" : o.state == "running" ? "unresponsive" : o.state;
          spdlog::error("migration {}: {} failed after the switch-over: {}; console:\n{}", rec.id, guest, why,
                        rec.console_tail);
          return finish(Outcome::kFailedAfterSwitchover, InternalError("guest " + guest + " failed after the move to " +
                                                                       rec.destination + ": " + why));
      }
    }
  };

  // --- cold move -----------------------------------------------------------------------------
  if (rec.mode == mg::Mode::kCold) {
    auto source = AgentOf(rec.source), destination = AgentOf(rec.destination);
    auto on_dest = destination->Get(guest);
    auto on_src = source->Get(guest);
    if (resume) {
      if (PresenceOf(on_dest) == mg::Presence::kRunning) {
        if (on_src.ok()) (void)source->Delete(guest, true);
        return verify_and_finish();
      }
      if (on_src.ok()) {
        if (on_dest.ok()) (void)destination->Delete(guest, true);
        if (PresenceOf(on_src) != mg::Presence::kRunning) (void)source->Start(guest);
        return finish(Outcome::kRolledBack, AbortedError("manager restarted during a cold move; started again on the source"));
      }
      return finish(Outcome::kLost, InternalError("guest on neither host after a manager restart"));
    }
    auto spec_row = store_->QueryOne("SELECT spec FROM guests WHERE name = ?", {guest}, "guest row");
    if (!spec_row.ok()) return finish(Outcome::kRolledBack, spec_row.status());
    if (!on_src.ok()) return finish(Outcome::kRolledBack, on_src.status());
    if (!on_src->local_disks.empty()) {
      return finish(Outcome::kRolledBack,
                    FailedPreconditionError("guest " + guest + " has local disks: cold moves carry shared storage only"));
    }
    const bool was_running = PresenceOf(on_src) == mg::Presence::kRunning;
    (void)advance(mg::Phase::kPrepare, "cold: stop on " + rec.source);
    progress(0.2, "cold move: stopping the guest on " + rec.source);
    auto t0 = std::chrono::steady_clock::now();
    if (was_running) {
      auto s = source->Stop(guest, StopRequest{});
      if (!s.ok()) return finish(Outcome::kRolledBack, s.status());
    }
    (void)advance(mg::Phase::kTransfer, "cold: define on " + rec.destination);
    progress(0.5, "cold move: starting the guest on " + rec.destination);
    Json spec = spec_row->JsonOf("spec");
    spec["start"] = was_running;
    auto made = destination->Create(spec);
    if (!made.ok()) {
      if (was_running) (void)source->Start(guest);
      return finish(Outcome::kRolledBack, made.status().WithContext("creating the guest on " + rec.destination));
    }
    (void)advance(mg::Phase::kSwitchOver, "cold: running on " + rec.destination);
    (void)advance(mg::Phase::kConfirm, "cold: delete on " + rec.source);
    Status del = source->Delete(guest, true);
    if (!del.ok() && del.code() != StatusCode::kNotFound) {
      spdlog::warn("migration {}: removing the source copy: {}", rec.id, del.ToString());
    }
    rec.stats.total_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    rec.stats.downtime_ms = was_running ? rec.stats.total_ms : 0;
    if (!was_running) return finish(Outcome::kDone, Status::Ok());
    return verify_and_finish();
  }

  // --- live migration ------------------------------------------------------------------------
  const bool postcopy_armed = run.options.value("allow_postcopy", config_.convergence.allow_postcopy);
  mg::ConvergencePolicy policy = config_.convergence;
  policy.allow_postcopy = postcopy_armed;
  if (rec.bandwidth_mib_s > policy.max_bandwidth_mib_s) policy.max_bandwidth_mib_s = rec.bandwidth_mib_s;

  // Prepares the destination and starts the transfer (also for an auto-converge restart).
  auto start_transfer = [&]() -> Status {
    UW_ASSIGN_OR_RETURN(AgentGuest src, AgentOf(rec.source)->Get(guest));
    IncomingRequest prep;
    prep.guest = guest;
    prep.kind = src.kind;
    prep.memory_mib = std::max<int64_t>(1, src.max_memory_mib);
    prep.vcpus = std::max<int64_t>(1, src.max_vcpus);
    prep.disks = src.local_disks;
    auto dest = AgentOf(rec.destination)->PrepareIncoming(prep);
    if (!dest.ok()) return dest.status().WithContext("preparing " + rec.destination);
    rec.copy_storage = !prep.disks.empty();
    if (rec.phase == mg::Phase::kBegin) UW_RETURN_IF_ERROR(advance(mg::Phase::kPrepare, "destination ready"));
    TransferRequest transfer;
    transfer.destination_host = rec.destination;
    transfer.destination = *dest;
    transfer.bandwidth_mib_s = rec.bandwidth_mib_s;
    transfer.downtime_limit_ms = rec.downtime_limit_ms;
    transfer.auto_converge = rec.auto_converge;
    transfer.postcopy = postcopy_armed;
    // Recorded before it is asked for: a restart finds "transfer" and asks the hosts.
    UW_RETURN_IF_ERROR(advance(mg::Phase::kTransfer, rec.attempt > 1 ? "attempt " + std::to_string(rec.attempt) +
                                                                          (rec.auto_converge ? " with auto-converge" : "")
                                                                    : "started"));
    Status started = AgentOf(rec.source)->StartMigration(guest, transfer);
    if (!started.ok()) return started.WithContext("starting the transfer on " + rec.source);
    return Status::Ok();
  };

  // Where things stand when the monitor cannot tell (agent restarted, manager restarted).
  // Returns true when it finished the migration, false to keep monitoring.
  auto settle = [&](const Status& cause) -> bool {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.migration_agent_grace_ms);
    while (true) {
      auto source = AgentOf(rec.source);
      auto src = source->Get(guest);
      auto dst = AgentOf(rec.destination)->Get(guest);
      auto job = source->MigrationStatus(guest);
      if (mg::PastSwitchOver(rec.phase) && dst.ok() && !(job.ok() && job->state == "running")) {
        // The destination has it, in whatever state: the verification says whether it lives (and
        // removes a shut-off source copy).
        verify_and_finish();
        return true;
      }
      mg::Observation o{PresenceOf(src), PresenceOf(dst), job.ok() && job->state == "running"};
      mg::Recovery r = mg::Reconcile(rec.phase, o);
      spdlog::info("migration {}: source {}, destination {}, job {} -> {}", rec.id, src.ok() ? src->state : src.status().ToString(),
                   dst.ok() ? dst->state : dst.status().ToString(), o.job_active ? "active" : "none",
                   mg::RecoveryName(r));
      switch (r) {
        case mg::Recovery::kWait:
          if (o.job_active) return false;  // libvirt is still migrating: back to monitoring
          break;
        case mg::Recovery::kRollBack:
          (void)mg::Advance(rec, mg::Phase::kRollingBack, cause.ok() ? "rolled back" : cause.message());
          (void)persist();
          abandon_destination();
          if (o.source == mg::Presence::kPaused) (void)source->Resume(guest);
          finish(Outcome::kRolledBack, cause.ok() ? AbortedError("migration did not complete") : cause);
          return true;
        case mg::Recovery::kFinishOnSource:
          abandon_destination();
          finish(Outcome::kRolledBack, cause.ok() ? AbortedError("migration did not complete") : cause);
          return true;
        case mg::Recovery::kConfirm:
          if (!mg::PastSwitchOver(rec.phase)) {
            if (rec.phase != mg::Phase::kSwitchOver) (void)mg::Advance(rec, mg::Phase::kSwitchOver, "found on the destination");
            (void)mg::Advance(rec, mg::Phase::kConfirm, "removing the source copy");
            (void)persist();
          }
          (void)source->Delete(guest, true);
          verify_and_finish();
          return true;
        case mg::Recovery::kFinishOnDestination:
          // A shut-off source definition is what libvirt leaves when nobody confirmed (the source
          // agent restarted mid-transfer): the verification removes it.
          verify_and_finish();
          return true;
        case mg::Recovery::kLost:
          finish(Outcome::kLost, InternalError("guest " + guest + " runs on neither " + rec.source + " nor " +
                                               rec.destination + (cause.ok() ? "" : ": " + cause.message())));
          return true;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        finish(Outcome::kUnknown, UnavailableError("hosts did not answer for " +
                                                   std::to_string(config_.migration_agent_grace_ms / 1000) +
                                                   " s; last error: " + (src.ok() ? dst.status() : src.status()).message()));
        return true;
      }
      if (!sleep_poll()) return true;  // manager stopping: the next start recovers it
    }
  };

  if (!resume) {
    progress(0.05, "preparing " + rec.destination);
    if (Status s = start_transfer(); !s.ok()) {
      if (rec.phase == mg::Phase::kTransfer) {
        if (settle(s)) return;
      } else {
        (void)mg::Advance(rec, mg::Phase::kRollingBack, s.message());
        abandon_destination();
        return finish(Outcome::kRolledBack, s);
      }
    }
  } else if (rec.phase == mg::Phase::kBegin || rec.phase == mg::Phase::kPrepare) {
    // Nothing was started: clean the destination and leave the guest where it is.
    (void)mg::Advance(rec, mg::Phase::kRollingBack, "manager restarted before the transfer");
    abandon_destination();
    return finish(Outcome::kRolledBack, AbortedError("the manager restarted before the transfer began"));
  } else if (settle(Status::Ok())) {
    return;
  }

  // Monitor the transfer.
  mg::ConvergenceState cst;
  cst.bandwidth_raised = rec.bandwidth_mib_s >= policy.max_bandwidth_mib_s;
  cst.auto_converge = rec.auto_converge;
  cst.postcopy_started = rec.postcopy;
  auto attempt_start = std::chrono::steady_clock::now();
  bool cancel_sent = false, restarting = false;
  std::string abort_reason;
  std::optional<std::chrono::steady_clock::time_point> unreachable_since;
  while (true) {
    if (!sleep_poll()) return;  // stopping: recovered on the next start
    if (!cancel_sent && CancelRequested(task_id)) {
      cancel_sent = true;
      abort_reason = "cancelled by request";
      Status c = AgentOf(rec.source)->CancelMigration(guest);
      if (!c.ok()) spdlog::warn("migration {}: cancel: {}", rec.id, c.ToString());
      progress(0.5, "cancelling");
    }
    auto st = AgentOf(rec.source)->MigrationStatus(guest);
    if (!st.ok()) {
      if (!unreachable_since) unreachable_since = std::chrono::steady_clock::now();
      progress(0.5, "source agent unreachable: " + st.status().message());
      if (std::chrono::steady_clock::now() - *unreachable_since < std::chrono::seconds(5)) continue;
      if (settle(st.status())) return;
      unreachable_since.reset();
      continue;
    }
    unreachable_since.reset();
    const std::string state = st->state;
    if (st->stats) MergeJobStats(*st->stats, rec.stats);
    if (state == "running") {
      const mg::Stats& s = rec.stats;
      double done = s.memory_total_bytes > 0
                        ? static_cast<double>(s.memory_processed_bytes) /
                              static_cast<double>(std::max<int64_t>(1, s.memory_processed_bytes + s.memory_remaining_bytes))
                        : 0;
      char msg[200];
      std::snprintf(msg, sizeof msg, "transfer to %s: %s left of %s, dirty %lld pages/s, expected downtime %lld ms%s",
                    rec.destination.c_str(), Mib(s.memory_remaining_bytes + s.disk_remaining_bytes).c_str(),
                    Mib(s.memory_total_bytes + s.disk_total_bytes).c_str(), static_cast<long long>(s.dirty_rate_pages_s),
                    static_cast<long long>(std::max<int64_t>(0, s.expected_downtime_ms)),
                    rec.attempt > 1 ? (" (attempt " + std::to_string(rec.attempt) + ")").c_str() : "");
      progress(0.1 + 0.85 * std::min(1.0, done), msg);
      if (cancel_sent || restarting || !abort_reason.empty()) continue;
      mg::ConvergenceInput in;
      in.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - attempt_start).count();
      in.memory_mib = run.memory_mib;
      in.stats = s;
      in.bandwidth_mib_s = rec.bandwidth_mib_s;
      in.postcopy_armed = postcopy_armed;
      mg::Decision d = mg::Decide(cst, in, policy);
      if (d.action == mg::Action::kContinue) continue;
      rec.history.push_back("transfer: " + std::string(mg::ActionName(d.action)) + " (" + d.reason + ")");
      spdlog::info("migration {}: {} ({})", rec.id, mg::ActionName(d.action), d.reason);
      (void)AddEvent("migration.escalated", guest, run.tenant,
                     {{"migration", rec.id}, {"action", mg::ActionName(d.action)}, {"reason", d.reason}});
      switch (d.action) {
        case mg::Action::kRaiseBandwidth: {
          if (AgentOf(rec.source)->SetMigrationBandwidth(guest, d.bandwidth_mib_s).ok()) {
            rec.bandwidth_mib_s = d.bandwidth_mib_s;
          }
          break;
        }
        case mg::Action::kRestartWithAutoConverge:
          restarting = true;
          (void)AgentOf(rec.source)->CancelMigration(guest);
          break;
        case mg::Action::kStartPostCopy:
          if (AgentOf(rec.source)->StartPostCopy(guest).ok()) rec.postcopy = true;
          break;
        case mg::Action::kAbort:
          abort_reason = d.reason;
          (void)AgentOf(rec.source)->CancelMigration(guest);
          break;
        case mg::Action::kContinue: break;
      }
      (void)persist();
      continue;
    }
    if (state == "completed") {
      Status recorded = advance(mg::Phase::kSwitchOver,
                                "libvirt completed; downtime " + std::to_string(rec.stats.downtime_ms) + " ms");
      if (recorded.ok()) recorded = advance(mg::Phase::kConfirm, "source copy removed by " + rec.source);
      if (!recorded.ok()) return finish(Outcome::kUnknown, recorded.WithContext("recording the switch-over"));
      // Completed is not alive: the destination must show the guest running (and answering).
      return verify_and_finish();
    }
    if (state == "failed" || state == "cancelled") {
      const std::string error = st->error;
      if (restarting && !cancel_sent) {
        restarting = false;
        ++rec.attempt;
        rec.auto_converge = true;
        abandon_destination();
        attempt_start = std::chrono::steady_clock::now();
        if (Status s = start_transfer(); !s.ok()) {
          if (settle(s)) return;
        }
        continue;
      }
      Status why = cancel_sent ? AbortedError("cancelled by request")
                   : !abort_reason.empty()
                       ? DeadlineExceededError("migration " + abort_reason + "; the guest stays on " + rec.source)
                       : UnavailableError("libvirt: " + error);
      (void)mg::Advance(rec, mg::Phase::kRollingBack, why.message());
      (void)persist();
      if (settle(why)) return;
      continue;
    }
    // "none": the agent restarted and libvirt has no job: see what is where.
    if (settle(UnavailableError("the source agent lost track of the migration (restarted?)"))) return;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading migrations

namespace {
Json MigrationRowJson(const SqlRow& r) {
  Json j = r.JsonOf("record");
  j["task"] = r.Str("task");
  j["created"] = FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("created_ms"))));
  j["updated"] = FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("updated_ms"))));
  return j;
}
}  // namespace

Result<Json> Manager::ListMigrations(std::string_view guest, int64_t limit) {
  std::vector<SqlRow> rows;
  if (guest.empty()) {
    UW_ASSIGN_OR_RETURN(rows, store_->Query("SELECT * FROM migrations ORDER BY created_ms DESC, rowid DESC LIMIT ?", {limit}));
  } else {
    UW_ASSIGN_OR_RETURN(rows, store_->Query("SELECT * FROM migrations WHERE guest = ? ORDER BY created_ms DESC, rowid "
                                            "DESC LIMIT ?",
                                            {std::string(guest), limit}));
  }
  Json out = Json::array();
  for (const auto& r : rows) out.push_back(MigrationRowJson(r));
  Json j = Wrap("migrations", std::move(out));
  j["config"] = MigrationConfigJson();
  return j;
}

Result<Json> Manager::GetMigration(std::string_view id) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT * FROM migrations WHERE id = ?", {std::string(id)},
                                                 "migration '" + std::string(id) + "' not found"));
  return MigrationRowJson(r);
}

}  // namespace uw::manager
