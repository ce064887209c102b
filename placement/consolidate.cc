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
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <numeric>

#include "placement/planner.h"

namespace uw::placement {
namespace internal {
namespace {

struct Packing {
  bool ok = false;
  int hosts_used = 0;
  std::vector<int> target;  // per unit: host (movable units only; -1 for pinned)
};

struct Item {
  int unit;
  std::vector<int> set;
  UnitLoad load;
};

int UsedHosts(const Cluster& c) {
  int n = 0;
  for (const HostSlot& h : c.hosts) n += h.on() && !h.vms.empty();
  return n;
}

enum class Fit { kFirst, kBest };

// Relative fill of host h after adding `load` (sum of CPU and memory shares).
double Fill(const HostSlot& h, const UnitLoad& load) {
  return (h.e_cpu + load.cpu) / h.cores + static_cast<double>(h.mem_used + load.mem_cfg) / h.mem_cap;
}

class Packer {
 public:
  Packer(const Cluster& c, std::vector<Item> items, std::vector<char> pinned_host)
      : base_(c), items_(std::move(items)), pinned_host_(std::move(pinned_host)) {
    for (size_t h = 0; h < c.hosts.size(); ++h) {
      max_cores_ = std::max(max_cores_, c.hosts[h].on() ? c.hosts[h].cores : 0.0);
      max_mem_ = std::max(max_mem_, c.hosts[h].on() ? c.hosts[h].mem_cap : 0.0);
    }
  }

  // Packs items in `order` into hosts, trying `host_order` (first fit) or the fullest that fits.
  Packing Run(const std::vector<int>& order, const std::vector<int>& host_order, Fit fit, bool improve) const {
    Cluster p = base_;
    for (const Item& it : items_) p.MoveSet(it.set, p.vms[it.set[0]].host, -1);
    Packing out;
    out.target.assign(base_.units.size(), -1);
    for (int i : order) {
      const Item& it = items_[i];
      int best = -1;
      double best_fill = -1;
      for (int h : host_order) {
        if (!p.Check(it.set, -1, h, true).ok()) continue;
        if (fit == Fit::kFirst) {
          best = h;
          break;
        }
        // Best fit: the fullest used host; an empty one only when no used host fits.
        double fill = p.hosts[h].vms.empty() ? -0.5 : Fill(p.hosts[h], it.load);
        if (fill > best_fill) {
          best_fill = fill;
          best = h;
        }
      }
      if (best < 0) return out;
      p.MoveSet(it.set, -1, best);
      out.target[it.unit] = best;
    }
    if (improve) Eliminate(p, out);
    out.ok = true;
    out.hosts_used = UsedHosts(p);
    return out;
  }

  // Bin-centric greedy (Panigrahy et al.'s L2-norm rule): fill one host at a time, each time
  // with the guest that leaves the smallest (normalized) residual vector, until none fits.
  // `own_bonus` > 0 favours guests already on the host (fewer moves at nearly the same packing).
  Packing RunBinCentric(const std::vector<int>& host_order, bool improve, double own_bonus = 0) const {
    Cluster p = base_;
    std::vector<int> origin(items_.size());
    for (size_t i = 0; i < items_.size(); ++i) {
      origin[i] = p.vms[items_[i].set[0]].host;
      p.MoveSet(items_[i].set, origin[i], -1);
    }
    Packing out;
    out.target.assign(base_.units.size(), -1);
    std::vector<int> left(items_.size());
    std::iota(left.begin(), left.end(), 0);
    std::vector<char> refused(items_.size(), 0);
    for (int h : host_order) {
      const HostSlot& x = p.hosts[h];
      std::fill(refused.begin(), refused.end(), 0);
      for (;;) {
        const double rc = x.cores - x.e_cpu, rm = static_cast<double>(x.mem_capacity - x.mem_used);
        int best = -1;
        double best_norm = std::numeric_limits<double>::infinity();
        for (size_t k = 0; k < left.size(); ++k) {
          const Item& it = items_[left[k]];
          if (refused[left[k]] || it.load.cpu > rc + 1e-9 || static_cast<double>(it.load.mem_cfg) > rm) continue;
          double a = (rc - it.load.cpu) / x.cores, b = (rm - static_cast<double>(it.load.mem_cfg)) / x.mem_cap;
          double norm = a * a + b * b - (constrained_.empty() ? 0 : 10.0 * constrained_[left[k]]) -
                        (origin[left[k]] == h ? own_bonus : 0);
          if (norm < best_norm) {
            best_norm = norm;
            best = static_cast<int>(k);
          }
        }
        if (best < 0) break;
        const Item& it = items_[left[best]];
        if (!p.Check(it.set, -1, h, true).ok()) {
          refused[left[best]] = 1;
          continue;
        }
        p.MoveSet(it.set, -1, h);
        out.target[it.unit] = h;
        left[best] = left.back();
        left.pop_back();
      }
      if (left.empty()) break;
    }
    if (!left.empty()) return out;
    if (improve) Eliminate(p, out);
    out.ok = true;
    out.hosts_used = UsedHosts(p);
    return out;
  }

