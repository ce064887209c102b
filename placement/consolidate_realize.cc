// The consolidate policy's realization: turns a packing into a safe sequence of live migrations,
// either by evacuating the hosts not kept (EvacuateInto) or by sequencing the whole assignment
// with detours that break cycles (Sequence).
#include <algorithm>

#include "placement/consolidate.h"

namespace uw::placement::internal {

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

}  // namespace uw::placement::internal
