// The plan checker: replays a plan step by step on plain maps, independent of the planning code
// (it shares no state, index or rule logic with it, so a planner bug cannot hide itself).
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "placement/placement.h"

namespace uw::placement {
namespace {

struct Replay {
  const Snapshot& s;
  std::unordered_map<std::string, int> host_idx, vm_idx;
  std::vector<HostState> state;
  std::vector<int> vm_host;       // -1: not placed
  std::vector<int64_t> mem_used;  // configured memory of guests on each host
  std::vector<std::vector<int>> vm_rules;
  std::vector<std::vector<char>> rule_hosts;  // vm-host rules: host in the rule's set

  explicit Replay(const Snapshot& snap) : s(snap) {
    for (size_t i = 0; i < s.hosts.size(); ++i) host_idx[s.hosts[i].name] = static_cast<int>(i);
    for (size_t i = 0; i < s.vms.size(); ++i) vm_idx[s.vms[i].name] = static_cast<int>(i);
    state.resize(s.hosts.size());
    for (size_t i = 0; i < s.hosts.size(); ++i) state[i] = s.hosts[i].state;
    mem_used.assign(s.hosts.size(), 0);
    vm_host.assign(s.vms.size(), -1);
    for (size_t i = 0; i < s.vms.size(); ++i) {
      if (s.vms[i].host.empty()) continue;
      int h = host_idx.at(s.vms[i].host);
      vm_host[i] = h;
      mem_used[h] += s.vms[i].memory_mib;
    }
    vm_rules.resize(s.vms.size());
    rule_hosts.resize(s.rules.size());
    for (size_t r = 0; r < s.rules.size(); ++r) {
      const Rule& rule = s.rules[r];
      for (const auto& v : rule.vms) vm_rules[vm_idx.at(v)].push_back(static_cast<int>(r));
      if (rule.type != RuleType::kVmHost) continue;
      rule_hosts[r].assign(s.hosts.size(), 0);
      for (const auto& h : rule.hosts) rule_hosts[r][host_idx.at(h)] = 1;
      for (size_t h = 0; h < s.hosts.size(); ++h) {
        for (const auto& g : s.hosts[h].groups) {
          if (std::find(rule.groups.begin(), rule.groups.end(), g) != rule.groups.end()) rule_hosts[r][h] = 1;
        }
      }
    }
  }

  // Where a guest runs: its host unless unplaced or on a failed host.
  int Running(int vm) const {
    int h = vm_host[vm];
    if (h < 0 || state[h] == HostState::kFailed) return -1;
    return h;
  }

  // How badly a rule is broken now (0 = kept).
  int64_t Measure(int r) const {
    const Rule& rule = s.rules[r];
    std::unordered_map<int, int> count;
    int64_t outside = 0, inside = 0;
    for (const auto& name : rule.vms) {
      int h = Running(vm_idx.at(name));
      if (h < 0) continue;
      ++count[h];
      if (rule.type == RuleType::kVmHost) (rule_hosts[r][h] ? inside : outside) += 1;
    }
    switch (rule.type) {
      case RuleType::kVmAntiAffinity: {
        int64_t m = 0;
        for (const auto& [h, c] : count) m += std::max(0, c - 1);
        return m;
      }
      case RuleType::kVmAffinity:
        return count.empty() ? 0 : static_cast<int64_t>(count.size()) - 1;
      case RuleType::kVmHost:
        return (rule.mode == HostRuleMode::kMust || rule.mode == HostRuleMode::kShould) ? outside : inside;
    }
    return 0;
  }

