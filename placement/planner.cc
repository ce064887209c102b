// The planning pipeline: placements and restarts, mandatory fixes, balancing, DPM.
#include "placement/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <unordered_map>

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

namespace {

std::string Join(const std::vector<int>& set, const Snapshot& s) {
  std::string out;
  for (int v : set) out += (out.empty() ? "" : ", ") + s.vms[v].name;
  return out;
}

// Admission issues that concern guest `v` (its own, its pools', the cluster's).
std::string AdmissionProblem(const Snapshot& s, const std::vector<AdmissionIssue>& issues, int v) {
  if (issues.empty()) return "";
  std::vector<std::string> subjects{s.vms[v].name, "cluster"};
  for (std::string p = s.vms[v].pool; !p.empty();) {
    subjects.push_back(p);
    auto it = std::find_if(s.pools.begin(), s.pools.end(), [&](const Pool& x) { return x.name == p; });
    p = it == s.pools.end() ? "" : it->parent;
  }
  for (const auto& issue : issues) {
    if (std::find(subjects.begin(), subjects.end(), issue.subject) != subjects.end()) return issue.reason;
  }
  return "";
}

}  // namespace

void PlaceAndRestart(PlanContext& ctx) {
  Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  // Restarts of guests on failed hosts (HA), then new guests, each largest first.
  std::vector<std::pair<int, int>> todo;  // (unit, host or -1)
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].state != HostState::kFailed) continue;
    for (int v : c.hosts[h].vms) todo.emplace_back(c.vms[v].unit, static_cast<int>(h));
  }
  for (size_t v = 0; v < c.vms.size(); ++v) {
    if (c.vms[v].host < 0) todo.emplace_back(c.vms[v].unit, -1);
  }
  std::sort(todo.begin(), todo.end());
  todo.erase(std::unique(todo.begin(), todo.end()), todo.end());
  std::stable_sort(todo.begin(), todo.end(), [&](const auto& a, const auto& b) {
    return c.LoadOf(c.UnitOn(a.first, a.second)).mem_cfg > c.LoadOf(c.UnitOn(b.first, b.second)).mem_cfg;
  });
  std::vector<AdmissionIssue> issues = CheckAdmission(s);
  for (const auto& [u, from] : todo) {
    std::vector<int> set = c.UnitOn(u, from);
    if (set.empty()) continue;
    std::string restart = from >= 0 ? "restart after failure of " + s.hosts[from].name : "";
    if (from < 0) {
      std::string problem;
      for (int v : set) {
        if (problem.empty()) problem = AdmissionProblem(s, issues, v);
      }
      if (!problem.empty()) {
        for (int v : set) ctx.plan.unplaced.push_back({s.vms[v].name, "admission control: " + problem});
        continue;
      }
    }
    std::string why;
    int to = ctx.FindDestination(set, from, false, nullptr, false, &why);
    bool power_on = false;
    if (to < 0) {
      // Wake the standby host that would take the guest, if any.
      for (size_t h = 0; h < c.hosts.size() && to < 0; ++h) {
        if (c.hosts[h].state != HostState::kStandby) continue;
        c.SetState(static_cast<int>(h), HostState::kOn);
        if (c.Check(set, from, static_cast<int>(h)).ok()) {
          to = static_cast<int>(h);
          power_on = true;
        } else {
          c.SetState(static_cast<int>(h), HostState::kStandby);
        }
      }
    }
    if (to < 0) {
      for (int v : set) ctx.plan.unplaced.push_back({s.vms[v].name, (restart.empty() ? "" : restart + ": ") + why});
      continue;
    }
    if (power_on) {
      ctx.plan.power.push_back({s.hosts[to].name, PowerActionType::kPowerOn,
                                "no powered-on host can take " + Join(set, s) + " (" + why + ")"});
    }
    double before = c.Imbalance();
    c.MoveSet(set, from, to);
    for (int v : set) {
      ctx.plan.placements.push_back({s.vms[v].name, s.hosts[to].name,
                                     (restart.empty() ? std::string("initial placement") : restart) +
                                         ": best of the hosts that pass the filters, imbalance " +
                                         std::to_string(before).substr(0, 6) + " -> " +
                                         std::to_string(c.Imbalance()).substr(0, 6)});
    }
  }
}

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

