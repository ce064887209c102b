// Ordering a plan's moves into waves under memory, rule and concurrency constraints.
//
// The model: every guest has one location, or two while it is in flight (a migrating guest
// holds memory on both hosts and counts for rules on both). A wave starts the batches that fit
// in that model, then commits them (the guests leave their sources). A step depends on every
// step of an earlier wave that left its destination, and on earlier moves of the same guest:
// since in-flight guests already count at their destination, only departures free anything,
// so running a step once those are done keeps every intermediate state inside the model.
#include <algorithm>
#include <map>
#include <numeric>
#include <unordered_map>

#include "migration/migration.h"

namespace uw::migration {
namespace {

using placement::GuestKind;
using placement::HostRuleMode;
using placement::HostState;
using placement::Move;
using placement::Rule;
using placement::RuleType;
using placement::Snapshot;

// Moves that must go together: a required-affinity group's moves between the same two hosts.
struct Batch {
  std::vector<int> moves;  // indexes into the input moves, in input order
  std::vector<int> vms;
  int from = -1, to = -1;
  int64_t mem = 0;
  int priority = 5;
  std::string why;  // last reason it could not start
};

class Model {
 public:
  explicit Model(const Snapshot& s) : s_(s) {
    for (size_t h = 0; h < s.hosts.size(); ++h) host_index_[s.hosts[h].name] = static_cast<int>(h);
    for (size_t v = 0; v < s.vms.size(); ++v) vm_index_[s.vms[v].name] = static_cast<int>(v);
    used_.assign(s.hosts.size(), 0);
    loc_.assign(s.vms.size(), {});
    for (size_t v = 0; v < s.vms.size(); ++v) {
      int h = HostOf(s.vms[v].host);
      if (h < 0) continue;
      loc_[v].push_back(h);
      used_[h] += s.vms[v].memory_mib;
    }
    vm_rules_.assign(s.vms.size(), {});
    rule_hosts_.assign(s.rules.size(), {});
    for (size_t r = 0; r < s.rules.size(); ++r) {
      const Rule& rule = s.rules[r];
      if (!rule.IsHard()) continue;
      hard_.push_back(static_cast<int>(r));
      for (const auto& name : rule.vms) {
        int v = VmOf(name);
        if (v >= 0) vm_rules_[v].push_back(static_cast<int>(r));
      }
      if (rule.type == RuleType::kVmHost) {
        rule_hosts_[r].assign(s.hosts.size(), 0);
        for (size_t h = 0; h < s.hosts.size(); ++h) {
          const auto& host = s.hosts[h];
          bool in = std::find(rule.hosts.begin(), rule.hosts.end(), host.name) != rule.hosts.end();
          for (const auto& g : rule.groups) {
            in = in || std::find(host.groups.begin(), host.groups.end(), g) != host.groups.end();
          }
          rule_hosts_[r][h] = in;
        }
      }
    }
  }

  int HostOf(const std::string& name) const {
    auto it = host_index_.find(name);
    return it == host_index_.end() ? -1 : it->second;
  }
  int VmOf(const std::string& name) const {
    auto it = vm_index_.find(name);
    return it == vm_index_.end() ? -1 : it->second;
  }
  const std::vector<int>& Loc(int v) const { return loc_[v]; }
  int64_t Free(int h) const { return s_.hosts[h].memory_mib - used_[h]; }
  const std::vector<int>& RulesOf(int v) const { return vm_rules_[v]; }

  // Required-affinity components: guests that must share a host.
  std::vector<int> AffinityGroups() const {
    std::vector<int> parent(s_.vms.size());
    std::iota(parent.begin(), parent.end(), 0);
    auto find = [&](int x) {
      while (parent[x] != x) x = parent[x] = parent[parent[x]];
      return x;
    };
    for (int r : hard_) {
      const Rule& rule = s_.rules[r];
      if (rule.type != RuleType::kVmAffinity) continue;
      int first = -1;
      for (const auto& name : rule.vms) {
        int v = VmOf(name);
        if (v < 0) continue;
        if (first < 0)
          first = v;
        else
          parent[find(v)] = find(first);
      }
    }
    std::vector<int> group(s_.vms.size());
    for (size_t v = 0; v < group.size(); ++v) group[v] = find(static_cast<int>(v));
    return group;
  }