  // Keep-then-fill: hosts in `host_order` (fullest first) keep their own guests while they fit
  // (largest first), then take the guest leaving the smallest residual from anywhere (L2 rule).
  // Packs nearly as tightly as the bin-centric rule but keeps most guests where they are.
  Packing RunKeepThenFill(const std::vector<int>& host_order, bool improve) const {
    Cluster p = base_;
    std::vector<int> origin(items_.size());
    std::vector<std::vector<int>> by_host(base_.hosts.size());
    for (size_t i = 0; i < items_.size(); ++i) {
      origin[i] = p.vms[items_[i].set[0]].host;
      by_host[origin[i]].push_back(static_cast<int>(i));
      p.MoveSet(items_[i].set, origin[i], -1);
    }
    Packing out;
    out.target.assign(base_.units.size(), -1);
    std::vector<char> done(items_.size(), 0);
    size_t left = items_.size();
    for (int h : host_order) {
      std::vector<int> own = by_host[h];
      std::sort(own.begin(), own.end(), [&](int a, int b) { return Key(items_[a], 0) > Key(items_[b], 0); });
      for (int i : own) {
        if (done[i] || !p.Check(items_[i].set, -1, h, true).ok()) continue;
        p.MoveSet(items_[i].set, -1, h);
        out.target[items_[i].unit] = h;
        done[i] = 1;
        --left;
      }
      const HostSlot& x = p.hosts[h];
      std::vector<char> refused(items_.size(), 0);
      for (;;) {
        const double rc = x.cores - x.e_cpu, rm = static_cast<double>(x.mem_capacity - x.mem_used);
        int best = -1;
        double best_norm = std::numeric_limits<double>::infinity();
        for (size_t k = 0; k < items_.size(); ++k) {
          const Item& it = items_[k];
          if (done[k] || refused[k] || it.load.cpu > rc + 1e-9 || static_cast<double>(it.load.mem_cfg) > rm) continue;
          double a = (rc - it.load.cpu) / x.cores, b = (rm - static_cast<double>(it.load.mem_cfg)) / x.mem_cap;
          double norm = a * a + b * b - (constrained_.empty() ? 0 : 10.0 * constrained_[k]);
          if (norm < best_norm) {
            best_norm = norm;
            best = static_cast<int>(k);
          }
        }
        if (best < 0) break;
        if (!p.Check(items_[best].set, -1, h, true).ok()) {
          refused[best] = 1;
          continue;
        }
        p.MoveSet(items_[best].set, -1, h);
        out.target[items_[best].unit] = h;
        done[best] = 1;
        --left;
      }
      if (left == 0) break;
    }
    if (left > 0) return out;
    if (improve) Eliminate(p, out);
    out.ok = true;
    out.hosts_used = UsedHosts(p);
    return out;
  }

  int Moves(const Packing& p) const {
    int n = 0;
    for (const Item& it : items_) n += p.target[it.unit] != base_.vms[it.set[0]].host;
    return n;
  }

  double Key(const Item& it, int kind) const {
    double a = it.load.cpu / max_cores_, b = static_cast<double>(it.load.mem_cfg) / max_mem_;
    return kind == 0 ? std::max(a, b) : a + b;
  }

