#include "manager/store.h"

#include <spdlog/spdlog.h>

namespace uw::manager {
namespace {

// Forward migrations: kMigrations[i] takes the schema from version i to i + 1. Never edit a
// released entry; append a new one and bump kSchemaVersion.
const char* const kMigrations[] = {
    // 0 -> 1: the base schema.
    R"sql(
CREATE TABLE hosts (
  name TEXT PRIMARY KEY,
  agent_url TEXT NOT NULL,
  agent_token TEXT NOT NULL,
  host_token_hash TEXT NOT NULL,
  cpu_cores REAL NOT NULL CHECK (cpu_cores > 0),
  memory_mib INTEGER NOT NULL CHECK (memory_mib > 0),
  state TEXT NOT NULL CHECK (state IN ('connected', 'disconnected')),
  maintenance INTEGER NOT NULL DEFAULT 0,
  last_heartbeat_ms INTEGER NOT NULL,
  joined_at_ms INTEGER NOT NULL,
  cpu_used REAL NOT NULL DEFAULT 0,
  memory_used_mib INTEGER NOT NULL DEFAULT 0,
  info TEXT
);
CREATE TABLE pools (
  name TEXT PRIMARY KEY,
  parent TEXT REFERENCES pools(name),
  spec TEXT NOT NULL
);
CREATE TABLE rules (
  name TEXT PRIMARY KEY,
  spec TEXT NOT NULL
);
CREATE TABLE guests (
  name TEXT PRIMARY KEY,
  tenant TEXT NOT NULL DEFAULT '',
  host TEXT REFERENCES hosts(name),
  pool TEXT REFERENCES pools(name),
  kind TEXT NOT NULL,
  vcpus INTEGER NOT NULL CHECK (vcpus > 0),
  memory_mib INTEGER NOT NULL CHECK (memory_mib > 0),
  spec TEXT NOT NULL,
  state TEXT NOT NULL,
  automation TEXT NOT NULL DEFAULT 'default',
  placement_reason TEXT NOT NULL DEFAULT '',
  cpu_used REAL NOT NULL DEFAULT 0,
  memory_used_mib INTEGER NOT NULL DEFAULT -1,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE INDEX guests_by_host ON guests(host);
CREATE INDEX guests_by_tenant ON guests(tenant);
CREATE TABLE leases (
  id TEXT PRIMARY KEY,
  guest TEXT NOT NULL REFERENCES guests(name) ON DELETE CASCADE,
  resource TEXT NOT NULL,
  floor REAL NOT NULL,
  grant_amount REAL NOT NULL,
  term_end_ms INTEGER,
  class TEXT NOT NULL CHECK (class IN ('guaranteed', 'elastic', 'preemptible')),
  created_ms INTEGER NOT NULL
);
CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  subject TEXT NOT NULL,
  tenant TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
  progress REAL NOT NULL DEFAULT 0,
  message TEXT NOT NULL DEFAULT '',
  error_code TEXT,
  error_message TEXT,
  request TEXT NOT NULL,
  result TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE INDEX tasks_by_state ON tasks(state);
CREATE TABLE events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms INTEGER NOT NULL,
  type TEXT NOT NULL,
  subject TEXT NOT NULL,
  tenant TEXT NOT NULL DEFAULT '',
  data TEXT NOT NULL
);
CREATE TABLE recommendations (
  id TEXT PRIMARY KEY,
  created_ms INTEGER NOT NULL,
  guest TEXT NOT NULL,
  from_host TEXT NOT NULL,
  to_host TEXT NOT NULL,
  priority INTEGER NOT NULL,
  reason TEXT NOT NULL,
  gain REAL NOT NULL,
  imbalance_before REAL NOT NULL,
  imbalance_after REAL NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'superseded', 'failed')),
  note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE usage_samples (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms INTEGER NOT NULL,
  host TEXT NOT NULL,
  guest TEXT,
  cpu_cores REAL NOT NULL,
  memory_mib INTEGER NOT NULL
);
CREATE TABLE api_tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'tenant', 'billing-reader')),
  tenant TEXT NOT NULL DEFAULT '',
  token_hash TEXT NOT NULL UNIQUE,
  created_ms INTEGER NOT NULL
);
CREATE TABLE settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
)sql",
    // 1 -> 2: idempotency records for POSTs and an index for usage queries by time.
    R"sql(