  // How badly hard rule r is broken with the current locations (see placement's checker).
  int64_t Measure(int r) const {
    const Rule& rule = s_.rules[r];
    std::map<int, int64_t> count;
    int64_t bad = 0;
    for (const auto& name : rule.vms) {
      int v = VmOf(name);
      if (v < 0) continue;
      bool any_bad = false;
      for (int h : loc_[v]) {
        if (s_.hosts[h].state == HostState::kFailed) continue;
        ++count[h];
        if (rule.type == RuleType::kVmHost) {
          bool want_in = rule.mode == HostRuleMode::kMust || rule.mode == HostRuleMode::kShould;
          any_bad = any_bad || (want_in ? !rule_hosts_[r][h] : rule_hosts_[r][h]);
        }
      }
      bad += any_bad;
    }
    switch (rule.type) {
      case RuleType::kVmAntiAffinity: {
        int64_t excess = 0;
        for (auto& [h, c] : count) excess += std::max<int64_t>(0, c - 1);
        return excess;
      }
      case RuleType::kVmAffinity:
        return count.size() > 1 ? static_cast<int64_t>(count.size()) - 1 : 0;
      case RuleType::kVmHost:
        return bad;
    }
    return 0;
  }

  // Puts the batch in flight (memory and rules on both hosts); Commit lands it.
  void Start(const Batch& b) {
    for (int v : b.vms) loc_[v].push_back(b.to);
    used_[b.to] += b.mem;
  }
  void Commit(const Batch& b) {
    for (int v : b.vms) {
      auto& l = loc_[v];
      l.erase(std::find(l.begin(), l.end(), b.from));
    }
    used_[b.from] -= b.mem;
  }
  void Uncommit(const Batch& b) {  // back to in flight
    for (int v : b.vms) loc_[v] = {b.from, b.to};
    used_[b.from] += b.mem;
  }
  void Undo(const Batch& b) {
    for (int v : b.vms) loc_[v].pop_back();
    used_[b.to] -= b.mem;
  }

