// Policy plug-ins, metrics and the what-if placement index.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <unordered_map>

#include "placement/planner.h"

namespace uw::placement {

namespace {

class PlannerPolicy : public Policy {
 public:
  PlannerPolicy(std::string name, internal::PolicyKind kind) : name_(std::move(name)), kind_(kind) {}
  std::string_view name() const override { return name_; }
  Result<Plan> MakePlan(const Snapshot& snapshot) const override { return internal::RunPlanner(snapshot, kind_); }

 private:
  std::string name_;
  internal::PolicyKind kind_;
};

}  // namespace

std::vector<std::string> PolicyNames() { return {"drs", "consolidate", "opportunity-cost"}; }

Result<std::unique_ptr<Policy>> MakePolicy(std::string_view name) {
  using internal::PolicyKind;
  std::unique_ptr<Policy> p;
  if (name == "drs") {
    p = std::make_unique<PlannerPolicy>("drs", PolicyKind::kDrs);
  } else if (name == "consolidate") {
    p = std::make_unique<PlannerPolicy>("consolidate", PolicyKind::kConsolidate);
  } else if (name == "opportunity-cost") {
    p = std::make_unique<PlannerPolicy>("opportunity-cost", PolicyKind::kOpportunityCost);
  } else {
    return InvalidArgumentError("unknown policy '" + std::string(name) +
                                "' (expected drs | consolidate | opportunity-cost)");
  }
  return p;
}

Result<Plan> MakePlan(const Snapshot& snapshot, std::string_view policy) {
  UW_ASSIGN_OR_RETURN(std::unique_ptr<Policy> p, MakePolicy(policy));
  return p->MakePlan(snapshot);
}

PlanMetrics ComputeMetrics(const Snapshot& snapshot, const Entitlements& entitlements) {
  internal::Cluster c(snapshot, entitlements);
  return c.Metrics();
}

PlanMetrics ComputeMetrics(const Snapshot& snapshot) { return ComputeMetrics(snapshot, ComputeEntitlements(snapshot)); }

// ---------------------------------------------------------------------------------------------
// What-if placement
// ---------------------------------------------------------------------------------------------

namespace {

class Index : public PlacementIndex {
 public:
  Index(const Snapshot& s, internal::PolicyKind kind)
      : snap_(s),
        ents_(ComputeEntitlements(snap_)),
        cluster_(snap_, ents_),
        objective_(internal::MakeObjective(kind, cluster_)) {
    for (size_t i = 0; i < snap_.vms.size(); ++i) vm_idx_[snap_.vms[i].name] = static_cast<int>(i);
  }