CREATE TABLE idempotency (
  principal TEXT NOT NULL,
  key TEXT NOT NULL,
  method TEXT NOT NULL,
  path TEXT NOT NULL,
  body_hash TEXT NOT NULL,
  status INTEGER NOT NULL,
  response TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (principal, key)
);
CREATE INDEX usage_by_time ON usage_samples(at_ms);
)sql",
    // 2 -> 3: live migration. A guest in flight holds capacity on its destination too
    // (guests.migrating_to); each migration's persisted state machine (migration::Record).
    R"sql(
ALTER TABLE guests ADD COLUMN migrating_to TEXT REFERENCES hosts(name);
CREATE TABLE migrations (
  id TEXT PRIMARY KEY,
  task TEXT NOT NULL,
  guest TEXT NOT NULL,
  source TEXT NOT NULL,
  destination TEXT NOT NULL,
  mode TEXT NOT NULL CHECK (mode IN ('live', 'cold')),
  phase TEXT NOT NULL,
  record TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE INDEX migrations_by_guest ON migrations(guest);
CREATE INDEX migrations_by_task ON migrations(task);
)sql",
    // 3 -> 4: host groups (for vm-host rules, set by operators) and a guest's alert (a JSON object,
    // e.g. {"type": "duplicate", ...} while the guest is reported by two hosts; NULL when none).
    R"sql(
ALTER TABLE hosts ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
ALTER TABLE guests ADD COLUMN alert TEXT;
-- What happens when the guest crashes (restart | keep | stop), its last crash
-- ({"at", "console_tail", "restarts": [ms...]}) and its health as its agent reports it
-- (ready | starting | unresponsive | none).
ALTER TABLE guests ADD COLUMN on_crash TEXT NOT NULL DEFAULT 'restart';
ALTER TABLE guests ADD COLUMN crash TEXT;
ALTER TABLE guests ADD COLUMN health TEXT;
)sql",
    // 4 -> 5: the read-only role, and what a token may set in a guest spec beyond the basics,
    // granted by an admin (a JSON array of right names: host_paths, bridges, vlans, cpu_tuning, rbd_images,
    // pools, automation). SQLite cannot change a CHECK: the table is rebuilt.
    R"sql(
CREATE TABLE api_tokens_v5 (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'tenant', 'billing-reader', 'read-only')),
  tenant TEXT NOT NULL DEFAULT '',
  token_hash TEXT NOT NULL UNIQUE,
  created_ms INTEGER NOT NULL,
  rights TEXT NOT NULL DEFAULT '[]'
);
INSERT INTO api_tokens_v5(id, name, role, tenant, token_hash, created_ms)
  SELECT id, name, role, tenant, token_hash, created_ms FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_v5 RENAME TO api_tokens;
)sql",
    // 5 -> 6: each host's reservation totals (the guests placed on it, their vCPUs and memory),
    // kept by triggers on every write of guests, so that listing hosts reads one row per host
    // instead of every guest (GET /api/v1/hosts fell from 16,000 to 900 requests/s at 2,000 guests).
    R"sql(
CREATE TABLE host_reservations (
  host TEXT PRIMARY KEY REFERENCES hosts(name) ON DELETE CASCADE,
  guests INTEGER NOT NULL DEFAULT 0,
  vcpus INTEGER NOT NULL DEFAULT 0,
  memory_mib INTEGER NOT NULL DEFAULT 0
);
INSERT INTO host_reservations(host, guests, vcpus, memory_mib)
  SELECT h.name, COUNT(g.name), COALESCE(SUM(g.vcpus), 0), COALESCE(SUM(g.memory_mib), 0)
  FROM hosts h LEFT JOIN guests g ON g.host = h.name GROUP BY h.name;
-- Heartbeats look up the guests with an alert and the tasks that ended lately: without these
-- indexes every heartbeat read every guest and every task ever run.
CREATE INDEX guests_with_alert ON guests(name) WHERE alert IS NOT NULL;
CREATE INDEX tasks_by_updated ON tasks(updated_ms);
CREATE TRIGGER host_reservations_new_host AFTER INSERT ON hosts BEGIN
  INSERT OR IGNORE INTO host_reservations(host) VALUES (NEW.name);
END;
CREATE TRIGGER host_reservations_guest_added AFTER INSERT ON guests WHEN NEW.host IS NOT NULL BEGIN
  UPDATE host_reservations SET guests = guests + 1, vcpus = vcpus + NEW.vcpus, memory_mib = memory_mib + NEW.memory_mib
    WHERE host = NEW.host;
