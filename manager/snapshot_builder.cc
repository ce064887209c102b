// Store rows -> placement::Snapshot (see snapshot_builder.h).
#include "manager/snapshot_builder.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "manager/migration_table.h"

namespace uw::manager::internal {

namespace pl = uw::placement;

pl::DrsSettings DrsSettingsFromConfig(const DrsConfig& config) {
  pl::DrsSettings d;
  d.automation = config.automation;
  d.threshold = config.threshold;
  d.max_moves = config.max_moves;
  d.allow_cold_moves = config.allow_cold_moves;
  d.min_move_interval_s = config.min_move_interval_s;
  return d;
}

namespace {

Result<std::vector<pl::Host>> Hosts(Store& store) {
  UW_ASSIGN_OR_RETURN(auto rows, store.Query("SELECT name, cpu_cores, memory_mib, state, maintenance, groups FROM "
                                             "hosts ORDER BY name"));
  std::vector<pl::Host> out;
  out.reserve(rows.size());
  for (const auto& h : rows) {
    pl::Host host;
    host.name = h.Str("name");
    host.cpu_cores = h.Real("cpu_cores");
    host.memory_mib = h.Int("memory_mib");
    host.state = h.Str("state") == "disconnected" ? pl::HostState::kFailed
                 : h.Int("maintenance")           ? pl::HostState::kMaintenance
                                                  : pl::HostState::kOn;
    const Json groups = h.JsonOf("groups");
    if (groups.is_array()) {
      for (const auto& g : groups) {
        if (g.is_string()) host.groups.push_back(g.get<std::string>());
      }
    }
    out.push_back(std::move(host));
  }
  return out;
}

Result<std::vector<pl::Pool>> Pools(Store& store) {
  UW_ASSIGN_OR_RETURN(auto rows, store.Query("SELECT name, spec FROM pools ORDER BY name"));
  std::vector<pl::Pool> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    UW_ASSIGN_OR_RETURN(pl::Pool p, pl::ParsePoolJson(r.JsonOf("spec"), "pool '" + r.Str("name") + "'"));
    out.push_back(std::move(p));
  }
  return out;
}

// The store holds only kinds the API parsed; anything else reads as emulated.
GuestKind KindOf(const std::string& kind) { return ParseGuestKind(kind).value_or(GuestKind::kQemu); }

// One guest row as the engine sees it.
pl::Vm VmOf(const SqlRow& g, const std::map<std::string, int64_t>& moved_at, int64_t now_ms) {
  pl::Vm vm;
  vm.name = g.Str("name");
  vm.host = g.IsNull("host") ? "" : g.Str("host");
  vm.vcpus = g.Int("vcpus");
  vm.memory_mib = g.Int("memory_mib");
  vm.kind = KindOf(g.Str("kind"));
  // Memory is reserved in full: admission control refuses what cannot be backed.
  vm.reservation = {0, vm.memory_mib};
  vm.migratable = g.Str("automation") != "disabled";
  vm.pool = g.IsNull("pool") ? "" : g.Str("pool");
  if (auto it = moved_at.find(vm.name); it != moved_at.end()) {
    vm.last_moved_ago_s = static_cast<double>(std::max<int64_t>(0, now_ms - it->second)) / 1000.0;
  }
  const std::string state = g.Str("state");
  vm.demand = {static_cast<double>(vm.vcpus), vm.memory_mib};
  if (state == "running" && g.Int("memory_used_mib") >= 0) {
    vm.demand = {g.Real("cpu_used"), std::min(g.Int("memory_used_mib"), vm.memory_mib)};
  } else if (state != "running" && state != "creating") {
    vm.demand = {0, vm.memory_mib};
  }
  return vm;
}

Result<std::vector<pl::Vm>> Vms(Store& store, int64_t now_ms) {
  // When each guest last moved (live or cold): the engine's cooldown (min_move_interval_s).
  UW_ASSIGN_OR_RETURN(auto moved_at, MigrationTable(store).LastDoneAt());
  UW_ASSIGN_OR_RETURN(auto rows, store.Query("SELECT name, host, pool, kind, vcpus, memory_mib, state, automation, "
                                             "cpu_used, memory_used_mib, migrating_to FROM guests ORDER BY name"));
  std::vector<pl::Vm> out;
  out.reserve(rows.size() + 8);
  for (const auto& g : rows) {
    pl::Vm vm = VmOf(g, moved_at, now_ms);
    if (!g.IsNull("migrating_to")) {
      // In flight: it holds memory on both hosts and is not moved again until it lands. The
      // destination's share is an entry of its own (name@incoming).
      vm.migratable = false;
      pl::Vm in = vm;
      in.name += "@incoming";
      in.host = g.Str("migrating_to");
      in.pool.clear();
      out.push_back(std::move(in));
    }
    out.push_back(std::move(vm));
  }
  return out;
}

// Stored rules cut down to what exists: a vm-host rule needs a guest and a host or group left,
// a vm-vm rule two guests.
Result<std::vector<pl::Rule>> Rules(Store& store, const pl::Snapshot& snap) {
  std::set<std::string> vms, hosts, groups;
  for (const auto& v : snap.vms) vms.insert(v.name);
  for (const auto& h : snap.hosts) {
    hosts.insert(h.name);
    groups.insert(h.groups.begin(), h.groups.end());
  }
  // Cut before it is read: a stored rule may have lost guests to deletes (a vm-vm rule left with
  // one guest is stored as such, and is no rule to the engine).
  auto keep = [](const Json& names, const std::set<std::string>& known) {
    Json out = Json::array();
    if (!names.is_array()) return out;
    for (const auto& n : names) {
      if (n.is_string() && known.count(n.get<std::string>())) out.push_back(n);
    }
    return out;
  };
  UW_ASSIGN_OR_RETURN(auto rows, store.Query("SELECT name, spec FROM rules ORDER BY name"));
  std::vector<pl::Rule> out;
  for (const auto& row : rows) {
    Json rule = row.JsonOf("spec");
    if (!rule.is_object()) continue;
    rule["vms"] = keep(rule.value("vms", Json::array()), vms);
    if (rule.value("type", "") == "vm-host") {
      if (rule["vms"].empty()) continue;
      rule["hosts"] = keep(rule.value("hosts", Json::array()), hosts);
      rule["groups"] = keep(rule.value("groups", Json::array()), groups);
      if (rule["hosts"].empty() && rule["groups"].empty()) continue;
    } else if (rule["vms"].size() < 2) {
      continue;
    }
    UW_ASSIGN_OR_RETURN(pl::Rule r, pl::ParseRuleJson(rule, "rule '" + row.Str("name") + "'"));
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

Result<pl::Snapshot> BuildSnapshot(Store& store, int64_t now_ms, const pl::DrsSettings& drs, const pl::Vm* incoming) {
  pl::Snapshot snap;
  UW_ASSIGN_OR_RETURN(snap.hosts, Hosts(store));
  UW_ASSIGN_OR_RETURN(snap.pools, Pools(store));
  UW_ASSIGN_OR_RETURN(snap.vms, Vms(store, now_ms));
  if (incoming) snap.vms.push_back(*incoming);
  UW_ASSIGN_OR_RETURN(snap.rules, Rules(store, snap));
  snap.settings.drs = drs;
  if (Status s = pl::ValidateSnapshot(snap); !s.ok()) return s.WithContext("the cluster snapshot from the store");
  return snap;
}

}  // namespace uw::manager::internal
