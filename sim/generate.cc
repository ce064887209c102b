// Seeded cluster generation (Generate): host classes sized for the requested density, three
// pools, a t-shirt mix of guests in a skewed placement, and rules that hold in that placement.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <unordered_map>

#include "sim/sim.h"

namespace uw::sim {

using placement::Host;
using placement::HostRuleMode;
using placement::HostState;
using placement::Pool;
using placement::Rule;
using placement::RuleType;
using placement::Snapshot;
using placement::Vm;

namespace {

struct Size {
  int64_t vcpus;
  int64_t memory_mib;
  double weight;
};

// A t-shirt mix of guest sizes (weights sum to 1).
constexpr Size kSizes[] = {{1, 2048, 0.30}, {2, 4096, 0.30}, {4, 8192, 0.22}, {8, 16384, 0.12}, {16, 65536, 0.06}};

std::string Name(const char* prefix, int64_t i, int width) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%0*lld", prefix, width, static_cast<long long>(i));
  return buf;
}

int Width(int64_t n) { return std::max(2, static_cast<int>(std::to_string(std::max<int64_t>(1, n - 1)).size())); }

// Two host classes sized for the density: every fourth host is half the size of the others.
void AddHosts(const GenOptions& o, int64_t hosts, Snapshot& s) {
  double avg_mem = 0, avg_vcpus = 0;
  for (const Size& z : kSizes) {
    avg_mem += z.weight * static_cast<double>(z.memory_mib);
    avg_vcpus += z.weight * static_cast<double>(z.vcpus);
  }
  const double avg_class = o.uniform_hosts ? 1.0 : 0.75 + 0.125;
  const double gib = 1024;
  double mem_needed = static_cast<double>(o.vms) * avg_mem / (static_cast<double>(hosts) * avg_class * o.memory_fill);
  int64_t big_mem = static_cast<int64_t>(std::ceil(std::max(mem_needed, 64 * gib) / (64 * gib))) * 64 * 1024;
  const double avg_util = 0.05 + 0.75 / 3;  // E[0.05 + 0.75 u^2]
  double cores_needed =
      static_cast<double>(o.vms) * avg_vcpus * avg_util / (static_cast<double>(hosts) * avg_class * 0.5);
  double big_cores = std::ceil(std::max(16.0, cores_needed) / 8) * 8;
  const int hw = Width(hosts);
  for (int64_t h = 0; h < hosts; ++h) {
    Host x;
    x.name = Name("h", h, hw);
    bool small = !o.uniform_hosts && h % 4 == 3;
    x.cpu_cores = small ? big_cores / 2 : big_cores;
    x.memory_mib = small ? big_mem / 2 : big_mem;
    x.groups = {"rack-" + std::to_string(h / 8)};
    x.power = small ? placement::HostPower{120, 300} : placement::HostPower{200, 500};
    s.hosts.push_back(x);
  }
}

void AddPools(Snapshot& s) {
  Pool prod, dev, batch;
  prod.name = "prod";
  prod.cpu.shares = prod.memory.shares = 8000;
  dev.name = "dev";
  dev.cpu.shares = dev.memory.shares = 4000;
  batch.name = "batch";
  batch.cpu.shares = batch.memory.shares = 2000;
  s.pools = {prod, dev, batch};
}

// Guests of a t-shirt mix, placed skewed (most on the first third) without over-committing memory.
void AddGuests(const GenOptions& o, int64_t hosts, std::mt19937_64& rng, std::uniform_real_distribution<double>& uni,
               Snapshot& s) {
  std::vector<int64_t> used(hosts, 0);
  const int64_t third = std::max<int64_t>(1, hosts / 3);
  const int vw = Width(o.vms);
  for (int64_t i = 0; i < o.vms; ++i) {
    double r = uni(rng), acc = 0;
    Size z = kSizes[0];
    for (const Size& c : kSizes) {
      acc += c.weight;
      if (r <= acc) {
        z = c;
        break;
      }
    }
    Vm v;
    v.name = Name("vm", i, vw);
    v.vcpus = z.vcpus;
    v.memory_mib = z.memory_mib;
    double u = uni(rng);
    v.demand.cpu_cores = std::round(static_cast<double>(z.vcpus) * (0.05 + 0.75 * u * u) * 1000) / 1000;
    v.demand.memory_mib = static_cast<int64_t>(static_cast<double>(z.memory_mib) * (0.4 + 0.5 * uni(rng)));
    v.pool = s.pools[i % 3].name;
    // Skewed placement: most guests land on the first third, memory never over-committed.
    int64_t h = uni(rng) < o.skew ? static_cast<int64_t>(rng() % third) : static_cast<int64_t>(rng() % hosts);
    for (int64_t tries = 0; tries < hosts; ++tries) {
      if (used[h] + v.memory_mib <= s.hosts[h].memory_mib * 95 / 100) break;
      h = (h + 1) % hosts;
    }
    if (used[h] + v.memory_mib <= s.hosts[h].memory_mib) {
      used[h] += v.memory_mib;
      v.host = s.hosts[h].name;
    }
    s.vms.push_back(v);
  }
}

// Adds rules that hold in the generated placement, each over guests not yet in a rule.
class RuleMaker {
 public:
  RuleMaker(int64_t hosts, std::mt19937_64& rng, Snapshot& s)
      : hosts_(hosts), rng_(rng), s_(s), on_host_(hosts), in_rule_(s.vms.size(), 0) {
    std::unordered_map<std::string, int> host_idx;
    for (int64_t h = 0; h < hosts; ++h) host_idx[s.hosts[h].name] = static_cast<int>(h);
    for (size_t i = 0; i < s.vms.size(); ++i) {
      if (!s.vms[i].host.empty()) on_host_[host_idx[s.vms[i].host]].push_back(static_cast<int>(i));
    }
  }

