// The `consolidate` policy: vector bin packing (CPU entitlement x configured memory) onto the
// fewest powered-on hosts, realized as a safe sequence of live migrations, then power-off of the
// emptied hosts (never below min_hosts_on or the HA reserve).
//
// Packing: several decreasing heuristics (first fit by max share, first fit by summed share,
// best fit; each over two host orders) on a scratch copy of the cluster, the best one improved by
// bin elimination (re-insert the lightest host's guests elsewhere, with one swap level).
// Realization: prefer "evacuate the hosts not kept" (guests already on kept hosts stay, so few
// moves and every move only fills a kept host); else sequence the full repacking, detouring a
// guest through a host with room when moves wait on each other in a cycle.
//
// This file drives the policy; the packer is in consolidate_pack.cc, the realization in
// consolidate_realize.cc.
#include "placement/consolidate.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "placement/planner.h"

namespace uw::placement::internal {
namespace {

// What the packing works on: the movable units, and the hosts whose other guests stay.
struct PackingInput {
  std::vector<Item> items;
  std::vector<char> pinned_host;
  std::vector<int> snapshot_order;  // powered-on hosts in snapshot order
  std::vector<int> load_order;      // the same, pinned first, then largest, then fullest
};

// Items: units together on a powered-on host whose guests all live-migrate; the rest is pinned.
PackingInput CollectItems(const PlanContext& ctx) {
  const Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  PackingInput in;
  std::vector<Item>& items = in.items;
  std::vector<char>& pinned_host = in.pinned_host;
  pinned_host.assign(c.hosts.size(), 0);
  for (size_t u = 0; u < c.units.size(); ++u) {
    const std::vector<int>& members = c.units[u];
    int h = c.vms[members[0]].host;
    if (h < 0 || !c.hosts[h].on()) continue;
    // Guests that cannot live-migrate, or moved recently (ping-pong), stay where they are.
    bool movable = c.UnitTogether(static_cast<int>(u)) && std::all_of(members.begin(), members.end(), [&](int v) {
                     const auto& ago = s.vms[v].last_moved_ago_s;
                     return c.vms[v].live && !c.vms[v].moved && !(ago && *ago < s.settings.drs.min_move_interval_s);
                   });
    if (!movable) {
      for (int v : members) {
        if (c.vms[v].host >= 0) pinned_host[c.vms[v].host] = 1;
      }
      continue;
    }
    items.push_back({static_cast<int>(u), members, c.LoadOf(members)});
  }
  return in;
}

void OrderHosts(const Cluster& c, PackingInput& in) {
  const std::vector<char>& pinned_host = in.pinned_host;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].on()) in.snapshot_order.push_back(static_cast<int>(h));
  }
  in.load_order = in.snapshot_order;
  std::stable_sort(in.load_order.begin(), in.load_order.end(), [&](int a, int b) {
    if (pinned_host[a] != pinned_host[b]) return pinned_host[a] > pinned_host[b];
    if (c.hosts[a].mem_cap != c.hosts[b].mem_cap) return c.hosts[a].mem_cap > c.hosts[b].mem_cap;
    return c.hosts[a].mem_used > c.hosts[b].mem_used;
  });
}

// Items with host constraints (a hard rule other than affinity).
std::vector<char> ConstrainedItems(const Cluster& c, const std::vector<Item>& items) {
  std::vector<char> constrained(items.size(), 0);
  for (size_t i = 0; i < items.size(); ++i) {
    for (int v : items[i].set) {
      for (int r : c.vm_rules[v]) {
        const RuleIndex& ri = c.rules[r];
        if (ri.hard && ri.rule->type != RuleType::kVmAffinity) constrained[i] = 1;
      }
    }
  }
  return constrained;
}