END;
CREATE TRIGGER host_reservations_guest_removed AFTER DELETE ON guests WHEN OLD.host IS NOT NULL BEGIN
  UPDATE host_reservations SET guests = guests - 1, vcpus = vcpus - OLD.vcpus, memory_mib = memory_mib - OLD.memory_mib
    WHERE host = OLD.host;
END;
CREATE TRIGGER host_reservations_guest_changed AFTER UPDATE OF host, vcpus, memory_mib ON guests BEGIN
  UPDATE host_reservations SET guests = guests - 1, vcpus = vcpus - OLD.vcpus, memory_mib = memory_mib - OLD.memory_mib
    WHERE host = OLD.host;
  UPDATE host_reservations SET guests = guests + 1, vcpus = vcpus + NEW.vcpus, memory_mib = memory_mib + NEW.memory_mib
    WHERE host = NEW.host;
END;
)sql",
    // 6 -> 7: leases as the exokernel interface reads them (lease/lease.h): one lease per guest
    // with its class, grant, floor, term and state, kept after the guest is deleted (closed); the
    // notices sent before anything is taken from a guest and the repossession records of what was.
    // The old per-resource rows (no term, read by nothing) become one lease per guest.
    R"sql(
CREATE TABLE leases_v7 (
  id TEXT PRIMARY KEY,
  guest TEXT NOT NULL,
  tenant TEXT NOT NULL DEFAULT '',
  class TEXT NOT NULL CHECK (class IN ('guaranteed', 'elastic', 'preemptible')),
  vcpus INTEGER NOT NULL,
  memory_mib INTEGER NOT NULL,
  floor_vcpus INTEGER NOT NULL,
  floor_memory_mib INTEGER NOT NULL,
  term_ms INTEGER,      -- the length of a term (renewals at the term end add it); NULL: open-ended
  term_end_ms INTEGER,  -- NULL: open-ended
  state TEXT NOT NULL CHECK (state IN ('nascent', 'active', 'extending', 'closing', 'closed', 'failed')),
  history TEXT NOT NULL DEFAULT '[]',
  renewal TEXT,         -- a pending renewal {"vcpus", "memory_mib", "term_end_ms"} for the term end
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
INSERT INTO leases_v7(id, guest, tenant, class, vcpus, memory_mib, floor_vcpus, floor_memory_mib, state, created_ms,
                      updated_ms)
  SELECT COALESCE((SELECT l.id FROM leases l WHERE l.guest = g.name ORDER BY l.resource LIMIT 1), 'lease-' || g.name),
         g.name, g.tenant, c.class, c.vcpus, c.memory_mib,
         CASE c.class WHEN 'guaranteed' THEN c.vcpus WHEN 'elastic' THEN 1 ELSE 0 END,
         CASE c.class WHEN 'guaranteed' THEN c.memory_mib WHEN 'elastic' THEN MIN(c.memory_mib, 128) ELSE 0 END,
         CASE g.state WHEN 'creating' THEN 'nascent' ELSE 'active' END, g.created_ms, g.updated_ms
  FROM guests g JOIN (
    SELECT name,
           COALESCE((SELECT class FROM leases WHERE guest = name LIMIT 1), 'guaranteed') AS class,
           COALESCE(json_extract(spec, '$.vcpus'), vcpus) AS vcpus,
           COALESCE(json_extract(spec, '$.memory_mib'), memory_mib) AS memory_mib
    FROM guests) c ON c.name = g.name;
DROP TABLE leases;
ALTER TABLE leases_v7 RENAME TO leases;
CREATE INDEX leases_by_guest ON leases(guest);
CREATE INDEX leases_by_tenant ON leases(tenant);
-- The lease loop's scan for terms that end (every second).
CREATE INDEX leases_by_term_end ON leases(term_end_ms) WHERE state = 'active' AND term_end_ms IS NOT NULL;
CREATE TABLE notices (
  id TEXT PRIMARY KEY,
  lease TEXT NOT NULL,
  guest TEXT NOT NULL,
  tenant TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  act_at_ms INTEGER NOT NULL,  -- when the system acts (lease::ActAt), kept for the due scan
  notice TEXT NOT NULL,        -- the whole notice (lease::Notice as JSON)
  delivery TEXT NOT NULL DEFAULT '{"state": "pending"}',  -- how it reached the guest
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE INDEX notices_by_guest ON notices(guest);
CREATE INDEX notices_open ON notices(act_at_ms) WHERE state <> 'acted';
CREATE TABLE repossessions (
  id TEXT PRIMARY KEY,  -- the notice's id
  lease TEXT NOT NULL,
  guest TEXT NOT NULL,
  tenant TEXT NOT NULL DEFAULT '',
  record TEXT NOT NULL,  -- lease::Repossession as JSON
  created_ms INTEGER NOT NULL
);
CREATE INDEX repossessions_by_guest ON repossessions(guest);
)sql",
    // 7 -> 8: the market broker (lease/broker.h): each lease's bid, in credits per GiB-hour, and
    // each tenant's budget, the most its bids may cost per hour.
    R"sql(
ALTER TABLE leases ADD COLUMN bid INTEGER NOT NULL DEFAULT 0 CHECK (bid >= 0);
CREATE TABLE budgets (
  tenant TEXT PRIMARY KEY,
  per_hour INTEGER NOT NULL CHECK (per_hour >= 0),
  updated_ms INTEGER NOT NULL
);
)sql",
    // 8 -> 9: admission, DRS and the hosts' reservations count what each guest's lease grants now
    // (its spec's vcpus and memory, which a lease shrink lowers; nothing once its lease ended), not
    // the maxima it was created with; a notice sent to make room for an admitted guest names that
    // guest (never shown to the notice's tenant) so that its counter-offers are weighed against the
    // room owed; each lease keeps its guest's CPU shares (the proportional broker weighs them).
    R"sql(
