// The guests table and its lease rows (guest_table.h).
#include "manager/guest_table.h"

#include <utility>

#include "common/id.h"
#include "manager/internal.h"

namespace uw::manager::internal {

namespace {

std::string NotFound(std::string_view name) { return "guest '" + std::string(name) + "' not found"; }

SqlValue OrNull(const std::optional<std::string>& v) { return v ? SqlValue(*v) : SqlValue(nullptr); }

Result<std::vector<Guest>> Guests(Store& store, std::string_view sql, const std::vector<SqlValue>& args) {
  UW_ASSIGN_OR_RETURN(auto rows, store.Query(sql, args));
  std::vector<Guest> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(GuestOfRow(r));
  return out;
}

Result<std::optional<Guest>> First(Result<std::vector<Guest>> guests) {
  UW_RETURN_IF_ERROR(guests.status());
  if (guests->empty()) return std::optional<Guest>();
  return std::optional<Guest>(std::move(guests->front()));
}

}  // namespace

Guest GuestOfRow(const SqlRow& r) {
  // The spec is the manager's own JSON; one that is not an object throws here (nlohmann's
  // value()), as the listing's DeriveSpecFacts expects.
  const Json spec = r.JsonOf("spec");
  auto text = [&](std::string_view c) { return r.IsNull(c) ? std::nullopt : std::optional<std::string>(r.Str(c)); };
  Guest g;
  g.name = r.Str("name");
  g.tenant = r.Str("tenant");
  g.host = text("host");
  g.pool = text("pool");
  g.kind = r.Str("kind");
  const bool paravirt = spec.value("paravirt", true);
  g.devices = g.kind == "lxc" ? "container" : paravirt ? "virtio" : "emulated";
  g.state = r.Str("state");
  g.vcpus = spec.value("vcpus", r.Int("vcpus"));
  g.memory_mib = spec.value("memory_mib", r.Int("memory_mib"));
  g.reserved_vcpus = r.Int("vcpus");
  g.reserved_memory_mib = r.Int("memory_mib");
  g.released = r.Int("released") != 0;
  g.automation = r.Str("automation");
  g.migrating_to = text("migrating_to");
  g.placement_reason = r.Str("placement_reason");
  g.alert = r.JsonOf("alert");
  g.health = text("health");
  g.on_crash = r.Str("on_crash");
  g.restart_priority = r.Str("restart_priority");
  g.crash = r.JsonOf("crash");
  g.used_cpu_cores = r.Real("cpu_used");
  g.used_memory_mib = r.Int("memory_used_mib");
  g.created_ms = r.Int("created_ms");
  return g;
}

Status GuestTable::Admit(const Admitted& g) {
  return store_.Exec(
      "INSERT INTO guests(name, tenant, host, pool, kind, vcpus, memory_mib, spec, state, automation, "
      "placement_reason, on_crash, restart_priority, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
      "'creating', ?, ?, ?, ?, ?, ?)",
      {g.name, g.tenant, g.host, OrNull(g.pool), g.kind, g.vcpus, g.memory_mib, Dump(g.spec), g.automation,
       g.placement_reason, g.on_crash, g.restart_priority, g.now_ms, g.now_ms});
}

Status GuestTable::AddFound(const Found& g) {
  return store_.Exec(
      "INSERT INTO guests(name, tenant, host, kind, vcpus, memory_mib, spec, state, placement_reason, created_ms, "
      "updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'found running on the host', ?, ?)",
      {g.name, g.tenant, g.host, g.kind, g.vcpus, g.memory_mib, Dump(g.spec), g.state, g.now_ms, g.now_ms});
}

Status GuestTable::ReleaseCreating(std::string_view name) {
  return store_.Exec("DELETE FROM guests WHERE name = ? AND state = 'creating'", {std::string(name)});
}

Status GuestTable::Remove(std::string_view name) {
  return store_.Exec("DELETE FROM guests WHERE name = ?", {std::string(name)});
}

Result<std::optional<Guest>> GuestTable::Find(std::string_view name) {
  return First(Guests(store_, "SELECT * FROM guests WHERE name = ?", {std::string(name)}));
}

Result<Guest> GuestTable::Get(std::string_view name) {
  UW_ASSIGN_OR_RETURN(std::optional<Guest> g, Find(name));
  if (!g) return NotFoundError(NotFound(name));
  return std::move(*g);
}

Result<std::optional<Guest>> GuestTable::FindOfTenant(std::string_view tenant, std::string_view key,
                                                      std::string_view short_name) {
  // Creates refuse a name the tenant holds either way (NameTaken), so both are there only in a
  // store written by hand; the cluster name wins then.
  return First(Guests(store_,
                      "SELECT * FROM guests WHERE tenant = ? AND name IN (?, ?) ORDER BY CASE WHEN name = ? THEN 0 "
                      "ELSE 1 END",
                      {std::string(tenant), std::string(key), std::string(short_name), std::string(key)}));
}

Result<std::vector<Guest>> GuestTable::WithShortName(std::string_view short_name) {
  return Guests(store_, "SELECT * FROM guests WHERE tenant <> '' AND name = tenant || ':' || ? ORDER BY name",
                {std::string(short_name)});
}

Result<bool> GuestTable::NameTaken(std::string_view key, std::string_view tenant, std::string_view short_name) {
  UW_ASSIGN_OR_RETURN(
      auto rows, store_.Query("SELECT name FROM guests WHERE name = ? OR (tenant <> '' AND tenant = ? AND name = ?)",
                              {std::string(key), std::string(tenant), std::string(short_name)}));
  return !rows.empty();
}

Result<std::string> GuestTable::TenantOf(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r,
                      store_.QueryOne("SELECT tenant FROM guests WHERE name = ?", {std::string(name)}, NotFound(name)));
  return r.Str("tenant");
}

