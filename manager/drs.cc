// DRS: the stored settings (SettingsTable), plans on the current snapshot, recommendations and applying them.
// Part of Manager (manager.h), which is split by responsibility across manager/*.cc.
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "api/http.h"
#include "common/id.h"
#include "manager/drs_tables.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/snapshot_builder.h"
#include "placement/placement.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

using internal::Dump;

// ---------------------------------------------------------------------------------------------
// DRS

namespace {

// The stored form (settings 'drs'), also the drs.config_changed event's payload.
Json StoredDrsConfig(const DrsConfig& c) {
  return {{"automation", c.automation},
          {"threshold", c.threshold},
          {"max_moves", c.max_moves ? Json(*c.max_moves) : Json(nullptr)},
          {"policy", c.policy},
          {"allow_cold_moves", c.allow_cold_moves},
          {"min_move_interval_s", c.min_move_interval_s}};
}

}  // namespace

Result<DrsConfig> Manager::GetDrsConfig() {
  DrsConfig cfg;
  // min_move_interval_s: the engine's cooldown (placement::DrsSettings), same name and default.
  cfg.min_move_interval_s = placement::DrsSettings().min_move_interval_s;
  cfg.interval_ms = config_.drs_interval_ms;
  UW_ASSIGN_OR_RETURN(std::optional<Json> stored, internal::SettingsTable(*store_).Get("drs"));
  if (!stored) return cfg;
  // Written by SetDrsConfig only; a field missing from an older row keeps its default.
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(*stored, "stored drs config"));
  UW_ASSIGN_OR_RETURN(cfg.automation, v.String("automation", cfg.automation));
  UW_ASSIGN_OR_RETURN(int64_t threshold, v.Int("threshold", cfg.threshold));
  cfg.threshold = static_cast<int>(std::clamp<int64_t>(threshold, 1, 5));
  UW_ASSIGN_OR_RETURN(cfg.max_moves, v.OptionalInt("max_moves"));
  UW_ASSIGN_OR_RETURN(cfg.policy, v.String("policy", cfg.policy));
  UW_ASSIGN_OR_RETURN(cfg.allow_cold_moves, v.Bool("allow_cold_moves", cfg.allow_cold_moves));
  UW_ASSIGN_OR_RETURN(cfg.min_move_interval_s, v.Number("min_move_interval_s", cfg.min_move_interval_s));
  return cfg;
}

Result<DrsConfig> Manager::SetDrsConfig(const DrsConfig& config) {
  const Json stored = StoredDrsConfig(config);
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(internal::SettingsTable(*store_).Put("drs", stored));
    return AddEvent("drs.config_changed", "drs", "", stored);
  }));
  return GetDrsConfig();
}

Result<Page<Recommendation>> Manager::ListRecommendations(bool pending_only, const PageQuery& page) {
  // Pending ones (a few per guest at most) by priority; all of them newest first.
  internal::RecommendationTable recs(*store_);
  if (!pending_only) return recs.List(page);
  UW_ASSIGN_OR_RETURN(std::vector<Recommendation> pending, recs.Pending());
  return internal::PageList(
      std::move(pending), page, [](const Recommendation& r) { return r.id; }, false);
}

Result<placement::Plan> Manager::DryRunPlan(const Json* snapshot) {
  // A given snapshot is planned by the default policy; the live cluster by the configured one.
  if (snapshot) {
    UW_ASSIGN_OR_RETURN(placement::Snapshot snap, placement::ParseSnapshot(*snapshot));
    return placement::MakePlan(snap, "drs");
  }
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, BuildSnapshot());
  UW_ASSIGN_OR_RETURN(DrsConfig cfg, GetDrsConfig());
  return placement::MakePlan(snap, cfg.policy);
}

