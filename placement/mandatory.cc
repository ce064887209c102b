// Mandatory stages 3-6: evacuates hosts in maintenance, relieves memory over-commitment and fixes
// broken required rules (priority 1), then broken soft rules (priority 2). What no legal move
// fixes goes to plan.unresolved with the reason.
#include <algorithm>

#include "placement/planner.h"

namespace uw::placement::internal {

namespace {

void Unresolved(PlanContext& ctx, const std::string& subject, const std::string& reason) {
  ctx.plan.unresolved.push_back({subject, reason});
}

// Moves `set` (on `from`) to the best legal host; false when there is none.
// With `allow_cold`, guests that cannot live-migrate move cold (stopped, moved, started).
bool Relocate(PlanContext& ctx, const std::vector<int>& set, int from, int priority, const std::string& reason,
              bool need_soft_fix, std::string* why, bool allow_cold = false) {
  bool cold = false;
  for (int v : set) {
    if (!ctx.cluster.vms[v].live) {
      cold = true;
      if (allow_cold) continue;
      if (why) *why = "guest " + ctx.snap.vms[v].name + " cannot live-migrate";
      return false;
    }
  }
  int to = ctx.FindDestination(set, from, false, nullptr, need_soft_fix, why);
  if (to < 0) return false;
  double before = ctx.cluster.Imbalance();
  double gain = before - ctx.cluster.ImbalanceAfter(from, to, ctx.cluster.LoadOf(set));
  size_t first = ctx.plan.moves.size();
  ctx.RecordMove(set, from, to, priority, reason + (cold ? " (cold) -> " : " -> ") + ctx.snap.hosts[to].name, gain);
  // A group with one cold member moves cold as a whole: the live ones would wait for it anyway.
  for (size_t i = first; i < ctx.plan.moves.size(); ++i) ctx.plan.moves[i].cold = cold;
  return true;
}

// Moves members of rule `r` until it is kept (or nothing more can be done). Returns progress.
bool FixRule(PlanContext& ctx, int r, bool report) {
  Cluster& c = ctx.cluster;
  const RuleIndex& ri = c.rules[r];
  const Rule& rule = *ri.rule;
  const int priority = ri.hard ? 1 : 2;
  const std::string label = std::string(ri.hard ? "required" : "soft") + " rule '" + rule.name + "' broken";
  bool progress = false;
  if (ri.measure == 0) return false;
  if (rule.type == RuleType::kVmAffinity) {
    // Gather on the host holding most members (ties: most free memory).
    std::vector<int> order;
    for (size_t h = 0; h < c.hosts.size(); ++h) {
      if (ri.count[h] > 0) order.push_back(static_cast<int>(h));
    }
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      if (ri.count[a] != ri.count[b]) return ri.count[a] > ri.count[b];
      return c.hosts[a].mem_capacity - c.hosts[a].mem_used > c.hosts[b].mem_capacity - c.hosts[b].mem_used;
    });
    for (int target : order) {
      if (!c.hosts[target].on()) continue;
      bool all = true;
      for (int h : order) {
        if (h == target || ri.count[h] == 0) continue;
        std::vector<int> set;
        for (int v : ri.members) {
          if (c.vms[v].host == h && c.Running(v)) {
            for (int w : c.UnitOn(c.vms[v].unit, h)) {
              if (std::find(set.begin(), set.end(), w) == set.end()) set.push_back(w);
            }
          }
        }
        bool live = std::all_of(set.begin(), set.end(), [&](int v) { return c.vms[v].live; });
        Feasibility f = c.Check(set, h, target);
        if (!live || !f.ok() || (!ri.hard && f.soft_delta >= 0)) {
          all = false;
          continue;
        }
        double gain = c.Imbalance() - c.ImbalanceAfter(h, target, c.LoadOf(set));
        ctx.RecordMove(set, h, target, priority, label + ": gather on " + ctx.snap.hosts[target].name, gain);
        progress = true;
      }
      if (all || progress) break;
    }
  } else {
    // Anti-affinity: all but one member per host; vm-host: members on the wrong side.
    std::vector<int> offenders;
    std::vector<int> seen_host(c.hosts.size(), 0);
    std::vector<int> members = ri.members;
    std::sort(members.begin(), members.end(), [&](int a, int b) { return c.vms[a].mem > c.vms[b].mem; });
    for (int v : members) {
      if (!c.Running(v)) continue;
      int h = c.vms[v].host;
      if (rule.type == RuleType::kVmAntiAffinity) {
        if (ri.count[h] > 1 && seen_host[h]++ > 0) offenders.push_back(v);
      } else if (ri.Bad(h)) {
        offenders.push_back(v);
      }
    }
    for (int v : offenders) {
      if (!c.Running(v)) continue;
      int h = c.vms[v].host;
      if (rule.type == RuleType::kVmAntiAffinity && ri.count[h] <= 1) continue;
      std::vector<int> set = c.UnitOn(c.vms[v].unit, h);
      std::string why;
      if (Relocate(ctx, set, h, priority, label + ": move " + ctx.snap.vms[v].name + " off " + ctx.snap.hosts[h].name,
                   !ri.hard, &why)) {
        progress = true;
      } else if (report) {
        Unresolved(ctx, rule.name, label + ": cannot move " + ctx.snap.vms[v].name + " (" + why + ")");
      }
    }
  }
  if (report && !progress && rule.type == RuleType::kVmAffinity && ri.measure > 0) {
    Unresolved(ctx, rule.name, label + ": no host can gather its guests");
  }
  return progress;
}

}  // namespace