-- released: the guest's lease ended (released, preempted) while it stays defined, stopped; it holds
-- no room on its host until it is started again.
ALTER TABLE guests ADD COLUMN released INTEGER NOT NULL DEFAULT 0;
ALTER TABLE guests ADD COLUMN granted_vcpus INTEGER GENERATED ALWAYS AS
  (CASE WHEN released THEN 0 ELSE COALESCE(json_extract(spec, '$.vcpus'), vcpus) END) VIRTUAL;
ALTER TABLE guests ADD COLUMN granted_memory_mib INTEGER GENERATED ALWAYS AS
  (CASE WHEN released THEN 0 ELSE COALESCE(json_extract(spec, '$.memory_mib'), memory_mib) END) VIRTUAL;
DROP TRIGGER host_reservations_guest_added;
DROP TRIGGER host_reservations_guest_removed;
DROP TRIGGER host_reservations_guest_changed;
CREATE TRIGGER host_reservations_guest_added AFTER INSERT ON guests WHEN NEW.host IS NOT NULL BEGIN
  UPDATE host_reservations SET guests = guests + 1, vcpus = vcpus + NEW.granted_vcpus,
    memory_mib = memory_mib + NEW.granted_memory_mib WHERE host = NEW.host;
END;
CREATE TRIGGER host_reservations_guest_removed AFTER DELETE ON guests WHEN OLD.host IS NOT NULL BEGIN
  UPDATE host_reservations SET guests = guests - 1, vcpus = vcpus - OLD.granted_vcpus,
    memory_mib = memory_mib - OLD.granted_memory_mib WHERE host = OLD.host;
END;
CREATE TRIGGER host_reservations_guest_changed AFTER UPDATE OF host, vcpus, memory_mib, spec, released ON guests BEGIN
  UPDATE host_reservations SET guests = guests - 1, vcpus = vcpus - OLD.granted_vcpus,
    memory_mib = memory_mib - OLD.granted_memory_mib WHERE host = OLD.host;
  UPDATE host_reservations SET guests = guests + 1, vcpus = vcpus + NEW.granted_vcpus,
    memory_mib = memory_mib + NEW.granted_memory_mib WHERE host = NEW.host;
END;
UPDATE host_reservations SET
  guests = (SELECT COUNT(*) FROM guests g WHERE g.host = host_reservations.host),
  vcpus = (SELECT COALESCE(SUM(g.granted_vcpus), 0) FROM guests g WHERE g.host = host_reservations.host),
  memory_mib = (SELECT COALESCE(SUM(g.granted_memory_mib), 0) FROM guests g WHERE g.host = host_reservations.host);
