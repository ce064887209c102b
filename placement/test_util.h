// Test helpers for placement/ tests: a snapshot builder, a small seeded cluster generator and
// the plan check every test of a plan runs.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "placement/placement.h"

namespace uw::placement::testing {

class Builder {
 public:
  Builder& AddHost(const std::string& name, double cores, int64_t mem, HostState state = HostState::kOn,
                   std::vector<std::string> groups = {}) {
    Host h;
    h.name = name;
    h.cpu_cores = cores;
    h.memory_mib = mem;
    h.state = state;
    h.groups = std::move(groups);
    s_.hosts.push_back(h);
    return *this;
  }
  // cpu_demand < 0: vcpus; mem_demand < 0: memory_mib.
  Builder& AddVm(const std::string& name, const std::string& host, int64_t vcpus, int64_t mem, double cpu_demand = -1,
                 int64_t mem_demand = -1) {
    Vm v;
    v.name = name;
    v.host = host;
    v.vcpus = vcpus;
    v.memory_mib = mem;
    v.demand.cpu_cores = cpu_demand < 0 ? static_cast<double>(vcpus) : cpu_demand;
    v.demand.memory_mib = mem_demand < 0 ? mem : mem_demand;
    s_.vms.push_back(v);
    return *this;
  }
  Vm& LastVm() { return s_.vms.back(); }
  Builder& AddRule(const std::string& name, RuleType type, std::vector<std::string> vms, bool required = true,
                   HostRuleMode mode = HostRuleMode::kMust, std::vector<std::string> hosts = {}) {
    Rule r;
    r.name = name;
    r.type = type;
    r.vms = std::move(vms);
    r.required = type == RuleType::kVmHost ? (mode == HostRuleMode::kMust || mode == HostRuleMode::kMustNot) : required;
    r.mode = mode;
    r.hosts = std::move(hosts);
    s_.rules.push_back(r);
    return *this;
  }
  Snapshot& snapshot() { return s_; }
  Snapshot Build() const { return s_; }

 private:
  Snapshot s_;
};

// Round-trips through JSON, so every test also exercises the parser and validation.
inline Snapshot Reparse(const Snapshot& s) {
  auto r = ParseSnapshot(SnapshotToJson(s));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : s;
}

inline Snapshot ParseOrDie(const std::string& text) {
  auto r = ParseSnapshotText(text);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : Snapshot{};
}

// Makes a plan with `policy` and checks it with the independent checker.
inline Plan PlanAndCheck(const Snapshot& s, const std::string& policy = "drs") {
  auto plan = MakePlan(s, policy);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  if (!plan.ok()) return {};
  Status st = CheckPlan(s, *plan);
  EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << PlanToJson(*plan).dump(1).substr(0, 4000);
  return *plan;
}

inline const Move* FindMove(const Plan& p, const std::string& vm) {
  for (const Move& m : p.moves) {
    if (m.vm == vm) return &m;
  }
  return nullptr;
}

// A seeded cluster: `hosts` hosts of 32 cores / 128 GiB, `vms` guests of mixed sizes, placed
// skewed (most guests on the first third of the hosts) while memory fits.
inline Snapshot RandomCluster(int hosts, int vms, uint32_t seed, double load = 0.5) {
  std::mt19937 rng(seed);
  Builder b;
  for (int h = 0; h < hosts; ++h)
    b.AddHost("h" + std::to_string(h), 32, 131072, HostState::kOn, {h % 2 ? "odd" : "even"});
  const int64_t sizes[] = {1024, 2048, 4096, 8192, 16384};
  std::vector<int64_t> used(hosts, 0);
  std::uniform_real_distribution<double> u(0, 1);
  for (int i = 0; i < vms; ++i) {
    int64_t mem = sizes[rng() % 5];
    int64_t vcpus = 1 + static_cast<int64_t>(rng() % 8);
    double cpu = static_cast<double>(vcpus) * load * u(rng);
    int h = (u(rng) < 0.7) ? static_cast<int>(rng() % std::max(1, hosts / 3)) : static_cast<int>(rng() % hosts);
    for (int tries = 0; used[h] + mem > 131072 && tries < hosts; ++tries) h = (h + 1) % hosts;
    std::string host = used[h] + mem <= 131072 ? "h" + std::to_string(h) : "";
    if (!host.empty()) used[h] += mem;
    b.AddVm("vm" + std::to_string(i), host, vcpus, mem, cpu, mem / 2 + static_cast<int64_t>(rng() % (mem / 2)));
  }
  return b.Build();
}

}  // namespace uw::placement::testing