 private:
  const Snapshot& s_;
  std::unordered_map<std::string, int> host_index_, vm_index_;
  std::vector<int64_t> used_;
  std::vector<std::vector<int>> loc_;
  std::vector<int> hard_;
  std::vector<std::vector<int>> vm_rules_;
  std::vector<std::vector<char>> rule_hosts_;
};

std::string MoveText(const Move& m) { return m.vm + " " + m.from + " -> " + m.to; }

// Whether batch b can start now; on failure b.why says why.
bool CanStart(Model& model, const Snapshot& s, Batch& b, const std::vector<char>& in_flight) {
  for (int v : b.vms) {
    if (in_flight[v]) {
      b.why = "guest " + s.vms[v].name + " is already moving";
      return false;
    }
    const auto& loc = model.Loc(v);
    if (loc.size() != 1 || loc[0] != b.from) {
      b.why = "guest " + s.vms[v].name + " is on " + (loc.empty() ? std::string("no host") : s.hosts[loc[0]].name) +
              ", not " + s.hosts[b.from].name;
      return false;
    }
  }
  if (model.Free(b.to) < b.mem) {
    b.why = "host " + s.hosts[b.to].name + " never has room (" + std::to_string(b.mem) + " MiB needed, " +
            std::to_string(model.Free(b.to)) + " MiB free)";
    return false;
  }
  std::vector<int> rules;
  for (int v : b.vms) rules.insert(rules.end(), model.RulesOf(v).begin(), model.RulesOf(v).end());
  std::sort(rules.begin(), rules.end());
  rules.erase(std::unique(rules.begin(), rules.end()), rules.end());
  std::vector<int64_t> before;
  for (int r : rules) before.push_back(model.Measure(r));
  // Affinity is judged on the final position (a group moves as one); the others in flight.
  model.Start(b);
  bool ok = true;
  for (size_t i = 0; i < rules.size() && ok; ++i) {
    const Rule& rule = s.rules[rules[i]];
    if (rule.type == RuleType::kVmAffinity) continue;
    if (model.Measure(rules[i]) > before[i]) {
      ok = false;
      b.why = "required rule " + rule.name + " would be broken on " + s.hosts[b.to].name;
    }
  }
  if (ok) {
    model.Commit(b);
    for (size_t i = 0; i < rules.size() && ok; ++i) {
      const Rule& rule = s.rules[rules[i]];
      if (rule.type == RuleType::kVmAffinity && model.Measure(rules[i]) > before[i]) {
        ok = false;
        b.why = "required rule " + rule.name + " would be broken (group split)";
      }
    }
    model.Uncommit(b);
    if (ok) return true;
  }
  model.Undo(b);
  return false;
}

// Why `m` (guest v, hosts from and to; -1 when unknown) cannot be scheduled at all, or "": unknown
// names, a source that is neither on nor in maintenance, a destination that is not on, a live move
// of a guest that cannot live-migrate.
std::string WhyUnschedulable(const Snapshot& s, const Move& m, int v, int from, int to) {
  if (v < 0) return "unknown guest";
  if (from < 0) return "unknown source host " + m.from;
  if (to < 0) return "unknown destination host " + m.to;
  if (from == to) return "source and destination are the same host";
  if (s.hosts[from].state != HostState::kOn && s.hosts[from].state != HostState::kMaintenance) {
    return "source " + m.from + " is " + std::string(placement::HostStateName(s.hosts[from].state));
  }
  if (s.hosts[to].state != HostState::kOn) {
    return "destination " + m.to + " is " + std::string(placement::HostStateName(s.hosts[to].state));
  }
  if (!s.vms[v].CanLiveMigrate() && !m.cold) {
    return std::string("guest cannot live-migrate (") +
           (s.vms[v].kind == GuestKind::kLxc ? "lxc" : "migratable: false") + ") and the move is not cold";
  }
  return "";
}

// The moves that pass WhyUnschedulable, in batches: one per move, except that a required-affinity
// group's moves between the same two hosts share one. The others go to out->unschedulable.
std::vector<Batch> MakeBatches(const Snapshot& s, const Model& model, const std::vector<Move>& moves, Schedule* out) {
  const std::vector<int> group = model.AffinityGroups();
  std::vector<Batch> batches;
  std::map<std::tuple<int, int, int>, size_t> batch_of;  // (group, from, to) for groups > 1
  std::vector<int> group_size(s.vms.size(), 0);
  for (size_t v = 0; v < s.vms.size(); ++v) ++group_size[group[v]];
  for (size_t i = 0; i < moves.size(); ++i) {
    const Move& m = moves[i];
    int v = model.VmOf(m.vm), from = model.HostOf(m.from), to = model.HostOf(m.to);
    if (std::string why = WhyUnschedulable(s, m, v, from, to); !why.empty()) {
      out->unschedulable.push_back({m.vm, MoveText(m) + ": " + why});
      continue;
    }
    size_t bi = batches.size();
    if (group_size[group[v]] > 1) {
      auto key = std::make_tuple(group[v], from, to);
      auto it = batch_of.find(key);
      if (it != batch_of.end())
        bi = it->second;
      else
        batch_of[key] = bi;
    }
    if (bi == batches.size()) batches.push_back(Batch{{}, {}, from, to, 0, m.priority, ""});
    Batch& b = batches[bi];
    b.moves.push_back(static_cast<int>(i));
    b.vms.push_back(v);
    b.mem += s.vms[v].memory_mib;
    b.priority = std::min(b.priority, m.priority);
  }
  return batches;
}

// What the wave loop carries from one wave to the next.
struct Waves {
  explicit Waves(const Snapshot& s)
      : in_flight(s.vms.size(), 0), per_host(s.hosts.size(), 0), left_host(s.hosts.size()), of_guest(s.vms.size()) {}

