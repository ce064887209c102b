// The hosts table and each host's usage samples (host_table.h).
#include "manager/host_table.h"

#include <algorithm>

#include "manager/internal.h"

namespace uw::manager::internal {

namespace {

std::string NotFound(std::string_view name) { return "host '" + std::string(name) + "' not found"; }

// A hosts row joined with its reservation totals (see kHostQuery).
// What placement reads of a hosts row.
Host CapacityOfRow(const SqlRow& r) {
  Host h;
  h.name = r.Str("name");
  h.state = r.Str("state");
  // A host in a power operation is shown in it (its agent's session says disconnected then).
  if (const std::string phase = r.Str("phase"); !phase.empty() && phase != "on") h.state = phase;
  h.maintenance = r.Int("maintenance") != 0;
  if (Json groups = r.JsonOf("groups"); groups.is_array()) {
    for (const Json& g : groups) {
      if (g.is_string()) h.groups.push_back(g.get<std::string>());
    }
  }
  h.cpu_cores = r.Real("cpu_cores");
  h.memory_mib = r.Int("memory_mib");
  return h;
}

Host HostOfRow(const SqlRow& r) {
  Host h = CapacityOfRow(r);
  h.agent_url = r.Str("agent_url");
  h.reserved_vcpus = r.Real("rc");
  h.reserved_memory_mib = r.Int("rm");
  h.used_cpu_cores = r.Real("cpu_used");
  h.used_memory_mib = r.Int("memory_used_mib");
  h.guests = r.Int("n");
  h.last_heartbeat_ms = r.Int("last_heartbeat_ms");
  return h;
}

// The reservation totals come from host_reservations (kept by triggers), not from the guests. The
// list reads only the columns it shows (not the agent's `info`, nor the tokens).
constexpr const char* kHostQuery =
    "SELECT h.*, COALESCE(r.guests, 0) AS n, COALESCE(r.vcpus, 0) AS rc, COALESCE(r.memory_mib, 0) AS rm, "
    "COALESCE(p.phase, 'on') AS phase FROM hosts h LEFT JOIN host_reservations r ON r.host = h.name "
    "LEFT JOIN host_power p ON p.host = h.name";
constexpr const char* kHostListQuery =
    "SELECT h.name, h.agent_url, h.state, h.maintenance, h.groups, h.cpu_cores, h.memory_mib, h.cpu_used, "
    "h.memory_used_mib, h.last_heartbeat_ms, COALESCE(r.guests, 0) AS n, COALESCE(r.vcpus, 0) AS rc, "
    "COALESCE(r.memory_mib, 0) AS rm, COALESCE(p.phase, 'on') AS phase FROM hosts h LEFT JOIN host_reservations r "
    "ON r.host = h.name LEFT JOIN host_power p ON p.host = h.name";

}  // namespace

Result<bool> HostTable::Join(const HostJoin& join, std::string_view host_token_hash, int64_t now) {
  UW_ASSIGN_OR_RETURN(auto existing, store_.Query("SELECT name FROM hosts WHERE name = ?", {join.name}));
  UW_RETURN_IF_ERROR(
      store_.Exec("INSERT INTO hosts(name, agent_url, agent_token, host_token_hash, cpu_cores, memory_mib, state, "
                  "last_heartbeat_ms, joined_at_ms, info) VALUES (?, ?, ?, ?, ?, ?, 'connected', ?, ?, ?) "
                  "ON CONFLICT(name) DO UPDATE SET agent_url = excluded.agent_url, agent_token = excluded.agent_token, "
                  "host_token_hash = excluded.host_token_hash, cpu_cores = excluded.cpu_cores, memory_mib = "
                  "excluded.memory_mib, state = 'connected', last_heartbeat_ms = excluded.last_heartbeat_ms, info = "
                  "excluded.info",
                  {join.name, join.agent_url, join.agent_token, std::string(host_token_hash), join.cpu_cores,
                   join.memory_mib, now, now, Dump(join.info)}));
  return !existing.empty();
}

Status HostTable::Require(std::string_view name) {
  return store_.QueryOne("SELECT name FROM hosts WHERE name = ?", {std::string(name)}, NotFound(name)).status();
}

Result<HostTable::Session> HostTable::SessionOf(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT state, host_token_hash FROM hosts WHERE name = ?",
                                                {std::string(name)}, NotFound(name)));
  return Session{r.Str("state"), r.Str("host_token_hash")};
}