  std::vector<int> HardRulesOf(const std::vector<int>& vms) const {
    std::vector<int> out;
    for (int v : vms) {
      for (int r : vm_rules[v]) {
        if (s.rules[r].IsHard() && std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
      }
    }
    return out;
  }

  // Strict per-guest part of "never broken": a guest that just arrived on a host may not join
  // another member of a required anti-affinity rule, nor sit on the wrong side of a vm-host rule.
  int BrokenByArrival(int vm) const {
    int h = Running(vm);
    if (h < 0) return -1;
    for (int r : vm_rules[vm]) {
      const Rule& rule = s.rules[r];
      if (!rule.IsHard()) continue;
      if (rule.type == RuleType::kVmAntiAffinity) {
        for (const auto& name : rule.vms) {
          int w = vm_idx.at(name);
          if (w != vm && Running(w) == h) return r;
        }
      } else if (rule.type == RuleType::kVmHost) {
        bool in = rule_hosts[r][h];
        if ((rule.mode == HostRuleMode::kMust) != in) return r;
      }
    }
    return -1;
  }

  bool SharesHardAffinity(int a, int b) const {
    for (int r : vm_rules[a]) {
      const Rule& rule = s.rules[r];
      if (rule.type != RuleType::kVmAffinity || !rule.IsHard()) continue;
      if (std::find(vm_rules[b].begin(), vm_rules[b].end(), r) != vm_rules[b].end()) return true;
    }
    return false;
  }

  Result<int> HostOf(const std::string& name, const std::string& path) const {
    auto it = host_idx.find(name);
    if (it == host_idx.end()) return InvalidArgumentError(path + ": unknown host '" + name + "'");
    return it->second;
  }

  Result<int> VmOf(const std::string& name, const std::string& path) const {
    auto it = vm_idx.find(name);
    if (it == vm_idx.end()) return InvalidArgumentError(path + ": unknown guest '" + name + "'");
    return it->second;
  }

  std::vector<int64_t> Measures(const std::vector<int>& rules) const {
    std::vector<int64_t> m;
    for (int r : rules) m.push_back(Measure(r));
    return m;
  }

  // No rule of `rules` is broken worse than it was (`before`, from Measures).
  Status RuleCheck(const std::vector<int>& rules, const std::vector<int64_t>& before, const std::string& label) const {
    for (size_t k = 0; k < rules.size(); ++k) {
      int64_t after = Measure(rules[k]);
      if (after > before[k]) {
        return FailedPreconditionError(label + ": breaks required rule '" + s.rules[rules[k]].name + "' (" +
                                       std::string(RuleTypeName(s.rules[rules[k]].type)) + ")");
      }
    }
    return Status::Ok();
  }
};

std::string MoveLabel(size_t i, const Move& m) {
  return "moves[" + std::to_string(i) + "] (" + m.vm + " " + m.from + " -> " + m.to + ")";
}

// 1. Power-on actions; the power-off actions are collected for the last step.
Status PowerOn(Replay& st, const Plan& plan, std::vector<int>& power_off) {
  std::unordered_set<int> powered;
  for (size_t i = 0; i < plan.power.size(); ++i) {
    const PowerAction& a = plan.power[i];
    const std::string label = "power[" + std::to_string(i) + "] (" + a.host + ")";
    UW_ASSIGN_OR_RETURN(int h, st.HostOf(a.host, "power[" + std::to_string(i) + "].host"));
    if (!powered.insert(h).second) return FailedPreconditionError(label + ": second power action for the host");
    if (a.action == PowerActionType::kPowerOn) {
      if (st.state[h] != HostState::kStandby) {
        return FailedPreconditionError(label + ": power-on of a host that is " +
                                       std::string(HostStateName(st.state[h])) + ", not standby");
      }
      st.state[h] = HostState::kOn;
    } else {
      power_off.push_back(static_cast<int>(i));
    }
  }
  return Status::Ok();
}

// 2. Placements (new guests and restarts of guests whose host failed).
Status Placements(Replay& st, const Plan& plan) {
  const Snapshot& s = st.s;
  for (size_t i = 0; i < plan.placements.size(); ++i) {
    const PlacementStep& p = plan.placements[i];
    const std::string path = "placements[" + std::to_string(i) + "]";
    const std::string label = path + " (" + p.vm + " -> " + p.host + ")";
    UW_ASSIGN_OR_RETURN(int v, st.VmOf(p.vm, path + ".vm"));
    UW_ASSIGN_OR_RETURN(int h, st.HostOf(p.host, path + ".host"));
    if (st.Running(v) >= 0)
      return FailedPreconditionError(label + ": guest is already running on " + s.hosts[st.vm_host[v]].name);
    if (st.state[h] != HostState::kOn) {
      return FailedPreconditionError(label + ": host is " + std::string(HostStateName(st.state[h])));
    }
    std::vector<int> rules = st.HardRulesOf({v});
    std::vector<int64_t> before = st.Measures(rules);
    if (st.vm_host[v] >= 0) st.mem_used[st.vm_host[v]] -= s.vms[v].memory_mib;
    st.vm_host[v] = h;
    st.mem_used[h] += s.vms[v].memory_mib;
    if (st.mem_used[h] > s.hosts[h].memory_mib) {
      return FailedPreconditionError(label + ": host " + p.host + " memory over-committed (" +
                                     std::to_string(st.mem_used[h]) + " > " + std::to_string(s.hosts[h].memory_mib) +
                                     " MiB)");
    }
    UW_RETURN_IF_ERROR(st.RuleCheck(rules, before, label));
    if (int r = st.BrokenByArrival(v); r >= 0) {
      return FailedPreconditionError(label + ": breaks required rule '" + s.rules[r].name + "'");
    }
  }
  return Status::Ok();
}

// The guests of the step that starts at moves[i]: a run of moves of one required-affinity group
// between the same two hosts.
Result<std::vector<int>> MoveBatch(const Replay& st, const Plan& plan, size_t i) {
  UW_ASSIGN_OR_RETURN(int v0, st.VmOf(plan.moves[i].vm, "moves[" + std::to_string(i) + "].vm"));
  std::vector<int> batch{v0};
  for (size_t j = i + 1;
       j < plan.moves.size() && plan.moves[j].from == plan.moves[i].from && plan.moves[j].to == plan.moves[i].to; ++j) {
    auto it = st.vm_idx.find(plan.moves[j].vm);
    if (it == st.vm_idx.end()) break;
    bool linked = std::any_of(batch.begin(), batch.end(), [&](int b) { return st.SharesHardAffinity(b, it->second); });
    if (!linked) break;
    batch.push_back(it->second);
  }
  return batch;
}

// Moves guest `v` as moves[k] says, after checking the move itself.
Status MoveGuest(Replay& st, const Plan& plan, size_t k, int v) {
  const Snapshot& s = st.s;
  const Move& m = plan.moves[k];
  const std::string path = "moves[" + std::to_string(k) + "]";
  const std::string lk = MoveLabel(k, m);
  UW_ASSIGN_OR_RETURN(int from, st.HostOf(m.from, path + ".from"));
  UW_ASSIGN_OR_RETURN(int to, st.HostOf(m.to, path + ".to"));
  const Vm& vm = s.vms[v];
  if (!vm.CanLiveMigrate() && !m.cold) {
    return FailedPreconditionError(lk + ": guest cannot live-migrate (" +
                                   std::string(vm.kind == GuestKind::kLxc ? "lxc" : "migratable: false") + ")");
  }
  if (st.vm_host[v] != from) {
    return FailedPreconditionError(lk + ": guest is on " +
                                   (st.vm_host[v] < 0 ? std::string("no host") : s.hosts[st.vm_host[v]].name) +
                                   ", not " + m.from);
  }
  if (from == to) return FailedPreconditionError(lk + ": source and destination are the same host");
  if (st.state[from] != HostState::kOn && st.state[from] != HostState::kMaintenance) {
    return FailedPreconditionError(lk + ": source host is " + std::string(HostStateName(st.state[from])));
  }
  if (st.state[to] != HostState::kOn) {
    return FailedPreconditionError(lk + ": destination host is " + std::string(HostStateName(st.state[to])));
  }
  st.vm_host[v] = to;
  st.mem_used[from] -= vm.memory_mib;
  st.mem_used[to] += vm.memory_mib;
  return Status::Ok();
}

// 3. Moves, in order; a run of moves of one required-affinity group between the same two hosts
// is one step. Marks the guests that moved.
Status Moves(Replay& st, const Plan& plan, std::vector<char>& moved) {
  const Snapshot& s = st.s;
  for (size_t i = 0; i < plan.moves.size();) {
    UW_ASSIGN_OR_RETURN(std::vector<int> batch, MoveBatch(st, plan, i));
    const size_t j = i + batch.size();
    const std::string label = MoveLabel(i, plan.moves[i]);
    std::vector<int> rules = st.HardRulesOf(batch);
    std::vector<int64_t> before = st.Measures(rules);
    for (size_t k = i; k < j; ++k) {
      UW_RETURN_IF_ERROR(MoveGuest(st, plan, k, batch[k - i]));
      moved[batch[k - i]] = 1;
    }
    int to = st.host_idx.at(plan.moves[i].to);
    if (st.mem_used[to] > s.hosts[to].memory_mib) {
      return FailedPreconditionError(label + ": host " + plan.moves[i].to + " memory over-committed (" +
                                     std::to_string(st.mem_used[to]) + " > " + std::to_string(s.hosts[to].memory_mib) +
                                     " MiB)");
    }
    UW_RETURN_IF_ERROR(st.RuleCheck(rules, before, label));
    for (size_t k = i; k < j; ++k) {
      if (int r = st.BrokenByArrival(batch[k - i]); r >= 0) {
        return FailedPreconditionError(MoveLabel(k, plan.moves[k]) + ": breaks required rule '" + s.rules[r].name +
                                       "'");
      }
    }
    i = j;
  }
  return Status::Ok();
}

// 4. Power-off actions: only empty hosts, never below min_hosts_on.
Status PowerOff(Replay& st, const Plan& plan, const std::vector<int>& power_off) {
  const Snapshot& s = st.s;
  for (int i : power_off) {
    const PowerAction& a = plan.power[i];
    const std::string label = "power[" + std::to_string(i) + "] (" + a.host + ")";
    int h = st.host_idx.at(a.host);
    if (st.state[h] != HostState::kOn && st.state[h] != HostState::kMaintenance) {
      return FailedPreconditionError(label + ": power-off of a host that is " +
                                     std::string(HostStateName(st.state[h])));
    }
    for (size_t v = 0; v < s.vms.size(); ++v) {
      if (st.vm_host[v] == h) {
        return FailedPreconditionError(label + ": power-off of a host still running guest " + s.vms[v].name);
      }
    }
    st.state[h] = HostState::kStandby;
  }
  if (!power_off.empty()) {
    int64_t on = std::count(st.state.begin(), st.state.end(), HostState::kOn);
    if (on < s.settings.dpm.min_hosts_on) {
      return FailedPreconditionError("power: leaves " + std::to_string(on) + " hosts on, below min_hosts_on " +
                                     std::to_string(s.settings.dpm.min_hosts_on));
    }
  }
  return Status::Ok();
}

// The snapshot after the plan: host states, guests' hosts, and moved guests' move history.
void WriteSnapshot(const Replay& st, const std::vector<char>& moved, Snapshot* out) {
  const Snapshot& s = st.s;
  *out = s;
  for (size_t h = 0; h < s.hosts.size(); ++h) out->hosts[h].state = st.state[h];
  for (size_t v = 0; v < s.vms.size(); ++v) {
    out->vms[v].host = st.vm_host[v] < 0 ? std::string() : s.hosts[st.vm_host[v]].name;
    if (moved[v]) out->vms[v].last_moved_ago_s = 0.0;
  }
}

Status Run(const Snapshot& s, const Plan& plan, Snapshot* out) {
  Replay st(s);
  std::vector<int> power_off;
  UW_RETURN_IF_ERROR(PowerOn(st, plan, power_off));
  UW_RETURN_IF_ERROR(Placements(st, plan));
  std::vector<char> moved(s.vms.size(), 0);
  UW_RETURN_IF_ERROR(Moves(st, plan, moved));
  UW_RETURN_IF_ERROR(PowerOff(st, plan, power_off));
  if (out) WriteSnapshot(st, moved, out);
  return Status::Ok();
}

}  // namespace

Status CheckPlan(const Snapshot& snapshot, const Plan& plan) { return Run(snapshot, plan, nullptr); }

Result<Snapshot> ApplyPlan(const Snapshot& snapshot, const Plan& plan) {
  Snapshot out;
  UW_RETURN_IF_ERROR(Run(snapshot, plan, &out));
  return out;
}

}  // namespace uw::placement