  std::vector<char> in_flight;    // by guest: started in the wave being built
  std::vector<int64_t> per_host;  // by host: guests in flight there in the wave being built
  // Steps of earlier waves by source host and by guest, for dependencies.
  std::vector<std::vector<int>> left_host;
  std::vector<std::vector<int>> of_guest;
};

// The batches of `pending` (in its order) that start in the next wave: within the caps and
// CanStart in the model with the ones before them. The others are left in *rest.
std::vector<size_t> StartWave(Model& model, const Snapshot& s, const Caps& caps, std::vector<Batch>& batches,
                              const std::vector<size_t>& pending, Waves& w, std::vector<size_t>* rest) {
  std::fill(w.per_host.begin(), w.per_host.end(), 0);
  int64_t running = 0;
  std::vector<size_t> started;
  for (size_t bi : pending) {
    Batch& b = batches[bi];
    const int64_t n = static_cast<int64_t>(b.vms.size());
    // A batch larger than a cap runs alone rather than never.
    bool cap_ok = (running == 0 || running + n <= caps.cluster) &&
                  (w.per_host[b.from] == 0 || w.per_host[b.from] + n <= caps.per_host) &&
                  (w.per_host[b.to] == 0 || w.per_host[b.to] + n <= caps.per_host);
    if (!cap_ok || !CanStart(model, s, b, w.in_flight)) {
      rest->push_back(bi);
      continue;
    }
    running += n;
    w.per_host[b.from] += n;
    w.per_host[b.to] += n;
    for (int v : b.vms) w.in_flight[v] = 1;
    started.push_back(bi);
  }
  return started;
}

// Appends the steps of the `started` batches as wave out->waves, each depending on the steps of
// earlier waves that left its destination and on earlier moves of its guest, and commits the
// batches to the model (their guests leave their sources).
void RecordWave(const std::vector<Move>& moves, const std::vector<Batch>& batches, const std::vector<size_t>& started,
                Model& model, Waves& w, Schedule* out) {
  std::vector<std::pair<int, int>> new_steps;  // (step index, from)
  for (size_t bi : started) {
    const Batch& b = batches[bi];
    for (size_t k = 0; k < b.moves.size(); ++k) {
      Step st;
      st.move = moves[b.moves[k]];
      st.plan_index = b.moves[k];
      st.wave = out->waves;
      std::vector<int> deps = w.left_host[b.to];
      deps.insert(deps.end(), w.of_guest[b.vms[k]].begin(), w.of_guest[b.vms[k]].end());
      std::sort(deps.begin(), deps.end());
      deps.erase(std::unique(deps.begin(), deps.end()), deps.end());
      st.depends_on = std::move(deps);
      int idx = static_cast<int>(out->steps.size());
      out->steps.push_back(std::move(st));
      w.of_guest[b.vms[k]].push_back(idx);
      new_steps.push_back({idx, b.from});
    }
    model.Commit(b);
    for (int v : b.vms) w.in_flight[v] = 0;
  }
  for (auto [idx, from] : new_steps) w.left_host[from].push_back(idx);
}

}  // namespace

Result<Caps> ParseCaps(const Json& json, std::string_view path) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(json, std::string(path)));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"per_host", "cluster"}));
  Caps c;
  UW_ASSIGN_OR_RETURN(c.per_host, v.Int("per_host", c.per_host));
  if (c.per_host <= 0) return v.FieldError("per_host", "expected a positive integer");
  UW_ASSIGN_OR_RETURN(c.cluster, v.Int("cluster", c.cluster));
  if (c.cluster <= 0) return v.FieldError("cluster", "expected a positive integer");
  return c;
}