 private:
  // Bin elimination: empty the lightest used host into the others (best fit, one swap level).
  void Eliminate(Cluster& p, Packing& out) const {
    std::vector<char> tried(p.hosts.size(), 0);
    for (int round = 0; round < 64; ++round) {
      int victim = -1;
      double lightest = std::numeric_limits<double>::infinity();
      for (size_t h = 0; h < p.hosts.size(); ++h) {
        const HostSlot& x = p.hosts[h];
        if (!x.on() || x.vms.empty() || tried[h] || pinned_host_[h]) continue;
        double f = Fill(x, {});
        if (f < lightest) {
          lightest = f;
          victim = static_cast<int>(h);
        }
      }
      if (victim < 0) return;
      tried[victim] = 1;
      std::vector<std::tuple<std::vector<int>, int, int>> done;  // (set, from, to)
      auto move = [&](const std::vector<int>& set, int from, int to) {
        p.MoveSet(set, from, to);
        done.emplace_back(set, from, to);
      };
      std::vector<int> guests = p.hosts[victim].vms;
      std::sort(guests.begin(), guests.end(), [&](int a, int b) { return p.vms[a].mem > p.vms[b].mem; });
      bool ok = true;
      for (int v : guests) {
        if (p.vms[v].host != victim) continue;
        std::vector<int> set = p.UnitOn(p.vms[v].unit, victim);
        UnitLoad load = p.LoadOf(set);
        int best = -1;
        double best_fill = -1;
        for (size_t h = 0; h < p.hosts.size(); ++h) {
          int hi = static_cast<int>(h);
          if (hi == victim || !p.hosts[h].on() || p.hosts[h].vms.empty()) continue;
          if (!p.Check(set, victim, hi, true).ok()) continue;
          double f = Fill(p.hosts[h], load);
          if (f > best_fill) {
            best_fill = f;
            best = hi;
          }
        }
        if (best >= 0) {
          move(set, victim, best);
          continue;
        }
        // One swap: a smaller guest w on host h2 goes to h3, then `set` fits on h2.
        bool swapped = false;
        int budget = 4000;
        for (size_t h2 = 0; h2 < p.hosts.size() && !swapped && budget > 0; ++h2) {
          int a = static_cast<int>(h2);
          if (a == victim || !p.hosts[h2].on() || p.hosts[h2].vms.empty()) continue;
          std::vector<int> on_a = p.hosts[h2].vms;
          for (int w : on_a) {
            if (--budget <= 0) break;
            if (!p.vms[w].live || pinned_unit(p, w)) continue;
            std::vector<int> wset = p.UnitOn(p.vms[w].unit, a);
            UnitLoad wl = p.LoadOf(wset);
            if (wl.mem_cfg >= load.mem_cfg && wl.cpu >= load.cpu) continue;
            for (size_t h3 = 0; h3 < p.hosts.size(); ++h3) {
              int b = static_cast<int>(h3);
              if (b == a || b == victim || !p.hosts[h3].on() || p.hosts[h3].vms.empty()) continue;
              if (!p.Check(wset, a, b, true).ok()) continue;
              p.MoveSet(wset, a, b);
              if (p.Check(set, victim, a, true).ok()) {
                done.emplace_back(wset, a, b);
                move(set, victim, a);
                swapped = true;
              } else {
                p.MoveSet(wset, b, a);
              }
              break;
            }
            if (swapped) break;
          }
        }
        if (!swapped) {
          ok = false;
          break;
        }
      }
      if (!ok) {
        for (auto it = done.rbegin(); it != done.rend(); ++it)
          p.MoveSet(std::get<0>(*it), std::get<2>(*it), std::get<1>(*it));
        continue;
      }
      for (auto& [set, from, to] : done) out.target[p.vms[set[0]].unit] = to;
    }
  }

  bool pinned_unit(const Cluster& p, int v) const {
    for (int w : p.units[p.vms[v].unit]) {
      if (!p.vms[w].live) return true;
    }
    return false;
  }

  const Cluster& base_;