Result<Json> GuestTable::SpecOf(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r,
                      store_.QueryOne("SELECT spec FROM guests WHERE name = ?", {std::string(name)}, NotFound(name)));
  return r.JsonOf("spec");
}

Result<std::vector<KnownGuest>> GuestTable::OnHost(std::string_view host) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT name, state, tenant, health, on_crash, crash FROM guests WHERE "
                                              "host = ? ORDER BY name",
                                              {std::string(host)}));
  std::vector<KnownGuest> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    out.push_back(
        {r.Str("name"), r.Str("tenant"), r.Str("state"), r.Str("health"), r.Str("on_crash"), r.JsonOf("crash")});
  }
  return out;
}

Result<std::vector<std::string>> GuestTable::NamesOn(std::string_view host) {
  UW_ASSIGN_OR_RETURN(auto rows,
                      store_.Query("SELECT name FROM guests WHERE host = ? ORDER BY name", {std::string(host)}));
  std::vector<std::string> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(r.Str("name"));
  return out;
}

std::optional<std::string> ListingTenant(const Principal& p) {
  return p.role == Role::kTenant ? std::optional<std::string>(p.tenant) : std::nullopt;
}

std::string StoredCursor(const Principal& p, const std::string& after) {
  return p.role == Role::kTenant && !after.empty() ? GuestKey(p.tenant, after) : after;
}

Result<std::vector<PlacementGuest>> GuestTable::ForPlacement() {
  UW_ASSIGN_OR_RETURN(
      auto rows,
      store_.Query("SELECT name, host, pool, kind, granted_vcpus, granted_memory_mib, state, automation, "
                   "cpu_used, memory_used_mib, migrating_to, restart_priority FROM guests WHERE released = 0 "
                   "ORDER BY name"));
  auto optional = [](const SqlRow& r, const char* c) {
    return r.IsNull(c) ? std::nullopt : std::optional<std::string>(r.Str(c));
  };
  std::vector<PlacementGuest> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    out.push_back({r.Str("name"), optional(r, "host"), optional(r, "pool"), r.Str("kind"), r.Str("state"),
                   r.Str("automation"), r.Int("granted_vcpus"), r.Int("granted_memory_mib"), r.Real("cpu_used"),
                   r.Int("memory_used_mib"), optional(r, "migrating_to"), r.Str("restart_priority")});
  }
  return out;
}

namespace {

constexpr const char* kListingColumns =
    "SELECT name, tenant, host, pool, kind, spec, state, vcpus, memory_mib, automation, migrating_to, "
    "placement_reason, alert, health, on_crash, restart_priority, crash, cpu_used, memory_used_mib, created_ms, rowid "
    "FROM guests";

SqlFilter TenantScope(const std::optional<std::string>& tenant) {
  SqlFilter f;
  if (tenant) f.And("tenant = ?", {*tenant});
  return f;
}

}  // namespace

Status GuestTable::ScanListing(const std::optional<std::string>& tenant, std::string_view after, int64_t limit,
                               const std::function<Status(const SqlCursor&)>& row) {
  SqlFilter filter = TenantScope(tenant);
  if (!after.empty()) filter.And("name > ?", {std::string(after)});
  filter.params.emplace_back(limit);
  return store_.Scan(std::string(kListingColumns) + filter.where + " ORDER BY name LIMIT ?", filter.params, row);
}

Result<int64_t> GuestTable::Count(const std::optional<std::string>& tenant) {
  const SqlFilter scope = TenantScope(tenant);
  UW_ASSIGN_OR_RETURN(SqlRow n,
                      store_.QueryOne("SELECT COUNT(*) AS n FROM guests" + scope.where, scope.params, "count"));
  return n.Int("n");
}

