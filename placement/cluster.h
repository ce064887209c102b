// Private to placement/: the indexed working state every planner stage mutates, with O(1)
// incremental metric updates and O(rules of a guest) feasibility checks.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "placement/placement.h"

namespace uw::placement::internal {

// Load a set of guests puts on a host.
struct UnitLoad {
  double cpu = 0;       // entitled cores
  double mem = 0;       // entitled MiB (balance metric)
  int64_t mem_cfg = 0;  // configured MiB (capacity)
  double res_cpu = 0;   // reserved cores
  int64_t max_vcpus = 0;
};

struct HostSlot {
  double cores = 0;
  double mem_cap = 0;        // MiB as double, for normalization
  double inv_cores = 0;      // 1 / cores
  double inv_mem = 0;        // 1 / mem_cap
  int64_t mem_capacity = 0;  // MiB
  HostState state = HostState::kOn;
  double e_cpu = 0;  // entitled CPU of guests here
  double e_mem = 0;  // entitled memory of guests here
  int64_t mem_used = 0;
  double res_cpu = 0;
  std::vector<int> vms;
  bool on() const { return state == HostState::kOn; }
  double cpu_load() const { return e_cpu / cores; }
  double mem_load() const { return e_mem / mem_cap; }
};

struct GuestSlot {
  int host = -1;  // host it is on (-1: unplaced); may be a failed or maintenance host
  int pos = -1;   // index in hosts[host].vms
  double e_cpu = 0, e_mem = 0;
  int64_t mem = 0;
  double res_cpu = 0;
  int64_t vcpus = 0;
  int unit = -1;  // move unit (required-affinity group component)
  bool live = true;
  bool moved = false;             // already moved by this plan
  bool moved_by_balance = false;  // ... and only by balancing (may move again, see CollapseChains)
};

struct RuleIndex {
  const Rule* rule = nullptr;
  bool hard = false;
  std::vector<int> members;
  std::vector<int> count;    // running members per host
  std::vector<char> in_set;  // vm-host rules: host in the rule's set
  int distinct = 0;          // hosts with count > 0
  int64_t anti_excess = 0;   // sum over hosts of max(0, count - 1)
  int64_t bad = 0;           // vm-host: running members on the wrong side of the set
  int64_t measure = 0;       // how badly broken now (0 = kept)
  // A host is on the wrong side of a vm-host rule.
  bool Bad(int h) const {
    if (rule->type != RuleType::kVmHost || h < 0) return false;
    bool want_in = rule->mode == HostRuleMode::kMust || rule->mode == HostRuleMode::kShould;
    return want_in ? !in_set[h] : in_set[h];
  }
  int64_t Measure(int64_t excess, int dist, int64_t bad_count) const {
    switch (rule->type) {
      case RuleType::kVmAntiAffinity:
        return excess;
      case RuleType::kVmAffinity:
        return dist > 1 ? dist - 1 : 0;
      case RuleType::kVmHost:
        return bad_count;
    }
    return 0;
  }
};

// Why a host cannot take a set of guests.
enum class Reject { kNone, kState, kVcpus, kMemory, kCpuReservation, kCpuCapacity, kRule };

struct Feasibility {
  Reject reject = Reject::kNone;
  int rule = -1;           // for kRule
  int64_t soft_delta = 0;  // change of soft-rule measures
  bool ok() const { return reject == Reject::kNone; }
};

class Cluster {
 public:
  Cluster(const Snapshot& snapshot, const Entitlements& entitlements);
  Cluster(const Cluster&) = default;
  Cluster& operator=(const Cluster&) = delete;

  const Snapshot& snap;
  std::vector<HostSlot> hosts;
  std::vector<GuestSlot> vms;
  std::vector<std::vector<int>> units;  // members of each unit
  std::vector<RuleIndex> rules;
  std::vector<std::vector<int>> vm_rules;

  // Sums over hosts in state on: sum and sum of squares of normalized loads.
  int n_on = 0;
  double s1c = 0, s2c = 0, s1m = 0, s2m = 0;

  // A guest counts for rules and metrics when it is placed on a host that is not failed.
  bool Running(int vm) const { return vms[vm].host >= 0 && hosts[vms[vm].host].state != HostState::kFailed; }

  // Moves guests (each on `from`, or unplaced when from == -1) to `to` (-1 = unplace).
  void MoveSet(const std::vector<int>& set, int from, int to);
  void SetState(int host, HostState state);