// ---------------------------------------------------------------------------------------------
// Balancing
// ---------------------------------------------------------------------------------------------

void Balance(PlanContext& ctx) {
  Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  const DrsSettings& drs = s.settings.drs;
  if (drs.threshold < 2 || c.n_on < 2) return;
  const int64_t max_moves = drs.max_moves ? *drs.max_moves : std::numeric_limits<int64_t>::max();
  // Exhaustive candidates (every guest x every host) while a round costs at most ~100k
  // evaluations; beyond that the most / least loaded hosts per dimension.
  const bool small = static_cast<double>(c.n_on) * static_cast<double>(c.vms.size()) <= 100000;
  const int k_src = small ? c.n_on : 2;  // per dimension
  const int k_dst = small ? c.n_on : 4;  // per dimension
  const bool drs_metric = ctx.kind == PolicyKind::kDrs;
  const bool rebalance = c.n_on <= 64;
  const int64_t max_rounds = 4 * static_cast<int64_t>(c.vms.size()) + 16;
  int64_t rounds = 0;
  const double min_goodness = kMinGoodnessByThreshold[drs.threshold];
  const double cost_weight = ctx.cost_weight >= 0 ? ctx.cost_weight : kCostWeightByThreshold[drs.threshold];
  std::vector<int> on;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].on()) on.push_back(static_cast<int>(h));
  }
  std::vector<int> by, sources, dests;
  std::vector<int> single(1);
  int64_t made = 0;
  while (made < max_moves && rounds++ < max_rounds) {
    const double level = c.Imbalance();
    const int priority = PriorityForImbalance(level);
    if (priority > drs.threshold) break;
    // Candidate sources: the most loaded hosts per dimension; destinations: the least loaded.
    sources.clear();
    dests.clear();
    auto pick = [&](auto key, int k, bool top, std::vector<int>& out) {
      by = on;
      k = std::min<int>(k, static_cast<int>(by.size()));
      auto cmp = [&](int a, int b) { return top ? key(a) > key(b) : key(a) < key(b); };
      std::partial_sort(by.begin(), by.begin() + k, by.end(), cmp);
      for (int i = 0; i < k; ++i) {
        if (std::find(out.begin(), out.end(), by[i]) == out.end()) out.push_back(by[i]);
      }
    };
    auto cpu = [&](int h) { return c.hosts[h].cpu_load(); };
    auto mem = [&](int h) { return c.hosts[h].mem_load(); };
    pick(cpu, k_src, true, sources);
    pick(mem, k_src, true, sources);
    pick(cpu, k_dst, false, dests);
    pick(mem, k_dst, false, dests);

    int best_from = -1, best_to = -1, best_vm = -1;
    double best_net = 0, best_gain = 0;
    for (int from : sources) {
      for (int v : c.hosts[from].vms) {
        const GuestSlot& g = c.vms[v];
        // On small clusters a guest moved by balancing may move again (the chain is collapsed
        // into one migration afterwards); elsewhere each guest moves at most once per plan.
        if (!g.live || (g.moved && !(rebalance && g.moved_by_balance))) continue;
        const std::vector<int>* set = &single;
        if (c.units[g.unit].size() > 1) {
          if (c.units[g.unit][0] != v || !c.UnitTogether(g.unit)) continue;
          set = &c.units[g.unit];
          bool ok = std::all_of(set->begin(), set->end(), [&](int w) {
            return c.vms[w].live && (!c.vms[w].moved || (rebalance && c.vms[w].moved_by_balance));
          });
          if (!ok) continue;
        } else {
          single[0] = v;
        }
        // Ping-pong: guests moved recently stay; a guest moved within two intervals costs more.
        double factor = 1;
        for (int w : *set) {
          const auto& ago = s.vms[w].last_moved_ago_s;
          if (!ago) continue;
          if (*ago < drs.min_move_interval_s)
            factor = -1;
          else if (factor > 0 && *ago < 2 * drs.min_move_interval_s && drs.min_move_interval_s > 0)
            factor = std::max(factor, 1 + (2 * drs.min_move_interval_s - *ago) / drs.min_move_interval_s * 4);
        }
        if (factor < 0) continue;
        UnitLoad load = c.LoadOf(*set);
        double cost = ctx.MigrationCost(load) * factor * cost_weight;
        for (int to : dests) {
          if (to == from) continue;
          const HostSlot& d = c.hosts[to];
          if (d.mem_used + load.mem_cfg > d.mem_capacity) continue;
          // The DRS gain inline: no virtual call, and the square root only for a move that can
          // beat the best so far (gain >= need <=> variance sum after <= 2 (level - need/n)^2).
          double gain;
          if (drs_metric) {
            const double need = std::max(min_goodness, best_net + cost);
            const double bound = level - need / c.n_on;
            if (bound <= 0) continue;
            const double vsum = c.VarianceSumAfter(from, to, load);
            if (vsum > 2 * bound * bound) continue;
            gain = (level - std::sqrt(0.5 * vsum)) * c.n_on;
          } else {
            gain = ctx.objective->Gain(c, from, to, load);
          }
          if (gain - cost <= best_net || gain < min_goodness) continue;
          Feasibility f = c.Check(*set, from, to);
          if (!f.ok()) continue;
          gain -= kSoftRulePenalty * static_cast<double>(f.soft_delta);
          if (gain < min_goodness || gain - cost <= best_net) continue;
          best_net = gain - cost;
          best_gain = gain;
          best_from = from;
          best_to = to;
          best_vm = v;
        }
      }
    }
    if (best_vm < 0) break;
    const GuestSlot& g = c.vms[best_vm];
    std::vector<int> set = c.units[g.unit].size() > 1 ? c.units[g.unit] : std::vector<int>{best_vm};
    const double after = c.ImbalanceAfter(best_from, best_to, c.LoadOf(set));
    char reason[320];
    std::snprintf(reason, sizeof reason, "balance (%s): %s -> %s; imbalance %.4f -> %.4f, goodness %.4f",
                  ctx.plan.policy.c_str(), ctx.HostLoadText(best_from).c_str(), ctx.HostLoadText(best_to).c_str(),
                  level, after, best_gain);
    double reported = ctx.kind == PolicyKind::kDrs ? level - after : best_gain;
    bool again = false;
    for (int w : set) again = again || c.vms[w].moved;
    ctx.RecordMove(set, best_from, best_to, priority, reason, reported);
    for (int w : set) c.vms[w].moved_by_balance = true;
    if (!again) ++made;
  }
}