  void Add(int64_t rules) {
    for (int64_t k = 0, attempts = 0; k < rules && attempts < rules * 20; ++attempts) {
      Rule r;
      r.name = Name("rule", k, Width(rules));
      int kind = static_cast<int>(k % 4);
      bool made = kind == 0 ? AntiAffinity(k, r) : kind == 1 ? Affinity(k, r) : VmHost(kind, r);
      if (!made) continue;
      for (const auto& name : r.vms) {
        for (size_t i = 0; i < s_.vms.size(); ++i) {
          if (s_.vms[i].name == name) in_rule_[i] = 1;
        }
      }
      s_.rules.push_back(r);
      ++k;
    }
  }

 private:
  // A guest of host h in no rule yet (a few random tries), or -1.
  int PickFree(int h) {
    std::mt19937_64& rng = rng_;
    for (int tries = 0; tries < 8 && !on_host_[h].empty(); ++tries) {
      int v = on_host_[h][rng() % on_host_[h].size()];
      if (!in_rule_[v]) return v;
    }
    return -1;
  }

  // Anti-affinity across 2-3 hosts.
  bool AntiAffinity(int64_t k, Rule& r) {
    std::mt19937_64& rng = rng_;
    const int64_t hosts = hosts_;
    int n = 2 + static_cast<int>(rng() % 2);
    std::vector<int> hs;
    while (static_cast<int>(hs.size()) < n && hosts >= n) {
      int h = static_cast<int>(rng() % hosts);
      if (std::find(hs.begin(), hs.end(), h) == hs.end()) hs.push_back(h);
    }
    for (int h : hs) {
      int v = PickFree(h);
      if (v >= 0) r.vms.push_back(s_.vms[v].name);
    }
    if (r.vms.size() < 2) return false;
    r.type = RuleType::kVmAntiAffinity;
    r.required = (k / 4) % 4 != 3;
    return true;
  }

  // Affinity of two guests that share a host.
  bool Affinity(int64_t k, Rule& r) {
    std::mt19937_64& rng = rng_;
    const int64_t hosts = hosts_;
    int h = static_cast<int>(rng() % hosts);
    int a = PickFree(h), b = PickFree(h);
    if (a < 0 || b < 0 || a == b) return false;
    r.vms = {s_.vms[a].name, s_.vms[b].name};
    r.type = RuleType::kVmAffinity;
    r.required = (k / 4) % 2 == 0;
    return true;
  }

  // vm-host over racks: must (own rack) or should-not (another rack).
  bool VmHost(int kind, Rule& r) {
    std::mt19937_64& rng = rng_;
    const int64_t hosts = hosts_;
    int h = static_cast<int>(rng() % hosts);
    int v = PickFree(h);
    if (v < 0) return false;
    r.type = RuleType::kVmHost;
    r.vms = {s_.vms[v].name};
    std::string rack = s_.hosts[h].groups[0];
    if (kind == 2) {
      r.mode = HostRuleMode::kMust;
      r.groups = {rack};
    } else {
      int other = static_cast<int>((h / 8 + 1) % ((hosts + 7) / 8));
      std::string other_rack = "rack-" + std::to_string(other);
      if (other_rack == rack) return false;
      r.mode = HostRuleMode::kShouldNot;
      r.groups = {other_rack};
    }
    r.required = r.mode == HostRuleMode::kMust;
    return true;
  }

  const int64_t hosts_;
  std::mt19937_64& rng_;
  Snapshot& s_;
  std::vector<std::vector<int>> on_host_;
  std::vector<char> in_rule_;
};

}  // namespace

Snapshot Generate(const GenOptions& o) {
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<double> uni(0, 1);
  Snapshot s;
  const int64_t hosts = std::max<int64_t>(1, o.hosts);
  AddHosts(o, hosts, s);
  AddPools(s);
  AddGuests(o, hosts, rng, uni, s);
  RuleMaker(hosts, rng, s).Add(o.rules);
  return s;
}

}  // namespace uw::sim