  UnitLoad LoadOf(const std::vector<int>& set) const;
  // Hard constraints for moving `set` from `from` (-1: unplaced) to `to`. Strict: a hard rule
  // may not get worse, an anti-affinity or vm-host rule must hold at the destination.
  // `cpu_cap`: also require the destination's entitled CPU to stay within its cores.
  Feasibility Check(const std::vector<int>& set, int from, int to, bool cpu_cap = false) const;
  std::string RejectText(const Feasibility& f, const std::vector<int>& set, int to) const;

  // Combined imbalance and its parts (see README).
  double CpuVariance() const;
  double MemVariance() const;
  double Imbalance() const { return std::sqrt(0.5 * (CpuVariance() + MemVariance())); }
  // Imbalance if `load` moved from `from` to `to` (either may be -1 or a host not on).
  double ImbalanceAfter(int from, int to, const UnitLoad& load) const;
  // cpu variance + memory variance after the move (2 x imbalance^2; no square root).
  double VarianceSumAfter(int from, int to, const UnitLoad& load) const {
    // Inline: this is the balancer's inner loop.
    if (n_on == 0) return 0;
    double a1c = s1c, a2c = s2c, a1m = s1m, a2m = s2m;
    if (from >= 0 && hosts[from].on()) {
      const HostSlot& x = hosts[from];
      const double c0 = x.e_cpu * x.inv_cores, c1 = c0 - load.cpu * x.inv_cores;
      const double m0 = x.e_mem * x.inv_mem, m1 = m0 - load.mem * x.inv_mem;
      a1c += c1 - c0;
      a2c += (c1 - c0) * (c1 + c0);
      a1m += m1 - m0;
      a2m += (m1 - m0) * (m1 + m0);
    }
    if (to >= 0 && hosts[to].on()) {
      const HostSlot& x = hosts[to];
      const double c0 = x.e_cpu * x.inv_cores, c1 = c0 + load.cpu * x.inv_cores;
      const double m0 = x.e_mem * x.inv_mem, m1 = m0 + load.mem * x.inv_mem;
      a1c += c1 - c0;
      a2c += (c1 - c0) * (c1 + c0);
      a1m += m1 - m0;
      a2m += (m1 - m0) * (m1 + m0);
    }
    const double inv_n = 1.0 / n_on;
    const double mc = a1c * inv_n, mm = a1m * inv_n;
    const double vc = a2c * inv_n - mc * mc, vm = a2m * inv_n - mm * mm;
    return (vc > 0 ? vc : 0) + (vm > 0 ? vm : 0);
  }
  // The same for a swap: `a` gives `out` and takes `in`, `b` the reverse.
  double VarianceSumAfterSwap(int a, int b, const UnitLoad& out, const UnitLoad& in) const;
  PlanMetrics Metrics() const;
  int64_t SoftViolations() const;
  int64_t HostsOn() const;

  // Guests of unit `u` running on host `h` (all of them for a unit that is together).
  std::vector<int> UnitOn(int u, int h) const;
  bool UnitTogether(int u) const;

  void RecomputeSums();

 private:
  void Detach(int vm);
  void Attach(int vm, int host);
  void RuleShift(int vm, int from, int to);  // running-host change of one guest
  void HostSums(int h, double sign);
};

// An objective the balancer minimizes: DRS imbalance or opportunity cost.
class Objective {
 public:
  virtual ~Objective() = default;
  // Improvement (>0 better) of moving `load` from `from` to `to`, in goodness units: the
  // imbalance reduction times the number of powered-on hosts for drs.
  virtual double Gain(const Cluster& c, int from, int to, const UnitLoad& load) const = 0;
  // Current value (lower is better): imbalance for drs, mean host cost for opportunity-cost.
  virtual double Value(const Cluster& c) const = 0;
};

class ImbalanceObjective : public Objective {
 public:
  double Gain(const Cluster& c, int from, int to, const UnitLoad& load) const override;
  double Value(const Cluster& c) const override { return c.Imbalance(); }
};

// Amir et al.: each resource of a host costs base^utilization; a move's gain is the drop of the
// total cost of the two hosts, divided by base (so one fully used resource costs 1).
class OpportunityCostObjective : public Objective {
 public:
  explicit OpportunityCostObjective(double base) : base_(base), log_base_(std::log(base)) {}
  double Gain(const Cluster& c, int from, int to, const UnitLoad& load) const override;
  double Value(const Cluster& c) const override;
  double HostCost(const HostSlot& h, double dcpu, int64_t dmem) const;

 private:
  double base_;
  double log_base_;
};

}  // namespace uw::placement::internal