ALTER TABLE notices ADD COLUMN makes_room_for TEXT;
ALTER TABLE leases ADD COLUMN shares INTEGER NOT NULL DEFAULT 1024 CHECK (shares > 0);
)sql",
    // 9 -> 10: power management. A host with a power driver (its BMC's address and credentials, or
    // the operator's commands; the secrets are never returned by the API) and where it is in a
    // power operation: phase `on`, `entering_standby` (powering off), `standby` (off), `waking`
    // (powered on, its agent not back yet).
    R"sql(
CREATE TABLE host_power (
  host TEXT PRIMARY KEY REFERENCES hosts(name) ON DELETE CASCADE,
  config TEXT NOT NULL,
  phase TEXT NOT NULL DEFAULT 'on' CHECK (phase IN ('on', 'entering_standby', 'standby', 'waking')),
  phase_since_ms INTEGER NOT NULL,
  wake_tested_ms INTEGER,
  last_error TEXT,
  updated_ms INTEGER NOT NULL
);
)sql",
    // 10 -> 11: high availability. A host's power phase may also be `isolated` (no heartbeat, its
    // BMC says on), `fencing` (being powered off by HA) and `failed` (fenced: off, its guests
    // restarted elsewhere); SQLite cannot widen a CHECK, so the table is copied. A guest's restart
    // priority orders HA's restarts (disabled: never restarted elsewhere).
    R"sql(
CREATE TABLE host_power_11 (
  host TEXT PRIMARY KEY REFERENCES hosts(name) ON DELETE CASCADE,
  config TEXT NOT NULL,
  phase TEXT NOT NULL DEFAULT 'on'
    CHECK (phase IN ('on', 'entering_standby', 'standby', 'waking', 'isolated', 'fencing', 'failed')),
  phase_since_ms INTEGER NOT NULL,
  wake_tested_ms INTEGER,
  last_error TEXT,
  updated_ms INTEGER NOT NULL
);
INSERT INTO host_power_11 SELECT host, config, phase, phase_since_ms, wake_tested_ms, last_error, updated_ms
  FROM host_power;
DROP TABLE host_power;
ALTER TABLE host_power_11 RENAME TO host_power;
ALTER TABLE guests ADD COLUMN restart_priority TEXT NOT NULL DEFAULT 'medium'
  CHECK (restart_priority IN ('high', 'medium', 'low', 'disabled'));
)sql",
    // 11 -> 12: the storage catalogue (manager/storage_service.h). Images are the cluster's; a
    // volume is a tenant's, unique per tenant by name ("<tenant>:<name>" like guests), stored on
    // the backend under its own id (so that names never meet there). `guest` is the guest whose
    // disk it is; `state` is `creating` until the backend has it (a manager killed in between
    // finds the row at start and settles it). A tenant's quota caps the GiB of its volumes.
    R"sql(
CREATE TABLE images (
  name TEXT PRIMARY KEY,
  backend TEXT NOT NULL,
  format TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  used_bytes INTEGER NOT NULL,
  source TEXT NOT NULL,
  created_ms INTEGER NOT NULL
);
CREATE TABLE volumes (
  key TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  backend_name TEXT NOT NULL UNIQUE,
  backend TEXT NOT NULL,
  image TEXT REFERENCES images(name),
  size_gib INTEGER NOT NULL CHECK (size_gib > 0),
  state TEXT NOT NULL CHECK (state IN ('creating', 'ready')),
  guest TEXT,
  delete_with_guest INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL
);
CREATE INDEX volumes_by_tenant ON volumes(tenant, name);
CREATE INDEX volumes_by_guest ON volumes(guest);
CREATE TABLE storage_quotas (
  tenant TEXT PRIMARY KEY,
  gib INTEGER NOT NULL CHECK (gib >= 0),
  updated_ms INTEGER NOT NULL
);
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kSchemaVersion);

}  // namespace

