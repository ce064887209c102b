// DPM: powers standby hosts on when utilization is above the band, the HA reserve does not hold
// or too few hosts are on (DpmPowerOn), and powers the least-loaded hosts off, evacuating them
// onto the fullest hosts, when utilization is below the band (DpmPowerOff). Also the HA reserve
// test consolidation uses (HaReserveHolds) and HA admission control (HaAdmissionProblem, for
// AdmitVm): one computation of the reserve (ComputeHaReserve) for all three.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include "placement/planner.h"

namespace uw::placement::internal {

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

std::string Cores(double c) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.2f cores", c);
  return buf;
}

}  // namespace

HaReserve ComputeHaReserve(const std::vector<HostSlot>& hosts, int64_t host_failures, int without,
                           const UnitLoad& extra) {
  HaReserve r;
  r.need_cpu = extra.cpu;
  r.need_mem = extra.mem_cfg;
  std::vector<const HostSlot*> on;
  for (size_t h = 0; h < hosts.size(); ++h) {
    const HostSlot& x = hosts[h];
    if (x.state == HostState::kOn || x.state == HostState::kMaintenance) {
      r.need_cpu += x.e_cpu;
      r.need_mem += x.mem_used;
    }
    if (x.on() && static_cast<int>(h) != without) on.push_back(&x);
  }
  std::sort(on.begin(), on.end(),
            [](const HostSlot* a, const HostSlot* b) { return a->mem_capacity > b->mem_capacity; });
  r.hosts_on = static_cast<int64_t>(on.size());
  r.lost = std::clamp<int64_t>(host_failures, 0, r.hosts_on);
  for (size_t i = static_cast<size_t>(r.lost); i < on.size(); ++i) {
    r.left_cpu += on[i]->cores;
    r.left_mem += on[i]->mem_capacity;
  }
  return r;
}

bool HaReserveHolds(const Cluster& c, int64_t host_failures, int without) {
  return ComputeHaReserve(c.hosts, host_failures, without).Holds();
}

std::string HaAdmissionProblem(const Snapshot& with, size_t vm) {
  // Only what the reserve reads: host capacities and states, and the entitled CPU and configured
  // memory of the guests on them (entitlements of `with`, so the new guest takes its share).
  const Entitlements e = ComputeEntitlements(with);
  std::vector<HostSlot> hosts(with.hosts.size());
  std::unordered_map<std::string_view, size_t> index;
  for (size_t h = 0; h < with.hosts.size(); ++h) {
    index.emplace(with.hosts[h].name, h);
    hosts[h].cores = with.hosts[h].cpu_cores;
    hosts[h].mem_capacity = with.hosts[h].memory_mib;
    hosts[h].state = with.hosts[h].state;
  }
  UnitLoad extra;  // the new guest, unless it already sits on a host the reserve counts
  for (size_t v = 0; v < with.vms.size(); ++v) {
    auto it = index.find(with.vms[v].host);
    if (it != index.end()) {
      hosts[it->second].e_cpu += e.vms[v].cpu_cores;
      hosts[it->second].mem_used += with.vms[v].memory_mib;
    }
    const bool counted = it != index.end() && (hosts[it->second].state == HostState::kOn ||
                                               hosts[it->second].state == HostState::kMaintenance);
    if (v == vm && !counted) extra = {e.vms[v].cpu_cores, 0, with.vms[v].memory_mib};
  }
  const HaReserve r = ComputeHaReserve(hosts, with.settings.ha.host_failures, -1, extra);
  if (r.Holds()) return "";
  return "with '" + with.vms[vm].name + "' the running guests need " + std::to_string(r.need_mem) + " MiB and " +
         Cores(r.need_cpu) + ", but after losing the " + std::to_string(r.lost) + " largest of the " +
         std::to_string(r.hosts_on) + " powered-on hosts (settings.ha.host_failures " +
         std::to_string(with.settings.ha.host_failures) + ") " + std::to_string(r.left_mem) + " MiB and " +
         Cores(r.left_cpu) + " are left";
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
      const bool kept = std::find(dpm.keep_on.begin(), dpm.keep_on.end(), s.hosts[h].name) != dpm.keep_on.end();
      if (movable && !acted && !kept) cand.push_back(static_cast<int>(h));
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

}  // namespace uw::placement::internal
