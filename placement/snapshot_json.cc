// Snapshot and plan JSON: parsing with field-path errors, and canonical serialization.
#include <cmath>
#include <iterator>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "placement/placement.h"

namespace uw::placement {

std::string_view HostStateName(HostState s) {
  switch (s) {
    case HostState::kOn:
      return "on";
    case HostState::kStandby:
      return "standby";
    case HostState::kMaintenance:
      return "maintenance";
    case HostState::kFailed:
      return "failed";
  }
  return "on";
}

std::string_view RuleTypeName(RuleType t) {
  switch (t) {
    case RuleType::kVmAffinity:
      return "vm-affinity";
    case RuleType::kVmAntiAffinity:
      return "vm-anti-affinity";
    case RuleType::kVmHost:
      return "vm-host";
  }
  return "vm-affinity";
}

std::string_view HostRuleModeName(HostRuleMode m) {
  switch (m) {
    case HostRuleMode::kMust:
      return "must";
    case HostRuleMode::kShould:
      return "should";
    case HostRuleMode::kMustNot:
      return "must-not";
    case HostRuleMode::kShouldNot:
      return "should-not";
  }
  return "must";
}

namespace {
constexpr std::string_view kRestartPriorityNames[] = {"high", "medium", "low", "disabled"};
constexpr char kRestartPriorityList[] = "high, medium, low, disabled";
}  // namespace

std::string_view RestartPriorityName(RestartPriority p) { return kRestartPriorityNames[static_cast<size_t>(p)]; }

Result<RestartPriority> ParseRestartPriority(std::string_view name) {
  for (size_t i = 0; i < std::size(kRestartPriorityNames); ++i) {
    if (kRestartPriorityNames[i] == name) return static_cast<RestartPriority>(i);
  }
  return InvalidArgumentError("restart priority '" + std::string(name) + "' is not one of " + kRestartPriorityList);
}

bool Rule::IsHard() const {
  if (type == RuleType::kVmHost) return mode == HostRuleMode::kMust || mode == HostRuleMode::kMustNot;
  return required;
}

namespace {

// Reads an optional non-negative number (nullopt when missing or null).
Result<std::optional<double>> OptNonNegative(const JsonView& v, std::string_view key) {
  UW_ASSIGN_OR_RETURN(std::optional<double> d, v.OptionalNumber(key));
  if (d && *d < 0) return v.FieldError(key, "expected a non-negative number");
  return d;
}

Result<double> NonNegative(const JsonView& v, std::string_view key, double fallback) {
  UW_ASSIGN_OR_RETURN(double d, v.Number(key, fallback));
  if (d < 0) return v.FieldError(key, "expected a non-negative number");
  return d;
}

Result<int64_t> PositiveIntOr(const JsonView& v, std::string_view key, int64_t fallback) {
  if (!v.Has(key)) return fallback;
  return v.PositiveInt(key);
}

template <typename E>
Result<E> ParseEnum(const JsonView& v, std::string_view key, E fallback,
                    std::initializer_list<std::pair<std::string_view, E>> names) {
  if (!v.Has(key)) return fallback;
  UW_ASSIGN_OR_RETURN(std::string s, v.String(key));
  std::string allowed;
  for (const auto& [n, e] : names) {
    if (n == s) return e;
    if (!allowed.empty()) allowed += " | ";
    allowed += n;
  }
  return v.FieldError(key, "expected one of " + allowed + ", got '" + s + "'");
}

// Optional sub-object: a view of it, or nullopt when missing or null.
Result<std::optional<JsonView>> OptObject(const JsonView& v, std::string_view key) {
  if (!v.Has(key)) return std::optional<JsonView>();
  UW_ASSIGN_OR_RETURN(JsonView o, v.Object(key));
  return std::optional<JsonView>(o);
}

Result<std::vector<JsonView>> OptObjects(const JsonView& v, std::string_view key) {
  if (!v.Has(key)) return std::vector<JsonView>();
  return v.Objects(key);
}

Result<std::string> NonEmptyName(const JsonView& v, std::string_view key) {
  UW_ASSIGN_OR_RETURN(std::string s, v.String(key));
  if (s.empty()) return v.FieldError(key, "expected a non-empty name");
  return s;
}

Result<std::string> OptName(const JsonView& v, std::string_view key) { return v.String(key, std::string()); }

// Sizes beyond any machine (1 EiB of memory, a million vCPUs): the engine adds them up in int64.
constexpr int64_t kMaxMemoryMib = int64_t{1} << 40;
constexpr int64_t kMaxVcpus = int64_t{1} << 20;

Status CheckBound(const JsonView& v, std::string_view key, int64_t value, int64_t max) {
  if (value > max) return v.FieldError(key, "expected at most " + std::to_string(max));
  return Status::Ok();
}

Status ParseHost(const JsonView& v, Host* h) {
  UW_ASSIGN_OR_RETURN(h->name, NonEmptyName(v, "name"));
  UW_ASSIGN_OR_RETURN(h->cpu_cores, v.Number("cpu_cores"));
  if (!(h->cpu_cores > 0)) return v.FieldError("cpu_cores", "expected a positive number");
  UW_ASSIGN_OR_RETURN(h->memory_mib, v.PositiveInt("memory_mib"));
  UW_RETURN_IF_ERROR(CheckBound(v, "memory_mib", h->memory_mib, kMaxMemoryMib));
  UW_ASSIGN_OR_RETURN(h->state, ParseEnum(v, "state", HostState::kOn,
                                          {{"on", HostState::kOn},
                                           {"standby", HostState::kStandby},
                                           {"maintenance", HostState::kMaintenance},
                                           {"failed", HostState::kFailed}}));
  UW_ASSIGN_OR_RETURN(h->groups, v.Strings("groups", {}));
  UW_ASSIGN_OR_RETURN(auto power, OptObject(v, "power"));
  if (power) {
    UW_ASSIGN_OR_RETURN(h->power.idle_watts, NonNegative(*power, "idle_watts", h->power.idle_watts));
    UW_ASSIGN_OR_RETURN(h->power.peak_watts, NonNegative(*power, "peak_watts", h->power.peak_watts));
    if (h->power.peak_watts < h->power.idle_watts) {
      return power->FieldError("peak_watts", "must not be below idle_watts");
    }
  }
  return Status::Ok();
}

Status ParsePoolResource(const JsonView& pool, std::string_view key, std::string_view res_key,
                         std::string_view limit_key, PoolResource* r) {
  UW_ASSIGN_OR_RETURN(auto o, OptObject(pool, key));
  if (!o) return Status::Ok();
  UW_ASSIGN_OR_RETURN(r->reservation, NonNegative(*o, res_key, 0));
  UW_ASSIGN_OR_RETURN(r->limit, OptNonNegative(*o, limit_key));
  if (r->limit && *r->limit < r->reservation) {
    return o->FieldError(limit_key, "must not be below " + std::string(res_key));
  }
  UW_ASSIGN_OR_RETURN(r->shares, PositiveIntOr(*o, "shares", r->shares));
  return Status::Ok();
}

Status ParsePool(const JsonView& v, Pool* p) {
  UW_ASSIGN_OR_RETURN(p->name, NonEmptyName(v, "name"));
  UW_ASSIGN_OR_RETURN(p->parent, OptName(v, "parent"));
  UW_RETURN_IF_ERROR(ParsePoolResource(v, "cpu", "reservation_cores", "limit_cores", &p->cpu));
  UW_RETURN_IF_ERROR(ParsePoolResource(v, "memory", "reservation_mib", "limit_mib", &p->memory));
  UW_ASSIGN_OR_RETURN(p->expandable, v.Bool("expandable", true));
  return Status::Ok();
}

Status ParseVm(const JsonView& v, Vm* m) {
  UW_ASSIGN_OR_RETURN(m->name, NonEmptyName(v, "name"));
  UW_ASSIGN_OR_RETURN(m->host, OptName(v, "host"));
  UW_ASSIGN_OR_RETURN(m->vcpus, v.PositiveInt("vcpus"));
  UW_ASSIGN_OR_RETURN(m->memory_mib, v.PositiveInt("memory_mib"));
  UW_RETURN_IF_ERROR(CheckBound(v, "vcpus", m->vcpus, kMaxVcpus));
  UW_RETURN_IF_ERROR(CheckBound(v, "memory_mib", m->memory_mib, kMaxMemoryMib));
  m->demand = Resources{static_cast<double>(m->vcpus), m->memory_mib};
  UW_ASSIGN_OR_RETURN(auto demand, OptObject(v, "demand"));
  if (demand) {
    UW_ASSIGN_OR_RETURN(m->demand.cpu_cores, NonNegative(*demand, "cpu_cores", m->demand.cpu_cores));
    UW_ASSIGN_OR_RETURN(m->demand.memory_mib, demand->NonNegativeInt("memory_mib", m->demand.memory_mib));
    UW_RETURN_IF_ERROR(CheckBound(*demand, "memory_mib", m->demand.memory_mib, kMaxMemoryMib));
  }
  UW_ASSIGN_OR_RETURN(m->pool, OptName(v, "pool"));
  UW_ASSIGN_OR_RETURN(auto res, OptObject(v, "reservation"));
  if (res) {
    UW_ASSIGN_OR_RETURN(m->reservation.cpu_cores, NonNegative(*res, "cpu_cores", 0));
    UW_ASSIGN_OR_RETURN(m->reservation.memory_mib, res->NonNegativeInt("memory_mib", 0));
    if (m->reservation.cpu_cores > static_cast<double>(m->vcpus) + 1e-9) {
      return res->FieldError("cpu_cores", "reservation exceeds the guest's vcpus");
    }
    if (m->reservation.memory_mib > m->memory_mib) {
      return res->FieldError("memory_mib", "reservation exceeds the guest's memory_mib");
    }
  }
  UW_ASSIGN_OR_RETURN(auto lim, OptObject(v, "limit"));
  if (lim) {
    UW_ASSIGN_OR_RETURN(m->limit_cpu_cores, OptNonNegative(*lim, "cpu_cores"));
    if (lim->Has("memory_mib")) {
      UW_ASSIGN_OR_RETURN(int64_t l, lim->NonNegativeInt("memory_mib", 0));
      UW_RETURN_IF_ERROR(CheckBound(*lim, "memory_mib", l, kMaxMemoryMib));
      m->limit_memory_mib = l;
    }
    if (m->limit_cpu_cores && *m->limit_cpu_cores < m->reservation.cpu_cores) {
      return lim->FieldError("cpu_cores", "limit is below the reservation");
    }
    if (m->limit_memory_mib && *m->limit_memory_mib < m->reservation.memory_mib) {
      return lim->FieldError("memory_mib", "limit is below the reservation");
    }
  }
  UW_ASSIGN_OR_RETURN(auto shares, OptObject(v, "shares"));
  if (shares) {
    UW_ASSIGN_OR_RETURN(m->cpu_shares, PositiveIntOr(*shares, "cpu", 1000));
    UW_ASSIGN_OR_RETURN(m->memory_shares, PositiveIntOr(*shares, "memory", 1000));
  }
  UW_ASSIGN_OR_RETURN(m->kind,
                      ParseEnum(v, "kind", GuestKind::kKvm,
                                {{"kvm", GuestKind::kKvm}, {"qemu", GuestKind::kQemu}, {"lxc", GuestKind::kLxc}}));
  UW_ASSIGN_OR_RETURN(m->migratable, v.Bool("migratable", true));
  UW_ASSIGN_OR_RETURN(m->last_moved_ago_s, OptNonNegative(v, "last_moved_ago_s"));
  UW_ASSIGN_OR_RETURN(std::string priority, v.String("restart_priority", "medium"));
  Result<RestartPriority> parsed = ParseRestartPriority(priority);
  if (!parsed.ok()) {
    return v.FieldError("restart_priority",
                        std::string("expected one of ") + kRestartPriorityList + ", got '" + priority + "'");
  }
  m->restart_priority = *parsed;
  return Status::Ok();
}

Status ParseRule(const JsonView& v, Rule* r, bool stored = false) {
  UW_ASSIGN_OR_RETURN(r->name, NonEmptyName(v, "name"));
  if (!v.Has("type")) return v.FieldError("type", "required string is missing");
  UW_ASSIGN_OR_RETURN(r->type, ParseEnum(v, "type", RuleType::kVmAffinity,
                                         {{"vm-affinity", RuleType::kVmAffinity},
                                          {"vm-anti-affinity", RuleType::kVmAntiAffinity},
                                          {"vm-host", RuleType::kVmHost}}));
  UW_ASSIGN_OR_RETURN(r->vms, v.Strings("vms"));
  if (r->vms.empty()) return v.FieldError("vms", "expected at least one guest");
  if (r->type == RuleType::kVmHost) {
    if (!v.Has("mode"))
      return v.FieldError("mode", "required for a vm-host rule (must | should | must-not | should-not)");
    UW_ASSIGN_OR_RETURN(r->mode, ParseEnum(v, "mode", HostRuleMode::kMust,
                                           {{"must", HostRuleMode::kMust},
                                            {"should", HostRuleMode::kShould},
                                            {"must-not", HostRuleMode::kMustNot},
                                            {"should-not", HostRuleMode::kShouldNot}}));
    UW_ASSIGN_OR_RETURN(r->hosts, v.Strings("hosts", {}));
    UW_ASSIGN_OR_RETURN(r->groups, v.Strings("groups", {}));
    if (r->hosts.empty() && r->groups.empty()) {
      return v.FieldError("hosts", "a vm-host rule needs hosts or groups");
    }
    r->required = r->mode == HostRuleMode::kMust || r->mode == HostRuleMode::kMustNot;
  } else {
    if (r->vms.size() < 2 && !stored) return v.FieldError("vms", "a vm-vm rule needs at least two guests");
    UW_ASSIGN_OR_RETURN(r->required, v.Bool("required", true));
  }
  return Status::Ok();
}

Status ParseSettings(const JsonView& root, Settings* s) {
  UW_ASSIGN_OR_RETURN(auto settings, OptObject(root, "settings"));
  if (!settings) return Status::Ok();
  UW_ASSIGN_OR_RETURN(auto drs, OptObject(*settings, "drs"));
  if (drs) {
    UW_ASSIGN_OR_RETURN(s->drs.automation, drs->String("automation", "manual"));
    if (s->drs.automation != "manual" && s->drs.automation != "automatic") {
      return drs->FieldError("automation", "expected one of manual | automatic, got '" + s->drs.automation + "'");
    }
    UW_ASSIGN_OR_RETURN(int64_t t, drs->Int("threshold", 3));
    if (t < 1 || t > 5) return drs->FieldError("threshold", "expected an integer from 1 to 5");
    s->drs.threshold = static_cast<int>(t);
    if (drs->Has("max_moves")) {
      UW_ASSIGN_OR_RETURN(int64_t m, drs->NonNegativeInt("max_moves", 0));
      s->drs.max_moves = m;
    }
    UW_ASSIGN_OR_RETURN(s->drs.min_move_interval_s, NonNegative(*drs, "min_move_interval_s", 3600));
    UW_ASSIGN_OR_RETURN(s->drs.migration_bandwidth_mib_s, drs->Number("migration_bandwidth_mib_s", 1024));
    UW_ASSIGN_OR_RETURN(s->drs.allow_cold_moves, drs->Bool("allow_cold_moves", false));
    if (!(s->drs.migration_bandwidth_mib_s > 0)) {
      return drs->FieldError("migration_bandwidth_mib_s", "expected a positive number");
    }
  }
  UW_ASSIGN_OR_RETURN(auto dpm, OptObject(*settings, "dpm"));
  if (dpm) {
    UW_ASSIGN_OR_RETURN(s->dpm.enabled, dpm->Bool("enabled", false));
    UW_ASSIGN_OR_RETURN(s->dpm.target_utilization, dpm->Number("target_utilization", 0.63));
    if (!(s->dpm.target_utilization > 0 && s->dpm.target_utilization <= 1)) {
      return dpm->FieldError("target_utilization", "expected a number in (0, 1]");
    }
    UW_ASSIGN_OR_RETURN(s->dpm.tolerance, dpm->Number("tolerance", 0.18));
    if (!(s->dpm.tolerance >= 0 && s->dpm.tolerance < s->dpm.target_utilization)) {
      return dpm->FieldError("tolerance", "expected a number in [0, target_utilization)");
    }
    UW_ASSIGN_OR_RETURN(s->dpm.min_hosts_on, dpm->NonNegativeInt("min_hosts_on", 1));
    UW_ASSIGN_OR_RETURN(s->dpm.keep_on, dpm->Strings("keep_on", {}));
  }
  UW_ASSIGN_OR_RETURN(auto ha, OptObject(*settings, "ha"));
  if (ha) {
    UW_ASSIGN_OR_RETURN(s->ha.enabled, ha->Bool("enabled", false));
    UW_ASSIGN_OR_RETURN(s->ha.host_failures, ha->NonNegativeInt("host_failures", 1));
  }
  return Status::Ok();
}

// Cross-references: unique names, hosts / pools / guests that exist, no pool cycles.
Status Validate(Snapshot& s) {
  std::unordered_map<std::string, size_t> hosts, pools, vms;
  std::unordered_set<std::string> groups;
  for (size_t i = 0; i < s.hosts.size(); ++i) {
    if (!hosts.emplace(s.hosts[i].name, i).second) {
      return InvalidArgumentError("hosts[" + std::to_string(i) + "].name: duplicate host '" + s.hosts[i].name + "'");
    }
    for (const auto& g : s.hosts[i].groups) groups.insert(g);
  }
  for (size_t i = 0; i < s.pools.size(); ++i) {
    if (!pools.emplace(s.pools[i].name, i).second) {
      return InvalidArgumentError("pools[" + std::to_string(i) + "].name: duplicate pool '" + s.pools[i].name + "'");
    }
  }
  for (size_t i = 0; i < s.pools.size(); ++i) {
    const std::string path = "pools[" + std::to_string(i) + "].parent";
    if (s.pools[i].parent.empty()) continue;
    if (!pools.count(s.pools[i].parent)) {
      return InvalidArgumentError(path + ": unknown pool '" + s.pools[i].parent + "'");
    }
    // Walk up; more steps than pools means a cycle.
    std::string cur = s.pools[i].parent;
    for (size_t steps = 0; !cur.empty(); ++steps) {
      if (steps > s.pools.size() || cur == s.pools[i].name) {
        return InvalidArgumentError(path + ": cycle through pool '" + s.pools[i].name + "'");
      }
      cur = s.pools[pools[cur]].parent;
    }
  }
  for (size_t i = 0; i < s.vms.size(); ++i) {
    const Vm& v = s.vms[i];
    const std::string p = "vms[" + std::to_string(i) + "]";
    if (!vms.emplace(v.name, i).second) {
      return InvalidArgumentError(p + ".name: duplicate guest '" + v.name + "'");
    }
    if (!v.host.empty()) {
      auto it = hosts.find(v.host);
      if (it == hosts.end()) return InvalidArgumentError(p + ".host: unknown host '" + v.host + "'");
      if (s.hosts[it->second].state == HostState::kStandby) {
        return InvalidArgumentError(p + ".host: host '" + v.host +
                                    "' is in standby (powered off) and cannot run guests");
      }
    }
    if (!v.pool.empty() && !pools.count(v.pool)) {
      return InvalidArgumentError(p + ".pool: unknown pool '" + v.pool + "'");
    }
  }
  for (size_t i = 0; i < s.rules.size(); ++i) {
    Rule& r = s.rules[i];
    const std::string p = "rules[" + std::to_string(i) + "]";
    std::set<std::string> seen;
    for (size_t j = 0; j < r.vms.size(); ++j) {
      if (!vms.count(r.vms[j])) {
        return InvalidArgumentError(p + ".vms[" + std::to_string(j) + "]: unknown guest '" + r.vms[j] + "'");
      }
      if (!seen.insert(r.vms[j]).second) {
        return InvalidArgumentError(p + ".vms[" + std::to_string(j) + "]: guest '" + r.vms[j] + "' listed twice");
      }
    }
    if (r.type != RuleType::kVmHost) continue;
    for (size_t j = 0; j < r.hosts.size(); ++j) {
      if (!hosts.count(r.hosts[j])) {
        return InvalidArgumentError(p + ".hosts[" + std::to_string(j) + "]: unknown host '" + r.hosts[j] + "'");
      }
    }
    for (size_t j = 0; j < r.groups.size(); ++j) {
      if (!groups.count(r.groups[j])) {
        return InvalidArgumentError(p + ".groups[" + std::to_string(j) + "]: no host is in group '" + r.groups[j] +
                                    "'");
      }
    }
  }
  return Status::Ok();
}

Json OptNum(const std::optional<double>& d) { return d ? Json(*d) : Json(nullptr); }

}  // namespace

Result<Snapshot> ParseSnapshot(const Json& json) {
  UW_ASSIGN_OR_RETURN(JsonView root, JsonView::Of(json));
  Snapshot s;
  UW_ASSIGN_OR_RETURN(s.version, root.Int("version", 1));
  if (s.version != 1)
    return root.FieldError("version", "unsupported version " + std::to_string(s.version) + " (expected 1)");
  UW_ASSIGN_OR_RETURN(auto hosts, root.Objects("hosts"));
  s.hosts.resize(hosts.size());
  for (size_t i = 0; i < hosts.size(); ++i) UW_RETURN_IF_ERROR(ParseHost(hosts[i], &s.hosts[i]));
  UW_ASSIGN_OR_RETURN(auto pools, OptObjects(root, "pools"));
  s.pools.resize(pools.size());
  for (size_t i = 0; i < pools.size(); ++i) UW_RETURN_IF_ERROR(ParsePool(pools[i], &s.pools[i]));
  UW_ASSIGN_OR_RETURN(auto vms, OptObjects(root, "vms"));
  s.vms.resize(vms.size());
  for (size_t i = 0; i < vms.size(); ++i) UW_RETURN_IF_ERROR(ParseVm(vms[i], &s.vms[i]));
  UW_ASSIGN_OR_RETURN(auto rules, OptObjects(root, "rules"));
  s.rules.resize(rules.size());
  for (size_t i = 0; i < rules.size(); ++i) UW_RETURN_IF_ERROR(ParseRule(rules[i], &s.rules[i]));
  UW_RETURN_IF_ERROR(ParseSettings(root, &s.settings));
  UW_RETURN_IF_ERROR(Validate(s));
  return s;
}

Result<Pool> ParsePoolJson(const Json& json, std::string_view path) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(json, std::string(path)));
  Pool p;
  UW_RETURN_IF_ERROR(ParsePool(v, &p));
  return p;
}