// Runs every heuristic; fewest hosts wins, ties by fewest moves.
Packing BestPacking(const Cluster& c, const PackingInput& in) {
  const std::vector<Item>& items = in.items;
  const std::vector<int>& snapshot_order = in.snapshot_order;
  const std::vector<int>& load_order = in.load_order;
  Packer packer(c, items, in.pinned_host);
  std::vector<int> by_max(items.size()), by_sum(items.size());
  std::iota(by_max.begin(), by_max.end(), 0);
  std::iota(by_sum.begin(), by_sum.end(), 0);
  // Guests with host constraints first (they have the fewest choices), then by decreasing size.
  std::vector<char> constrained = ConstrainedItems(c, items);
  packer.constrained_ = constrained;
  std::stable_sort(by_max.begin(), by_max.end(), [&](int a, int b) {
    if (constrained[a] != constrained[b]) return constrained[a] > constrained[b];
    return packer.Key(items[a], 0) > packer.Key(items[b], 0);
  });
  std::stable_sort(by_sum.begin(), by_sum.end(), [&](int a, int b) {
    if (constrained[a] != constrained[b]) return constrained[a] > constrained[b];
    return packer.Key(items[a], 1) > packer.Key(items[b], 1);
  });
  Packing best;
  int best_moves = 0;
  auto consider = [&](Packing p) {
    if (!p.ok) return;
    int moves = packer.Moves(p);
    if (!best.ok || p.hosts_used < best.hosts_used || (p.hosts_used == best.hosts_used && moves < best_moves)) {
      best = std::move(p);
      best_moves = moves;
    }
  };
  // Plain FFD first (the reference this policy must never do worse than), then the others.
  consider(packer.Run(by_max, snapshot_order, Fit::kFirst, false));
  for (const auto* order : {&by_max, &by_sum}) {
    for (const auto* hosts : {&load_order, &snapshot_order}) {
      for (Fit fit : {Fit::kFirst, Fit::kBest}) consider(packer.Run(*order, *hosts, fit, true));
    }
  }
  if (items.size() <= 12000) {
    consider(packer.RunBinCentric(load_order, true));
    consider(packer.RunBinCentric(snapshot_order, true));
    consider(packer.RunKeepThenFill(load_order, true));
    for (double bonus : {0.002, 0.01, 0.05}) consider(packer.RunBinCentric(load_order, true, bonus));
  }
  return best;
}

// Relabels the packing's hosts among interchangeable hosts (same size and groups, not named by
// any rule, not pinned) to keep as many guests where they are as possible.
void RelabelHosts(const PlanContext& ctx, const PackingInput& in, Packing& best) {
  const Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  const std::vector<Item>& items = in.items;
  const std::vector<char>& pinned_host = in.pinned_host;
  std::vector<char> named(c.hosts.size(), 0);
  for (const RuleIndex& ri : c.rules) {
    if (ri.rule->type != RuleType::kVmHost) continue;
    for (size_t h = 0; h < c.hosts.size(); ++h) named[h] = named[h] || (!ri.rule->hosts.empty() && ri.in_set[h]);
  }
  auto signature = [&](int h) {
    return std::to_string(c.hosts[h].cores) + "/" + std::to_string(c.hosts[h].mem_capacity) + "/" + [&] {
      std::string g;
      for (const auto& x : s.hosts[h].groups) g += x + ",";
      return g;
    }();
  };
  std::map<std::pair<int, int>, int64_t> overlap;  // (bin host, current host) -> MiB that could stay
  for (const Item& it : items) {
    int bin = best.target[it.unit], cur = c.vms[it.set[0]].host;
    if (bin >= 0 && !named[bin] && !named[cur] && !pinned_host[bin] && !pinned_host[cur] &&
        signature(bin) == signature(cur)) {
      overlap[{bin, cur}] += it.load.mem_cfg;
    }
  }
  std::vector<std::pair<int64_t, std::pair<int, int>>> pairs;
  for (const auto& [k, w] : overlap) pairs.push_back({w, k});
  std::sort(pairs.rbegin(), pairs.rend());
  std::vector<int> relabel(c.hosts.size(), -1), taken(c.hosts.size(), 0);
  for (const auto& [w, k] : pairs) {
    if (relabel[k.first] >= 0 || taken[k.second]) continue;
    relabel[k.first] = k.second;
    taken[k.second] = 1;
  }
  // Bins left unmatched go to unmatched hosts of the same signature that hold nothing of theirs.
  std::vector<char> used_bin(c.hosts.size(), 0);
  for (const Item& it : items) used_bin[best.target[it.unit]] = 1;
  for (size_t b = 0; b < c.hosts.size(); ++b) {
    if (!used_bin[b] || relabel[b] >= 0) continue;
    if (named[b] || pinned_host[b]) {
      if (!taken[b]) {
        relabel[b] = static_cast<int>(b);
        taken[b] = 1;
      }
      continue;
    }
    for (size_t h = 0; h < c.hosts.size() && relabel[b] < 0; ++h) {
      if (!taken[h] && !named[h] && !pinned_host[h] && c.hosts[h].on() &&
          signature(static_cast<int>(h)) == signature(static_cast<int>(b))) {
        relabel[b] = static_cast<int>(h);
        taken[h] = 1;
      }
    }
  }
  bool complete = true;
  for (size_t b = 0; b < c.hosts.size(); ++b) complete = complete && (!used_bin[b] || relabel[b] >= 0);
  if (complete) {
    for (const Item& it : items) best.target[it.unit] = relabel[best.target[it.unit]];
  }
}