Result<int64_t> HostTable::FreeMemoryMib(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r,
                      store_.QueryOne("SELECT h.memory_mib - COALESCE(r.memory_mib, 0) - (SELECT COALESCE(SUM("
                                      "g.granted_memory_mib), 0) FROM guests g WHERE g.migrating_to = h.name) AS free "
                                      "FROM hosts h LEFT JOIN host_reservations r ON r.host = h.name WHERE h.name = ?",
                                      {std::string(name)}, NotFound(name)));
  return r.Int("free");
}

Result<AgentAddress> HostTable::AddressOf(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r,
                      store_.QueryOne("SELECT agent_url, agent_token FROM hosts WHERE name = ?", {std::string(name)},
                                      "host '" + std::string(name) + "' is no longer in the cluster"));
  return AgentAddress{r.Str("agent_url"), r.Str("agent_token")};
}

Status HostTable::RecordHeartbeat(std::string_view name, int64_t now, const Usage& usage) {
  const std::string host(name);
  UW_RETURN_IF_ERROR(store_.Exec(
      "UPDATE hosts SET state = 'connected', last_heartbeat_ms = ?, cpu_used = ?, memory_used_mib = ? WHERE name = ?",
      {now, usage.cpu_cores, usage.memory_mib, host}));
  UW_RETURN_IF_ERROR(
      store_.Exec("INSERT INTO usage_samples(at_ms, host, guest, cpu_cores, memory_mib) VALUES (?, ?, NULL, ?, ?)",
                  {now, host, usage.cpu_cores, usage.memory_mib}));
  for (const auto& [g, u] : usage.guests) {
    // Unchanged rows are not rewritten (most guests' usage is the same from one beat to the next).
    UW_RETURN_IF_ERROR(
        store_.Exec("UPDATE guests SET cpu_used = ?1, memory_used_mib = ?2 WHERE name = ?3 AND "
                    "host = ?4 AND (cpu_used <> ?1 OR memory_used_mib <> ?2)",
                    {u.first, u.second, g, host}));
    if (!usage.samples.empty()) continue;  // the numbered samples below carry it
    UW_RETURN_IF_ERROR(store_.Exec(
        "INSERT OR IGNORE INTO usage_samples(at_ms, host, guest, cpu_cores, memory_mib) VALUES (?, ?, ?, ?, ?)",
        {now, host, g, u.first, u.second}));
  }
  // Numbered samples: one row per host, guest and time the agent took it, however often the
  // agent sends it (again after a heartbeat whose answer it did not get).
  int64_t newest = -1;
  for (const Usage::Sample& s : usage.samples) {
    newest = std::max(newest, s.at_ms);
    for (const auto& [g, u] : s.guests) {
      UW_RETURN_IF_ERROR(store_.Exec(
          "INSERT OR IGNORE INTO usage_samples(at_ms, host, guest, cpu_cores, memory_mib, cpu_us, net_bytes, "
          "disk_bytes, seq, baseline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
          {s.at_ms, host, g, u.cpu_cores, u.memory_mib, u.cpu_us, u.net_bytes, u.disk_bytes, s.seq,
           int64_t{u.baseline}}));
    }
  }
  if (newest >= 0) {
    UW_RETURN_IF_ERROR(store_.Exec("UPDATE hosts SET samples_at_ms = MAX(COALESCE(samples_at_ms, 0), ?) WHERE name = ?",
                                   {newest, host}));
  }
  return Status::Ok();
}

