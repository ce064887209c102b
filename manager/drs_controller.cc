// The DRS controller (drs_controller.h).
#include "manager/drs_controller.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "manager/drs_tables.h"
#include "manager/event_log.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/snapshot_builder.h"
#include "manager/task_journal.h"
#include "placement/placement.h"

namespace uw::manager::internal {

namespace {

// The stored form (settings 'drs'), also the drs.config_changed event's payload.
Json StoredDrsConfig(const DrsConfig& c) {
  return {{"automation", c.automation},
          {"threshold", c.threshold},
          {"max_moves", c.max_moves ? Json(*c.max_moves) : Json(nullptr)},
          {"policy", c.policy},
          {"allow_cold_moves", c.allow_cold_moves},
          {"min_move_interval_s", c.min_move_interval_s},
          {"dpm", DpmConfigJson(c.dpm)},
          {"ha", HaConfigJson(c.ha)}};
}

}  // namespace

Result<DrsConfig> DrsController::Config() {
  DrsConfig cfg;
  // min_move_interval_s: the engine's cooldown (placement::DrsSettings), same name and default.
  cfg.min_move_interval_s = placement::DrsSettings().min_move_interval_s;
  cfg.interval_ms = d_.interval_ms;
  UW_ASSIGN_OR_RETURN(std::optional<Json> stored, SettingsTable(d_.store).Get("drs"));
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
  if (stored->contains("dpm")) {
    UW_ASSIGN_OR_RETURN(cfg.dpm, ParseDpmConfigChange((*stored)["dpm"], cfg.dpm));
  }
  if (stored->contains("ha")) {
    UW_ASSIGN_OR_RETURN(cfg.ha, ParseHaConfigChange((*stored)["ha"], cfg.ha));
  }
  return cfg;
}

Result<DrsConfig> DrsController::SetConfig(const DrsConfig& config) {
  const Json stored = StoredDrsConfig(config);
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(SettingsTable(d_.store).Put("drs", stored));
    return d_.events.Add("drs.config_changed", "drs", "", stored);
  }));
  return Config();
}

Result<Page<Recommendation>> DrsController::Recommendations(bool pending_only, const PageQuery& page) {
  // Pending ones (a few per guest at most) by priority; all of them newest first.
  RecommendationTable recs(d_.store);
  if (!pending_only) return recs.List(page);
  UW_ASSIGN_OR_RETURN(std::vector<Recommendation> pending, recs.Pending());
  return PageList(
      std::move(pending), page, [](const Recommendation& r) { return r.id; }, false);
}

Result<placement::Plan> DrsController::DryRun(const placement::Snapshot* snapshot) {
  // A given snapshot is planned by the default policy; the live cluster by the configured one.
  if (snapshot) return placement::MakePlan(*snapshot, "drs");
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, d_.snapshot());
  UW_ASSIGN_OR_RETURN(DrsConfig cfg, Config());
  return placement::MakePlan(snap, cfg.policy);
}

Result<DrsPass> DrsController::RunPass() {
  UW_ASSIGN_OR_RETURN(DrsConfig cfg, Config());
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, d_.snapshot());
  UW_ASSIGN_OR_RETURN(placement::Plan plan, placement::MakePlan(snap, cfg.policy));
  // Per-guest automation overrides: "disabled" guests are never moved (they are marked
  // non-migratable in the snapshot); "manual" guests are only recommended even in automatic mode.
  UW_ASSIGN_OR_RETURN(auto override_of, d_.guests.AutomationByGuest());
  // Guests that stay where they are this pass: a task in flight (a migration, a start...) or
  // automation "disabled". The snapshot marks them non-migratable, which still lets the engine move
  // them cold out of a host in maintenance; their moves are held back (what remains is verified
  // again by OrderMoves when it starts) and the pass says how many were.
  UW_ASSIGN_OR_RETURN(const std::set<std::string> held, d_.tasks.SubjectsInFlight());
  const size_t held_moves = std::erase_if(
      plan.moves, [&](const placement::Move& m) { return held.count(m.vm) > 0 || override_of[m.vm] == "disabled"; });
  const int64_t now = ToUnixMillis(d_.clock.Now());
  std::vector<std::string> ids;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(ids, RecommendationTable(d_.store).ReplacePending(plan, now));
    return d_.events.Add("drs.pass", "drs", "",
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
  // DPM in automatic mode evacuates a host whose power-off is due (and allowed) in any DRS mode.
  const DpmStep dpm = PlanDpm(cfg, plan);
  std::vector<placement::Move> apply;
  std::vector<std::string> apply_ids;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (override_of[plan.moves[i].vm] == "manual") continue;
    const bool dpm_evacuation =
        dpm.evacuate.count(plan.moves[i].from) > 0 && plan.moves[i].reason.rfind("dpm: evacuate", 0) == 0;
    if (cfg.automation != "automatic" && !maintenance.count(plan.moves[i].from) && !dpm_evacuation) continue;
    apply.push_back(plan.moves[i]);
    apply_ids.push_back(ids[i]);
  }
  DrsPass out;
  if (!apply.empty()) {
    auto started = d_.start_moves(apply, apply_ids);
    if (!started.ok()) {
      spdlog::warn("DRS could not start its moves: {}", started.status().ToString());
    } else {
      out.started = std::move(*started);
    }
  }
  if (cfg.dpm.mode == "automatic") ActDpm(snap);
  out.plan = std::move(plan);
  return out;
}