// Swaps for the last stretch of an aggressive (threshold 5) DRS pass on a small cluster: when no
// single move helps, exchanging a guest of a loaded host with a smaller one of a light host often
// still does. Both moves are checked in the order they will run; memory must fit at every step.
void SwapRefine(PlanContext& ctx) {
  Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  const DrsSettings& drs = s.settings.drs;
  if (ctx.kind != PolicyKind::kDrs || drs.threshold < 5 || c.n_on < 2 || c.n_on > 64) return;
  const double cost_weight = ctx.cost_weight >= 0 ? ctx.cost_weight : kCostWeightByThreshold[drs.threshold];
  const double min_goodness = kMinGoodnessByThreshold[drs.threshold];
  std::vector<int> on;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].on()) on.push_back(static_cast<int>(h));
  }
  auto swappable = [&](int v) {
    const GuestSlot& g = c.vms[v];
    // Guests under rules are left to the single-move search, which prices soft rules.
    if (!g.live || (g.moved && !g.moved_by_balance) || c.units[g.unit].size() > 1 || !c.vm_rules[v].empty()) {
      return false;
    }
    const auto& ago = s.vms[v].last_moved_ago_s;
    return !(ago && *ago < drs.min_move_interval_s);
  };
  const int64_t max_swaps = drs.max_moves ? std::max<int64_t>(0, *drs.max_moves / 2) : 200;
  std::vector<UnitLoad> loads(c.vms.size());
  for (size_t v = 0; v < c.vms.size(); ++v) loads[v] = c.LoadOf({static_cast<int>(v)});
  for (int64_t n = 0; n < max_swaps; ++n) {
    const double level = c.Imbalance();
    // Hot and cold hosts: the 4 most and least loaded per dimension.
    std::vector<int> hot, cold;
    const int k = std::min<int>(4, static_cast<int>(on.size()) / 2);
    for (int dim = 0; dim < 2; ++dim) {
      std::vector<int> by = on;
      auto key = [&](int h) { return dim == 0 ? c.hosts[h].cpu_load() : c.hosts[h].mem_load(); };
      std::sort(by.begin(), by.end(), [&](int a, int b) { return key(a) > key(b); });
      for (int i = 0; i < k; ++i) {
        if (std::find(hot.begin(), hot.end(), by[i]) == hot.end()) hot.push_back(by[i]);
        int lo = by[by.size() - 1 - i];
        if (std::find(cold.begin(), cold.end(), lo) == cold.end()) cold.push_back(lo);
      }
    }
    double best_net = 0;
    int bv = -1, bw = -1, ba = -1, bb = -1;
    for (int a : hot) {
      for (int b : cold) {
        if (a == b) continue;
        for (int v : c.hosts[a].vms) {
          if (!swappable(v)) continue;
          const UnitLoad& lv = loads[v];
          for (int w : c.hosts[b].vms) {
            if (!swappable(w)) continue;
            const UnitLoad& lw = loads[w];
            const HostSlot& ha = c.hosts[a];
            const HostSlot& hb = c.hosts[b];
            if (ha.mem_used - lv.mem_cfg + lw.mem_cfg > ha.mem_capacity) continue;
            if (hb.mem_used - lw.mem_cfg + lv.mem_cfg > hb.mem_capacity) continue;
            if (hb.mem_used + lv.mem_cfg > hb.mem_capacity && ha.mem_used + lw.mem_cfg > ha.mem_capacity) continue;
            double cost = (ctx.MigrationCost(lv) + ctx.MigrationCost(lw)) * cost_weight;
            // Square root only for a swap that can beat the best so far.
            const double bound = level - std::max(2 * min_goodness, best_net + cost) / c.n_on;
            if (bound <= 0) continue;
            const double vsum = c.VarianceSumAfterSwap(a, b, lv, lw);
            if (vsum > 2 * bound * bound) continue;
            double gain = (level - std::sqrt(0.5 * vsum)) * c.n_on;
            if (gain < 2 * min_goodness || gain - cost <= best_net) continue;
            best_net = gain - cost;
            bv = v, bw = w, ba = a, bb = b;
          }
        }
      }
    }
    if (bv < 0) return;
    // Run the move that fits first; each must pass the engine's checks at its turn.
    std::vector<std::tuple<int, int, int>> order = {{bv, ba, bb}, {bw, bb, ba}};
    if (c.hosts[bb].mem_used + c.vms[bv].mem > c.hosts[bb].mem_capacity) std::swap(order[0], order[1]);
    const double before = level;
    size_t mark = ctx.plan.moves.size();
    bool ok = true;
    std::vector<std::pair<int, int>> done;
    for (const auto& [v, from, to] : order) {
      if (!c.Check({v}, from, to).ok()) {
        ok = false;
        break;
      }
      char reason[320];
      std::snprintf(reason, sizeof reason, "balance (%s): swap %s <-> %s between %s and %s; imbalance %.4f",
                    ctx.plan.policy.c_str(), s.vms[bv].name.c_str(), s.vms[bw].name.c_str(), s.hosts[ba].name.c_str(),
                    s.hosts[bb].name.c_str(), before);
      ctx.RecordMove({v}, from, to, PriorityForImbalance(before), reason, 0);
      c.vms[v].moved_by_balance = true;
      done.emplace_back(v, from);
    }
    if (!ok) {
      for (auto it = done.rbegin(); it != done.rend(); ++it) c.MoveSet({it->first}, c.vms[it->first].host, it->second);
      ctx.plan.moves.resize(mark);
      return;
    }
    ctx.plan.moves[mark].gain = ctx.plan.moves[mark + 1].gain = (before - c.Imbalance()) / 2;
  }
}

