// The consolidation reference figures of the public API: the lower bound on powered-on hosts
// (ConsolidationLowerBound) and plain first-fit decreasing (FirstFitDecreasingHosts), both on
// uncontended entitlements and independent of the planner.
#include <algorithm>
#include <numeric>

#include "placement/placement.h"

namespace uw::placement {

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
