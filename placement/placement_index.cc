// The what-if placement index (PlacementIndex): filter, score, select for one guest on an indexed
// snapshot, with one recorded reason per rejected host and a reason for the choice.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <unordered_map>

#include "placement/planner.h"

namespace uw::placement {
namespace {

using internal::Feasibility;
using internal::Reject;

// A new guest's load: its demand clamped to its own reservation and limits.
internal::UnitLoad NewGuestLoad(const Vm& vm) {
  internal::UnitLoad load;
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
  return load;
}

// The guest being placed: a guest of the snapshot moves with its unit; a new one alone.
struct Candidate {
  int known = -1;  // index in the snapshot, or -1 for a new guest
  int from = -1;   // its host (-1: none)
  std::vector<int> set;
  internal::UnitLoad load;
};

// The best and the next best host so far.
struct Selection {
  double best_score = std::numeric_limits<double>::infinity();
  double runner_score = best_score;  // the next best host, for the reason
  int best = -1, runner = -1;
  bool best_standby = false;
};

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
    PlacementDecision d;
    const Candidate g = Describe(vm);
    Selection sel;
    for (int pass = 0; pass < 2 && sel.best < 0; ++pass) FilterAndScore(g, pass == 1, sel, d);
    if (sel.best < 0) {
      d.reason = "no host passes the filters (" + std::to_string(d.rejected.size()) + " rejected)";
      return d;
    }
    // Standby hosts were only tried because every powered-on host was rejected; keep those reasons.
    d.rejected.erase(std::remove_if(d.rejected.begin(), d.rejected.end(),
                                    [&](const HostVerdict& v) { return v.host == snap_.hosts[sel.best].name; }),
                     d.rejected.end());
    d.host = snap_.hosts[sel.best].name;
    d.score = sel.best_score;
    d.needs_power_on = sel.best_standby;
    d.reason = Explain(g, sel, d);
    return d;
  }

 private:
  Candidate Describe(const Vm& vm) const {
    const internal::Cluster& c = cluster_;
    Candidate g;
    auto it = vm_idx_.find(vm.name);
    g.known = it == vm_idx_.end() ? -1 : it->second;
    if (g.known >= 0) {
      g.from = c.vms[g.known].host;
      g.set = c.UnitOn(c.vms[g.known].unit, g.from);
      g.load = c.LoadOf(g.set);
    } else {
      g.load = NewGuestLoad(vm);
    }
    return g;
  }

  // One pass over the hosts: powered-on ones (`standby` false) or standby ones. Records a reason
  // for every rejected host and keeps the best (and next best) score.
  void FilterAndScore(const Candidate& g, bool standby, Selection& sel, PlacementDecision& d) const {
    const internal::Cluster& c = cluster_;
    for (size_t h = 0; h < c.hosts.size(); ++h) {
      const internal::HostSlot& x = c.hosts[h];
      const int hi = static_cast<int>(h);
      if (hi == g.from && !standby) {
        d.rejected.push_back({snap_.hosts[h].name, "guest is already there"});
        continue;
      }
      // Pass one takes only powered-on hosts, pass two only standby ones: a failed host
      // (disconnected in the manager) or one in maintenance is never a candidate.
      if (x.state != (standby ? HostState::kStandby : HostState::kOn)) {
        if (!standby) d.rejected.push_back({snap_.hosts[h].name, "host is " + std::string(HostStateName(x.state))});
        continue;
      }
      Feasibility f = Filter(g, hi, standby);
      if (!f.ok()) {
        RecordRejection(g, f, hi, standby, d);
        continue;
      }
      double score = standby ? -static_cast<double>(x.mem_capacity)
                             : -objective_->Gain(c, g.from, hi, g.load) +
                                   internal::kSoftRulePenalty * static_cast<double>(f.soft_delta);
      if (score < sel.best_score) {
        if (!standby && sel.best >= 0 && !sel.best_standby) sel.runner = sel.best, sel.runner_score = sel.best_score;
        sel.best_score = score;
        sel.best = hi;
        sel.best_standby = standby;
      } else if (!standby && score < sel.runner_score) {
        sel.runner = hi;
        sel.runner_score = score;
      }
    }
  }

