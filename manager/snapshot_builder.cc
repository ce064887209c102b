// Store rows -> placement::Snapshot (see snapshot_builder.h).
#include "manager/snapshot_builder.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "manager/guest_table.h"
#include "manager/host_table.h"
#include "manager/migration_table.h"
#include "manager/pool_rule_tables.h"

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

pl::DpmSettings DpmSettingsFromConfig(const DpmConfig& config) {
  pl::DpmSettings d;
  d.enabled = config.mode != "off";
  d.target_utilization = (config.band_low + config.band_high) / 2;
  d.tolerance = (config.band_high - config.band_low) / 2;
  d.min_hosts_on = config.min_hosts_on;
  d.keep_on = config.keep_on;
  return d;
}

namespace {

Result<std::vector<pl::Host>> Hosts(Store& store) {
  UW_ASSIGN_OR_RETURN(std::vector<Host> rows, HostTable(store).ForPlacement());
  std::vector<pl::Host> out;
  out.reserve(rows.size());
  for (Host& h : rows) {
    pl::Host host;
    host.name = std::move(h.name);
    host.cpu_cores = h.cpu_cores;
    host.memory_mib = h.memory_mib;
    // A host being powered off takes no guests (as in maintenance); one off or not back yet is
    // standby (the engine may plan to power it on). A host that stopped heartbeating is failed to
    // the engine whatever HA made of it (isolated, fencing, failed: fenced); HA restarts only the
    // guests of a fenced one.
    const bool silent =
        h.state == "disconnected" || h.state == "isolated" || h.state == "fencing" || h.state == "failed";
    host.state = silent                                           ? pl::HostState::kFailed
                 : h.state == "standby" || h.state == "waking"    ? pl::HostState::kStandby
                 : h.maintenance || h.state == "entering_standby" ? pl::HostState::kMaintenance
                                                                  : pl::HostState::kOn;
    host.groups = std::move(h.groups);
    out.push_back(std::move(host));
  }
  return out;
}

// The store holds only kinds the API parsed; anything else reads as emulated.
GuestKind KindOf(const std::string& kind) { return ParseGuestKind(kind).value_or(GuestKind::kQemu); }

// One guest row as the engine sees it.
pl::Vm VmOf(const PlacementGuest& g, const std::map<std::string, int64_t>& moved_at, int64_t now_ms) {
  pl::Vm vm;
  vm.name = g.name;
  vm.host = g.host.value_or("");
  vm.vcpus = g.vcpus;
  vm.memory_mib = g.memory_mib;
  vm.kind = KindOf(g.kind);
  // The grant's memory is reserved in full: admission control refuses what cannot be backed. A
  // lease shrink lowers it (and frees room on the host); growing back needs the room (RoomToGrow).
  vm.reservation = {0, vm.memory_mib};
  vm.migratable = g.automation != "disabled";
  vm.restart_priority = pl::ParseRestartPriority(g.restart_priority).value_or(pl::RestartPriority::kMedium);
  vm.pool = g.pool.value_or("");
  if (auto it = moved_at.find(vm.name); it != moved_at.end()) {
    vm.last_moved_ago_s = static_cast<double>(std::max<int64_t>(0, now_ms - it->second)) / 1000.0;
  }
  const std::string& state = g.state;
  vm.demand = {static_cast<double>(vm.vcpus), vm.memory_mib};
  if (state == "running" && g.memory_used_mib >= 0) {
    vm.demand = {g.cpu_used, std::min(g.memory_used_mib, vm.memory_mib)};
  } else if (state != "running" && state != "creating") {
    vm.demand = {0, vm.memory_mib};
  }
  return vm;
}

Result<std::vector<pl::Vm>> Vms(Store& store, int64_t now_ms) {
  // When each guest last moved (live or cold): the engine's cooldown (min_move_interval_s).
  UW_ASSIGN_OR_RETURN(auto moved_at, MigrationTable(store).LastDoneAt());
  UW_ASSIGN_OR_RETURN(std::vector<PlacementGuest> rows, GuestTable(store).ForPlacement());
  std::vector<pl::Vm> out;
  out.reserve(rows.size() + 8);
  for (const auto& g : rows) {
    pl::Vm vm = VmOf(g, moved_at, now_ms);
    if (g.migrating_to) {
      // In flight: it holds memory on both hosts and is not moved again until it lands. The
      // destination's share is an entry of its own (name@incoming).
      vm.migratable = false;
      pl::Vm in = vm;
      in.name += "@incoming";
      in.host = *g.migrating_to;
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
  // A stored rule may have lost guests to deletes (a vm-vm rule left with one guest is stored as
  // such, and is no rule to the engine).
  auto keep = [](std::vector<std::string>& names, const std::set<std::string>& known) {
    std::erase_if(names, [&](const std::string& n) { return !known.count(n); });
  };
  UW_ASSIGN_OR_RETURN(std::vector<pl::Rule> stored, RuleTable(store).List());
  std::vector<pl::Rule> out;
  for (pl::Rule& rule : stored) {
    keep(rule.vms, vms);
    if (rule.type == pl::RuleType::kVmHost) {
      if (rule.vms.empty()) continue;
      keep(rule.hosts, hosts);
      keep(rule.groups, groups);
      if (rule.hosts.empty() && rule.groups.empty()) continue;
    } else if (rule.vms.size() < 2) {
      continue;
    }
    out.push_back(std::move(rule));
  }
  return out;
}

}  // namespace

Result<pl::Snapshot> BuildSnapshot(Store& store, int64_t now_ms, const pl::Settings& settings, const pl::Vm* incoming) {
  pl::Snapshot snap;
  UW_ASSIGN_OR_RETURN(snap.hosts, Hosts(store));
  UW_ASSIGN_OR_RETURN(snap.pools, PoolTable(store).List());
  UW_ASSIGN_OR_RETURN(snap.vms, Vms(store, now_ms));
  if (incoming) snap.vms.push_back(*incoming);
  UW_ASSIGN_OR_RETURN(snap.rules, Rules(store, snap));
  snap.settings = settings;
  if (Status s = pl::ValidateSnapshot(snap); !s.ok()) return s.WithContext("the cluster snapshot from the store");
  return snap;
}

}  // namespace uw::manager::internal