Result<std::vector<HostTable::Overdue>> HostTable::OverdueSince(int64_t deadline) {
  UW_ASSIGN_OR_RETURN(
      auto rows,
      store_.Query("SELECT name, last_heartbeat_ms FROM hosts WHERE state = 'connected' AND last_heartbeat_ms < ?",
                   {deadline}));
  std::vector<Overdue> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back({r.Str("name"), r.Int("last_heartbeat_ms")});
  return out;
}

Result<bool> HostTable::Disconnect(std::string_view name) {
  const uint64_t before = store_.ChangeCount("hosts");
  UW_RETURN_IF_ERROR(store_.Exec("UPDATE hosts SET state = 'disconnected' WHERE name = ? AND state = 'connected'",
                                 {std::string(name)}));
  return store_.ChangeCount("hosts") != before;
}

Status HostTable::PoweredOff(std::string_view name) {
  return store_.Exec("UPDATE hosts SET state = 'disconnected', cpu_used = 0, memory_used_mib = 0 WHERE name = ?",
                     {std::string(name)});
}

Status HostTable::ExtendDeadlines(int64_t now) {
  return store_.Exec("UPDATE hosts SET last_heartbeat_ms = MAX(last_heartbeat_ms, ?)", {now});
}

Status HostTable::SetMaintenance(std::string_view name, bool on) {
  UW_RETURN_IF_ERROR(Require(name));
  return store_.Exec("UPDATE hosts SET maintenance = ? WHERE name = ?", {int64_t{on ? 1 : 0}, std::string(name)});
}

Status HostTable::SetGroups(std::string_view name, const std::vector<std::string>& groups) {
  UW_RETURN_IF_ERROR(Require(name));
  return store_.Exec("UPDATE hosts SET groups = ? WHERE name = ?", {Dump(Json(groups)), std::string(name)});
}

Status HostTable::PruneUsage(int64_t before) {
  return store_.Exec("DELETE FROM usage_samples WHERE at_ms < ?", {before});
}

Result<Page<Host>> HostTable::List(const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(RowPage rows, PageByKey(store_, kHostListQuery, "hosts", "h.name", "name", {}, page));
  Page<Host> out;
  out.items.reserve(rows.rows.size());
  for (const auto& r : rows.rows) out.items.push_back(HostOfRow(r));
  out.total = rows.total;
  out.next = rows.next;
  return out;
}

Result<HostDetail> HostTable::Get(std::string_view name) {
  UW_ASSIGN_OR_RETURN(
      SqlRow r, store_.QueryOne(std::string(kHostQuery) + " WHERE h.name = ?", {std::string(name)}, NotFound(name)));
  HostDetail d;
  d.host = HostOfRow(r);
  d.info = r.JsonOf("info");
  return d;
}

Result<std::vector<Host>> HostTable::ForPlacement() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT h.name, h.cpu_cores, h.memory_mib, h.state, h.maintenance, "
                                              "h.groups, COALESCE(p.phase, 'on') AS phase FROM hosts h LEFT JOIN "
                                              "host_power p ON p.host = h.name ORDER BY h.name"));
  std::vector<Host> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(CapacityOfRow(r));
  return out;
}

Status RoomToGrow(HostTable& hosts, const Guest& g, int64_t memory_mib, std::string_view field) {
  const int64_t held = g.released ? 0 : g.memory_mib;
  if (!g.host || memory_mib <= held) return Status::Ok();
  UW_ASSIGN_OR_RETURN(int64_t free, hosts.FreeMemoryMib(*g.host));
  const int64_t grow = memory_mib - held;
  if (grow <= free) return Status::Ok();
  const std::string what =
      g.released ? "guest '" + g.name + "' needs its " + std::to_string(grow) + " MiB back (its lease ended) on host "
                 : "growing guest '" + g.name + "' by " + std::to_string(grow) + " MiB needs room on host ";
  return ResourceExhaustedError(std::string(field) + ": " + what + *g.host + ", which has " +
                                std::to_string(std::max<int64_t>(free, 0)) +
                                " MiB that no other guest's grant holds; reclaim from leases there "
                                "(uwctl host reclaim) or move the guest");
}

}  // namespace uw::manager::internal