const SqlValue* SqlRow::Find(std::string_view c) const {
  if (!names) return nullptr;
  for (size_t i = 0; i < names->size() && i < values.size(); ++i) {
    if ((*names)[i] == c) return &values[i];
  }
  return nullptr;
}
std::string SqlRow::Str(std::string_view c) const {
  const SqlValue* v = Find(c);
  if (!v) return "";
  if (auto* s = std::get_if<std::string>(v)) return *s;
  if (auto* i = std::get_if<int64_t>(v)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(v)) return std::to_string(*d);
  return "";
}
int64_t SqlRow::Int(std::string_view c) const {
  const SqlValue* v = Find(c);
  if (!v) return 0;
  if (auto* i = std::get_if<int64_t>(v)) return *i;
  if (auto* d = std::get_if<double>(v)) return static_cast<int64_t>(*d);
  return 0;
}
double SqlRow::Real(std::string_view c) const {
  const SqlValue* v = Find(c);
  if (!v) return 0;
  if (auto* d = std::get_if<double>(v)) return *d;
  if (auto* i = std::get_if<int64_t>(v)) return static_cast<double>(*i);
  return 0;
}
bool SqlRow::IsNull(std::string_view c) const {
  const SqlValue* v = Find(c);
  return !v || std::holds_alternative<std::nullptr_t>(*v);
}
Json SqlRow::JsonOf(std::string_view c) const {
  if (IsNull(c)) return nullptr;
  const std::string* text = std::get_if<std::string>(Find(c));
  Json j = text ? Json::parse(*text, nullptr, false) : Json::parse(Str(c), nullptr, false);
  return j.is_discarded() ? Json(nullptr) : j;
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    if (db) sqlite3_close(db);
    return UnavailableError("cannot open state store " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<Store> store(new Store(db));
  // Runs inside sqlite3_step, so under the store's mutex.
  sqlite3_update_hook(
      db,
      [](void* self, int, const char*, const char* table, sqlite3_int64 rowid) {
        auto* store = static_cast<Store*>(self);
        auto it = store->changes_.find(std::string_view(table));
        if (it == store->changes_.end()) it = store->changes_.emplace(table, 0).first;
        ++it->second;
        if (auto t = store->tracked_.find(std::string_view(table)); t != store->tracked_.end() && !t->second.all) {
          t->second.rowids.push_back(rowid);
          if (t->second.rowids.size() > kMaxTrackedRows) {
            t->second.all = true;
            t->second.rowids.clear();
          }
        }
      },
      store.get());
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL"}) {
    char* err = nullptr;
    if (sqlite3_exec(db, pragma, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "?";
      sqlite3_free(err);
      return UnavailableError("state store " + path + ": " + pragma + ": " + msg);
    }
  }
  UW_RETURN_IF_ERROR(store->Migrate().WithContext("state store " + path));
  return store;
}

Store::~Store() {
  for (auto& [sql, st] : stmts_) sqlite3_finalize(st);
  sqlite3_close(db_);
}

Status Store::Migrate() {
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(auto rows, Query("PRAGMA user_version"));
  int version = rows.empty() ? 0 : static_cast<int>(rows[0].Int("user_version"));
  if (version > kSchemaVersion) {
    return FailedPreconditionError("schema version " + std::to_string(version) + " is newer than this uw-manager (" +
                                   std::to_string(kSchemaVersion) + "); run a newer uw-manager");
  }
  for (int v = version; v < kSchemaVersion; ++v) {
    std::string sql = std::string("BEGIN IMMEDIATE;\n") + kMigrations[v] +
                      "\nPRAGMA user_version = " + std::to_string(v + 1) + ";\nCOMMIT;";
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "?";
      sqlite3_free(err);
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return InternalError("migration " + std::to_string(v) + " -> " + std::to_string(v + 1) + " failed: " + msg);
    }
    spdlog::info("state store migrated to schema version {}", v + 1);
  }
  schema_version_ = kSchemaVersion;
  return Status::Ok();
}

Status Store::SqlError(int rc, std::string_view sql) {
  std::string msg = sqlite3_errmsg(db_);
  int ext = sqlite3_extended_errcode(db_);
  std::string where = std::string(sql.substr(0, 60));
  if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return AlreadyExistsError(msg);
  }
  if ((rc & 0xff) == SQLITE_CONSTRAINT) return FailedPreconditionError(msg);
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
    return UnavailableError("state store busy: " + msg);
  }
  return InternalError("state store: " + msg + " (in: " + where + ")");
}

Result<sqlite3_stmt*> Store::Prepare(std::string_view sql) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) {
    sqlite3_reset(it->second);
    sqlite3_clear_bindings(it->second);
    return it->second;
  }
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &st, nullptr);
  if (rc != SQLITE_OK) return SqlError(rc, sql);
  stmts_.emplace(std::string(sql), st);
  return st;
}

