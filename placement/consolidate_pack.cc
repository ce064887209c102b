// The consolidate policy's packer: first fit / best fit decreasing, the bin-centric L2-norm rule,
// keep-then-fill, and bin elimination, each on a scratch copy of the cluster.
#include <algorithm>
#include <limits>
#include <numeric>
#include <tuple>

#include "placement/consolidate.h"

namespace uw::placement::internal {

int UsedHosts(const Cluster& c) {
  int n = 0;
  for (const HostSlot& h : c.hosts) n += h.on() && !h.vms.empty();
  return n;
}

double Fill(const HostSlot& h, const UnitLoad& load) {
  return (h.e_cpu + load.cpu) / h.cores + static_cast<double>(h.mem_used + load.mem_cfg) / h.mem_cap;
}

Packer::Packer(const Cluster& c, std::vector<Item> items, std::vector<char> pinned_host)
    : base_(c), items_(std::move(items)), pinned_host_(std::move(pinned_host)) {
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    max_cores_ = std::max(max_cores_, c.hosts[h].on() ? c.hosts[h].cores : 0.0);
    max_mem_ = std::max(max_mem_, c.hosts[h].on() ? c.hosts[h].mem_cap : 0.0);
  }
}

Packing Packer::Run(const std::vector<int>& order, const std::vector<int>& host_order, Fit fit, bool improve) const {
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

Packing Packer::RunBinCentric(const std::vector<int>& host_order, bool improve, double own_bonus) const {
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

Packing Packer::RunKeepThenFill(const std::vector<int>& host_order, bool improve) const {
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

int Packer::Moves(const Packing& p) const {
  int n = 0;
  for (const Item& it : items_) n += p.target[it.unit] != base_.vms[it.set[0]].host;
  return n;
}

double Packer::Key(const Item& it, int kind) const {
  double a = it.load.cpu / max_cores_, b = static_cast<double>(it.load.mem_cfg) / max_mem_;
  return kind == 0 ? std::max(a, b) : a + b;
}

// Bin elimination: empty the lightest used host into the others (best fit, one swap level).
void Packer::Eliminate(Cluster& p, Packing& out) const {
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

bool Packer::pinned_unit(const Cluster& p, int v) const {
  for (int w : p.units[p.vms[v].unit]) {
    if (!p.vms[w].live) return true;
  }
  return false;
}

}  // namespace uw::placement::internal