  PlacementDecision Place(const Vm& vm) const override {
    using internal::Feasibility;
    using internal::Reject;
    PlacementDecision d;
    const internal::Cluster& c = cluster_;
    auto it = vm_idx_.find(vm.name);
    const int known = it == vm_idx_.end() ? -1 : it->second;
    std::vector<int> set;
    int from = -1;
    internal::UnitLoad load;
    if (known >= 0) {
      from = c.vms[known].host;
      set = c.UnitOn(c.vms[known].unit, from);
      load = c.LoadOf(set);
    } else {
      // A new guest: its demand clamped to its own reservation and limits.
      double size = static_cast<double>(vm.vcpus);
      double lim = vm.limit_cpu_cores ? std::min(size, *vm.limit_cpu_cores) : size;
      load.cpu = std::clamp(vm.demand.cpu_cores, std::min(vm.reservation.cpu_cores, lim), lim);
      double msize = static_cast<double>(vm.memory_mib);
      double mlim = vm.limit_memory_mib ? std::min(msize, static_cast<double>(*vm.limit_memory_mib)) : msize;
      load.mem = std::clamp(static_cast<double>(vm.demand.memory_mib),
                            std::min(static_cast<double>(vm.reservation.memory_mib), mlim), mlim);
      load.mem_cfg = vm.memory_mib;
      load.res_cpu = vm.reservation.cpu_cores;
      load.max_vcpus = vm.vcpus;
    }
    double best_score = std::numeric_limits<double>::infinity();
    double runner_score = best_score;  // the next best host, for the reason
    int best = -1, runner = -1;
    bool best_standby = false;
    for (int pass = 0; pass < 2 && best < 0; ++pass) {
      const bool standby = pass == 1;
      for (size_t h = 0; h < c.hosts.size(); ++h) {
        const internal::HostSlot& x = c.hosts[h];
        const int hi = static_cast<int>(h);
        if (hi == from && !standby) {
          d.rejected.push_back({snap_.hosts[h].name, "guest is already there"});
          continue;
        }
        // Pass one takes only powered-on hosts, pass two only standby ones: a failed host
        // (disconnected in the manager) or one in maintenance is never a candidate.
        if (x.state != (standby ? HostState::kStandby : HostState::kOn)) {
          if (!standby) d.rejected.push_back({snap_.hosts[h].name, "host is " + std::string(HostStateName(x.state))});
          continue;
        }
        Feasibility f;
        std::string text;
        if (standby) {
          // An empty powered-off host: only size filters apply (and vm-host rules).
          if (static_cast<double>(load.max_vcpus) > x.cores + 1e-9) {
            f.reject = Reject::kVcpus;
          } else if (load.mem_cfg > x.mem_capacity) {
            f.reject = Reject::kMemory;
          } else if (known >= 0) {
            for (int r : c.vm_rules[known]) {
              if (c.rules[r].hard && c.rules[r].Bad(hi)) f = {Reject::kRule, r};
            }
          }
        } else if (known >= 0) {
          f = c.Check(set, from, hi);
        } else if (static_cast<double>(load.max_vcpus) > x.cores + 1e-9) {
          f.reject = Reject::kVcpus;
        } else if (x.mem_used + load.mem_cfg > x.mem_capacity) {
          f.reject = Reject::kMemory;
        } else if (x.res_cpu + load.res_cpu > x.cores + 1e-9) {
          f.reject = Reject::kCpuReservation;
        }
        if (!f.ok()) {
          if (known >= 0 && !standby) {
            text = c.RejectText(f, set, hi);
          } else {
            char buf[160];
            if (f.reject == Reject::kVcpus) {
              std::snprintf(buf, sizeof buf, "guest has %lld vCPUs, host has %.4g cores",
                            static_cast<long long>(load.max_vcpus), x.cores);
            } else if (f.reject == Reject::kMemory) {
              std::snprintf(buf, sizeof buf, "needs %lld MiB, %lld MiB free", static_cast<long long>(load.mem_cfg),
                            static_cast<long long>(x.mem_capacity - (standby ? 0 : x.mem_used)));
            } else if (f.reject == Reject::kCpuReservation) {
              std::snprintf(buf, sizeof buf, "CPU reservations would reach %.2f of %.4g cores",
                            x.res_cpu + load.res_cpu, x.cores);
            } else {
              std::snprintf(buf, sizeof buf, "breaks required rule '%s'", c.rules[f.rule].rule->name.c_str());
            }
            text = buf;
          }
          if (standby) {
            // Replace the "host is standby" entry of the first pass with the real reason.
            for (auto& r : d.rejected) {
              if (r.host == snap_.hosts[h].name) r.reason = "host is standby; " + text;
            }
          } else {
            d.rejected.push_back({snap_.hosts[h].name, std::move(text)});
          }
          continue;
        }
        double score = standby ? -static_cast<double>(x.mem_capacity)
                               : -objective_->Gain(c, from, hi, load) +
                                     internal::kSoftRulePenalty * static_cast<double>(f.soft_delta);
        if (score < best_score) {
          if (!standby && best >= 0 && !best_standby) runner = best, runner_score = best_score;
          best_score = score;
          best = hi;
          best_standby = standby;
        } else if (!standby && score < runner_score) {
          runner = hi;
          runner_score = score;
        }
      }
    }
    if (best < 0) {
      d.reason = "no host passes the filters (" + std::to_string(d.rejected.size()) + " rejected)";
      return d;
    }
    // Standby hosts were only tried because every powered-on host was rejected; keep those reasons.
    d.rejected.erase(std::remove_if(d.rejected.begin(), d.rejected.end(),
                                    [&](const HostVerdict& v) { return v.host == snap_.hosts[best].name; }),
                     d.rejected.end());
    d.host = snap_.hosts[best].name;
    d.score = best_score;
    d.needs_power_on = best_standby;
    char buf[320];
    if (best_standby) {
      std::snprintf(buf, sizeof buf, "no powered-on host fits; wake %s", d.host.c_str());
    } else {
      // What the operator wants to know: how full the host gets, what it does to the balance,
      // and what the alternative was.
      const internal::HostSlot& b = c.hosts[best];
      int n =
          std::snprintf(buf, sizeof buf,
                        "best score of %zu feasible hosts (%.4g): entitled CPU %.0f%%, memory %.0f%% after placement; "
                        "imbalance %.4f -> %.4f",
                        c.hosts.size() - d.rejected.size(), best_score, 100 * (b.cpu_load() + load.cpu * b.inv_cores),
                        100 * (b.mem_load() + load.mem * b.inv_mem), c.Imbalance(), c.ImbalanceAfter(from, best, load));
      if (runner >= 0 && n > 0 && static_cast<size_t>(n) < sizeof buf) {
        std::snprintf(buf + n, sizeof buf - n, "; next best %s (%.4g, imbalance %.4f)",
                      snap_.hosts[runner].name.c_str(), runner_score, c.ImbalanceAfter(from, runner, load));
      }
    }
    d.reason = buf;
    return d;
  }

 private:
  Snapshot snap_;
  Entitlements ents_;
  internal::Cluster cluster_;
  std::unique_ptr<internal::Objective> objective_;
  std::unordered_map<std::string, int> vm_idx_;
};

}  // namespace

Result<std::unique_ptr<PlacementIndex>> PlacementIndex::Build(const Snapshot& snapshot, std::string_view policy) {
  internal::PolicyKind kind;
  if (policy == "drs" || policy == "consolidate") {
    kind = internal::PolicyKind::kDrs;
  } else if (policy == "opportunity-cost") {
    kind = internal::PolicyKind::kOpportunityCost;
  } else {
    return InvalidArgumentError("unknown policy '" + std::string(policy) + "'");
  }
  return std::unique_ptr<PlacementIndex>(std::make_unique<Index>(snapshot, kind));
}

}  // namespace uw::placement