Status Store::Bind(sqlite3_stmt* st, const std::vector<SqlValue>& args, std::string_view sql) {
  for (size_t i = 0; i < args.size(); ++i) {
    int idx = static_cast<int>(i + 1);
    int rc = std::visit(
        [&](const auto& v) -> int {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::nullptr_t>)
            return sqlite3_bind_null(st, idx);
          else if constexpr (std::is_same_v<T, int64_t>)
            return sqlite3_bind_int64(st, idx, v);
          else if constexpr (std::is_same_v<T, double>)
            return sqlite3_bind_double(st, idx, v);
          else
            return sqlite3_bind_text(st, idx, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
        },
        args[i]);
    if (rc != SQLITE_OK) return SqlError(rc, sql);
  }
  return Status::Ok();
}

Status Store::Exec(std::string_view sql, const std::vector<SqlValue>& args) {
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(sqlite3_stmt * st, Prepare(sql));
  UW_RETURN_IF_ERROR(Bind(st, args, sql));
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
  }
  Status s = rc == SQLITE_DONE ? Status::Ok() : SqlError(rc, sql);
  sqlite3_reset(st);
  return s;
}

Result<std::vector<SqlRow>> Store::Query(std::string_view sql, const std::vector<SqlValue>& args) {
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(sqlite3_stmt * st, Prepare(sql));
  UW_RETURN_IF_ERROR(Bind(st, args, sql));
  std::vector<SqlRow> rows;
  const int n = sqlite3_column_count(st);
  auto names = std::make_shared<std::vector<std::string>>();
  for (int i = 0; i < n; ++i) names->emplace_back(sqlite3_column_name(st, i));
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    SqlRow row;
    row.names = names;
    row.values.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER:
          row.values.emplace_back(static_cast<int64_t>(sqlite3_column_int64(st, i)));
          break;
        case SQLITE_FLOAT:
          row.values.emplace_back(sqlite3_column_double(st, i));
          break;
        case SQLITE_NULL:
          row.values.emplace_back(nullptr);
          break;
        default: {
          const unsigned char* t = sqlite3_column_text(st, i);
          row.values.emplace_back(std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(st, i)));
        }
      }
    }
    rows.push_back(std::move(row));
  }
  Status s = rc == SQLITE_DONE ? Status::Ok() : SqlError(rc, sql);
  sqlite3_reset(st);
  if (!s.ok()) return s;
  return rows;
}

Status Store::Scan(std::string_view sql, const std::vector<SqlValue>& args,
                   const std::function<Status(const SqlCursor&)>& fn) {
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(sqlite3_stmt * st, Prepare(sql));
  UW_RETURN_IF_ERROR(Bind(st, args, sql));
  const SqlCursor cursor(st);
  Status s = Status::Ok();
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    s = fn(cursor);
    if (!s.ok()) break;
  }
  if (s.ok() && rc != SQLITE_DONE) s = SqlError(rc, sql);
  sqlite3_reset(st);
  return s;
}

Result<SqlRow> Store::QueryOne(std::string_view sql, const std::vector<SqlValue>& args, std::string_view what) {
  UW_ASSIGN_OR_RETURN(auto rows, Query(sql, args));
  if (rows.empty()) return NotFoundError(std::string(what));
  return std::move(rows[0]);
}

uint64_t Store::ChangeCount(std::string_view table) {
  std::lock_guard l(mu_);
  auto it = changes_.find(table);
  return it == changes_.end() ? 0 : it->second;
}

Store::ChangedRows Store::TakeChangedRows(std::string_view table) {
  std::lock_guard l(mu_);
  auto it = tracked_.find(table);
  if (it == tracked_.end()) {
    tracked_.emplace(std::string(table), ChangedRows{});
    return ChangedRows{true, {}};  // not tracked until now: anything may have changed
  }
  ChangedRows out;
  std::swap(out, it->second);
  return out;
}

int64_t Store::LastInsertRowId() {
  std::lock_guard l(mu_);
  return sqlite3_last_insert_rowid(db_);
}

Status Store::Transact(const std::function<Status()>& fn) {
  std::lock_guard l(mu_);
  UW_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Status s;
  try {
    s = fn();
  } catch (const std::exception& e) {
    // A transaction left open would refuse every later BEGIN until restart ("cannot start a
    // transaction within a transaction"): roll back whatever `fn` throws, then report it.
    s = InternalError(std::string("state store transaction aborted by an exception: ") + e.what());
  }
  if (s.ok()) {
    s = Exec("COMMIT");
    if (s.ok()) return s;
  }
  Status r = Exec("ROLLBACK");
  if (!r.ok()) spdlog::error("state store rollback failed: {}", r.ToString());
  return s;
}

}  // namespace uw::manager