// A guest that balancing moved more than once (a -> b, later b -> c) becomes one migration
// a -> c, placed where the first or the last of its moves was, whichever the checker accepts
// (a -> a disappears). If neither is safe the moves stay as they are (still a valid plan).
void CollapseChains(PlanContext& ctx) {
  std::unordered_map<std::string, int> count;
  for (const Move& m : ctx.plan.moves) ++count[m.vm];
  std::vector<std::string> chained;
  for (const Move& m : ctx.plan.moves) {
    if (count[m.vm] > 1 && std::find(chained.begin(), chained.end(), m.vm) == chained.end()) chained.push_back(m.vm);
  }
  for (const std::string& vm : chained) {
    std::vector<size_t> at;
    for (size_t i = 0; i < ctx.plan.moves.size(); ++i) {
      if (ctx.plan.moves[i].vm == vm) at.push_back(i);
    }
    bool balancing =
        std::all_of(at.begin(), at.end(), [&](size_t i) { return ctx.plan.moves[i].reason.rfind("balance", 0) == 0; });
    if (at.size() < 2 || !balancing) continue;
    const Move first = ctx.plan.moves[at.front()], last = ctx.plan.moves[at.back()];
    for (bool keep_first : {true, false}) {
      Plan trial = ctx.plan;
      double gain = 0;
      for (size_t i : at) gain += trial.moves[i].gain;
      size_t keep = keep_first ? at.front() : at.back();
      Move merged = keep_first ? first : last;
      merged.from = first.from;
      merged.to = last.to;
      merged.gain = gain;
      std::vector<Move> moves;
      for (size_t i = 0; i < trial.moves.size(); ++i) {
        if (i == keep) {
          if (merged.from != merged.to) moves.push_back(merged);
        } else if (std::find(at.begin(), at.end(), i) == at.end()) {
          moves.push_back(trial.moves[i]);
        }
      }
      trial.moves = std::move(moves);
      if (CheckPlan(ctx.snap, trial).ok()) {
        ctx.plan = std::move(trial);
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// DPM
// ---------------------------------------------------------------------------------------------

namespace {

struct Utilization {
  double cpu = 0, mem = 0;
  double Max() const { return std::max(cpu, mem); }
};

Utilization ClusterUtilization(const Cluster& c, int without = -1) {
  double ec = 0, em = 0, cc = 0, cm = 0;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    const HostSlot& x = c.hosts[h];
    if (!x.on()) continue;
    ec += x.e_cpu;
    em += x.e_mem;
    if (static_cast<int>(h) == without) continue;
    cc += x.cores;
    cm += x.mem_cap;
  }
  if (cc <= 0 || cm <= 0) return {1e9, 1e9};
  return {ec / cc, em / cm};
}

std::string Pct(double u) { return std::to_string(static_cast<int>(std::lround(100 * u))) + "%"; }

}  // namespace

bool HaReserveHolds(const Cluster& c, int host_failures, int without) {
  std::vector<const HostSlot*> on;
  double need_cpu = 0;
  int64_t need_mem = 0;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    const HostSlot& x = c.hosts[h];
    if (x.state == HostState::kOn || x.state == HostState::kMaintenance) {
      need_cpu += x.e_cpu;
      need_mem += x.mem_used;
    }
    if (x.on() && static_cast<int>(h) != without) on.push_back(&x);
  }
  std::sort(on.begin(), on.end(),
            [](const HostSlot* a, const HostSlot* b) { return a->mem_capacity > b->mem_capacity; });
  double cores = 0;
  int64_t mem = 0;
  for (size_t i = static_cast<size_t>(std::max<int64_t>(0, host_failures)); i < on.size(); ++i) {
    cores += on[i]->cores;
    mem += on[i]->mem_capacity;
  }
  return mem >= need_mem && cores + 1e-9 >= need_cpu;
}

void DpmPowerOn(PlanContext& ctx) {
  Cluster& c = ctx.cluster;
  const DpmSettings& dpm = ctx.snap.settings.dpm;
  const HaSettings& ha = ctx.snap.settings.ha;
  const double high = dpm.target_utilization + dpm.tolerance;
  std::vector<int> standby;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].state == HostState::kStandby) standby.push_back(static_cast<int>(h));
  }
  // Most capacity per peak watt first.
  std::sort(standby.begin(), standby.end(), [&](int a, int b) {
    const Host& x = ctx.snap.hosts[a];
    const Host& y = ctx.snap.hosts[b];
    double ex = x.cpu_cores / std::max(1.0, x.power.peak_watts), ey = y.cpu_cores / std::max(1.0, y.power.peak_watts);
    return ex != ey ? ex > ey : a < b;
  });
  for (int h : standby) {
    Utilization u = ClusterUtilization(c);
    bool hot = u.Max() > high;
    bool ha_short = ha.enabled && !HaReserveHolds(c, ha.host_failures, -1);
    bool too_few = c.HostsOn() < dpm.min_hosts_on;
    if (!hot && !ha_short && !too_few) break;
    std::string why =
        hot ? "utilization " + Pct(u.Max()) + " above band " + Pct(dpm.target_utilization - dpm.tolerance) + "-" +
                  Pct(high)
        : ha_short ? "HA reserve: capacity would not survive " + std::to_string(ha.host_failures) + " host failure(s)"
                   : "fewer than min_hosts_on " + std::to_string(dpm.min_hosts_on) + " hosts on";
    c.SetState(h, HostState::kOn);
    ctx.plan.power.push_back({ctx.snap.hosts[h].name, PowerActionType::kPowerOn, "dpm: " + why});
    // Stop once the cluster is back at the target.
    if (hot && ClusterUtilization(c).Max() <= dpm.target_utilization && !ha_short && !too_few) break;
  }
}