Result<DrsPass> Manager::RunDrs() {
  UW_ASSIGN_OR_RETURN(DrsConfig cfg, GetDrsConfig());
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, BuildSnapshot());
  UW_ASSIGN_OR_RETURN(placement::Plan plan, placement::MakePlan(snap, cfg.policy));
  // Per-guest automation overrides: "disabled" guests are never moved (they are marked
  // non-migratable in the snapshot); "manual" guests are only recommended even in automatic mode.
  UW_ASSIGN_OR_RETURN(auto override_of, guests_->AutomationByGuest());
  // Guests that stay where they are this pass: a task in flight (a migration, a start...) or
  // automation "disabled". The snapshot marks them non-migratable, which still lets the engine move
  // them cold out of a host in maintenance; their moves are held back (what remains is verified
  // again by OrderMoves when it starts) and the pass says how many were.
  UW_ASSIGN_OR_RETURN(const std::set<std::string> held, GuestsWithTaskInFlight());
  const size_t held_moves = std::erase_if(
      plan.moves, [&](const placement::Move& m) { return held.count(m.vm) > 0 || override_of[m.vm] == "disabled"; });
  int64_t now = NowMs();
  std::vector<std::string> ids;
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(ids, internal::RecommendationTable(*store_).ReplacePending(plan, now));
    return AddEvent("drs.pass", "drs", "",
                    {{"automation", cfg.automation},
                     {"recommendations", plan.moves.size()},
                     {"imbalance_before", plan.before.imbalance},
                     {"imbalance_after", plan.after.imbalance},
                     {"unresolved", plan.unresolved.size()},
                     {"held_back", held_moves}});
  }));
  // Applied now: everything in automatic mode, and in any mode the evacuation of hosts in
  // maintenance (mandatory), except guests whose own automation is manual.
  std::set<std::string> maintenance;
  for (const auto& h : snap.hosts) {
    if (h.state == placement::HostState::kMaintenance) maintenance.insert(h.name);
  }
  std::vector<placement::Move> apply;
  std::vector<std::string> apply_ids;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (override_of[plan.moves[i].vm] == "manual") continue;
    if (cfg.automation != "automatic" && !maintenance.count(plan.moves[i].from)) continue;
    apply.push_back(plan.moves[i]);
    apply_ids.push_back(ids[i]);
  }
  DrsPass out;
  if (!apply.empty()) {
    auto started = StartMoves(apply, apply_ids, Json::object());
    if (!started.ok()) {
      spdlog::warn("DRS could not start its moves: {}", started.status().ToString());
    } else {
      out.started = std::move(*started);
    }
  }
  out.plan = std::move(plan);
  return out;
}

Result<Task> Manager::ApplyRecommendation(std::string_view id) {
  internal::RecommendationTable recs(*store_);
  UW_ASSIGN_OR_RETURN(Recommendation r, recs.Get(id));
  if (r.state != "pending") {
    return FailedPreconditionError("recommendation " + std::string(id) + " is " + r.state +
                                   "; only pending ones can be applied (see GET /api/v1/drs/recommendations)");
  }
  // Verify: the move must still be legal on the current state (plan, verify, apply).
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, BuildSnapshot());
  placement::Plan one;
  one.policy = "drs";
  one.moves.push_back(internal::MoveOf(r));
  if (Status s = placement::CheckPlan(snap, one); !s.ok()) {
    UW_RETURN_IF_ERROR(recs.Close(id, internal::RecommendationTable::End::kSuperseded, "stale: " + s.message()));
    return AbortedError("recommendation " + std::string(id) + " no longer fits the cluster: " + s.message());
  }
  UW_ASSIGN_OR_RETURN(StartedMoves started, StartMoves(one.moves, {std::string(id)}, Json::object()));
  if (started.tasks.empty()) {
    std::string why = started.unschedulable.empty() ? "not schedulable" : started.unschedulable[0].reason;
    return AbortedError("recommendation " + std::string(id) + " cannot start: " + why);
  }
  return std::move(started.tasks[0]);
}

Result<StartedMoves> Manager::ApplyAllRecommendations() {
  UW_ASSIGN_OR_RETURN(std::vector<Recommendation> pending, internal::RecommendationTable(*store_).Pending());
  std::vector<placement::Move> moves;
  std::vector<std::string> ids;
  for (const auto& r : pending) {
    moves.push_back(internal::MoveOf(r));
    ids.push_back(r.id);
  }
  // One order for all of them: a move that frees room starts before the one that needs it.
  return StartMoves(moves, ids, Json::object());
}

}  // namespace uw::manager