Result<Page<Guest>> GuestTable::List(const std::optional<std::string>& tenant, const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(RowPage rows,
                      PageByKey(store_, "SELECT * FROM guests", "guests", "name", "name", TenantScope(tenant), page));
  Page<Guest> out;
  out.items.reserve(rows.rows.size());
  for (const auto& r : rows.rows) out.items.push_back(GuestOfRow(r));
  out.total = rows.total;
  out.next = rows.next;
  return out;
}

Result<std::set<std::string>> GuestTable::Names() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT name FROM guests"));
  std::set<std::string> out;
  for (const auto& r : rows) out.insert(r.Str("name"));
  return out;
}

Result<std::vector<std::string>> GuestTable::NamesInPool(std::string_view pool) {
  UW_ASSIGN_OR_RETURN(auto rows,
                      store_.Query("SELECT name FROM guests WHERE pool = ? ORDER BY name", {std::string(pool)}));
  std::vector<std::string> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(r.Str("name"));
  return out;
}

Result<std::vector<PooledGrant>> GuestTable::PooledGrants() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT pool, vcpus, memory_mib FROM guests WHERE pool IS NOT NULL"));
  std::vector<PooledGrant> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back({r.Str("pool"), r.Int("vcpus"), r.Int("memory_mib")});
  return out;
}

Result<std::map<std::string, std::string>> GuestTable::AutomationByGuest() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT name, automation FROM guests"));
  std::map<std::string, std::string> out;
  for (const auto& r : rows) out[r.Str("name")] = r.Str("automation");
  return out;
}

Status GuestTable::SetState(std::string_view name, std::string_view state, int64_t now_ms) {
  return store_.Exec("UPDATE guests SET state = ?, updated_ms = ? WHERE name = ?",
                     {std::string(state), now_ms, std::string(name)});
}

Status GuestTable::SetReleased(std::string_view name, bool released) {
  return store_.Exec("UPDATE guests SET released = ? WHERE name = ? AND released <> ?",
                     {int64_t{released}, std::string(name), int64_t{released}});
}

Status GuestTable::SetStateAndSpec(std::string_view name, std::string_view state, const Json& spec, int64_t now_ms) {
  return store_.Exec("UPDATE guests SET state = ?, spec = ?, updated_ms = ? WHERE name = ?",
                     {std::string(state), Dump(spec), now_ms, std::string(name)});
}

Status GuestTable::SetSpec(std::string_view name, const Json& spec, int64_t now_ms) {
  return store_.Exec("UPDATE guests SET spec = ?, updated_ms = ? WHERE name = ?",
                     {Dump(spec), now_ms, std::string(name)});
}

Status GuestTable::SetHealth(std::string_view name, std::string_view health) {
  return store_.Exec("UPDATE guests SET health = ? WHERE name = ?",
                     {health.empty() ? SqlValue(nullptr) : SqlValue(std::string(health)), std::string(name)});
}

Result<Json> GuestTable::CrashOf(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r,
                      store_.QueryOne("SELECT crash FROM guests WHERE name = ?", {std::string(name)}, NotFound(name)));
  return r.JsonOf("crash");
}

Status GuestTable::SetCrash(std::string_view name, const Json& crash) {
  return store_.Exec("UPDATE guests SET crash = ? WHERE name = ?",
                     {crash.is_null() ? SqlValue(nullptr) : SqlValue(Dump(crash)), std::string(name)});
}

Status GuestTable::HoldMove(std::string_view name, std::string_view destination) {
  return store_.Exec("UPDATE guests SET migrating_to = ? WHERE name = ?",
                     {std::string(destination), std::string(name)});
}

Status GuestTable::EndMove(std::string_view name, const std::optional<std::string>& host,
                           const std::optional<std::string>& state, int64_t now_ms) {
  return store_.Exec(
      "UPDATE guests SET host = COALESCE(?, host), state = COALESCE(?, state), migrating_to = NULL, updated_ms = ? "
      "WHERE name = ?",
      {OrNull(host), OrNull(state), now_ms, std::string(name)});
}

Result<GuestTable::Alerted> GuestTable::AlertOf(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT tenant, alert FROM guests WHERE name = ?", {std::string(name)},
                                                NotFound(name)));
  return Alerted{std::string(name), r.Str("tenant"), r.JsonOf("alert")};
}

Result<std::vector<GuestTable::Alerted>> GuestTable::WithAlerts() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT name, tenant, alert FROM guests WHERE alert IS NOT NULL"));
  std::vector<Alerted> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back({r.Str("name"), r.Str("tenant"), r.JsonOf("alert")});
  return out;
}

Status GuestTable::SetAlert(std::string_view name, const Json& alert) {
  return store_.Exec("UPDATE guests SET alert = ? WHERE name = ?",
                     {alert.is_null() ? SqlValue(nullptr) : SqlValue(Dump(alert)), std::string(name)});
}

}  // namespace uw::manager::internal
