// The planning pipeline (RunPlanner): runs the stages in order on one PlanContext, and the
// context's shared steps: recording a move, finding a destination, the migration cost. The stages
// live in place_restart.cc, mandatory.cc, balance.cc, dpm.cc and consolidate.cc.
#include "placement/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

namespace uw::placement::internal {

int PriorityForImbalance(double imbalance) {
  if (imbalance > kPriorityLevels[0]) return 2;
  if (imbalance > kPriorityLevels[1]) return 3;
  if (imbalance > kPriorityLevels[2]) return 4;
  return 5;
}

std::unique_ptr<Objective> MakeObjective(PolicyKind kind, const Cluster& c) {
  if (kind == PolicyKind::kOpportunityCost) {
    // Amir et al. use a base between n and 2n for n machines.
    double n = std::max<int64_t>(2, c.HostsOn());
    return std::make_unique<OpportunityCostObjective>(2 * n);
  }
  return std::make_unique<ImbalanceObjective>();
}

PlanContext::PlanContext(const Snapshot& s, PolicyKind k)
    : snap(s), kind(k), ents(ComputeEntitlements(s)), cluster(s, ents), objective(MakeObjective(k, cluster)) {
  switch (k) {
    case PolicyKind::kDrs:
      plan.policy = "drs";
      break;
    case PolicyKind::kConsolidate:
      plan.policy = "consolidate";
      break;
    case PolicyKind::kOpportunityCost:
      plan.policy = "opportunity-cost";
      break;
  }
}

void PlanContext::RecordMove(const std::vector<int>& set, int from, int to, int priority, const std::string& reason,
                             double gain) {
  for (int v : set) {
    plan.moves.push_back({snap.vms[v].name, snap.hosts[from].name, snap.hosts[to].name, priority, reason, gain});
    cluster.vms[v].moved = true;
  }
  cluster.MoveSet(set, from, to);
}

double PlanContext::MigrationCost(const UnitLoad& load) const {
  double seconds = static_cast<double>(load.mem_cfg) / snap.settings.drs.migration_bandwidth_mib_s;
  return kCostPerMigrationSecond * seconds;
}

std::string PlanContext::HostLoadText(int h) const {
  const HostSlot& x = cluster.hosts[h];
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s (cpu %.0f%%, mem %.0f%%)", snap.hosts[h].name.c_str(), 100 * x.cpu_load(),
                100 * x.mem_load());
  return buf;
}

int PlanContext::FindDestination(const std::vector<int>& set, int from, bool cpu_cap, const std::vector<char>* excluded,
                                 bool need_soft_fix, std::string* why) const {
  const Cluster& c = cluster;
  UnitLoad load = c.LoadOf(set);
  int best = -1;
  double best_score = std::numeric_limits<double>::infinity();
  std::map<Reject, std::pair<int, std::string>> rejects;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    int hi = static_cast<int>(h);
    if (hi == from || !c.hosts[h].on() || (excluded && (*excluded)[h])) continue;
    Feasibility f = c.Check(set, from, hi, cpu_cap);
    if (!f.ok()) {
      if (why) {
        auto& e = rejects[f.reject];
        if (e.first++ == 0) e.second = snap.hosts[h].name + ": " + c.RejectText(f, set, hi);
      }
      continue;
    }
    if (need_soft_fix && f.soft_delta >= 0) continue;
    double score = -objective->Gain(c, from, hi, load) + kSoftRulePenalty * static_cast<double>(f.soft_delta);
    if (score < best_score) {
      best_score = score;
      best = hi;
    }
  }
  if (best < 0 && why) {
    if (rejects.empty()) {
      *why = need_soft_fix ? "no host improves the rule" : "no powered-on host";
    } else {
      std::string s = "no host fits: ";
      bool first = true;
      for (const auto& [kind, e] : rejects) {
        s += (first ? "" : "; ") + std::to_string(e.first) + " host(s) like " + e.second;
        first = false;
      }
      *why = s;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Pipeline
// ---------------------------------------------------------------------------------------------

namespace {

Plan RunOnce(const Snapshot& snapshot, PolicyKind kind, double cost_weight, bool swaps) {
  PlanContext ctx(snapshot, kind);
  ctx.cost_weight = cost_weight;
  ctx.plan.before = ctx.cluster.Metrics();
  PlaceAndRestart(ctx);
  FixMandatory(ctx);
  const bool dpm = snapshot.settings.dpm.enabled && kind != PolicyKind::kConsolidate;
  if (dpm) DpmPowerOn(ctx);
  if (kind == PolicyKind::kConsolidate) {
    Consolidate(ctx);
  } else {
    Balance(ctx);
    if (swaps && !snapshot.settings.drs.max_moves) {
      SwapRefine(ctx);
      Balance(ctx);
    }
    CollapseChains(ctx);
  }
  if (dpm) DpmPowerOff(ctx);
  ctx.plan.after = ctx.cluster.Metrics();
  return std::move(ctx.plan);
}

}  // namespace

Plan RunPlanner(const Snapshot& snapshot, PolicyKind kind) {
  int64_t on = 0;
  for (const Host& h : snapshot.hosts) on += h.state == HostState::kOn;
  if (kind == PolicyKind::kConsolidate || snapshot.settings.drs.threshold < 5 || on > 64) {
    return RunOnce(snapshot, kind, -1, true);
  }
  // The cost-weight portfolio with single moves only, then swaps on the best weight.
  Plan best;
  double best_w = 0;
  bool have = false;
  auto consider = [&](Plan p, double w) {
    bool better = !have || p.after.imbalance < best.after.imbalance - 1e-12 ||
                  (std::fabs(p.after.imbalance - best.after.imbalance) <= 1e-12 && p.moves.size() < best.moves.size());
    if (better) {
      best = std::move(p);
      best_w = w;
      have = true;
    }
  };
  for (double w : {0.25, 0.1, 0.05, 0.01}) consider(RunOnce(snapshot, kind, w, false), w);
  consider(RunOnce(snapshot, kind, best_w, true), best_w);
  return best;
}

}  // namespace uw::placement::internal