Result<Rule> ParseRuleJson(const Json& json, std::string_view path, bool stored) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(json, std::string(path)));
  Rule r;
  UW_RETURN_IF_ERROR(ParseRule(v, &r, stored));
  return r;
}

Status ValidateSnapshot(Snapshot& snapshot) { return Validate(snapshot); }

Result<Snapshot> ParseSnapshotText(std::string_view text, std::string_view what) {
  UW_ASSIGN_OR_RETURN(Json j, ParseJson(text, what));
  return ParseSnapshot(j);
}

Json PoolToJson(const Pool& p) {
  return {
      {"name", p.name},
      {"parent", p.parent.empty() ? Json(nullptr) : Json(p.parent)},
      {"cpu",
       {{"reservation_cores", p.cpu.reservation}, {"limit_cores", OptNum(p.cpu.limit)}, {"shares", p.cpu.shares}}},
      {"memory",
       {{"reservation_mib", p.memory.reservation}, {"limit_mib", OptNum(p.memory.limit)}, {"shares", p.memory.shares}}},
      {"expandable", p.expandable}};
}

Json RuleToJson(const Rule& r) {
  Json j = {{"name", r.name}, {"type", RuleTypeName(r.type)}, {"vms", r.vms}};
  if (r.type == RuleType::kVmHost) {
    j["mode"] = HostRuleModeName(r.mode);
    if (!r.hosts.empty()) j["hosts"] = r.hosts;
    if (!r.groups.empty()) j["groups"] = r.groups;
  } else {
    j["required"] = r.required;
  }
  return j;
}

