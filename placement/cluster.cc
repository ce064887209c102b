#include "placement/cluster.h"

#include <algorithm>
#include <numeric>
#include <unordered_map>

namespace uw::placement::internal {

namespace {

int Find(std::vector<int>& parent, int x) {
  while (parent[x] != x) {
    parent[x] = parent[parent[x]];
    x = parent[x];
  }
  return x;
}

}  // namespace

Cluster::Cluster(const Snapshot& snapshot, const Entitlements& e) : snap(snapshot) {
  std::unordered_map<std::string, int> host_idx, vm_idx;
  hosts.resize(snap.hosts.size());
  for (size_t i = 0; i < snap.hosts.size(); ++i) {
    const Host& h = snap.hosts[i];
    host_idx[h.name] = static_cast<int>(i);
    hosts[i].cores = h.cpu_cores;
    hosts[i].mem_cap = static_cast<double>(h.memory_mib);
    hosts[i].mem_capacity = h.memory_mib;
    hosts[i].inv_cores = 1.0 / h.cpu_cores;
    hosts[i].inv_mem = 1.0 / static_cast<double>(h.memory_mib);
    hosts[i].state = h.state;
  }
  vms.resize(snap.vms.size());
  for (size_t i = 0; i < snap.vms.size(); ++i) {
    const Vm& v = snap.vms[i];
    vm_idx[v.name] = static_cast<int>(i);
    GuestSlot& g = vms[i];
    g.e_cpu = e.vms[i].cpu_cores;
    g.e_mem = e.vms[i].memory_mib;
    g.mem = v.memory_mib;
    g.res_cpu = v.reservation.cpu_cores;
    g.vcpus = v.vcpus;
    g.live = v.CanLiveMigrate();
  }
  for (size_t i = 0; i < snap.vms.size(); ++i) {
    if (!snap.vms[i].host.empty()) Attach(static_cast<int>(i), host_idx.at(snap.vms[i].host));
  }
  // Rules, and units: components of required affinity rules move together.
  std::vector<int> parent(vms.size());
  std::iota(parent.begin(), parent.end(), 0);
  vm_rules.resize(vms.size());
  rules.resize(snap.rules.size());
  for (size_t r = 0; r < snap.rules.size(); ++r) {
    const Rule& rule = snap.rules[r];
    RuleIndex& ri = rules[r];
    ri.rule = &rule;
    ri.hard = rule.IsHard();
    ri.count.assign(hosts.size(), 0);
    for (const auto& name : rule.vms) {
      int v = vm_idx.at(name);
      ri.members.push_back(v);
      vm_rules[v].push_back(static_cast<int>(r));
    }
    if (rule.type == RuleType::kVmHost) {
      ri.in_set.assign(hosts.size(), 0);
      for (const auto& h : rule.hosts) ri.in_set[host_idx.at(h)] = 1;
      for (size_t h = 0; h < snap.hosts.size(); ++h) {
        for (const auto& g : snap.hosts[h].groups) {
          if (std::find(rule.groups.begin(), rule.groups.end(), g) != rule.groups.end()) ri.in_set[h] = 1;
        }
      }
    }
    if (rule.type == RuleType::kVmAffinity && ri.hard) {
      for (size_t k = 1; k < ri.members.size(); ++k) {
        parent[Find(parent, ri.members[k])] = Find(parent, ri.members[0]);
      }
    }
    for (int v : ri.members) {
      if (!Running(v)) continue;
      int h = vms[v].host;
      if (ri.count[h] >= 1) ++ri.anti_excess;
      if (ri.count[h]++ == 0) ++ri.distinct;
      if (ri.Bad(h)) ++ri.bad;
    }
    ri.measure = ri.Measure(ri.anti_excess, ri.distinct, ri.bad);
  }
  std::unordered_map<int, int> unit_of_root;
  for (size_t v = 0; v < vms.size(); ++v) {
    int root = Find(parent, static_cast<int>(v));
    auto [it, fresh] = unit_of_root.emplace(root, static_cast<int>(units.size()));
    if (fresh) units.emplace_back();
    vms[v].unit = it->second;
    units[it->second].push_back(static_cast<int>(v));
  }
  RecomputeSums();
}

void Cluster::Detach(int vm) {
  GuestSlot& g = vms[vm];
  HostSlot& h = hosts[g.host];
  int last = h.vms.back();
  h.vms[g.pos] = last;
  vms[last].pos = g.pos;
  h.vms.pop_back();
  h.e_cpu -= g.e_cpu;
  h.e_mem -= g.e_mem;
  h.mem_used -= g.mem;
  h.res_cpu -= g.res_cpu;
  g.host = -1;
  g.pos = -1;
}

void Cluster::Attach(int vm, int host) {
  GuestSlot& g = vms[vm];
  HostSlot& h = hosts[host];
  g.host = host;
  g.pos = static_cast<int>(h.vms.size());
  h.vms.push_back(vm);
  h.e_cpu += g.e_cpu;
  h.e_mem += g.e_mem;
  h.mem_used += g.mem;
  h.res_cpu += g.res_cpu;
}

void Cluster::RuleShift(int vm, int from, int to) {
  for (int r : vm_rules[vm]) {
    RuleIndex& ri = rules[r];
    if (from >= 0) {
      if (ri.count[from] > 1) --ri.anti_excess;
      if (--ri.count[from] == 0) --ri.distinct;
      if (ri.Bad(from)) --ri.bad;
    }
    if (to >= 0) {
      if (ri.count[to] >= 1) ++ri.anti_excess;
      if (ri.count[to]++ == 0) ++ri.distinct;
      if (ri.Bad(to)) ++ri.bad;
    }
    ri.measure = ri.Measure(ri.anti_excess, ri.distinct, ri.bad);
  }
}

void Cluster::HostSums(int h, double sign) {
  if (h < 0 || !hosts[h].on()) return;
  double c = hosts[h].cpu_load(), m = hosts[h].mem_load();
  s1c += sign * c;
  s2c += sign * c * c;
  s1m += sign * m;
  s2m += sign * m * m;
}

void Cluster::MoveSet(const std::vector<int>& set, int from, int to) {
  HostSums(from, -1);
  if (to != from) HostSums(to, -1);
  for (int v : set) {
    int old_run = Running(v) ? vms[v].host : -1;
    if (vms[v].host >= 0) Detach(v);
    if (to >= 0) Attach(v, to);
    int new_run = Running(v) ? vms[v].host : -1;
    if (old_run != new_run) RuleShift(v, old_run, new_run);
  }
  HostSums(from, +1);
  if (to != from) HostSums(to, +1);
}

void Cluster::SetState(int host, HostState state) {
  HostSums(host, -1);
  if (hosts[host].on()) --n_on;
  hosts[host].state = state;
  if (hosts[host].on()) ++n_on;
  HostSums(host, +1);
}

void Cluster::RecomputeSums() {
  n_on = 0;
  s1c = s2c = s1m = s2m = 0;
  for (size_t h = 0; h < hosts.size(); ++h) {
    if (!hosts[h].on()) continue;
    ++n_on;
    HostSums(static_cast<int>(h), +1);
  }
}

UnitLoad Cluster::LoadOf(const std::vector<int>& set) const {
  UnitLoad l;
  for (int v : set) {
    const GuestSlot& g = vms[v];
    l.cpu += g.e_cpu;
    l.mem += g.e_mem;
    l.mem_cfg += g.mem;
    l.res_cpu += g.res_cpu;
    l.max_vcpus = std::max(l.max_vcpus, g.vcpus);
  }
  return l;
}

Feasibility Cluster::Check(const std::vector<int>& set, int from, int to, bool cpu_cap) const {
  Feasibility f;
  const HostSlot& h = hosts[to];
  if (!h.on()) return {Reject::kState};
  UnitLoad l = LoadOf(set);
  if (static_cast<double>(l.max_vcpus) > h.cores + 1e-9) return {Reject::kVcpus};
  if (h.mem_used + l.mem_cfg > h.mem_capacity) return {Reject::kMemory};
  if (h.res_cpu + l.res_cpu > h.cores + 1e-9) return {Reject::kCpuReservation};
  if (cpu_cap && h.e_cpu + l.cpu > h.cores + 1e-9) return {Reject::kCpuCapacity};
  const int fr = (from >= 0 && hosts[from].state != HostState::kFailed) ? from : -1;
  // Guests of the set per rule (sets are small: one guest or one affinity group).
  int seen_rules[16];
  int n_seen = 0;
  for (int v : set) {
    for (int r : vm_rules[v]) {
      bool dup = false;
      for (int i = 0; i < n_seen; ++i) dup = dup || seen_rules[i] == r;
      if (dup) continue;
      if (n_seen < 16) seen_rules[n_seen++] = r;
      const RuleIndex& ri = rules[r];
      int k = 0;
      for (int w : set) {
        if (std::find(vm_rules[w].begin(), vm_rules[w].end(), r) != vm_rules[w].end() &&
            (fr >= 0 ? vms[w].host == fr && Running(w) : !Running(w))) {
          ++k;
        }
      }
      int cf = fr >= 0 ? ri.count[fr] : 0;
      int ct = ri.count[to];
      int64_t excess = ri.anti_excess, bad = ri.bad;
      int dist = ri.distinct;
      if (fr >= 0) {
        excess -= std::max(0, cf - 1) - std::max(0, cf - k - 1);
        if (cf - k == 0 && cf > 0) --dist;
        if (ri.Bad(fr)) bad -= k;
      }
      excess += std::max(0, ct + k - 1) - std::max(0, ct - 1);
      if (ct == 0 && k > 0) ++dist;
      if (ri.Bad(to)) bad += k;
      int64_t after = ri.Measure(excess, dist, bad);
      if (ri.hard) {
        bool strict_fail = (ri.rule->type == RuleType::kVmAntiAffinity && ct > 0) ||
                           (ri.rule->type == RuleType::kVmHost && ri.Bad(to));
        if (strict_fail || after > ri.measure) return {Reject::kRule, r};
      } else {
        f.soft_delta += after - ri.measure;
      }
    }
  }
  return f;
}

std::string Cluster::RejectText(const Feasibility& f, const std::vector<int>& set, int to) const {
  const HostSlot& h = hosts[to];
  UnitLoad l = LoadOf(set);
  char buf[256];
  switch (f.reject) {
    case Reject::kNone:
      return "";
    case Reject::kState:
      return "host is " + std::string(HostStateName(h.state));
    case Reject::kVcpus:
      std::snprintf(buf, sizeof buf, "guest has %lld vCPUs, host has %.4g cores", static_cast<long long>(l.max_vcpus),
                    h.cores);
      return buf;
    case Reject::kMemory:
      std::snprintf(buf, sizeof buf, "needs %lld MiB, %lld MiB free", static_cast<long long>(l.mem_cfg),
                    static_cast<long long>(h.mem_capacity - h.mem_used));
      return buf;
    case Reject::kCpuReservation:
      std::snprintf(buf, sizeof buf, "CPU reservations would reach %.2f of %.4g cores", h.res_cpu + l.res_cpu, h.cores);
      return buf;
    case Reject::kCpuCapacity:
      std::snprintf(buf, sizeof buf, "CPU demand would reach %.2f of %.4g cores", h.e_cpu + l.cpu, h.cores);
      return buf;
    case Reject::kRule:
      return "breaks required rule '" + rules[f.rule].rule->name + "' (" +
             std::string(RuleTypeName(rules[f.rule].rule->type)) + ")";
  }
  return "";
}

double Cluster::CpuVariance() const {
  if (n_on == 0) return 0;
  double mean = s1c / n_on;
  return std::max(0.0, s2c / n_on - mean * mean);
}

double Cluster::MemVariance() const {
  if (n_on == 0) return 0;
  double mean = s1m / n_on;
  return std::max(0.0, s2m / n_on - mean * mean);
}

double Cluster::ImbalanceAfter(int from, int to, const UnitLoad& load) const {
  return std::sqrt(0.5 * VarianceSumAfter(from, to, load));
}

double Cluster::VarianceSumAfterSwap(int a, int b, const UnitLoad& out, const UnitLoad& in) const {
  if (n_on == 0) return 0;
  double a1c = s1c, a2c = s2c, a1m = s1m, a2m = s2m;
  auto shift = [&](int h, double dc, double dm) {
    if (h < 0 || !hosts[h].on()) return;
    const HostSlot& x = hosts[h];
    double c0 = x.e_cpu / x.cores, c1 = (x.e_cpu + dc) / x.cores;
    double m0 = x.e_mem / x.mem_cap, m1 = (x.e_mem + dm) / x.mem_cap;
    a1c += c1 - c0;
    a2c += c1 * c1 - c0 * c0;
    a1m += m1 - m0;
    a2m += m1 * m1 - m0 * m0;
  };
  shift(a, in.cpu - out.cpu, in.mem - out.mem);
  shift(b, out.cpu - in.cpu, out.mem - in.mem);
  double mc = a1c / n_on, mm = a1m / n_on;
  double vc = std::max(0.0, a2c / n_on - mc * mc), vm = std::max(0.0, a2m / n_on - mm * mm);
  return vc + vm;
}

int64_t Cluster::SoftViolations() const {
  int64_t n = 0;
  for (const RuleIndex& r : rules) {
    if (!r.hard) n += r.measure;
  }
  return n;
}

int64_t Cluster::HostsOn() const {
  return std::count_if(hosts.begin(), hosts.end(), [](const HostSlot& h) { return h.on(); });
}

PlanMetrics Cluster::Metrics() const {
  PlanMetrics m;
  m.cpu_imbalance = std::sqrt(CpuVariance());
  m.memory_imbalance = std::sqrt(MemVariance());
  m.imbalance = Imbalance();
  m.hosts_on = HostsOn();
  for (const HostSlot& h : hosts) {
    if (!h.on()) continue;
    if (!h.vms.empty()) ++m.hosts_used;
    m.unmet_cpu_cores += std::max(0.0, h.e_cpu - h.cores);
  }
  m.soft_violations = SoftViolations();
  return m;
}

std::vector<int> Cluster::UnitOn(int u, int h) const {
  std::vector<int> out;
  for (int v : units[u]) {
    if (vms[v].host == h) out.push_back(v);
  }
  return out;
}

bool Cluster::UnitTogether(int u) const {
  for (int v : units[u]) {
    if (vms[v].host != vms[units[u][0]].host) return false;
  }
  return true;
}

double ImbalanceObjective::Gain(const Cluster& c, int from, int to, const UnitLoad& load) const {
  return (c.Imbalance() - c.ImbalanceAfter(from, to, load)) * c.n_on;
}

double OpportunityCostObjective::HostCost(const HostSlot& h, double dcpu, int64_t dmem) const {
  double uc = (h.e_cpu + dcpu) / h.cores;
  double um = static_cast<double>(h.mem_used + dmem) / h.mem_cap;
  return std::exp(log_base_ * uc) + std::exp(log_base_ * um);
}

double OpportunityCostObjective::Gain(const Cluster& c, int from, int to, const UnitLoad& load) const {
  double before = 0, after = 0;
  if (from >= 0 && c.hosts[from].on()) {
    before += HostCost(c.hosts[from], 0, 0);
    after += HostCost(c.hosts[from], -load.cpu, -load.mem_cfg);
  }
  if (to >= 0 && c.hosts[to].on()) {
    before += HostCost(c.hosts[to], 0, 0);
    after += HostCost(c.hosts[to], load.cpu, load.mem_cfg);
  }
  return (before - after) / base_;
}

double OpportunityCostObjective::Value(const Cluster& c) const {
  double sum = 0;
  int n = 0;
  for (const HostSlot& h : c.hosts) {
    if (!h.on()) continue;
    sum += HostCost(h, 0, 0);
    ++n;
  }
  return n == 0 ? 0 : sum / n / base_;
}

}  // namespace uw::placement::internal