 public:
  std::vector<char> constrained_;  // items with host constraints: placed first by the fill rules
 private:
  std::vector<Item> items_;
  std::vector<char> pinned_host_;
  double max_cores_ = 1, max_mem_ = 1;
};

using Step = std::tuple<std::vector<int>, int, int>;  // (set, from, to)

// Evacuates every powered-on host not in `keep` into the kept ones. Steps, or false.
bool EvacuateInto(const Cluster& c, const std::vector<char>& keep, std::vector<Step>& steps) {
  Cluster q = c;
  std::vector<std::pair<std::vector<int>, int>> todo;
  for (size_t h = 0; h < q.hosts.size(); ++h) {
    if (!q.hosts[h].on() || keep[h]) continue;
    for (int v : q.hosts[h].vms) {
      std::vector<int> set = q.UnitOn(q.vms[v].unit, static_cast<int>(h));
      if (set[0] == v) todo.emplace_back(set, static_cast<int>(h));
    }
  }
  std::sort(todo.begin(), todo.end(),
            [&](const auto& a, const auto& b) { return q.LoadOf(a.first).mem_cfg > q.LoadOf(b.first).mem_cfg; });
  for (const auto& [set, from] : todo) {
    for (int v : set) {
      if (!q.vms[v].live) return false;
    }
    UnitLoad load = q.LoadOf(set);
    int best = -1;
    double best_fill = -1;
    for (size_t h = 0; h < q.hosts.size(); ++h) {
      if (!keep[h] || !q.hosts[h].on()) continue;
      if (!q.Check(set, from, static_cast<int>(h), true).ok()) continue;
      double f = Fill(q.hosts[h], load);
      if (f > best_fill) {
        best_fill = f;
        best = static_cast<int>(h);
      }
    }
    if (best < 0) return false;
    q.MoveSet(set, from, best);
    steps.emplace_back(set, from, best);
  }
  return true;
}

// Sequences a full target assignment; detours through hosts with room break cycles.
bool Sequence(const Cluster& c, const std::vector<Item>& items, const std::vector<int>& target,
              std::vector<Step>& steps) {
  Cluster q = c;
  std::vector<int> pending;
  for (size_t i = 0; i < items.size(); ++i) {
    int u = items[i].unit;
    if (target[u] >= 0 && target[u] != q.vms[items[i].set[0]].host) pending.push_back(static_cast<int>(i));
  }
  int detours = 0;
  while (!pending.empty()) {
    bool progress = false;
    for (size_t k = 0; k < pending.size();) {
      const Item& it = items[pending[k]];
      int from = q.vms[it.set[0]].host, to = target[it.unit];
      if (q.Check(it.set, from, to).ok()) {
        q.MoveSet(it.set, from, to);
        steps.emplace_back(it.set, from, to);
        pending[k] = pending.back();
        pending.pop_back();
        progress = true;
      } else {
        ++k;
      }
    }
    if (progress) continue;
    if (++detours > 4 * static_cast<int>(items.size())) return false;
    // Deadlock: every waiting move's destination is blocked by guests still to leave it. Move one
    // of those leaving guests (the smallest) to a temporary host with room: that frees its host.
    std::sort(pending.begin(), pending.end(),
              [&](int a, int b) { return items[a].load.mem_cfg < items[b].load.mem_cfg; });
    std::vector<char> blocked_target(q.hosts.size(), 0);
    for (int i : pending) blocked_target[target[items[i].unit]] = 1;
    bool moved = false;
    for (int i : pending) {
      const Item& it = items[i];
      int from = q.vms[it.set[0]].host;
      if (!blocked_target[from]) continue;  // leaving it would not unblock anyone
      int best = -1;
      int64_t best_free = -1;
      for (size_t h = 0; h < q.hosts.size(); ++h) {
        int hi = static_cast<int>(h);
        if (hi == from || blocked_target[h] || !q.hosts[h].on()) continue;
        if (!q.Check(it.set, from, hi).ok()) continue;
        int64_t free = q.hosts[h].mem_capacity - q.hosts[h].mem_used;
        if (free > best_free) {
          best_free = free;
          best = hi;
        }
      }
      if (best < 0) continue;
      q.MoveSet(it.set, from, best);
      steps.emplace_back(it.set, from, best);
      moved = true;
      break;
    }
    if (!moved) return false;
  }
  return true;
}

}  // namespace

void Consolidate(PlanContext& ctx) {
  Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  if (s.settings.drs.threshold < 3) return;  // consolidation moves are priority 3
  // Items: units together on a powered-on host whose guests all live-migrate; the rest is pinned.
  std::vector<Item> items;
  std::vector<char> pinned_host(c.hosts.size(), 0);
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
  if (items.empty()) return;
  Packer packer(c, items, pinned_host);
  std::vector<int> snapshot_order, load_order;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].on()) snapshot_order.push_back(static_cast<int>(h));
  }
  load_order = snapshot_order;
  std::stable_sort(load_order.begin(), load_order.end(), [&](int a, int b) {
    if (pinned_host[a] != pinned_host[b]) return pinned_host[a] > pinned_host[b];
    if (c.hosts[a].mem_cap != c.hosts[b].mem_cap) return c.hosts[a].mem_cap > c.hosts[b].mem_cap;
    return c.hosts[a].mem_used > c.hosts[b].mem_used;
  });
  std::vector<int> by_max(items.size()), by_sum(items.size());
  std::iota(by_max.begin(), by_max.end(), 0);
  std::iota(by_sum.begin(), by_sum.end(), 0);
  // Guests with host constraints first (they have the fewest choices), then by decreasing size.
  std::vector<char> constrained(items.size(), 0);
  for (size_t i = 0; i < items.size(); ++i) {
    for (int v : items[i].set) {
      for (int r : c.vm_rules[v]) {
        const RuleIndex& ri = c.rules[r];
        if (ri.hard && ri.rule->type != RuleType::kVmAffinity) constrained[i] = 1;
      }
    }
  }
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
  const int current = UsedHosts(c);
  if (!best.ok || best.hosts_used >= current) return;

  // Relabel the packing's hosts among interchangeable hosts (same size and groups, not named by
  // any rule, not pinned) to keep as many guests where they are as possible.
  {
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

  // Realize with as few moves as possible.
  std::vector<Step> steps;
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
  if (!realized) return;
  const int used_before = current;
  for (const auto& [set, from, to] : steps) {
    ctx.RecordMove(
        set, from, to, 3,
        "consolidate: pack onto fewer hosts (" + std::to_string(used_before) + " used before) -> " + s.hosts[to].name,
        0);
  }
  // Power off the emptied hosts, hungriest first.
  std::vector<int> empty;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].on() && c.hosts[h].vms.empty()) empty.push_back(static_cast<int>(h));
  }
  std::sort(empty.begin(), empty.end(),
            [&](int a, int b) { return s.hosts[a].power.idle_watts > s.hosts[b].power.idle_watts; });
  for (int h : empty) {
    if (c.HostsOn() - 1 < s.settings.dpm.min_hosts_on) break;
    if (s.settings.ha.enabled && !HaReserveHolds(c, s.settings.ha.host_failures, h)) continue;
    c.SetState(h, HostState::kStandby);
    ctx.plan.power.push_back({s.hosts[h].name, PowerActionType::kPowerOff,
                              "consolidate: host emptied; " + std::to_string(UsedHosts(c)) + " hosts in use"});
  }
}

}  // namespace internal