Json SnapshotToJson(const Snapshot& s) {
  Json hosts = Json::array();
  for (const Host& h : s.hosts) {
    hosts.push_back({{"name", h.name},
                     {"cpu_cores", h.cpu_cores},
                     {"memory_mib", h.memory_mib},
                     {"state", HostStateName(h.state)},
                     {"groups", h.groups},
                     {"power", {{"idle_watts", h.power.idle_watts}, {"peak_watts", h.power.peak_watts}}}});
  }
  Json pools = Json::array();
  for (const Pool& p : s.pools) pools.push_back(PoolToJson(p));
  Json vms = Json::array();
  for (const Vm& v : s.vms) {
    Json j = {{"name", v.name},
              {"host", v.host.empty() ? Json(nullptr) : Json(v.host)},
              {"vcpus", v.vcpus},
              {"memory_mib", v.memory_mib},
              {"demand", {{"cpu_cores", v.demand.cpu_cores}, {"memory_mib", v.demand.memory_mib}}},
              {"pool", v.pool.empty() ? Json(nullptr) : Json(v.pool)},
              {"reservation", {{"cpu_cores", v.reservation.cpu_cores}, {"memory_mib", v.reservation.memory_mib}}},
              {"limit",
               {{"cpu_cores", OptNum(v.limit_cpu_cores)},
                {"memory_mib", v.limit_memory_mib ? Json(*v.limit_memory_mib) : Json(nullptr)}}},
              {"shares", {{"cpu", v.cpu_shares}, {"memory", v.memory_shares}}},
              {"kind", GuestKindName(v.kind)},
              {"migratable", v.migratable}};
    if (v.last_moved_ago_s) j["last_moved_ago_s"] = *v.last_moved_ago_s;
    if (v.restart_priority != RestartPriority::kMedium) j["restart_priority"] = RestartPriorityName(v.restart_priority);
    vms.push_back(std::move(j));
  }
  Json rules = Json::array();
  for (const Rule& r : s.rules) rules.push_back(RuleToJson(r));
  const Settings& st = s.settings;
  Json settings = {{"drs",
                    {{"automation", st.drs.automation},
                     {"threshold", st.drs.threshold},
                     {"max_moves", st.drs.max_moves ? Json(*st.drs.max_moves) : Json(nullptr)},
                     {"min_move_interval_s", st.drs.min_move_interval_s},
                     {"migration_bandwidth_mib_s", st.drs.migration_bandwidth_mib_s},
                     {"allow_cold_moves", st.drs.allow_cold_moves}}},
                   {"dpm",
                    {{"enabled", st.dpm.enabled},
                     {"target_utilization", st.dpm.target_utilization},
                     {"tolerance", st.dpm.tolerance},
                     {"min_hosts_on", st.dpm.min_hosts_on}}},
                   {"ha", {{"enabled", st.ha.enabled}, {"host_failures", st.ha.host_failures}}}};
  if (!st.dpm.keep_on.empty()) settings["dpm"]["keep_on"] = st.dpm.keep_on;
  return {{"version", s.version}, {"hosts", hosts}, {"pools", pools},
          {"vms", vms},           {"rules", rules}, {"settings", settings}};
}

