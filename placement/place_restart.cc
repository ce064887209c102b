// Mandatory stages 1-2: restarts the guests of failed hosts (HA) by restart priority, then places
// new guests, each largest first: admission control (new guests), then filter, score, select
// (FindDestination), waking a standby host when no powered-on host can take the guest.
#include <algorithm>

#include "placement/planner.h"

namespace uw::placement::internal {

namespace {

std::string Join(const std::vector<int>& set, const Snapshot& s) {
  std::string out;
  for (int v : set) out += (out.empty() ? "" : ", ") + s.vms[v].name;
  return out;
}

// Admission issues that concern guest `v` (its own, its pools', the cluster's).
std::string AdmissionProblem(const Snapshot& s, const std::vector<AdmissionIssue>& issues, int v) {
  if (issues.empty()) return "";
  std::vector<std::string> subjects{s.vms[v].name, "cluster"};
  for (std::string p = s.vms[v].pool; !p.empty();) {
    subjects.push_back(p);
    auto it = std::find_if(s.pools.begin(), s.pools.end(), [&](const Pool& x) { return x.name == p; });
    p = it == s.pools.end() ? "" : it->parent;
  }
  for (const auto& issue : issues) {
    if (std::find(subjects.begin(), subjects.end(), issue.subject) != subjects.end()) return issue.reason;
  }
  return "";
}

// One step of stages 1-2: the guests of a unit on failed host `from` to restart, or the unplaced
// guests of a unit (from == -1) to place.
struct Task {
  int from = -1;
  std::vector<int> set;  // restarts: without the guests whose restart priority is disabled
  int rank = 0;          // order of the steps (see OrderedTasks)
  int64_t mem = 0;       // configured memory of `set`
};

// The steps in order: restarts by restart priority (high first), then new guests; each largest
// first, ties in unit order. Guests on failed hosts whose restart is disabled go to plan.unplaced.
std::vector<Task> OrderedTasks(PlanContext& ctx) {
  const Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  std::vector<std::pair<int, int>> todo;  // (unit, host or -1)
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].state != HostState::kFailed) continue;
    for (int v : c.hosts[h].vms) todo.emplace_back(c.vms[v].unit, static_cast<int>(h));
  }
  for (size_t v = 0; v < c.vms.size(); ++v) {
    if (c.vms[v].host < 0) todo.emplace_back(c.vms[v].unit, -1);
  }
  std::sort(todo.begin(), todo.end());
  todo.erase(std::unique(todo.begin(), todo.end()), todo.end());
  // Restarts rank by the highest restart priority of their guests (0 high .. 2 low); new guests 3.
  constexpr int kNewGuests = static_cast<int>(RestartPriority::kDisabled);
  std::vector<Task> tasks;
  for (const auto& [u, from] : todo) {
    Task t{from, {}, kNewGuests, 0};
    for (int v : c.UnitOn(u, from)) {
      const RestartPriority p = s.vms[v].restart_priority;
      if (from >= 0 && p == RestartPriority::kDisabled) {
        ctx.plan.unplaced.push_back(
            {s.vms[v].name, "restart after failure of " + s.hosts[from].name + ": restart priority is disabled"});
        continue;
      }
      t.set.push_back(v);
      if (from >= 0) t.rank = std::min(t.rank, static_cast<int>(p));
    }
    if (t.set.empty()) continue;
    t.mem = c.LoadOf(t.set).mem_cfg;
    tasks.push_back(std::move(t));
  }
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const Task& a, const Task& b) { return a.rank != b.rank ? a.rank < b.rank : a.mem > b.mem; });
  return tasks;
}

}  // namespace

void PlaceAndRestart(PlanContext& ctx) {
  Cluster& c = ctx.cluster;
  const Snapshot& s = ctx.snap;
  const std::vector<Task> tasks = OrderedTasks(ctx);
  std::vector<AdmissionIssue> issues = CheckAdmission(s);
  for (const Task& task : tasks) {
    const int from = task.from;
    const std::vector<int>& set = task.set;
    std::string restart = from >= 0 ? "restart after failure of " + s.hosts[from].name : "";
    if (from < 0) {
      std::string problem;
      for (int v : set) {
        if (problem.empty()) problem = AdmissionProblem(s, issues, v);
      }
      if (!problem.empty()) {
        for (int v : set) ctx.plan.unplaced.push_back({s.vms[v].name, "admission control: " + problem});
        continue;
      }
    }
    std::string why;
    int to = ctx.FindDestination(set, from, false, nullptr, false, &why);
    bool power_on = false;
    if (to < 0) {
      // Wake the standby host that would take the guest, if any.
      for (size_t h = 0; h < c.hosts.size() && to < 0; ++h) {
        if (c.hosts[h].state != HostState::kStandby) continue;
        c.SetState(static_cast<int>(h), HostState::kOn);
        if (c.Check(set, from, static_cast<int>(h)).ok()) {
          to = static_cast<int>(h);
          power_on = true;
        } else {
          c.SetState(static_cast<int>(h), HostState::kStandby);
        }
      }
    }
    if (to < 0) {
      for (int v : set) ctx.plan.unplaced.push_back({s.vms[v].name, (restart.empty() ? "" : restart + ": ") + why});
      continue;
    }
    if (power_on) {
      ctx.plan.power.push_back({s.hosts[to].name, PowerActionType::kPowerOn,
                                "no powered-on host can take " + Join(set, s) + " (" + why + ")"});
    }
    double before = c.Imbalance();
    c.MoveSet(set, from, to);
    for (int v : set) {
      ctx.plan.placements.push_back({s.vms[v].name, s.hosts[to].name,
                                     (restart.empty() ? std::string("initial placement") : restart) +
                                         ": best of the hosts that pass the filters, imbalance " +
                                         std::to_string(before).substr(0, 6) + " -> " +
                                         std::to_string(c.Imbalance()).substr(0, 6)});
    }
  }
}

}  // namespace uw::placement::internal