namespace {

// Demand clamped to reservation and limits, without contention.
Entitlements Uncontended(const Snapshot& s) { return ComputeEntitlements(s, Entitlement{1e18, 1e18}); }

}  // namespace

int64_t ConsolidationLowerBound(const Snapshot& s) {
  Entitlements e = Uncontended(s);
  double cpu = 0, mem = 0;
  for (size_t i = 0; i < s.vms.size(); ++i) {
    cpu += e.vms[i].cpu_cores;
    mem += static_cast<double>(s.vms[i].memory_mib);
  }
  std::vector<double> cores, mems;
  for (const Host& h : s.hosts) {
    if (h.state != HostState::kOn && h.state != HostState::kStandby) continue;
    cores.push_back(h.cpu_cores);
    mems.push_back(static_cast<double>(h.memory_mib));
  }
  auto need = [](std::vector<double> caps, double total) -> int64_t {
    std::sort(caps.rbegin(), caps.rend());
    double sum = 0;
    for (size_t i = 0; i < caps.size(); ++i) {
      if (sum + 1e-9 >= total) return static_cast<int64_t>(i);
      sum += caps[i];
    }
    return sum + 1e-9 >= total ? static_cast<int64_t>(caps.size()) : static_cast<int64_t>(caps.size()) + 1;
  };
  return std::max(need(cores, cpu), need(mems, mem));
}

int64_t FirstFitDecreasingHosts(const Snapshot& s) {
  Entitlements e = Uncontended(s);
  std::vector<int> hosts;
  double max_cores = 0, max_mem = 0;
  for (size_t h = 0; h < s.hosts.size(); ++h) {
    if (s.hosts[h].state != HostState::kOn && s.hosts[h].state != HostState::kStandby) continue;
    hosts.push_back(static_cast<int>(h));
    max_cores = std::max(max_cores, s.hosts[h].cpu_cores);
    max_mem = std::max(max_mem, static_cast<double>(s.hosts[h].memory_mib));
  }
  std::vector<int> order(s.vms.size());
  std::iota(order.begin(), order.end(), 0);
  auto key = [&](int v) {
    return std::max(e.vms[v].cpu_cores / max_cores, static_cast<double>(s.vms[v].memory_mib) / max_mem);
  };
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key(a) > key(b); });
  std::vector<double> cpu(s.hosts.size(), 0);
  std::vector<int64_t> mem(s.hosts.size(), 0);
  std::vector<char> used(s.hosts.size(), 0);
  for (int v : order) {
    bool placed = false;
    for (int h : hosts) {
      if (cpu[h] + e.vms[v].cpu_cores > s.hosts[h].cpu_cores + 1e-9) continue;
      if (mem[h] + s.vms[v].memory_mib > s.hosts[h].memory_mib) continue;
      cpu[h] += e.vms[v].cpu_cores;
      mem[h] += s.vms[v].memory_mib;
      used[h] = 1;
      placed = true;
      break;
    }
    if (!placed) return -1;
  }
  return std::count(used.begin(), used.end(), 1);
}

}  // namespace uw::placement
