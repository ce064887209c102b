// The state store's schema, as forward migrations (store.h: kSchemaVersion).
#include "manager/store.h"

namespace uw::manager::internal {

extern const char* const kMigrations[kSchemaVersion];  // store.cc runs them

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
    // 12 -> 13: metering (manager/metering_service.h). Usage records per guest, lease class and span
    // (a minute, an hour, a day), keyed so that a record is never written twice; the watermarks of
    // what is recorded; samples found by guest and time.
    R"sql(
CREATE TABLE usage_records (
  guest TEXT NOT NULL,
  tenant TEXT NOT NULL,
  lease_class TEXT NOT NULL,
  span_ms INTEGER NOT NULL,
  start_ms INTEGER NOT NULL,
  gap_ms INTEGER NOT NULL DEFAULT 0,
  gap_cause TEXT NOT NULL DEFAULT '',
  sources INTEGER NOT NULL DEFAULT 1,
  vcpu_granted_ms INTEGER NOT NULL CHECK (vcpu_granted_ms >= 0),
  vcpu_used_ms INTEGER NOT NULL CHECK (vcpu_used_ms >= 0),
  memory_granted_mib_s INTEGER NOT NULL CHECK (memory_granted_mib_s >= 0),
  memory_used_mib_s INTEGER NOT NULL CHECK (memory_used_mib_s >= 0),
  disk_mib_s INTEGER NOT NULL CHECK (disk_mib_s >= 0),
  net_bytes INTEGER NOT NULL CHECK (net_bytes >= 0),
  disk_bytes INTEGER NOT NULL CHECK (disk_bytes >= 0),
  PRIMARY KEY (guest, lease_class, span_ms, start_ms)
);
CREATE INDEX usage_by_span ON usage_records(span_ms, start_ms, lease_class, guest);
CREATE INDEX usage_by_tenant ON usage_records(tenant, span_ms, start_ms);
CREATE TABLE metering_state (
  key TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
CREATE INDEX usage_samples_by_guest ON usage_samples(guest, at_ms);
)sql",
    // 13 -> 14: billing (manager/billing_service.h). Price plans, each tenant's plan, invoices with
    // their lines and the prices they were issued at, credits and adjustments as their own rows.
    // Issued invoices, their lines and adjustments never change: triggers refuse an UPDATE or DELETE.
    // The agents' numbered samples: what their counters counted since the last (CPU, NIC and disk
    // bytes), one row per host, guest and time taken; each host's newest sample's time.
    R"sql(
CREATE TABLE price_plans (
  name TEXT PRIMARY KEY,
  version INTEGER NOT NULL CHECK (version > 0),
  currency TEXT NOT NULL,
  prices TEXT NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE TABLE tenant_plans (
  tenant TEXT PRIMARY KEY,
  plan TEXT NOT NULL REFERENCES price_plans(name),
  updated_ms INTEGER NOT NULL
);
CREATE TABLE invoices (
  id TEXT PRIMARY KEY,
  seq INTEGER NOT NULL UNIQUE,
  tenant TEXT NOT NULL,
  from_ms INTEGER NOT NULL,
  to_ms INTEGER NOT NULL CHECK (to_ms > from_ms),
  plan TEXT NOT NULL,
  plan_version INTEGER NOT NULL,
  plan_json TEXT NOT NULL,
  currency TEXT NOT NULL,
  total_minor INTEGER NOT NULL,
  records INTEGER NOT NULL,
  gap_ms INTEGER NOT NULL,
  issued_ms INTEGER NOT NULL,
  issued_by TEXT NOT NULL
);
CREATE INDEX invoices_by_tenant ON invoices(tenant, from_ms);
CREATE TABLE invoice_lines (
  invoice TEXT NOT NULL REFERENCES invoices(id),
  n INTEGER NOT NULL,
  meter TEXT NOT NULL,
  lease_class TEXT NOT NULL,
  tier INTEGER NOT NULL,
  quantity INTEGER NOT NULL,
  price_micros INTEGER NOT NULL,
  amount_minor INTEGER NOT NULL,
  records INTEGER NOT NULL,
  PRIMARY KEY (invoice, n)
);
CREATE TABLE invoice_adjustments (
  id TEXT PRIMARY KEY,
  invoice TEXT NOT NULL REFERENCES invoices(id),
  kind TEXT NOT NULL CHECK (kind IN ('credit', 'adjustment')),
  amount_minor INTEGER NOT NULL,
  reason TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  created_by TEXT NOT NULL
);
CREATE INDEX adjustments_by_invoice ON invoice_adjustments(invoice, created_ms);
CREATE TRIGGER invoices_issued_update BEFORE UPDATE ON invoices
  BEGIN SELECT RAISE(ABORT, 'an issued invoice never changes'); END;
CREATE TRIGGER invoices_issued_delete BEFORE DELETE ON invoices
  BEGIN SELECT RAISE(ABORT, 'an issued invoice never changes'); END;
CREATE TRIGGER invoice_lines_update BEFORE UPDATE ON invoice_lines
  BEGIN SELECT RAISE(ABORT, 'an issued invoice never changes'); END;
CREATE TRIGGER invoice_lines_delete BEFORE DELETE ON invoice_lines
  BEGIN SELECT RAISE(ABORT, 'an issued invoice never changes'); END;
CREATE TRIGGER adjustments_update BEFORE UPDATE ON invoice_adjustments
  BEGIN SELECT RAISE(ABORT, 'credits and adjustments never change'); END;
CREATE TRIGGER adjustments_delete BEFORE DELETE ON invoice_adjustments
  BEGIN SELECT RAISE(ABORT, 'credits and adjustments never change'); END;
ALTER TABLE usage_samples ADD COLUMN cpu_us INTEGER;
ALTER TABLE usage_samples ADD COLUMN net_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_samples ADD COLUMN disk_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_samples ADD COLUMN seq INTEGER;
ALTER TABLE hosts ADD COLUMN samples_at_ms INTEGER;
DELETE FROM usage_samples WHERE guest IS NOT NULL AND id NOT IN
  (SELECT MIN(id) FROM usage_samples WHERE guest IS NOT NULL GROUP BY host, guest, at_ms);
CREATE UNIQUE INDEX usage_samples_once ON usage_samples(host, guest, at_ms) WHERE guest IS NOT NULL;
)sql",
    // 14 -> 15: a guest's first numbered sample since its agent started counting (a baseline: it
    // counts nothing). Metering records what was not counted before it as a gap.
    R"sql(
ALTER TABLE usage_samples ADD COLUMN baseline INTEGER NOT NULL DEFAULT 0;
)sql",
    // 15 -> 16: tenants' networks and their ports (manager/network_service.h). A segment (VNI or
    // VLAN tag on a physical bridge) is one network's; an address (ip, and ip_n as a number for
    // the search of the lowest free one) is one port's per network, a MAC one port's in the cluster.
    R"sql(
CREATE TABLE networks (
  key TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('overlay', 'vlan')),
  segment INTEGER NOT NULL CHECK (segment > 0),
  physical TEXT NOT NULL DEFAULT '',
  subnet TEXT NOT NULL,
  gateway TEXT,
  created_ms INTEGER NOT NULL
);
CREATE INDEX networks_by_tenant ON networks(tenant, name);
CREATE UNIQUE INDEX networks_segment ON networks(kind, physical, segment);
CREATE TABLE ports (
  id TEXT PRIMARY KEY,
  network TEXT NOT NULL REFERENCES networks(key),
  tenant TEXT NOT NULL,
  mac TEXT NOT NULL UNIQUE,
  ip TEXT NOT NULL,
  ip_n INTEGER NOT NULL,
  guest TEXT,
  created_ms INTEGER NOT NULL,
  UNIQUE (network, ip_n)
);
CREATE INDEX ports_by_tenant ON ports(tenant, id);
CREATE INDEX ports_by_guest ON ports(guest);
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kSchemaVersion);

}  // namespace uw::manager::internal
