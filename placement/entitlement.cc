// Entitlements ("divvy") down the resource-pool tree, and admission control.
//
// For one resource, every node of the tree (cluster root, pools, guests) has
//   R  reservation (expandable pools: max(own, sum of children's R) — they borrow from the parent)
//   L  limit (guests: min(limit, size); pools: limit or infinity)
//   D  demand, clamped to [R, L]; a pool's demand is the sum of its children's, clamped likewise
//   S  shares
// A parent's entitlement E is divided among its children max-min fairly by shares:
//   e_i = clamp(x * S_i, R_i, D_i) with x chosen so that sum(e_i) = min(E, sum(D_i)).
// When even the reservations do not fit (admission failed), e_i = R_i * E / sum(R).
// Admission control (CheckAdmission, AdmitVm) checks reservations against pools and the cluster;
// AdmitVm also applies HA admission control (the HA reserve, computed in dpm.cc).
#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "placement/placement.h"
#include "placement/planner.h"  // HaAdmissionProblem: the HA reserve DPM keeps

namespace uw::placement {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Node {
  double res = 0;
  double own_res = 0;  // pools: their own reservation, before borrowing
  double limit = kInf;
  double demand = 0;
  double shares = 1;
  bool expandable = true;
  bool is_pool = false;
  std::vector<int> children;
};

// Node 0 is the cluster root, 1..P pools (snapshot order), P+1..P+V guests.
struct Tree {
  std::vector<Node> nodes;
  std::vector<int> pools_bottom_up;  // pool node ids, children before parents
  size_t pool_count = 0;
};

enum class Res { kCpu, kMemory };

Tree BuildTree(const Snapshot& s, Res r) {
  Tree t;
  t.pool_count = s.pools.size();
  t.nodes.resize(1 + s.pools.size() + s.vms.size());
  std::unordered_map<std::string, int> pool_id;
  for (size_t i = 0; i < s.pools.size(); ++i) pool_id[s.pools[i].name] = static_cast<int>(i + 1);
  std::vector<int> depth(s.pools.size() + 1, 0);
  for (size_t i = 0; i < s.pools.size(); ++i) {
    const Pool& p = s.pools[i];
    Node& n = t.nodes[i + 1];
    const PoolResource& pr = r == Res::kCpu ? p.cpu : p.memory;
    n.is_pool = true;
    n.own_res = n.res = pr.reservation;
    n.limit = pr.limit ? *pr.limit : kInf;
    n.shares = static_cast<double>(pr.shares);
    n.expandable = p.expandable;
    int parent = p.parent.empty() ? 0 : pool_id[p.parent];
    t.nodes[parent].children.push_back(static_cast<int>(i + 1));
    int d = 0;
    for (std::string cur = p.parent; !cur.empty(); cur = s.pools[pool_id[cur] - 1].parent) ++d;
    depth[i + 1] = d;
  }
  for (size_t i = 0; i < s.vms.size(); ++i) {
    const Vm& v = s.vms[i];
    Node& n = t.nodes[1 + s.pools.size() + i];
    double size, limit, res, demand, shares;
    if (r == Res::kCpu) {
      size = static_cast<double>(v.vcpus);
      limit = v.limit_cpu_cores ? std::min(size, *v.limit_cpu_cores) : size;
      res = v.reservation.cpu_cores;
      demand = v.demand.cpu_cores;
      shares = static_cast<double>(v.cpu_shares);
    } else {
      size = static_cast<double>(v.memory_mib);
      limit = v.limit_memory_mib ? std::min(size, static_cast<double>(*v.limit_memory_mib)) : size;
      res = static_cast<double>(v.reservation.memory_mib);
      demand = static_cast<double>(v.demand.memory_mib);
      shares = static_cast<double>(v.memory_shares);
    }
    n.limit = limit;
    n.res = std::min(res, limit);
    n.demand = std::clamp(demand, n.res, limit);
    n.shares = shares;
    int parent = v.pool.empty() ? 0 : pool_id[v.pool];
    t.nodes[parent].children.push_back(static_cast<int>(1 + s.pools.size() + i));
  }
  for (size_t i = 1; i <= s.pools.size(); ++i) t.pools_bottom_up.push_back(static_cast<int>(i));
  std::stable_sort(t.pools_bottom_up.begin(), t.pools_bottom_up.end(),
                   [&](int a, int b) { return depth[a] > depth[b]; });
  // Bottom-up: reservations (with borrowing) and demands.
  for (int id : t.pools_bottom_up) {
    Node& n = t.nodes[id];
    double child_res = 0, child_demand = 0;
    for (int c : n.children) {
      child_res += t.nodes[c].res;
      child_demand += t.nodes[c].demand;
    }
    if (n.expandable) n.res = std::max(n.own_res, child_res);
    n.demand = std::max(n.res, std::min(child_demand, n.limit));
  }
  return t;
}

// Max-min fair division of `amount` among `children` (see the file comment).
void Divide(Tree& t, const std::vector<int>& children, double amount, std::vector<double>& out) {
  double sum_d = 0, sum_r = 0, max_ratio = 0;
  for (int c : children) {
    const Node& n = t.nodes[c];
    sum_d += n.demand;
    sum_r += n.res;
    max_ratio = std::max(max_ratio, n.demand / n.shares);
  }
  if (sum_d <= amount) {
    for (int c : children) out[c] = t.nodes[c].demand;
  } else if (sum_r >= amount) {
    for (int c : children) out[c] = sum_r > 0 ? t.nodes[c].res * amount / sum_r : 0;
  } else {
    double lo = 0, hi = max_ratio;
    for (int iter = 0; iter < 64; ++iter) {
      double x = 0.5 * (lo + hi), total = 0;
      for (int c : children) {
        const Node& n = t.nodes[c];
        total += std::clamp(x * n.shares, n.res, n.demand);
      }
      (total > amount ? hi : lo) = x;
    }
    for (int c : children) {
      const Node& n = t.nodes[c];
      out[c] = std::clamp(lo * n.shares, n.res, n.demand);
    }
  }
  for (int c : children) {
    if (t.nodes[c].is_pool) Divide(t, t.nodes[c].children, out[c], out);
  }
}

std::vector<double> DivideResource(const Snapshot& s, Res r, double capacity) {
  Tree t = BuildTree(s, r);
  std::vector<double> out(t.nodes.size(), 0);
  out[0] = capacity;
  Divide(t, t.nodes[0].children, capacity, out);
  return out;
}

Entitlement OnCapacity(const Snapshot& s) {
  Entitlement e;
  for (const Host& h : s.hosts) {
    if (h.state != HostState::kOn) continue;
    e.cpu_cores += h.cpu_cores;
    e.memory_mib += static_cast<double>(h.memory_mib);
  }
  return e;
}

std::string Fmt(double v, Res r) {
  char buf[64];
  if (r == Res::kCpu) {
    std::snprintf(buf, sizeof buf, "%.2f cores", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f MiB", v);
  }
  return buf;
}

void AdmissionFor(const Snapshot& s, Res r, double capacity, std::vector<AdmissionIssue>& out) {
  Tree t = BuildTree(s, r);
  const char* what = r == Res::kCpu ? "CPU" : "memory";
  for (int id : t.pools_bottom_up) {
    const Node& n = t.nodes[id];
    double child_res = 0;
    for (int c : n.children) child_res += t.nodes[c].res;
    const std::string& name = s.pools[id - 1].name;
    if (!n.expandable && child_res > n.own_res + 1e-9) {
      out.push_back({name, std::string("pool '") + name + "' is not expandable and its children reserve " +
                               Fmt(child_res, r) + " of " + what + " but it reserves only " + Fmt(n.own_res, r)});
    } else if (child_res > n.limit + 1e-9) {
      out.push_back({name, std::string("pool '") + name + "': children reserve " + Fmt(child_res, r) + " of " + what +
                               ", above the pool's limit of " + Fmt(n.limit, r)});
    }
  }
  double root_res = 0;
  for (int c : t.nodes[0].children) root_res += t.nodes[c].res;
  if (root_res > capacity + 1e-9) {
    out.push_back({"cluster", std::string("reservations of ") + Fmt(root_res, r) + " of " + what +
                                  " exceed the powered-on capacity of " + Fmt(capacity, r)});
  }
}

}  // namespace

Entitlements ComputeEntitlements(const Snapshot& s, std::optional<Entitlement> capacity) {
  Entitlement cap = capacity ? *capacity : OnCapacity(s);
  std::vector<double> cpu = DivideResource(s, Res::kCpu, cap.cpu_cores);
  std::vector<double> mem = DivideResource(s, Res::kMemory, cap.memory_mib);
  Entitlements e;
  e.capacity = cap;
  e.pools.resize(s.pools.size());
  for (size_t i = 0; i < s.pools.size(); ++i) e.pools[i] = {cpu[1 + i], mem[1 + i]};
  e.vms.resize(s.vms.size());
  const size_t base = 1 + s.pools.size();
  for (size_t i = 0; i < s.vms.size(); ++i) e.vms[i] = {cpu[base + i], mem[base + i]};
  return e;
}

std::vector<AdmissionIssue> CheckAdmission(const Snapshot& s) {
  std::vector<AdmissionIssue> out;
  Entitlement cap = OnCapacity(s);
  AdmissionFor(s, Res::kCpu, cap.cpu_cores, out);
  AdmissionFor(s, Res::kMemory, cap.memory_mib, out);
  // A guest's reservation must fit on one powered-on host.
  double max_cores = 0;
  int64_t max_mem = 0;
  for (const Host& h : s.hosts) {
    if (h.state != HostState::kOn) continue;
    max_cores = std::max(max_cores, h.cpu_cores);
    max_mem = std::max(max_mem, h.memory_mib);
  }
  for (const Vm& v : s.vms) {
    if (v.reservation.memory_mib > max_mem) {
      out.push_back({v.name, "guest '" + v.name + "' reserves " + std::to_string(v.reservation.memory_mib) +
                                 " MiB but the largest powered-on host has " + std::to_string(max_mem) + " MiB"});
    } else if (v.reservation.cpu_cores > max_cores + 1e-9) {
      out.push_back({v.name, "guest '" + v.name + "' reserves " + Fmt(v.reservation.cpu_cores, Res::kCpu) +
                                 " but the largest powered-on host has " + Fmt(max_cores, Res::kCpu)});
    }
  }
  return out;
}

Status AdmitVm(const Snapshot& s, const Vm& vm) {
  if (vm.name.empty()) return InvalidArgumentError("guest has no name");
  if (vm.vcpus <= 0 || vm.memory_mib <= 0) return InvalidArgumentError("guest '" + vm.name + "' has no size");
  if (!vm.pool.empty() &&
      std::none_of(s.pools.begin(), s.pools.end(), [&](const Pool& p) { return p.name == vm.pool; })) {
    return InvalidArgumentError("guest '" + vm.name + "': unknown pool '" + vm.pool + "'");
  }
  std::vector<AdmissionIssue> before = CheckAdmission(s);
  Snapshot with = s;
  with.vms.erase(std::remove_if(with.vms.begin(), with.vms.end(), [&](const Vm& v) { return v.name == vm.name; }),
                 with.vms.end());
  with.vms.push_back(vm);
  for (const AdmissionIssue& issue : CheckAdmission(with)) {
    bool old = std::any_of(before.begin(), before.end(), [&](const AdmissionIssue& b) {
      return b.subject == issue.subject && b.reason == issue.reason;
    });
    if (!old) return ResourceExhaustedError("admission refused for '" + vm.name + "': " + issue.reason);
  }
  // HA admission control: unlike the checks above, refused also when the reserve was already short
  // without the guest (every guest makes it worse).
  if (s.settings.ha.enabled && s.settings.ha.host_failures > 0) {
    const std::string problem = internal::HaAdmissionProblem(with, with.vms.size() - 1);
    if (!problem.empty()) return ResourceExhaustedError("HA admission control: " + problem);
  }
  return Status::Ok();
}

}  // namespace uw::placement