  Feasibility Filter(const Candidate& g, int hi, bool standby) const {
    const internal::Cluster& c = cluster_;
    const internal::HostSlot& x = c.hosts[hi];
    const internal::UnitLoad& load = g.load;
    Feasibility f;
    if (standby) {
      // An empty powered-off host: only size filters apply (and vm-host rules).
      if (static_cast<double>(load.max_vcpus) > x.cores + 1e-9) {
        f.reject = Reject::kVcpus;
      } else if (load.mem_cfg > x.mem_capacity) {
        f.reject = Reject::kMemory;
      } else if (g.known >= 0) {
        for (int r : c.vm_rules[g.known]) {
          if (c.rules[r].hard && c.rules[r].Bad(hi)) f = {Reject::kRule, r};
        }
      }
    } else if (g.known >= 0) {
      f = c.Check(g.set, g.from, hi);
    } else if (static_cast<double>(load.max_vcpus) > x.cores + 1e-9) {
      f.reject = Reject::kVcpus;
    } else if (x.mem_used + load.mem_cfg > x.mem_capacity) {
      f.reject = Reject::kMemory;
    } else if (x.res_cpu + load.res_cpu > x.cores + 1e-9) {
      f.reject = Reject::kCpuReservation;
    }
    return f;
  }

  void RecordRejection(const Candidate& g, const Feasibility& f, int hi, bool standby, PlacementDecision& d) const {
    const internal::Cluster& c = cluster_;
    const internal::HostSlot& x = c.hosts[hi];
    const internal::UnitLoad& load = g.load;
    std::string text;
    if (g.known >= 0 && !standby) {
      text = c.RejectText(f, g.set, hi);
    } else {
      char buf[160];
      if (f.reject == Reject::kVcpus) {
        std::snprintf(buf, sizeof buf, "guest has %lld vCPUs, host has %.4g cores",
                      static_cast<long long>(load.max_vcpus), x.cores);
      } else if (f.reject == Reject::kMemory) {
        std::snprintf(buf, sizeof buf, "needs %lld MiB, %lld MiB free", static_cast<long long>(load.mem_cfg),
                      static_cast<long long>(x.mem_capacity - (standby ? 0 : x.mem_used)));
      } else if (f.reject == Reject::kCpuReservation) {
        std::snprintf(buf, sizeof buf, "CPU reservations would reach %.2f of %.4g cores", x.res_cpu + load.res_cpu,
                      x.cores);
      } else {
        std::snprintf(buf, sizeof buf, "breaks required rule '%s'", c.rules[f.rule].rule->name.c_str());
      }
      text = buf;
    }
    if (standby) {
      // Replace the "host is standby" entry of the first pass with the real reason.
      for (auto& r : d.rejected) {
        if (r.host == snap_.hosts[hi].name) r.reason = "host is standby; " + text;
      }
    } else {
      d.rejected.push_back({snap_.hosts[hi].name, std::move(text)});
    }
  }

  // What the operator wants to know: how full the host gets, what it does to the balance, and
  // what the alternative was.
  std::string Explain(const Candidate& g, const Selection& sel, const PlacementDecision& d) const {
    const internal::Cluster& c = cluster_;
    char buf[320];
    if (sel.best_standby) {
      std::snprintf(buf, sizeof buf, "no powered-on host fits; wake %s", d.host.c_str());
      return buf;
    }
    const internal::HostSlot& b = c.hosts[sel.best];
    const internal::UnitLoad& load = g.load;
    int n = std::snprintf(
        buf, sizeof buf,
        "best score of %zu feasible hosts (%.4g): entitled CPU %.0f%%, memory %.0f%% after placement; "
        "imbalance %.4f -> %.4f",
        c.hosts.size() - d.rejected.size(), sel.best_score, 100 * (b.cpu_load() + load.cpu * b.inv_cores),
        100 * (b.mem_load() + load.mem * b.inv_mem), c.Imbalance(), c.ImbalanceAfter(g.from, sel.best, load));
    if (sel.runner >= 0 && n > 0 && static_cast<size_t>(n) < sizeof buf) {
      std::snprintf(buf + n, sizeof buf - n, "; next best %s (%.4g, imbalance %.4f)",
                    snap_.hosts[sel.runner].name.c_str(), sel.runner_score, c.ImbalanceAfter(g.from, sel.runner, load));
    }
    return buf;
  }

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
