// Executing moves: guest.migrate tasks, ordered by migration::OrderMoves, started by one
// dispatcher under the concurrency caps, each driven through its persisted phases by its own
// thread (see migration/README.md). Crash-only: a restarted manager asks both hosts where the
// guest is and lets migration::Reconcile decide.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <set>

#include "common/id.h"
#include "manager/drs_tables.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/migration_dispatcher.h"
#include "manager/migration_run.h"
#include "manager/migration_table.h"
#include "manager/task_journal.h"
#include "manager/views.h"
#include "placement/placement.h"

namespace uw::manager {

namespace mg = uw::migration;

// ---------------------------------------------------------------------------------------------
// Starting moves

Result<Task> Manager::MigrateGuest(const Principal& p, std::string_view name, const MigrateRequest& req) {
  if (!p.IsOperator()) {
    return PermissionDeniedError("moving guests between hosts needs an operator or admin token");
  }
  // The task's options, as its run reads them (MigrationRun).
  Json options = Json::object();
  if (req.bandwidth_mib_s) options["bandwidth_mib_s"] = *req.bandwidth_mib_s;
  if (req.downtime_limit_ms) options["downtime_limit_ms"] = *req.downtime_limit_ms;
  if (req.allow_postcopy) options["allow_postcopy"] = *req.allow_postcopy;
  const std::string& to = req.host;
  const std::string mode = req.cold ? "cold" : "live";
  UW_ASSIGN_OR_RETURN(Guest g, VisibleGuest(p, name));
  if (!g.host) return FailedPreconditionError("guest '" + std::string(name) + "' is not placed on a host");
  std::string from = *g.host;
  if (from == to) return FailedPreconditionError("guest '" + std::string(name) + "' is already on host " + to);
  if (mode == "live" && g.kind == "lxc") {
    return FailedPreconditionError("guest '" + std::string(name) +
                                   "' is a container: containers cannot live-migrate; move it with mode cold");
  }
  if (mode == "live" && g.state != "running") {
    return FailedPreconditionError("guest '" + std::string(name) + "' is " + g.state +
                                   "; only a running guest migrates live (use mode cold)");
  }
  placement::Move m;
  m.vm = g.name;  // the full name (a short one may have named it)
  m.from = from;
  m.to = to;
  m.priority = 1;
  m.reason = "operator request";
  m.cold = mode == "cold";
  UW_ASSIGN_OR_RETURN(StartedMoves started, StartMoves({m}, {""}, options));
  if (!started.unschedulable.empty()) {
    return AbortedError("cannot move " + std::string(name) + ": " + started.unschedulable[0].reason);
  }
  if (started.tasks.empty()) return AbortedError("cannot move " + std::string(name) + ": not schedulable");
  return std::move(started.tasks[0]);
}

Result<StartedMoves> Manager::StartMoves(const std::vector<placement::Move>& moves,
                                         const std::vector<std::string>& recs, const Json& options) {
  std::lock_guard l(placement_mu_);
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, BuildSnapshot());
  // Guests already busy (a task in flight) are not moved again.
  UW_ASSIGN_OR_RETURN(const std::set<std::string> busy, tasks_->SubjectsInFlight());
  std::vector<placement::Move> candidates;
  std::vector<std::string> candidate_recs;
  StartedMoves out;
  auto refuse = [&](const std::string& rec, const placement::Move& m, const std::string& why) -> Status {
    out.unschedulable.push_back({m.vm, m.from, m.to, why});
    if (!rec.empty()) {
      UW_RETURN_IF_ERROR(internal::RecommendationTable(*store_).Close(
          rec, internal::RecommendationTable::End::kSuperseded, "not schedulable: " + why));
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
  std::vector<std::string> task_of_step;
  for (const mg::Step& st : sched.steps) {
    Json deps = Json::array();
    for (int d : st.depends_on) deps.push_back(task_of_step[d]);
    const std::string& rec = candidate_recs[st.plan_index];
    Json request = {
        {"from", st.move.from},         {"to", st.move.to},         {"mode", st.move.cold ? "cold" : "live"},
        {"priority", st.move.priority}, {"reason", st.move.reason}, {"recommendation", rec},
        {"depends_on", deps},           {"wave", st.wave},          {"options", options}};
    auto owner = guests_->TenantOf(st.move.vm);
    std::string tenant = owner.ok() ? *owner : "";
    UW_ASSIGN_OR_RETURN(Task task, NewTask("guest.migrate", st.move.vm, tenant, request));
    task_of_step.push_back(task.id);
    if (!rec.empty()) {
      UW_RETURN_IF_ERROR(internal::RecommendationTable(*store_).Close(rec, internal::RecommendationTable::End::kApplied,
                                                                      "task " + task_of_step.back()));
    }
    out.tasks.push_back(std::move(task));
  }
  migrations_->Wake();
  out.waves = sched.waves;
  return out;
}

// ---------------------------------------------------------------------------------------------
// The dispatcher

bool Manager::CancelRequested(const std::string& task_id) {
  return migrations_ != nullptr && migrations_->CancelRequested(task_id);
}

// ---------------------------------------------------------------------------------------------
// One migration

void Manager::RunMigration(const std::string& task_id, bool resume) {
  internal::MigrationRun(*this, task_id).Run(resume);
}

// ---------------------------------------------------------------------------------------------
// Reading migrations

Result<Page<Migration>> Manager::ListMigrations(std::string_view guest, const PageQuery& page) {
  return internal::MigrationTable(*store_).List(guest, page);
}

Result<Migration> Manager::GetMigration(std::string_view id) { return internal::MigrationTable(*store_).Get(id); }

}  // namespace uw::manager