// Realizes the packing with as few moves as possible: the steps, or false.
bool Realize(const Cluster& c, const PackingInput& in, const Packing& best, int current, std::vector<Step>& steps) {
  const std::vector<Item>& items = in.items;
  const std::vector<char>& pinned_host = in.pinned_host;
  const std::vector<int>& snapshot_order = in.snapshot_order;
  bool realized = false;
  for (int extra = 0; extra <= 1 && !realized; ++extra) {
    const int k = best.hosts_used + extra;
    if (k >= current) break;
    std::vector<std::vector<char>> choices;
    // Kept = the packing's hosts, or the k fullest hosts (pinned first).
    std::vector<char> keep_pack(c.hosts.size(), 0);
    for (const Item& it : items) keep_pack[best.target[it.unit]] = 1;
    for (size_t h = 0; h < c.hosts.size(); ++h) keep_pack[h] = keep_pack[h] || pinned_host[h];
    if (extra == 0) choices.push_back(keep_pack);
    std::vector<int> fullest = snapshot_order;
    std::stable_sort(fullest.begin(), fullest.end(), [&](int a, int b) {
      if (pinned_host[a] != pinned_host[b]) return pinned_host[a] > pinned_host[b];
      return Fill(c.hosts[a], {}) > Fill(c.hosts[b], {});
    });
    std::vector<char> keep_full(c.hosts.size(), 0);
    for (int i = 0; i < k && i < static_cast<int>(fullest.size()); ++i) keep_full[fullest[i]] = 1;
    choices.push_back(keep_full);
    std::vector<Step> best_steps;
    bool any = false;
    for (const auto& keep : choices) {
      std::vector<Step> st;
      if (EvacuateInto(c, keep, st) && (!any || st.size() < best_steps.size())) {
        best_steps = std::move(st);
        any = true;
      }
    }
    if (extra == 0) {
      std::vector<Step> st;
      if (Sequence(c, items, best.target, st) && (!any || st.size() < best_steps.size())) {
        best_steps = std::move(st);
        any = true;
      }
    }
    if (any) {
      steps = std::move(best_steps);
      realized = true;
    }
  }
  return realized;
}

// Powers off the emptied hosts, hungriest first.
void PowerOffEmptied(PlanContext& ctx) {
  Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  std::vector<int> empty;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].on() && c.hosts[h].vms.empty()) empty.push_back(static_cast<int>(h));
  }
  std::sort(empty.begin(), empty.end(),
            [&](int a, int b) { return s.hosts[a].power.idle_watts > s.hosts[b].power.idle_watts; });
  for (int h : empty) {
    if (c.HostsOn() - 1 < s.settings.dpm.min_hosts_on) break;
    // A host this plan powers on already (to place or restart a guest that consolidation then
    // moved elsewhere) keeps that one power action: a plan acts on a host's power at most once.
    const bool acted = std::any_of(ctx.plan.power.begin(), ctx.plan.power.end(),
                                   [&](const PowerAction& a) { return a.host == s.hosts[h].name; });
    if (acted) continue;
    if (s.settings.ha.enabled && !HaReserveHolds(c, s.settings.ha.host_failures, h)) continue;
    c.SetState(h, HostState::kStandby);
    ctx.plan.power.push_back({s.hosts[h].name, PowerActionType::kPowerOff,
                              "consolidate: host emptied; " + std::to_string(UsedHosts(c)) + " hosts in use"});
  }
}

}  // namespace

void Consolidate(PlanContext& ctx) {
  Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  if (s.settings.drs.threshold < 3) return;  // consolidation moves are priority 3
  PackingInput in = CollectItems(ctx);
  if (in.items.empty()) return;
  OrderHosts(c, in);
  Packing best = BestPacking(c, in);
  const int current = UsedHosts(c);
  if (!best.ok || best.hosts_used >= current) return;
  RelabelHosts(ctx, in, best);
  std::vector<Step> steps;
  if (!Realize(c, in, best, current, steps)) return;
  const int used_before = current;
  for (const auto& [set, from, to] : steps) {
    ctx.RecordMove(
        set, from, to, 3,
        "consolidate: pack onto fewer hosts (" + std::to_string(used_before) + " used before) -> " + s.hosts[to].name,
        0);
  }
  PowerOffEmptied(ctx);
}

}  // namespace uw::placement::internal