// ---------------------------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------------------------

namespace {

Json MetricsToJson(const PlanMetrics& m) {
  return {{"imbalance", m.imbalance},
          {"hosts_on", m.hosts_on},
          {"cpu_imbalance", m.cpu_imbalance},
          {"memory_imbalance", m.memory_imbalance},
          {"hosts_used", m.hosts_used},
          {"soft_violations", m.soft_violations},
          {"unmet_cpu_cores", m.unmet_cpu_cores}};
}

Result<PlanMetrics> ParseMetrics(const JsonView& root, std::string_view key) {
  PlanMetrics m;
  UW_ASSIGN_OR_RETURN(auto o, OptObject(root, key));
  if (!o) return m;
  UW_ASSIGN_OR_RETURN(m.imbalance, o->Number("imbalance", 0));
  UW_ASSIGN_OR_RETURN(m.hosts_on, o->Int("hosts_on", 0));
  UW_ASSIGN_OR_RETURN(m.cpu_imbalance, o->Number("cpu_imbalance", 0));
  UW_ASSIGN_OR_RETURN(m.memory_imbalance, o->Number("memory_imbalance", 0));
  UW_ASSIGN_OR_RETURN(m.hosts_used, o->Int("hosts_used", 0));
  UW_ASSIGN_OR_RETURN(m.soft_violations, o->Int("soft_violations", 0));
  UW_ASSIGN_OR_RETURN(m.unmet_cpu_cores, o->Number("unmet_cpu_cores", 0));
  return m;
}

}  // namespace