void FixMandatory(PlanContext& ctx) {
  Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  // 1. Evacuate hosts in maintenance.
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].state != HostState::kMaintenance) continue;
    int hi = static_cast<int>(h);
    std::vector<int> guests = c.hosts[h].vms;
    for (int v : guests) {
      if (c.vms[v].host != hi) continue;
      std::vector<int> set = c.UnitOn(c.vms[v].unit, hi);
      std::string why;
      if (!Relocate(ctx, set, hi, 1, "evacuate " + s.hosts[h].name + " (maintenance)", false, &why,
                    s.settings.drs.allow_cold_moves)) {
        Unresolved(ctx, s.vms[v].name, "cannot evacuate from " + s.hosts[h].name + " (maintenance): " + why);
      }
    }
  }
  // 2. Relieve memory over-commitment.
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    int hi = static_cast<int>(h);
    if (c.hosts[h].state != HostState::kOn) continue;
    for (int guard = 0; c.hosts[h].mem_used > c.hosts[h].mem_capacity && guard < 1000; ++guard) {
      int64_t excess = c.hosts[h].mem_used - c.hosts[h].mem_capacity;
      // The smallest live unit that clears the excess, else the largest.
      std::vector<int> best_set;
      int64_t best_mem = 0;
      for (int v : c.hosts[h].vms) {
        if (!c.vms[v].live || c.vms[v].moved) continue;
        std::vector<int> set = c.UnitOn(c.vms[v].unit, hi);
        if (set[0] != v) continue;
        int64_t m = c.LoadOf(set).mem_cfg;
        bool better = best_set.empty() || (m >= excess && (best_mem < excess || m < best_mem)) ||
                      (best_mem < excess && m > best_mem);
        if (better) {
          best_set = set;
          best_mem = m;
        }
      }
      std::string why = "no live-migratable guest left";
      if (best_set.empty() ||
          !Relocate(ctx, best_set, hi, 1,
                    "memory over-committed on " + s.hosts[h].name + " by " + std::to_string(excess) + " MiB", false,
                    &why)) {
        Unresolved(ctx, s.hosts[h].name, "memory over-committed by " + std::to_string(excess) + " MiB: " + why);
        break;
      }
    }
  }
  // 3. Required rules, then soft rules.
  for (bool hard : {true, false}) {
    for (int pass = 0; pass < 3; ++pass) {
      bool progress = false;
      for (size_t r = 0; r < c.rules.size(); ++r) {
        if (c.rules[r].hard != hard || c.rules[r].measure == 0) continue;
        progress = FixRule(ctx, static_cast<int>(r), false) || progress;
      }
      if (!progress) break;
    }
    for (size_t r = 0; r < c.rules.size(); ++r) {
      if (hard && c.rules[r].hard && c.rules[r].measure > 0) FixRule(ctx, static_cast<int>(r), true);
    }
  }
}

}  // namespace uw::placement::internal