void DpmPowerOff(PlanContext& ctx) {
  Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  const DpmSettings& dpm = s.settings.dpm;
  const HaSettings& ha = s.settings.ha;
  const double low = dpm.target_utilization - dpm.tolerance;
  const double high = dpm.target_utilization + dpm.tolerance;
  if (s.settings.drs.threshold < 2) return;  // evacuation moves are priority 2
  std::vector<char> off(c.hosts.size(), 0);
  for (;;) {
    Utilization u = ClusterUtilization(c);
    if (!(u.Max() < low)) break;
    if (c.HostsOn() - 1 < dpm.min_hosts_on) break;
    // Candidates: the least-loaded hosts whose guests can all live-migrate.
    std::vector<int> cand;
    for (size_t h = 0; h < c.hosts.size(); ++h) {
      const HostSlot& x = c.hosts[h];
      if (!x.on()) continue;
      // Guests that cannot live-migrate, were moved by this plan or recently (ping-pong) pin the host.
      bool movable = std::all_of(x.vms.begin(), x.vms.end(), [&](int v) {
        const auto& ago = s.vms[v].last_moved_ago_s;
        return c.vms[v].live && !c.vms[v].moved && !(ago && *ago < s.settings.drs.min_move_interval_s);
      });
      bool acted = std::any_of(ctx.plan.power.begin(), ctx.plan.power.end(),
                               [&](const PowerAction& a) { return a.host == s.hosts[h].name; });
      if (movable && !acted) cand.push_back(static_cast<int>(h));
    }
    std::sort(cand.begin(), cand.end(), [&](int a, int b) {
      const HostSlot& x = c.hosts[a];
      const HostSlot& y = c.hosts[b];
      double lx = x.mem_used / x.mem_cap + x.cpu_load(), ly = y.mem_used / y.mem_cap + y.cpu_load();
      return lx != ly ? lx < ly : s.hosts[a].power.idle_watts > s.hosts[b].power.idle_watts;
    });
    bool done = false;
    for (int h : cand) {
      Utilization after = ClusterUtilization(c, h);
      if (after.Max() > dpm.target_utilization) continue;
      if (ha.enabled && !HaReserveHolds(c, ha.host_failures, h)) continue;
      // Try to evacuate every guest without pushing any host past its CPU capacity.
      size_t mark = ctx.plan.moves.size();
      std::vector<std::tuple<std::vector<int>, int, int>> undo;
      off[h] = 1;
      bool ok = true;
      std::vector<int> guests = c.hosts[h].vms;
      std::sort(guests.begin(), guests.end(), [&](int a, int b) { return c.vms[a].mem > c.vms[b].mem; });
      for (int v : guests) {
        if (c.vms[v].host != h) continue;
        std::vector<int> set = c.UnitOn(c.vms[v].unit, h);
        // Pack into the fullest hosts that stay within the band (else within capacity), so that
        // the lightly loaded hosts remain candidates for the next power-off.
        int to = -1;
        double best_fill = -1;
        UnitLoad load = c.LoadOf(set);
        for (int pass = 0; pass < 2 && to < 0; ++pass) {
          for (size_t d = 0; d < c.hosts.size(); ++d) {
            const HostSlot& x = c.hosts[d];
            if (static_cast<int>(d) == h || off[d] || !x.on()) continue;
            double cpu_after = (x.e_cpu + load.cpu) / x.cores;
            if (pass == 0 && cpu_after > high) continue;
            if (!c.Check(set, h, static_cast<int>(d), true).ok()) continue;
            double fill = cpu_after + static_cast<double>(x.mem_used + load.mem_cfg) / x.mem_cap;
            if (fill > best_fill) {
              best_fill = fill;
              to = static_cast<int>(d);
            }
          }
        }
        if (to < 0) {
          ok = false;
          break;
        }
        std::vector<char> was_moved;
        for (int w : set) was_moved.push_back(c.vms[w].moved);
        ctx.RecordMove(set, h, to, 2, "dpm: evacuate " + s.hosts[h].name + " for power-off -> " + s.hosts[to].name, 0);
        for (size_t i = 0; i < set.size(); ++i) c.vms[set[i]].moved = was_moved[i];
        undo.emplace_back(set, h, to);
      }
      if (!ok) {
        for (auto it = undo.rbegin(); it != undo.rend(); ++it)
          c.MoveSet(std::get<0>(*it), std::get<2>(*it), std::get<1>(*it));
        ctx.plan.moves.resize(mark);
        off[h] = 0;
        continue;
      }
      for (auto& [set, from, to] : undo) {
        for (int w : set) c.vms[w].moved = true;
      }
      c.SetState(h, HostState::kStandby);
      ctx.plan.power.push_back({s.hosts[h].name, PowerActionType::kPowerOff,
                                "dpm: utilization " + Pct(u.Max()) + " below band " + Pct(low) + "-" + Pct(high) +
                                    "; " + Pct(ClusterUtilization(c).Max()) + " after power-off"});
      done = true;
      break;
    }
    if (!done) break;
  }
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