Json PlanToJson(const Plan& p) {
  Json placements = Json::array();
  for (const auto& x : p.placements) placements.push_back({{"vm", x.vm}, {"host", x.host}, {"reason", x.reason}});
  Json moves = Json::array();
  for (const auto& m : p.moves) {
    Json j = {{"vm", m.vm},         {"from", m.from}, {"to", m.to}, {"priority", m.priority},
              {"reason", m.reason}, {"gain", m.gain}};
    if (m.cold) j["cold"] = true;
    moves.push_back(std::move(j));
  }
  Json power = Json::array();
  for (const auto& a : p.power) {
    power.push_back({{"host", a.host},
                     {"action", a.action == PowerActionType::kPowerOn ? "power-on" : "power-off"},
                     {"reason", a.reason}});
  }
  Json unplaced = Json::array();
  for (const auto& u : p.unplaced) unplaced.push_back({{"vm", u.vm}, {"reason", u.reason}});
  Json unresolved = Json::array();
  for (const auto& u : p.unresolved) unresolved.push_back({{"subject", u.subject}, {"reason", u.reason}});
  return {{"version", p.version},
          {"policy", p.policy},
          {"placements", placements},
          {"moves", moves},
          {"power", power},
          {"unplaced", unplaced},
          {"unresolved", unresolved},
          {"before", MetricsToJson(p.before)},
          {"after", MetricsToJson(p.after)},
          {"elapsed_ms", p.elapsed_ms}};
}