Json CapsToJson(const Caps& caps) { return {{"per_host", caps.per_host}, {"cluster", caps.cluster}}; }

Result<Schedule> OrderMoves(const Snapshot& s, const std::vector<Move>& moves, const Caps& caps) {
  if (caps.per_host <= 0 || caps.cluster <= 0) {
    return InvalidArgumentError("migration caps must be positive (per_host " + std::to_string(caps.per_host) +
                                ", cluster " + std::to_string(caps.cluster) + ")");
  }
  Schedule out;
  Model model(s);
  // Static checks, then batches.
  std::vector<Batch> batches = MakeBatches(s, model, moves, &out);

  std::vector<size_t> pending(batches.size());
  std::iota(pending.begin(), pending.end(), 0);
  std::stable_sort(pending.begin(), pending.end(),
                   [&](size_t a, size_t b) { return batches[a].priority < batches[b].priority; });
  Waves w(s);
  while (!pending.empty()) {
    std::vector<size_t> rest;
    const std::vector<size_t> started = StartWave(model, s, caps, batches, pending, w, &rest);
    if (started.empty()) break;
    RecordWave(moves, batches, started, model, w, &out);
    ++out.waves;
    pending = std::move(rest);
  }
  for (size_t bi : pending) {
    const Batch& b = batches[bi];
    for (int i : b.moves) out.unschedulable.push_back({moves[i].vm, MoveText(moves[i]) + ": " + b.why});
  }

  placement::Plan serial;
  for (const Step& st : out.steps) serial.moves.push_back(st.move);
  if (Status st = placement::CheckPlan(s, serial); !st.ok()) {
    return InternalError("migration order rejected by the plan checker: " + st.message());
  }
  return out;
}

std::vector<int> NextRunnable(const Schedule& schedule, const std::vector<StepState>& states, const Caps& caps) {
  std::map<std::string, int64_t> per_host;
  int64_t running = 0;
  for (size_t i = 0; i < schedule.steps.size(); ++i) {
    if (states[i] != StepState::kRunning) continue;
    ++running;
    ++per_host[schedule.steps[i].move.from];
    ++per_host[schedule.steps[i].move.to];
  }
  std::vector<int> out;
  for (size_t i = 0; i < schedule.steps.size() && running < caps.cluster; ++i) {
    if (states[i] != StepState::kPending) continue;
    const Step& st = schedule.steps[i];
    bool ready =
        std::all_of(st.depends_on.begin(), st.depends_on.end(), [&](int d) { return states[d] == StepState::kDone; });
    if (!ready || per_host[st.move.from] >= caps.per_host || per_host[st.move.to] >= caps.per_host) continue;
    out.push_back(static_cast<int>(i));
    ++running;
    ++per_host[st.move.from];
    ++per_host[st.move.to];
  }
  return out;
}

std::vector<std::pair<int, std::string>> BlockedByFailure(const Schedule& schedule,
                                                          const std::vector<StepState>& states) {
  std::vector<StepState> s = states;
  std::vector<std::pair<int, std::string>> out;
  for (size_t i = 0; i < schedule.steps.size(); ++i) {
    if (s[i] != StepState::kPending) continue;
    for (int d : schedule.steps[i].depends_on) {
      if (s[d] == StepState::kFailed || s[d] == StepState::kSkipped) {
        const Move& m = schedule.steps[d].move;
        out.push_back({static_cast<int>(i),
                       "depends on the move of " + m.vm + " " + m.from + " -> " + m.to + ", which did not complete"});
        s[i] = StepState::kSkipped;
        break;
      }
    }
  }
  return out;
}

}  // namespace uw::migration