DrsController::DpmStep DrsController::PlanDpm(const DrsConfig& cfg, const placement::Plan& plan) {
  DpmStep out;
  const int64_t now = ToUnixMillis(d_.clock.Now());
  const auto hysteresis_ms = static_cast<int64_t>(cfg.dpm.hysteresis_s * 1000);
  std::map<std::string, int64_t> since;
  Json listed = Json::array();
  std::lock_guard l(dpm_mu_);
  // DPM off: nothing is listed or carried out (the engine may still plan a power-on for a guest
  // that fits only on a standby host; creating it says so).
  for (const placement::PowerAction& a : cfg.dpm.mode == "off" ? std::vector<placement::PowerAction>() : plan.power) {
    const std::string action = a.action == placement::PowerActionType::kPowerOn ? "on" : "off";
    const std::string key = a.host + " " + action;
    auto it = dpm_since_.find(key);
    const int64_t first = it == dpm_since_.end() ? now : it->second;
    since[key] = first;
    // Hysteresis: an action is carried out only once every pass for hysteresis_s has planned it.
    const bool due = now - first >= hysteresis_ms;
    std::string state = due ? "due" : "waiting", note;
    if (due && cfg.dpm.mode == "automatic") {
      auto p = d_.power_of(a.host);
      if (!p.ok()) {
        state = "blocked", note = p.status().message();
      } else if (p->driver.is_null()) {
        state = "blocked", note = "the host has no power driver (uwctl host power-driver set)";
      } else if (action == "off" && !p->wake_tested_ms) {
        // As vSphere DPM: a host goes to standby only once powering it on from off has worked.
        state = "blocked", note = "its wake path is not tested: power it off and on once (uwctl host power)";
      } else if (action == "off") {
        out.evacuate.insert(a.host);
      }
    }
    listed.push_back({{"host", a.host},
                      {"action", action},
                      {"reason", a.reason},
                      {"planned_since", FormatRfc3339(TimePoint(std::chrono::milliseconds(first)))},
                      {"due", FormatRfc3339(TimePoint(std::chrono::milliseconds(first + hysteresis_ms)))},
                      {"state", state},
                      {"note", note.empty() ? Json(nullptr) : Json(note)}});
  }
  dpm_since_ = std::move(since);
  dpm_last_ = std::move(listed);
  return out;
}

void DrsController::ActDpm(const placement::Snapshot& snap) {
  Json items;
  {
    std::lock_guard l(dpm_mu_);
    items = dpm_last_;
  }
  for (Json& item : items) {
    if (item["state"] != "due") continue;
    const std::string host = item["host"], action = item["action"];
    if (action == "off") {
      const auto guests =
          std::count_if(snap.vms.begin(), snap.vms.end(), [&](const placement::Vm& v) { return v.host == host; });
      if (guests > 0) {
        item["note"] = "evacuating: " + std::to_string(guests) + " guest(s) still on it";
        continue;
      }
    }
    if (Status s =
            d_.events.Add(action == "on" ? "dpm.power_on" : "dpm.power_off", host, "", {{"reason", item["reason"]}});
        !s.ok()) {
      spdlog::warn("DPM: recording its power {} of {}: {}", action, host, s.ToString());
    }
    auto r = d_.power(host, action);
    item["state"] = r.ok() ? "acted" : "failed";
    item["note"] = r.ok() ? Json(nullptr) : Json(r.status().message());
    if (!r.ok()) spdlog::warn("DPM: power {} of {}: {}", action, host, r.status().ToString());
    // Planned again from scratch: the next action on this host waits its own hysteresis.
    std::lock_guard l(dpm_mu_);
    dpm_since_.erase(host + " " + action);
  }
  std::lock_guard l(dpm_mu_);
  dpm_last_ = std::move(items);
}

Result<Json> DrsController::PowerRecommendations() {
  std::lock_guard l(dpm_mu_);
  return dpm_last_;
}

Result<Task> DrsController::Apply(std::string_view id) {
  RecommendationTable recs(d_.store);
  UW_ASSIGN_OR_RETURN(Recommendation r, recs.Get(id));
  if (r.state != "pending") {
    return FailedPreconditionError("recommendation " + std::string(id) + " is " + r.state +
                                   "; only pending ones can be applied (see GET /api/v1/drs/recommendations)");
  }
  // Verify: the move must still be legal on the current state (plan, verify, apply).
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, d_.snapshot());
  placement::Plan one;
  one.policy = "drs";
  one.moves.push_back(MoveOf(r));
  if (Status s = placement::CheckPlan(snap, one); !s.ok()) {
    UW_RETURN_IF_ERROR(recs.Close(id, RecommendationTable::End::kSuperseded, "stale: " + s.message()));
    return AbortedError("recommendation " + std::string(id) + " no longer fits the cluster: " + s.message());
  }
  UW_ASSIGN_OR_RETURN(StartedMoves started, d_.start_moves(one.moves, {std::string(id)}));
  if (started.tasks.empty()) {
    std::string why = started.unschedulable.empty() ? "not schedulable" : started.unschedulable[0].reason;
    return AbortedError("recommendation " + std::string(id) + " cannot start: " + why);
  }
  return std::move(started.tasks[0]);
}

Result<StartedMoves> DrsController::ApplyAll() {
  UW_ASSIGN_OR_RETURN(std::vector<Recommendation> pending, RecommendationTable(d_.store).Pending());
  std::vector<placement::Move> moves;
  std::vector<std::string> ids;
  for (const auto& r : pending) {
    moves.push_back(MoveOf(r));
    ids.push_back(r.id);
  }
  // One order for all of them: a move that frees room starts before the one that needs it.
  return d_.start_moves(moves, ids);
}

}  // namespace uw::manager::internal