Result<Plan> ParsePlan(const Json& json) {
  UW_ASSIGN_OR_RETURN(JsonView root, JsonView::Of(json));
  Plan p;
  UW_ASSIGN_OR_RETURN(p.version, root.Int("version", 1));
  if (p.version != 1) return root.FieldError("version", "unsupported version " + std::to_string(p.version));
  UW_ASSIGN_OR_RETURN(p.policy, root.String("policy", ""));
  UW_ASSIGN_OR_RETURN(auto placements, OptObjects(root, "placements"));
  for (const auto& v : placements) {
    PlacementStep s;
    UW_ASSIGN_OR_RETURN(s.vm, NonEmptyName(v, "vm"));
    UW_ASSIGN_OR_RETURN(s.host, NonEmptyName(v, "host"));
    UW_ASSIGN_OR_RETURN(s.reason, v.String("reason", ""));
    p.placements.push_back(std::move(s));
  }
  UW_ASSIGN_OR_RETURN(auto moves, OptObjects(root, "moves"));
  for (const auto& v : moves) {
    Move m;
    UW_ASSIGN_OR_RETURN(m.vm, NonEmptyName(v, "vm"));
    UW_ASSIGN_OR_RETURN(m.from, NonEmptyName(v, "from"));
    UW_ASSIGN_OR_RETURN(m.to, NonEmptyName(v, "to"));
    UW_ASSIGN_OR_RETURN(int64_t prio, v.Int("priority", 5));
    if (prio < 1 || prio > 5) return v.FieldError("priority", "expected an integer from 1 to 5");
    m.priority = static_cast<int>(prio);
    UW_ASSIGN_OR_RETURN(m.reason, v.String("reason", ""));
    UW_ASSIGN_OR_RETURN(m.gain, v.Number("gain", 0));
    UW_ASSIGN_OR_RETURN(m.cold, v.Bool("cold", false));
    p.moves.push_back(std::move(m));
  }
  UW_ASSIGN_OR_RETURN(auto power, OptObjects(root, "power"));
  for (const auto& v : power) {
    PowerAction a;
    UW_ASSIGN_OR_RETURN(a.host, NonEmptyName(v, "host"));
    UW_ASSIGN_OR_RETURN(
        a.action, ParseEnum(v, "action", PowerActionType::kPowerOn,
                            {{"power-on", PowerActionType::kPowerOn}, {"power-off", PowerActionType::kPowerOff}}));
    if (!v.Has("action")) return v.FieldError("action", "required string is missing");
    UW_ASSIGN_OR_RETURN(a.reason, v.String("reason", ""));
    p.power.push_back(std::move(a));
  }
  UW_ASSIGN_OR_RETURN(auto unplaced, OptObjects(root, "unplaced"));
  for (const auto& v : unplaced) {
    Unplaced u;
    UW_ASSIGN_OR_RETURN(u.vm, NonEmptyName(v, "vm"));
    UW_ASSIGN_OR_RETURN(u.reason, v.String("reason", ""));
    p.unplaced.push_back(std::move(u));
  }
  UW_ASSIGN_OR_RETURN(auto unresolved, OptObjects(root, "unresolved"));
  for (const auto& v : unresolved) {
    Unresolved u;
    UW_ASSIGN_OR_RETURN(u.subject, v.String("subject", ""));
    UW_ASSIGN_OR_RETURN(u.reason, v.String("reason", ""));
    p.unresolved.push_back(std::move(u));
  }
  UW_ASSIGN_OR_RETURN(p.before, ParseMetrics(root, "before"));
  UW_ASSIGN_OR_RETURN(p.after, ParseMetrics(root, "after"));
  UW_ASSIGN_OR_RETURN(p.elapsed_ms, root.Number("elapsed_ms", 0));
  return p;
}

}  // namespace uw::placement
