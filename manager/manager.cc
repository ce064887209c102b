#include "manager/manager.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include <spdlog/spdlog.h>

#include "api/http.h"
#include "common/id.h"
#include "manager/event_bus.h"
#include "manager/internal.h"
#include "manager/snapshot_builder.h"
#include "placement/placement.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

using internal::Dump;
using internal::IsFinal;
using internal::kMaxTaskAttempts;
using internal::NeedWrite;
using internal::Wrap;

namespace {

// A guest's cluster-wide name: a tenant's guest "web1" is "acme:web1" (names are unique per tenant).
std::string GuestKey(const std::string& tenant, const std::string& name) {
  return tenant.empty() ? name : tenant + ":" + name;
}

// Tenants see their guests by their short names: strips "<tenant>:" from the guest-naming fields
// of `j` (name, subject, guest, and data.subject / data.guest of events). A no-op for other roles.
void ShowShortNames(const Principal& p, Json& j) {
  if (p.role != Role::kTenant || !j.is_object()) return;
  auto strip = [&](Json& o, const char* field) {
    auto it = o.find(field);
    if (it == o.end() || !it->is_string()) return;
    const std::string& v = it->get_ref<const std::string&>();
    if (std::string_view shown = internal::ShownGuestName(p, v); shown.size() != v.size()) *it = std::string(shown);
  };
  for (const char* f : {"name", "subject", "guest"}) strip(j, f);
  if (auto d = j.find("data"); d != j.end() && d->is_object()) {
    for (const char* f : {"subject", "guest"}) strip(*d, f);
  }
}

}  // namespace

std::string_view RoleName(Role r) {
  switch (r) {
    case Role::kAdmin: return "admin";
    case Role::kOperator: return "operator";
    case Role::kTenant: return "tenant";
    case Role::kBillingReader: return "billing-reader";
    case Role::kReadOnly: return "read-only";
  }
  return "?";
}

Result<Role> ParseRole(std::string_view name) {
  if (name == "admin") return Role::kAdmin;
  if (name == "operator") return Role::kOperator;
  if (name == "tenant") return Role::kTenant;
  if (name == "billing-reader") return Role::kBillingReader;
  if (name == "read-only") return Role::kReadOnly;
  return InvalidArgumentError("role: expected admin, operator, tenant, billing-reader or read-only, got '" + std::string(name) +
                              "'");
}

std::string Sha256Hex(std::string_view text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(text.data(), text.size(), md, &n, EVP_sha256(), nullptr);
  std::string out;
  char buf[3];
  for (unsigned i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", md[i]);
    out += buf;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Config and request parsing

Result<ManagerConfig> ManagerConfigFromJson(const Json& j, std::string_view where) {
  auto fail = [&](const Status& s) { return s.WithContext(where); };
  auto root = JsonView::Of(j, "");
  if (!root.ok()) return fail(root.status());
  const JsonView& v = *root;
  if (Status s = v.RejectUnknown({"db_path", "listen", "join_token", "admin_token", "heartbeat_interval_ms",
                                  "heartbeat_timeout_ms", "drs_interval_ms", "task_workers", "agent_timeout_ms",
                                  "max_body_bytes", "heartbeat_max_body_bytes", "http_workers", "max_connections",
                                  "max_connections_per_client", "header_timeout_ms", "body_timeout_ms",
                                  "placement_policy", "log_level", "log_file",
                                  "migration"});
      !s.ok()) {
    return fail(s);
  }
  ManagerConfig c;
#define UW_CFG(lhs, expr)                   \
  do {                                      \
    auto r_ = (expr);                       \
    if (!r_.ok()) return fail(r_.status()); \
    lhs = std::move(*r_);                   \
  } while (0)
  UW_CFG(c.db_path, v.String("db_path"));
  if (v.Has("listen")) {
    JsonView l = JsonView::Of(j, "").value();
    UW_CFG(l, v.Object("listen"));
    UW_CFG(c.listen_address, l.String("address", c.listen_address));
    int64_t port = 0;
    UW_CFG(port, l.Int("port", c.listen_port));
    if (port < 0 || port > 65535) return fail(l.FieldError("port", "expected 0..65535"));
    c.listen_port = static_cast<int>(port);
  }
  UW_CFG(c.join_token, v.String("join_token"));
  if (c.join_token.size() < 16) return fail(v.FieldError("join_token", "must be at least 16 characters"));
  UW_CFG(c.admin_token, v.String("admin_token"));
  if (c.admin_token.size() < 16) return fail(v.FieldError("admin_token", "must be at least 16 characters"));
  auto int_in = [&](std::string_view key, int& out, int64_t lo, int64_t hi) -> Status {
    auto r = v.Int(key, out);
    if (!r.ok()) return r.status();
    if (*r < lo || *r > hi) {
      return v.FieldError(key, "expected " + std::to_string(lo) + ".." + std::to_string(hi));
    }
    out = static_cast<int>(*r);
    return Status::Ok();
  };
  if (Status s = int_in("heartbeat_interval_ms", c.heartbeat_interval_ms, 50, 600000); !s.ok()) return fail(s);
  if (Status s = int_in("heartbeat_timeout_ms", c.heartbeat_timeout_ms, 100, 3600000); !s.ok()) return fail(s);
  if (c.heartbeat_timeout_ms <= c.heartbeat_interval_ms) {
    return fail(v.FieldError("heartbeat_timeout_ms", "must be larger than heartbeat_interval_ms"));
  }
  if (Status s = int_in("drs_interval_ms", c.drs_interval_ms, 0, 86400000); !s.ok()) return fail(s);
  if (Status s = int_in("task_workers", c.task_workers, 1, 256); !s.ok()) return fail(s);
  if (Status s = int_in("agent_timeout_ms", c.agent_timeout_ms, 100, 3600000); !s.ok()) return fail(s);
  if (Status s = int_in("http_workers", c.http_workers, 2, 1024); !s.ok()) return fail(s);
  int64_t n = 0;
  UW_CFG(n, v.Int("max_body_bytes", static_cast<int64_t>(c.max_body_bytes)));
  if (n < 1024) return fail(v.FieldError("max_body_bytes", "expected at least 1024"));
  c.max_body_bytes = static_cast<size_t>(n);
  UW_CFG(n, v.Int("heartbeat_max_body_bytes", static_cast<int64_t>(c.heartbeat_max_body_bytes)));
  if (n < 1024) return fail(v.FieldError("heartbeat_max_body_bytes", "expected at least 1024"));
  c.heartbeat_max_body_bytes = static_cast<size_t>(n);
  if (Status s = int_in("max_connections", c.max_connections, 16, 1'000'000); !s.ok()) return fail(s);
  if (Status s = int_in("header_timeout_ms", c.header_timeout_ms, 100, 600'000); !s.ok()) return fail(s);
  if (Status s = int_in("body_timeout_ms", c.body_timeout_ms, 100, 3'600'000); !s.ok()) return fail(s);
  if (Status s = int_in("max_connections_per_client", c.max_connections_per_client, 1, 1'000'000); !s.ok()) {
    return fail(s);
  }
  UW_CFG(c.placement_policy, v.String("placement_policy", c.placement_policy));
  if (c.placement_policy != "drs" && c.placement_policy != "opportunity-cost") {
    return fail(v.FieldError("placement_policy", "expected drs or opportunity-cost"));
  }
  UW_CFG(c.log_level, v.String("log_level", c.log_level));
  UW_CFG(c.log_file, v.String("log_file", ""));
  if (v.Has("migration")) {
    JsonView m = JsonView::Of(j, "").value();
    UW_CFG(m, v.Object("migration"));
    if (Status s = m.RejectUnknown({"per_host", "cluster", "poll_ms", "agent_grace_ms", "verify_window_ms",
                                    "verify_timeout_ms", "convergence"});
        !s.ok()) {
      return fail(s);
    }
    Json caps = Json::object();
    for (const char* k : {"per_host", "cluster"}) {
      if (m.json().contains(k)) caps[k] = m.json()[k];
    }
    UW_CFG(c.migration_caps, migration::ParseCaps(caps, "migration"));
    if (m.Has("convergence")) {
      UW_CFG(c.convergence, migration::ParseConvergencePolicy(m.json()["convergence"], "migration.convergence"));
    }
    int64_t ms = 0;
    UW_CFG(ms, m.Int("poll_ms", c.migration_poll_ms));
    if (ms < 50 || ms > 60000) return fail(m.FieldError("poll_ms", "expected 50..60000"));
    c.migration_poll_ms = static_cast<int>(ms);
    UW_CFG(ms, m.Int("agent_grace_ms", c.migration_agent_grace_ms));
    if (ms < 0 || ms > 3600000) return fail(m.FieldError("agent_grace_ms", "expected 0..3600000"));
    c.migration_agent_grace_ms = static_cast<int>(ms);
    UW_CFG(ms, m.Int("verify_window_ms", c.migration_verify_window_ms));
    if (ms < 0 || ms > 600000) return fail(m.FieldError("verify_window_ms", "expected 0..600000"));
    c.migration_verify_window_ms = static_cast<int>(ms);
    UW_CFG(ms, m.Int("verify_timeout_ms", c.migration_verify_timeout_ms));
    if (ms < c.migration_verify_window_ms || ms > 3600000) {
      return fail(m.FieldError("verify_timeout_ms", "expected verify_window_ms..3600000"));
    }
    c.migration_verify_timeout_ms = static_cast<int>(ms);
  }
#undef UW_CFG
  return c;
}

Result<ManagerConfig> LoadManagerConfig(const std::string& path) {
  UW_ASSIGN_OR_RETURN(Json j, LoadJsonFile(path));
  return ManagerConfigFromJson(j, path);
}

Status ValidateRight(std::string_view name, std::string_view field) {
  for (std::string_view r : kSpecRights) {
    if (r == name) return Status::Ok();
  }
  std::string all;
  for (std::string_view r : kSpecRights) all += (all.empty() ? "" : ", ") + std::string(r);
  return InvalidArgumentError(std::string(field) + ": unknown right '" + std::string(name) + "' (rights: " + all + ")");
}

Result<GuestCreate> ParseGuestCreate(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"name", "tenant", "pool", "kind", "vcpus", "max_vcpus", "memory_mib",
                                      "max_memory_mib", "image", "boot", "nics", "labels", "start", "paravirt",
                                      "automation", "lease_class", "cpu", "disks", "on_crash"}));
  GuestCreate g;
  UW_ASSIGN_OR_RETURN(g.name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(g.name, "name"));
  UW_ASSIGN_OR_RETURN(g.tenant, v.String("tenant", ""));
  if (!g.tenant.empty()) UW_RETURN_IF_ERROR(ValidateName(g.tenant, "tenant"));
  UW_ASSIGN_OR_RETURN(g.pool, v.String("pool", ""));
  UW_ASSIGN_OR_RETURN(g.kind, v.String("kind", "qemu"));
  if (g.kind != "kvm" && g.kind != "qemu" && g.kind != "lxc") return v.FieldError("kind", "expected kvm, qemu or lxc");
  UW_ASSIGN_OR_RETURN(g.vcpus, v.Int("vcpus", 1));
  if (g.vcpus < 1 || g.vcpus > 4096) return v.FieldError("vcpus", "expected 1..4096");
  UW_ASSIGN_OR_RETURN(int64_t max_vcpus, v.Int("max_vcpus", g.vcpus));
  if (max_vcpus < g.vcpus || max_vcpus > 4096) return v.FieldError("max_vcpus", "expected vcpus..4096");
  UW_ASSIGN_OR_RETURN(int64_t mem, v.Int("memory_mib", 256));
  if (mem < 16 || mem > (int64_t{16} << 20)) return v.FieldError("memory_mib", "expected 16..16777216");
  UW_ASSIGN_OR_RETURN(int64_t max_mem, v.Int("max_memory_mib", mem));
  if (max_mem < mem || max_mem > (int64_t{16} << 20)) {
    return v.FieldError("max_memory_mib", "expected memory_mib..16777216");
  }
  g.memory_mib = max_mem;  // the reservation covers what the guest may grow to
  UW_ASSIGN_OR_RETURN(g.automation, v.String("automation", "default"));
  if (g.automation != "default" && g.automation != "manual" && g.automation != "automatic" &&
      g.automation != "disabled") {
    return v.FieldError("automation", "expected default, manual, automatic or disabled");
  }
  UW_ASSIGN_OR_RETURN(g.lease_class, v.String("lease_class", "guaranteed"));
  if (g.lease_class != "guaranteed" && g.lease_class != "elastic" && g.lease_class != "preemptible") {
    return v.FieldError("lease_class", "expected guaranteed, elastic or preemptible");
  }
  UW_ASSIGN_OR_RETURN(g.on_crash, v.String("on_crash", "restart"));
  if (g.on_crash != "restart" && g.on_crash != "keep" && g.on_crash != "stop") {
    return v.FieldError("on_crash", "expected restart, keep or stop");
  }
  if (v.Has("image")) UW_RETURN_IF_ERROR(v.String("image").status());
  if (v.Has("start")) UW_RETURN_IF_ERROR(v.Bool("start").status());
  if (v.Has("paravirt")) UW_RETURN_IF_ERROR(v.Bool("paravirt").status());
  if (v.Has("disks")) {
    // Local disks the host's agent makes (copied by live migration); host paths are not the
    // cluster's business.
    UW_ASSIGN_OR_RETURN(auto disks, v.Objects("disks"));
    for (const auto& d : disks) {
      UW_RETURN_IF_ERROR(d.RejectUnknown({"size_mib", "format", "target"}));
      UW_ASSIGN_OR_RETURN(int64_t size, d.PositiveInt("size_mib"));
      if (size > (int64_t{16} << 20)) return d.FieldError("size_mib", "expected at most 16777216");
    }
  }
  Json spec = body;
  for (const char* k : {"tenant", "pool", "automation", "lease_class", "on_crash"}) spec.erase(k);
  spec["vcpus"] = g.vcpus;
  spec["max_vcpus"] = max_vcpus;
  g.vcpus = max_vcpus;  // likewise for vCPUs
  spec["memory_mib"] = mem;
  spec["max_memory_mib"] = max_mem;
  spec["kind"] = g.kind;
  // The agent's own parser and checks, so that what it would refuse is refused here (before a
  // reservation and a task), with the same field names.
  UW_ASSIGN_OR_RETURN(vmm::GuestSpec parsed, vmm::GuestSpecFromJson(spec, ""));
  UW_RETURN_IF_ERROR(vmm::ValidateGuestSpec(parsed, spec.contains("image")));
  if (parsed.cpu_quota_us > 1'000'000'000) return v.FieldError("cpu.quota_us", "expected at most 1000000000");
  auto need = [&](std::string right, std::string field) {
    for (const auto& [r, f] : g.rights_needed) {
      if (r == right) return;
    }
    g.rights_needed.emplace_back(std::move(right), std::move(field));
  };
  if (!parsed.kernel.empty()) need("host_paths", "boot.kernel");
  for (size_t i = 0; i < parsed.nics.size(); ++i) {
    const std::string at = "nics[" + std::to_string(i) + "]";
    if (parsed.nics[i].type != "user") need("bridges", at + ".source");
    if (parsed.nics[i].vlan != 0) need("vlans", at + ".vlan");
  }
  if (v.Has("cpu")) need("cpu_tuning", "cpu");
  if (!g.pool.empty()) need("pools", "pool");
  if (g.automation != "default") need("automation", "automation");
  g.agent_spec = std::move(spec);
  return g;
}

namespace {
constexpr int kMaxHostCores = 16384;
constexpr int64_t kMaxHostMemoryMib = int64_t{64} << 20;  // 64 TiB
}  // namespace

Result<HostJoin> ParseHostJoin(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"name", "agent_url", "agent_token", "capacity", "info"}));
  HostJoin h;
  UW_ASSIGN_OR_RETURN(h.name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(h.name, "name"));
  UW_ASSIGN_OR_RETURN(h.agent_url, v.String("agent_url"));
  if (h.agent_url.rfind("http://", 0) != 0 && h.agent_url.rfind("https://", 0) != 0) {
    return v.FieldError("agent_url", "expected an http:// or https:// URL");
  }
  if (h.agent_url.size() > 2048) return v.FieldError("agent_url", "expected at most 2048 characters");
  UW_ASSIGN_OR_RETURN(h.agent_token, v.String("agent_token"));
  if (h.agent_token.empty()) return v.FieldError("agent_token", "must not be empty");
  if (h.agent_token.size() > 1024) return v.FieldError("agent_token", "expected at most 1024 characters");
  UW_ASSIGN_OR_RETURN(JsonView cap, v.Object("capacity"));
  // Bounded to what a real host can have: placement scores divide by capacity, and one absurd
  // host would make every other host's score 0.
  UW_ASSIGN_OR_RETURN(h.cpu_cores, cap.Number("cpu_cores"));
  if (!(h.cpu_cores > 0) || h.cpu_cores > kMaxHostCores) {
    return cap.FieldError("cpu_cores", "expected a number in (0, " + std::to_string(kMaxHostCores) + "]");
  }
  UW_ASSIGN_OR_RETURN(h.memory_mib, cap.PositiveInt("memory_mib"));
  if (h.memory_mib > kMaxHostMemoryMib) {
    return cap.FieldError("memory_mib", "expected 1.." + std::to_string(kMaxHostMemoryMib) + " (64 TiB)");
  }
  if (v.Has("info")) {
    UW_ASSIGN_OR_RETURN(JsonView info, v.Object("info"));
    h.info = info.json();
  }
  return h;
}

namespace {

constexpr int64_t kMaxReportedMib = int64_t{1} << 40;

// The fields of an agent's guest that Reconcile reads, type-checked before it runs (in a
// transaction): a wrong type there threw from nlohmann and left the store's transaction open.
Status CheckReportedGuest(const JsonView& g) {
  UW_RETURN_IF_ERROR(g.String("name").status());
  UW_RETURN_IF_ERROR(g.String("state").status());
  const Json& j = g.json();
  auto optional = [&](const char* key, bool (Json::*is)() const, const char* what) -> Status {
    auto it = j.find(key);
    if (it == j.end() || it->is_null() || ((*it).*is)()) return Status::Ok();
    return g.FieldError(key, std::string("expected ") + what);
  };
  for (const char* key : {"kind", "health"}) UW_RETURN_IF_ERROR(optional(key, &Json::is_string, "a string"));
  UW_RETURN_IF_ERROR(optional("unresponsive_since", &Json::is_number, "a number"));
  UW_RETURN_IF_ERROR(optional("crash", &Json::is_object, "an object"));
  for (const char* key : {"vcpus", "max_vcpus", "memory_mib", "max_memory_mib"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > kMaxReportedMib) {
      return g.FieldError(key, "expected an integer in 0..2^40");
    }
  }
  if (auto c = j.find("crash"); c != j.end() && c->is_object()) {
    UW_ASSIGN_OR_RETURN(JsonView crash, g.Object("crash"));
    if (crash.Has("at")) {
      // Milliseconds since the epoch, read as an integer below (1e300 would not fit).
      UW_ASSIGN_OR_RETURN(int64_t at, crash.Int("at"));
      if (at < 0) return crash.FieldError("at", "expected milliseconds since the epoch (a non-negative integer)");
    }
    if (crash.Has("console_tail")) UW_RETURN_IF_ERROR(crash.String("console_tail").status());
  }
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Lifecycle

Manager::Manager(ManagerConfig config, Clock& clock) : config_(std::move(config)), clock_(clock) {
  SetAgentFactory([timeout = config_.agent_timeout_ms](const std::string& host, const AgentAddress& address) {
    return NewHttpAgentClient(host, address, timeout);
  });
  SetPollSleeper([this](Duration d) {
    std::unique_lock l(mu_);
    cv_.wait_for(l, d, [this] { return stopping_; });
    return !stopping_;
  });
}

void Manager::SetPollSleeper(std::function<bool(Duration)> sleeper) { poll_sleeper_ = std::move(sleeper); }

void Manager::SetAgentFactory(AgentDirectory::Factory factory) {
  auto lookup = [this](const std::string& host) -> Result<AgentAddress> {
    UW_ASSIGN_OR_RETURN(SqlRow h, store_->QueryOne("SELECT agent_url, agent_token FROM hosts WHERE name = ?", {host},
                                                   "host '" + host + "' is no longer in the cluster"));
    return AgentAddress{h.Str("agent_url"), h.Str("agent_token")};
  };
  agents_ = std::make_unique<AgentDirectory>(std::move(lookup), std::move(factory));
}

Manager::~Manager() { Stop(); }

int64_t Manager::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now().time_since_epoch()).count();
}

Status Manager::Start() {
  UW_ASSIGN_OR_RETURN(store_, Store::Open(config_.db_path));
  // The bootstrap admin token (replaced when the configured one changes).
  UW_RETURN_IF_ERROR(store_->Exec(
      "INSERT INTO api_tokens(id, name, role, tenant, token_hash, created_ms) VALUES ('bootstrap-admin', "
      "'bootstrap admin (config)', 'admin', '', ?, ?) ON CONFLICT(id) DO UPDATE SET token_hash = excluded.token_hash",
      {Sha256Hex(config_.admin_token), NowMs()}));
  {
    UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT id, role, tenant, token_hash, rights FROM api_tokens"));
    std::lock_guard l(tokens_mu_);
    tokens_.clear();
    for (const auto& r : rows) {
      auto role = ParseRole(r.Str("role"));
      if (!role.ok()) continue;
      Principal p{r.Str("id"), *role, r.Str("tenant"), {}};
      const Json rights = r.JsonOf("rights");
      if (rights.is_array()) {
        for (const auto& right : rights) {
          if (right.is_string() && ValidateRight(right.get<std::string>(), "rights").ok()) p.rights.insert(right.get<std::string>());
        }
      }
      tokens_[r.Str("token_hash")] = std::move(p);
    }
  }
  {
    UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT COALESCE(MAX(seq), 0) AS seq FROM events"));
    std::lock_guard l(events_mu_);
    last_event_seq_ = rows[0].Int("seq");
  }
  // A new bus for the store just opened (a manager started again reopens its store).
  event_bus_ = std::make_unique<internal::EventBus>(*store_, clock_, ShowShortNames);
  event_bus_->Start(last_event_seq_);
  // Hosts are not known to be alive after a restart until they heartbeat again; give them a full
  // timeout from now rather than judging them by heartbeats the previous process received.
  UW_RETURN_IF_ERROR(store_->Exec("UPDATE hosts SET last_heartbeat_ms = MAX(last_heartbeat_ms, ?)", {NowMs()}));
  {
    std::lock_guard l(mu_);
    stopping_ = false;
  }
  UW_RETURN_IF_ERROR(RecoverTasks());
  UW_RETURN_IF_ERROR(RecoverMigrations());
  for (int i = 0; i < config_.task_workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  monitor_ = std::thread([this] { MonitorLoop(); });
  migrator_ = std::thread([this] { MigratorLoop(); });
  UW_RETURN_IF_ERROR(AddEvent("manager.started", "manager", "", {{"schema_version", store_->schema_version()}}));
  return Status::Ok();
}

void Manager::Stop() {
  {
    std::lock_guard l(mu_);
    if (stopping_ && workers_.empty() && !monitor_.joinable() && !migrator_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  events_cv_.notify_all();
  tasks_cv_.notify_all();
  migrator_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  if (monitor_.joinable()) monitor_.join();
  if (migrator_.joinable()) migrator_.join();
  std::map<std::string, std::thread> threads;
  {
    std::lock_guard l(migrator_mu_);
    threads.swap(migration_threads_);
  }
  for (auto& [id, t] : threads) t.join();
  if (event_bus_) event_bus_->Stop();
}

Status Manager::RecoverTasks() {
  // Migrations have their own recovery (RecoverMigrations): they cannot simply start over.
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT id, kind, subject, state, attempts FROM tasks WHERE state IN "
                                               "('pending', 'running') AND kind <> 'guest.migrate' ORDER BY created_ms"));
  for (const auto& r : rows) {
    std::string id = r.Str("id");
    if (r.Int("attempts") >= kMaxTaskAttempts) {
      UW_RETURN_IF_ERROR(FinishTask(id,
                                    AbortedError("manager restarted " + std::to_string(r.Int("attempts")) +
                                                 " times while this task ran; giving up"),
                                    nullptr));
      continue;
    }
    // Every step is idempotent against the agent (create treats "already exists" as done, delete
    // treats "not found" as done), so a running task is resumed from its start.
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE tasks SET state = 'pending', message = ?, updated_ms = ? WHERE id = ?",
                                    {"resumed after a manager restart (was " + r.Str("state") + ")", NowMs(), id}));
    UW_RETURN_IF_ERROR(AddEvent("task.resumed", id, "", {{"kind", r.Str("kind")}, {"subject", r.Str("subject")},
                                                         {"was", r.Str("state")}}));
    spdlog::info("resuming task {} ({} {}, was {})", id, r.Str("kind"), r.Str("subject"), r.Str("state"));
    Enqueue(id);
  }
  return Status::Ok();
}

void Manager::Enqueue(const std::string& id) {
  {
    std::lock_guard l(mu_);
    queue_.push_back(id);
  }
  cv_.notify_all();  // the monitor loop waits on cv_ too: notify_one could wake only it
}

void Manager::WorkerLoop() {
  while (true) {
    std::string id;
    {
      std::unique_lock l(mu_);
      cv_.wait(l, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      id = std::move(queue_.front());
      queue_.pop_front();
    }
    // An agent's malformed answer must fail its task, never the process.
    try {
      RunTask(id);
    } catch (const std::exception& e) {
      spdlog::error("task {}: {}", id, e.what());
      if (Status s = FinishTask(id, InternalError(std::string("task aborted: ") + e.what()), nullptr); !s.ok()) {
        spdlog::error("task {}: cannot record its failure: {}", id, s.ToString());
      }
    }
  }
}

void Manager::MonitorLoop() {
  auto last_drs = clock_.Monotonic();
  std::unique_lock l(mu_);
  while (!stopping_) {
    l.unlock();
    CheckHeartbeats();
    // Usage samples are kept for a day (metering reads them; later issues aggregate them).
    if (Status s = store_->Exec("DELETE FROM usage_samples WHERE at_ms < ?", {NowMs() - 86'400'000}); !s.ok()) {
      spdlog::warn("pruning usage samples: {}", s.ToString());
    }
    if (Status s = store_->Exec("DELETE FROM idempotency WHERE created_ms < ?", {NowMs() - 86'400'000}); !s.ok()) {
      spdlog::warn("pruning idempotency records: {}", s.ToString());
    }
    if (config_.drs_interval_ms > 0 &&
        clock_.Monotonic() - last_drs >= std::chrono::milliseconds(config_.drs_interval_ms)) {
      last_drs = clock_.Monotonic();
      try {
        if (auto r = RunDrs(); !r.ok()) spdlog::warn("DRS pass failed: {}", r.status().ToString());
      } catch (const std::exception& e) {
        spdlog::error("DRS pass aborted: {}", e.what());
      }
    }
    l.lock();
    cv_.wait_for(l, std::chrono::milliseconds(std::min(config_.heartbeat_interval_ms, 1000)),
                 [this] { return stopping_; });
  }
}

// ---------------------------------------------------------------------------------------------
// Auth, events

Result<Principal> Manager::Authenticate(std::string_view bearer_token) {
  if (bearer_token.empty()) {
    return UnauthenticatedError("missing bearer token: send 'Authorization: Bearer <token>' (uwctl: --token or UW_TOKEN)");
  }
  std::lock_guard l(tokens_mu_);
  auto it = tokens_.find(Sha256Hex(bearer_token));
  if (it == tokens_.end()) return UnauthenticatedError("unknown or revoked API token");
  return it->second;
}

Status Manager::AddEvent(std::string_view type, std::string_view subject, std::string_view tenant, const Json& data) {
  UW_RETURN_IF_ERROR(store_->Exec("INSERT INTO events(at_ms, type, subject, tenant, data) VALUES (?, ?, ?, ?, ?)",
                                  {NowMs(), std::string(type), std::string(subject), std::string(tenant), Dump(data)}));
  int64_t seq = store_->LastInsertRowId();
  {
    std::lock_guard l(events_mu_);
    last_event_seq_ = std::max(last_event_seq_, seq);
  }
  events_cv_.notify_all();
  if (event_bus_) event_bus_->Notify(seq);
  return Status::Ok();
}

void Manager::SubscribeEvents(const Principal& p, int64_t since, bool follow, std::shared_ptr<api::StreamWriter> writer) {
  if (event_bus_ == nullptr) {  // not started: nothing to serve
    writer->Close();
    return;
  }
  event_bus_->Subscribe(p, since, follow, std::move(writer));
}

size_t Manager::event_subscribers() const { return event_bus_ ? event_bus_->subscribers() : 0; }

Result<std::vector<Json>> Manager::EventsSince(const Principal& p, int64_t since, int64_t limit) {
  std::vector<SqlRow> rows;
  if (p.role == Role::kTenant) {
    UW_ASSIGN_OR_RETURN(rows, store_->Query("SELECT * FROM events WHERE seq > ? AND tenant = ? ORDER BY seq LIMIT ?",
                                            {since, p.tenant, limit}));
  } else {
    UW_ASSIGN_OR_RETURN(rows, store_->Query("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", {since, limit}));
  }
  std::vector<Json> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    out.push_back(internal::EventRowJson(r));
    ShowShortNames(p, out.back());
  }
  return out;
}

int64_t Manager::WaitForEvent(int64_t since, Duration timeout) {
  std::unique_lock l(events_mu_);
  events_cv_.wait_for(l, timeout, [&] {
    std::lock_guard s(mu_);
    return last_event_seq_ > since || stopping_;
  });
  return last_event_seq_;
}

// ---------------------------------------------------------------------------------------------
// Hosts

Result<Json> Manager::JoinHost(std::string_view join_token, const HostJoin& join) {
  if (join_token.empty() || Sha256Hex(join_token) != Sha256Hex(config_.join_token)) {
    return UnauthenticatedError("wrong cluster join token: use the join_token from the manager's config");
  }
  std::string host_token = NewUuid() + NewUuid();
  bool rejoin = false;
  Status s = store_->Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(auto existing, store_->Query("SELECT name FROM hosts WHERE name = ?", {join.name}));
    rejoin = !existing.empty();
    UW_RETURN_IF_ERROR(store_->Exec(
        "INSERT INTO hosts(name, agent_url, agent_token, host_token_hash, cpu_cores, memory_mib, state, "
        "last_heartbeat_ms, joined_at_ms, info) VALUES (?, ?, ?, ?, ?, ?, 'connected', ?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET agent_url = excluded.agent_url, agent_token = excluded.agent_token, "
        "host_token_hash = excluded.host_token_hash, cpu_cores = excluded.cpu_cores, memory_mib = "
        "excluded.memory_mib, state = 'connected', last_heartbeat_ms = excluded.last_heartbeat_ms, info = excluded.info",
        {join.name, join.agent_url, join.agent_token, Sha256Hex(host_token), join.cpu_cores, join.memory_mib, NowMs(),
         NowMs(), Dump(join.info)}));
    return AddEvent(rejoin ? "host.rejoined" : "host.joined", join.name, "",
                    {{"agent_url", join.agent_url}, {"cpu_cores", join.cpu_cores}, {"memory_mib", join.memory_mib}});
  });
  UW_RETURN_IF_ERROR(s);
  spdlog::info("host {} {} ({} cores, {} MiB) at {}", join.name, rejoin ? "rejoined" : "joined", join.cpu_cores,
               join.memory_mib, join.agent_url);
  return Json{{"name", join.name}, {"host_token", host_token}, {"heartbeat_interval_ms", config_.heartbeat_interval_ms}};
}

Result<Json> Manager::Heartbeat(std::string_view name, std::string_view host_token, const Json& body) {
  // An unknown host and a wrong token get the same answer (and the same work): this route is
  // public, and must not tell anyone which host names exist.
  auto host_row = store_->QueryOne("SELECT * FROM hosts WHERE name = ?", {std::string(name)}, "unknown host");
  if (!host_row.ok() && host_row.status().code() != StatusCode::kNotFound) return host_row.status();
  const std::string presented = Sha256Hex(host_token);
  if (!host_row.ok() || host_token.empty() || presented != host_row->Str("host_token_hash")) {
    return UnauthenticatedError("unknown host or wrong host token: join again");
  }
  SqlRow host = std::move(*host_row);
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"stats", "guests"}));
  double cpu_used = 0;
  int64_t mem_used = 0;
  std::map<std::string, std::pair<double, int64_t>> guest_usage;
  if (v.Has("stats")) {
    UW_ASSIGN_OR_RETURN(JsonView stats, v.Object("stats"));
    if (stats.Has("guests")) {
      UW_ASSIGN_OR_RETURN(auto gs, stats.Objects("guests"));
      for (const auto& g : gs) {
        UW_ASSIGN_OR_RETURN(std::string gname, g.String("name"));
        UW_ASSIGN_OR_RETURN(double cores, g.Number("cpu_cores", 0));
        UW_ASSIGN_OR_RETURN(int64_t mib, g.Int("memory_used_mib", -1));
        if (!(cores >= 0 && cores <= 1e6)) return g.FieldError("cpu_cores", "expected 0..1000000");
        if (mib < -1 || mib > kMaxReportedMib) return g.FieldError("memory_used_mib", "expected -1..2^40");
        guest_usage[gname] = {cores, mib};
        cpu_used += cores;
        if (mib > 0) mem_used += mib;
      }
    }
  }
  Json guests = Json::array();
  if (v.Has("guests")) {
    UW_ASSIGN_OR_RETURN(auto gs, v.Objects("guests"));
    for (const auto& g : gs) {
      UW_RETURN_IF_ERROR(CheckReportedGuest(g));
      guests.push_back(g.json());
    }
  }
  bool was_disconnected = host.Str("state") == "disconnected";
  // Reconcile first so that guests found now get their usage below.
  if (v.Has("guests")) Reconcile(std::string(name), guests);
  int64_t now = NowMs();
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec(
        "UPDATE hosts SET state = 'connected', last_heartbeat_ms = ?, cpu_used = ?, memory_used_mib = ? WHERE name = ?",
        {now, cpu_used, mem_used, std::string(name)}));
    UW_RETURN_IF_ERROR(store_->Exec(
        "INSERT INTO usage_samples(at_ms, host, guest, cpu_cores, memory_mib) VALUES (?, ?, NULL, ?, ?)",
        {now, std::string(name), cpu_used, mem_used}));
    for (const auto& [g, u] : guest_usage) {
      // Unchanged rows are not rewritten (most guests' usage is the same from one beat to the next).
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET cpu_used = ?1, memory_used_mib = ?2 WHERE name = ?3 AND "
                                      "host = ?4 AND (cpu_used <> ?1 OR memory_used_mib <> ?2)",
                                      {u.first, u.second, g, std::string(name)}));
      UW_RETURN_IF_ERROR(store_->Exec(
          "INSERT INTO usage_samples(at_ms, host, guest, cpu_cores, memory_mib) VALUES (?, ?, ?, ?, ?)",
          {now, std::string(name), g, u.first, u.second}));
    }
    if (was_disconnected) {
      UW_RETURN_IF_ERROR(AddEvent("host.reconnected", name, "", Json::object()));
    }
    return Status::Ok();
  }));
  return Json{{"name", std::string(name)}, {"state", "connected"}, {"heartbeat_interval_ms", config_.heartbeat_interval_ms}};
}

void Manager::Reconcile(const std::string& host, const Json& reported) {
  std::map<std::string, Json> seen;
  for (const auto& g : reported) seen[g["name"].get<std::string>()] = g;
  std::vector<CrashedGuest> crashed;  // newly crashed: their on_crash policy runs after the transaction
  std::vector<std::pair<std::string, std::string>> leftovers;  // (guest, migration): removed after it
  Status s = store_->Transact([&]() -> Status {
    // Guests with a task in flight are the task's business.
    UW_ASSIGN_OR_RETURN(const std::set<std::string> busy, GuestsWithTaskInFlight());
    // A heartbeat's guest list may have been read before a task that just ended changed the guest
    // (a create saw "paused" while libvirt was still starting it): the task's word stands until the
    // next heartbeats have had time to see it.
    UW_ASSIGN_OR_RETURN(auto recent_rows, store_->Query("SELECT DISTINCT subject FROM tasks WHERE updated_ms > ? AND "
                                                        "state IN ('succeeded', 'failed', 'cancelled')",
                                                        {NowMs() - 2 * int64_t{config_.heartbeat_interval_ms}}));
    std::set<std::string> recent;
    for (const auto& t : recent_rows) recent.insert(t.Str("subject"));
    UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT name, state, tenant, health, on_crash, crash FROM guests "
                                                 "WHERE host = ?",
                                                 {host}));
    int64_t now = NowMs();
    for (const auto& r : rows) {
      std::string name = r.Str("name");
      if (busy.count(name) || recent.count(name)) {
        seen.erase(name);
        continue;
      }
      auto it = seen.find(name);
      if (it == seen.end()) {
        if (r.Str("state") != "lost") {
          UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET state = 'lost', updated_ms = ? WHERE name = ?", {now, name}));
          UW_RETURN_IF_ERROR(AddEvent("guest.lost", name, r.Str("tenant"),
                                      {{"host", host}, {"was", r.Str("state")},
                                       {"reason", "the host's agent no longer reports this guest"}}));
        }
        continue;
      }
      const Json& g = it->second;
      std::string state = g.value("state", "unknown");
      const std::string health = g.value("health", "");
      // A running guest whose control channel stopped answering is not running for the operator.
      if (state == "running" && health == "unresponsive") state = "unresponsive";
      if (health != r.Str("health")) {
        UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET health = ? WHERE name = ?",
                                        {health.empty() ? SqlValue(nullptr) : SqlValue(health), name}));
      }
      if (state != r.Str("state")) {
        UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET state = ?, updated_ms = ? WHERE name = ?", {state, now, name}));
        UW_RETURN_IF_ERROR(AddEvent("guest.changed", name, r.Str("tenant"),
                                    {{"host", host}, {"was", r.Str("state")}, {"now", state}}));
        if (state == "unresponsive") {
          UW_RETURN_IF_ERROR(AddEvent("guest.unresponsive", name, r.Str("tenant"),
                                      {{"host", host}, {"since", g.value("unresponsive_since", Json())},
                                       {"reason", "its control channel has not answered"}}));
        } else if (r.Str("state") == "unresponsive" && state == "running") {
          UW_RETURN_IF_ERROR(AddEvent("guest.responsive", name, r.Str("tenant"), {{"host", host}}));
        }
        if (state == "crashed") {
          Json crash = r.JsonOf("crash");
          if (!crash.is_object()) crash = Json::object();
          const Json reported_crash = g.value("crash", Json::object());
          crash["at"] = reported_crash.value("at", now);
          crash["console_tail"] = reported_crash.value("console_tail", "");
          crash["host"] = host;
          UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET crash = ? WHERE name = ?", {Dump(crash), name}));
          UW_RETURN_IF_ERROR(AddEvent("guest.crashed", name, r.Str("tenant"),
                                      {{"host", host}, {"on_crash", r.Str("on_crash")},
                                       {"console_tail", crash["console_tail"]}}));
          crashed.push_back({name, host, r.Str("tenant"), r.Str("on_crash")});
        }
      }
      seen.erase(it);
    }
    for (const auto& [name, g] : seen) {
      if (busy.count(name)) continue;
      // A guest the manager does not know on this host: record it (unowned) so capacity is counted.
      UW_ASSIGN_OR_RETURN(auto other, store_->Query("SELECT host FROM guests WHERE name = ?", {name}));
      if (!other.empty()) {
        // The shut-off definition libvirt leaves on the source of a move that nobody confirmed there
        // (its agent was down when the move ended) is a leftover, not a second guest.
        UW_ASSIGN_OR_RETURN(auto moved_away, store_->Query("SELECT id FROM migrations WHERE guest = ? AND source = ? AND "
                                                           "phase = 'done' ORDER BY updated_ms DESC LIMIT 1",
                                                           {name, host}));
        if (g.value("state", "") == "shutoff" && !moved_away.empty() && other[0].Str("host") != host) {
          leftovers.push_back({name, moved_away[0].Str("id")});
          continue;
        }
        UW_RETURN_IF_ERROR(RaiseDuplicate(name, host, other[0].Str("host")));
        continue;
      }
      // A heartbeat read before a delete that just ended still lists the guest: it is gone, not
      // found (adopting it made a ghost that took the name).
      if (recent.count(name)) continue;
      // A tenant's guest is named TENANT:NAME on its host: found again, it is still the tenant's.
      const std::string owner = name.find(':') == std::string::npos ? "" : name.substr(0, name.find(':'));
      int64_t vcpus = std::max<int64_t>(1, g.value("max_vcpus", g.value("vcpus", 1)));
      int64_t mem = std::max<int64_t>(1, g.value("max_memory_mib", g.value("memory_mib", 1)));
      Json spec = {{"name", name}, {"kind", g.value("kind", "qemu")}, {"vcpus", g.value("vcpus", 1)},
                   {"max_vcpus", vcpus}, {"memory_mib", g.value("memory_mib", mem)}, {"max_memory_mib", mem}};
      UW_RETURN_IF_ERROR(store_->Exec(
          "INSERT INTO guests(name, tenant, host, kind, vcpus, memory_mib, spec, state, placement_reason, created_ms, "
          "updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'found running on the host', ?, ?)",
          {name, owner, host, g.value("kind", "qemu"), vcpus, mem, Dump(spec), g.value("state", "unknown"), now, now}));
      UW_RETURN_IF_ERROR(AddEvent("guest.found", name, owner, {{"host", host}, {"state", g.value("state", "unknown")}}));
    }
    return ClearDuplicates(host, reported);
  });
  if (!s.ok()) {
    spdlog::warn("reconciling host {}: {}", host, s.ToString());
    return;
  }
  for (const auto& c : crashed) {
    if (Status h = HandleCrash(c); !h.ok()) spdlog::warn("guest {} crashed on {}: {}", c.name, c.host, h.ToString());
  }
  for (const auto& [guest, migration] : leftovers) {
    Status del = AgentOf(host)->Delete(guest, false);
    if (!del.ok() && del.code() != StatusCode::kNotFound) {
      spdlog::warn("removing the shut-off copy of {} that migration {} left on {}: {}", guest, migration, host,
                   del.ToString());
      continue;
    }
    (void)AddEvent("migration.leftover_removed", guest, "",
                   {{"host", host}, {"migration", migration},
                    {"reason", "the source kept a shut-off definition after the move (its agent was down)"}});
  }
}

// The guest's on_crash policy: restart (where it was, at most kCrashRestarts times in
// kCrashWindowMs; then it stays crashed with a guest.crash_loop event), stop (power it off, keep
// the definition) or keep (leave the crashed domain for inspection).
Status Manager::HandleCrash(const CrashedGuest& c) {
  constexpr int kCrashRestarts = 3;
  constexpr int64_t kCrashWindowMs = 10 * 60 * 1000;
  if (c.on_crash == "keep") return Status::Ok();
  if (c.on_crash == "stop") {
    return NewTask("guest.stop", c.name, c.tenant, {{"guest", c.name}, {"host", c.host}, {"args", {{"force", true}}},
                                                     {"reason", "crashed (on_crash: stop)"}})
        .status();
  }
  const int64_t now = NowMs();
  int attempt = 0;
  Status s = store_->Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(SqlRow g, store_->QueryOne("SELECT crash FROM guests WHERE name = ?", {c.name}, "guest"));
    Json crash = g.JsonOf("crash");
    if (!crash.is_object()) crash = Json::object();
    Json recent = Json::array();
    for (const auto& t : crash.value("restarts", Json::array())) {
      if (t.is_number_integer() && now - t.get<int64_t>() < kCrashWindowMs) recent.push_back(t);
    }
    if (static_cast<int>(recent.size()) >= kCrashRestarts) {
      crash["restarts"] = recent;
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET crash = ? WHERE name = ?", {Dump(crash), c.name}));
      return AddEvent("guest.crash_loop", c.name, c.tenant,
                      {{"host", c.host},
                       {"reason", "crashed " + std::to_string(recent.size() + 1) + " times in 10 minutes; left crashed "
                                  "for inspection (restart it by hand: uwctl guest start)"}});
    }
    recent.push_back(now);
    crash["restarts"] = recent;
    attempt = static_cast<int>(recent.size());
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET crash = ? WHERE name = ?", {Dump(crash), c.name}));
    return AddEvent("guest.restarting", c.name, c.tenant,
                    {{"host", c.host}, {"attempt", attempt}, {"of", kCrashRestarts}, {"reason", "crashed (on_crash: restart)"}});
  });
  UW_RETURN_IF_ERROR(s);
  if (attempt == 0) return Status::Ok();
  return NewTask("guest.restart", c.name, c.tenant, {{"guest", c.name}, {"host", c.host}, {"reason", "crashed"}}).status();
}

Status Manager::RaiseDuplicate(const std::string& guest, const std::string& host, const std::string& known_on) {
  UW_ASSIGN_OR_RETURN(SqlRow g, store_->QueryOne("SELECT tenant, alert FROM guests WHERE name = ?", {guest}, "guest"));
  Json alert = g.JsonOf("alert");
  if (!alert.is_object() || alert.value("type", "") != "duplicate") {
    alert = {{"type", "duplicate"},
             {"known_on", known_on},
             {"also_on", Json::array()},
             {"since", FormatRfc3339(clock_.Now())},
             {"reason", "a guest of this name runs on two hosts"}};
  }
  for (const auto& h : alert["also_on"]) {
    if (h == host) return Status::Ok();  // raised already: one event, not one per heartbeat
  }
  alert["also_on"].push_back(host);
  UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET alert = ? WHERE name = ?", {Dump(alert), guest}));
  return AddEvent("guest.duplicate", guest, g.Str("tenant"),
                  {{"host", host}, {"known_on", known_on}, {"reason", "a guest of this name runs on two hosts"}});
}

Status Manager::ClearDuplicates(const std::string& host, const Json& reported) {
  std::set<std::string> here;
  for (const auto& g : reported) here.insert(g.value("name", ""));
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT name, tenant, alert FROM guests WHERE alert IS NOT NULL"));
  for (const auto& r : rows) {
    Json alert = r.JsonOf("alert");
    if (!alert.is_object() || alert.value("type", "") != "duplicate" || here.count(r.Str("name"))) continue;
    Json& also = alert["also_on"];
    const size_t before = also.size();
    also.erase(std::remove(also.begin(), also.end(), Json(host)), also.end());
    if (also.size() == before) continue;
    if (also.empty()) {
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET alert = NULL WHERE name = ?", {r.Str("name")}));
      UW_RETURN_IF_ERROR(AddEvent("guest.duplicate_cleared", r.Str("name"), r.Str("tenant"),
                                  {{"host", host}, {"reason", "the second copy is gone; the guest runs once"}}));
    } else {
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET alert = ? WHERE name = ?", {Dump(alert), r.Str("name")}));
    }
  }
  return Status::Ok();
}

void Manager::CheckHeartbeats() {
  int64_t deadline = NowMs() - config_.heartbeat_timeout_ms;
  auto rows = store_->Query("SELECT name, last_heartbeat_ms FROM hosts WHERE state = 'connected' AND last_heartbeat_ms < ?",
                            {deadline});
  if (!rows.ok()) return;
  for (const auto& r : *rows) {
    Status s = store_->Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE hosts SET state = 'disconnected' WHERE name = ? AND state = 'connected'",
                                      {r.Str("name")}));
      return AddEvent("host.disconnected", r.Str("name"), "",
                      {{"reason", "no heartbeat for " + std::to_string(NowMs() - r.Int("last_heartbeat_ms")) + " ms"}});
    });
    if (s.ok()) spdlog::warn("host {} disconnected (missed heartbeats)", r.Str("name"));
  }
}

namespace {
Json HostRowJson(const SqlRow& r, int64_t guests, double reserved_cpu, int64_t reserved_mem) {
  return {{"name", r.Str("name")},
          {"agent_url", r.Str("agent_url")},
          {"state", r.Str("state")},
          {"maintenance", r.Int("maintenance") != 0},
          {"groups", r.JsonOf("groups").is_array() ? r.JsonOf("groups") : Json::array()},
          {"capacity", {{"cpu_cores", r.Real("cpu_cores")}, {"memory_mib", r.Int("memory_mib")}}},
          {"reserved", {{"vcpus", reserved_cpu}, {"memory_mib", reserved_mem}}},
          {"usage", {{"cpu_cores", r.Real("cpu_used")}, {"memory_mib", r.Int("memory_used_mib")}}},
          {"guests", guests},
          {"last_heartbeat", FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("last_heartbeat_ms"))))}};
}
// The reservation totals come from host_reservations (kept by triggers), not from the guests.
constexpr const char* kHostQuery =
    "SELECT h.*, COALESCE(r.guests, 0) AS n, COALESCE(r.vcpus, 0) AS rc, COALESCE(r.memory_mib, 0) AS rm "
    "FROM hosts h LEFT JOIN host_reservations r ON r.host = h.name";
}  // namespace

Result<Json> Manager::ListHosts() {
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query(std::string(kHostQuery) + " ORDER BY h.name"));
  Json out = Json::array();
  for (const auto& r : rows) out.push_back(HostRowJson(r, r.Int("n"), r.Real("rc"), r.Int("rm")));
  return Wrap("hosts", std::move(out));
}

Result<Json> Manager::GetHost(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne(std::string(kHostQuery) + " WHERE h.name = ?", {std::string(name)},
                                                 "host '" + std::string(name) + "' not found"));
  Json j = HostRowJson(r, r.Int("n"), r.Real("rc"), r.Int("rm"));
  UW_ASSIGN_OR_RETURN(auto guests, store_->Query("SELECT name, state FROM guests WHERE host = ? ORDER BY name",
                                                 {std::string(name)}));
  j["guest_names"] = Json::array();
  for (const auto& g : guests) j["guest_names"].push_back(g.Str("name"));
  if (r.Int("maintenance")) {
    // Evacuation progress: guests still on the host (moves are recommended by DRS as mandatory).
    j["evacuation"] = {{"remaining", guests.size()}, {"done", guests.empty()}};
  }
  j["info"] = r.JsonOf("info");
  return j;
}

Result<Json> Manager::SetMaintenance(std::string_view name, bool on) {
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(
        store_->QueryOne("SELECT name FROM hosts WHERE name = ?", {std::string(name)}, "host '" + std::string(name) + "' not found")
            .status());
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE hosts SET maintenance = ? WHERE name = ?",
                                    {int64_t{on ? 1 : 0}, std::string(name)}));
    return AddEvent(on ? "host.maintenance_on" : "host.maintenance_off", name, "", Json::object());
  }));
  if (on) {
    // Evacuation moves are mandatory: compute them now rather than at the next DRS pass.
    if (auto r = RunDrs(); !r.ok()) spdlog::warn("DRS after maintenance of {}: {}", name, r.status().ToString());
  } else {
    // The evacuation is over: its moves (DRS-started migrations off this host) that have not
    // switched over are cancelled; a running one is aborted and its guest stays here. Operators'
    // own moves (no recommendation) are left alone.
    UW_ASSIGN_OR_RETURN(auto moves, store_->Query("SELECT t.id, t.subject, t.request, m.phase FROM tasks t LEFT JOIN "
                                                  "migrations m ON m.task = t.id WHERE t.kind = 'guest.migrate' AND "
                                                  "t.state IN ('pending', 'running') ORDER BY t.created_ms",
                                                  {}));
    const Principal manager_itself{"manager", Role::kAdmin, "", {}};
    Json cancelled = Json::array();
    for (const auto& t : moves) {
      const Json req = t.JsonOf("request");
      if (req.value("from", "") != name || req.value("recommendation", "").empty()) continue;
      if (!t.IsNull("phase")) {
        auto phase = migration::PhaseFromName(t.Str("phase"));
        if (phase.ok() && migration::PastSwitchOver(*phase)) continue;  // landed or landing: too late
      }
      auto c = CancelTask(manager_itself, t.Str("id"));
      if (!c.ok()) {
        spdlog::warn("maintenance off on {}: cancelling {}: {}", name, t.Str("id"), c.status().ToString());
        continue;
      }
      cancelled.push_back({{"task", t.Str("id")}, {"guest", t.Str("subject")}});
    }
    if (!cancelled.empty()) {
      UW_RETURN_IF_ERROR(AddEvent("host.evacuation_cancelled", name, "", {{"cancelled", cancelled}}));
    }
  }
  return GetHost(name);
}

Result<Json> Manager::SetHostGroups(std::string_view name, const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"groups"}));
  UW_ASSIGN_OR_RETURN(std::vector<std::string> groups, v.Strings("groups"));
  std::set<std::string> seen;
  for (size_t i = 0; i < groups.size(); ++i) {
    UW_RETURN_IF_ERROR(ValidateName(groups[i], "groups[" + std::to_string(i) + "]"));
    if (!seen.insert(groups[i]).second) {
      return InvalidArgumentError("groups[" + std::to_string(i) + "]: group '" + groups[i] + "' listed twice");
    }
  }
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->QueryOne("SELECT name FROM hosts WHERE name = ?", {std::string(name)},
                                        "host '" + std::string(name) + "' not found")
                           .status());
    UW_RETURN_IF_ERROR(
        store_->Exec("UPDATE hosts SET groups = ? WHERE name = ?", {Dump(Json(groups)), std::string(name)}));
    return AddEvent("host.groups_changed", name, "", {{"groups", groups}});
  }));
  return GetHost(name);
}

// ---------------------------------------------------------------------------------------------
// Snapshot

// Rules are stored as written: they may name guests that do not exist yet (they apply to their
// placement when they are created) and host groups that no host is in any more. The engine's
// snapshot names only what exists (internal::BuildSnapshot cuts each rule down to its known
// members, and leaves out a rule that then constrains nothing that exists).
Result<placement::Snapshot> Manager::BuildSnapshot(const placement::Vm* incoming) {
  UW_ASSIGN_OR_RETURN(Json cfg, GetDrsConfig());
  UW_ASSIGN_OR_RETURN(placement::DrsSettings drs, internal::DrsSettingsFromConfig(cfg));
  return internal::BuildSnapshot(*store_, NowMs(), drs, incoming);
}

Result<Json> Manager::ClusterSnapshot() {
  UW_ASSIGN_OR_RETURN(placement::Snapshot s, BuildSnapshot());
  return placement::SnapshotToJson(s);
}

// ---------------------------------------------------------------------------------------------
// Guests

Result<Json> Manager::GuestRowJson(const SqlRow& r) {
  // Built field by field: nlohmann's initializer lists copy every value (listing 10,000 guests
  // spent a third of its time there).
  const Json spec = r.JsonOf("spec");
  const std::string kind = r.Str("kind");
  auto text_or_null = [&](std::string_view c) { return r.IsNull(c) ? Json(nullptr) : Json(r.Str(c)); };
  Json j = Json::object();
  j["name"] = r.Str("name");
  j["tenant"] = r.Str("tenant");
  j["host"] = text_or_null("host");
  j["pool"] = text_or_null("pool");
  j["kind"] = kind;
  j["devices"] = kind == "lxc" ? "container" : spec.value("paravirt", true) ? "virtio" : "emulated";
  j["state"] = r.Str("state");
  j["vcpus"] = spec.value("vcpus", r.Int("vcpus"));
  j["memory_mib"] = spec.value("memory_mib", r.Int("memory_mib"));
  Json& reserved = j["reserved"];
  reserved["vcpus"] = r.Int("vcpus");
  reserved["memory_mib"] = r.Int("memory_mib");
  j["automation"] = r.Str("automation");
  j["migrating_to"] = text_or_null("migrating_to");
  j["placement_reason"] = r.Str("placement_reason");
  j["alert"] = r.JsonOf("alert");  // null, or e.g. {"type": "duplicate", "also_on": [...], "since": ...}
  j["health"] = text_or_null("health");  // ready | starting | unresponsive | none, from its agent
  j["on_crash"] = r.Str("on_crash");
  j["crash"] = r.JsonOf("crash");  // null, or {"at", "host", "console_tail", "restarts": [ms...]}
  Json& usage = j["usage"];
  usage["cpu_cores"] = r.Real("cpu_used");
  usage["memory_mib"] = r.Int("memory_used_mib");
  j["created"] = FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("created_ms"))));
  return j;
}

Result<std::set<std::string>> Manager::GuestsWithTaskInFlight() {
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT DISTINCT subject FROM tasks WHERE state IN ('pending', 'running')"));
  std::set<std::string> out;
  for (const auto& r : rows) out.insert(r.Str("subject"));
  return out;
}

Result<SqlRow> Manager::VisibleGuest(const Principal& p, std::string_view name) {
  UW_RETURN_IF_ERROR(ValidateGuestName(name, "guest name"));
  const std::string missing = "guest '" + std::string(name) + "' not found";
  std::string n(name);
  const size_t colon = n.find(':');
  if (p.role == Role::kTenant) {
    // Its own guests only, by short name (or by full name with its own tenant). A guest created
    // before names were per tenant is stored under its short name.
    if (colon != std::string::npos) {
      if (n.compare(0, colon, p.tenant) != 0 || colon != p.tenant.size()) return NotFoundError(missing);
      n = n.substr(colon + 1);
    }
    UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT * FROM guests WHERE tenant = ? AND name IN (?, ?) ORDER BY "
                                                 "name DESC",
                                                 {p.tenant, GuestKey(p.tenant, n), n}));
    if (rows.empty()) return NotFoundError(missing);
    return std::move(rows[0]);
  }
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT * FROM guests WHERE name = ?", {n}));
  if (!rows.empty()) return std::move(rows[0]);
  if (colon == std::string::npos) {
    // A short name that names one tenant's guest.
    UW_ASSIGN_OR_RETURN(rows, store_->Query("SELECT * FROM guests WHERE tenant <> '' AND name = tenant || ':' || ? "
                                            "ORDER BY name",
                                            {n}));
    if (rows.size() == 1) return std::move(rows[0]);
    if (rows.size() > 1) {
      std::string all;
      for (const auto& r : rows) all += (all.empty() ? "" : ", ") + r.Str("name");
      return FailedPreconditionError("guest name '" + n + "' names guests of several tenants (" + all +
                                     "): give the full name");
    }
  }
  return NotFoundError(missing);
}

Result<Json> Manager::CreateGuest(const Principal& p, GuestCreate req) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  if (p.role == Role::kTenant) {
    if (!req.tenant.empty() && req.tenant != p.tenant) {
      return PermissionDeniedError("tenant: a tenant token may only create guests for its own tenant '" + p.tenant + "'");
    }
    req.tenant = p.tenant;
  }
  for (const auto& [right, field] : req.rights_needed) {
    if (!p.Holds(right)) {
      return PermissionDeniedError(field + ": needs the right '" + right +
                                   "', which this token does not hold (an admin grants it: uwctl token create "
                                   "--right " + right + ")");
    }
  }
  // Names are unique per tenant: the guest is "<tenant>:<name>" in the cluster (and on its host).
  const std::string short_name = req.name;
  req.name = GuestKey(req.tenant, short_name);
  UW_RETURN_IF_ERROR(ValidateGuestName(req.name, "name"));
  req.agent_spec["name"] = req.name;
  std::lock_guard placement_lock(placement_mu_);
  UW_ASSIGN_OR_RETURN(auto existing,
                      store_->Query("SELECT name FROM guests WHERE name = ? OR (tenant <> '' AND tenant = ? AND name = ?)",
                                    {req.name, req.tenant, short_name}));
  if (!existing.empty()) return AlreadyExistsError("guest '" + short_name + "' already exists: choose another name");
  if (!req.pool.empty()) {
    UW_RETURN_IF_ERROR(store_->QueryOne("SELECT name FROM pools WHERE name = ?", {req.pool},
                                        "pool '" + req.pool + "' not found: create it first (POST /api/v1/pools)")
                           .status());
    UW_RETURN_IF_ERROR(CheckPoolLimits(req));
    // The pool's shares and CPU limit reach the guest's cputune (fields the request sets win,
    // except that the pool's limit caps a larger or unlimited quota).
    UW_ASSIGN_OR_RETURN(Json tune, PoolCpuTune(req.pool, req.vcpus, req.kind));
    Json& cpu = req.agent_spec["cpu"];
    if (!cpu.is_object()) cpu = Json::object();
    if (!cpu.contains("shares")) cpu["shares"] = tune["shares"];
    if (tune.contains("quota_us")) {
      const int64_t quota = cpu.value("quota_us", int64_t{0});
      const int64_t period = cpu.value("period_us", int64_t{0});
      if (quota <= 0 || period <= 0 ||
          static_cast<double>(quota) / static_cast<double>(period) >
              tune["quota_us"].get<double>() / tune["period_us"].get<double>()) {
        cpu["quota_us"] = tune["quota_us"];
        cpu["period_us"] = tune["period_us"];
      }
    }
  }
  // Decide on a snapshot that includes every reservation made so far (placement_mu_ keeps it
  // current) and the new guest, unplaced: rules created before it name it and apply. The
  // engine's admission and placement are the only capacity checks.
  placement::Vm vm;
  vm.name = req.name;
  vm.vcpus = req.vcpus;
  vm.memory_mib = req.memory_mib;
  vm.demand = {static_cast<double>(req.vcpus), req.memory_mib};
  vm.reservation = {0, req.memory_mib};
  vm.pool = req.pool;
  vm.kind = req.kind == "kvm" ? placement::GuestKind::kKvm
            : req.kind == "lxc" ? placement::GuestKind::kLxc
                                : placement::GuestKind::kQemu;
  vm.migratable = req.automation != "disabled";
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, BuildSnapshot(&vm));
  placement::Snapshot without_it = snap;  // AdmitVm compares the cluster before and after the guest
  std::erase_if(without_it.vms, [&](const placement::Vm& v) { return v.name == req.name; });
  if (Status s = placement::AdmitVm(without_it, vm); !s.ok()) {
    return Status(s.code(), "admission control refused guest '" + req.name + "': " + s.message());
  }
  UW_ASSIGN_OR_RETURN(auto index, placement::PlacementIndex::Build(snap, config_.placement_policy));
  placement::PlacementDecision d = index->Place(vm);
  if (d.host.empty() || d.needs_power_on) {
    std::string why = d.reason.empty() ? "no host can take it" : d.reason;
    for (const auto& r : d.rejected) why += "; " + r.host + ": " + r.reason;
    if (snap.hosts.empty()) why = "no host has joined the cluster yet";
    return ResourceExhaustedError("no host for guest '" + req.name + "': " + why);
  }
  Json rejected = Json::array();
  for (const auto& r : d.rejected) rejected.push_back({{"host", r.host}, {"reason", r.reason}});
  std::string task_id = NewId("task");
  int64_t now = NowMs();
  Json request = {{"guest", req.name}, {"host", d.host}, {"spec", req.agent_spec}};
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec(
        "INSERT INTO guests(name, tenant, host, pool, kind, vcpus, memory_mib, spec, state, automation, "
        "placement_reason, on_crash, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?)",
        {req.name, req.tenant, d.host, req.pool.empty() ? SqlValue(nullptr) : SqlValue(req.pool), req.kind, req.vcpus,
         req.memory_mib, Dump(req.agent_spec), req.automation, d.reason, req.on_crash, now, now}));
    for (auto [resource, amount] : {std::pair<const char*, double>{"vcpu", static_cast<double>(req.vcpus)},
                                    {"memory_mib", static_cast<double>(req.memory_mib)}}) {
      UW_RETURN_IF_ERROR(store_->Exec(
          "INSERT INTO leases(id, guest, resource, floor, grant_amount, term_end_ms, class, created_ms) VALUES "
          "(?, ?, ?, ?, ?, NULL, ?, ?)",
          {NewId("lease"), req.name, std::string(resource), req.lease_class == "guaranteed" ? amount : 0.0, amount,
           req.lease_class, now}));
    }
    UW_RETURN_IF_ERROR(store_->Exec(
        "INSERT INTO tasks(id, kind, subject, tenant, state, message, request, created_ms, updated_ms) VALUES "
        "(?, 'guest.create', ?, ?, 'pending', ?, ?, ?, ?)",
        {task_id, req.name, req.tenant, "placed on " + d.host + "; waiting for a worker", Dump(request), now, now}));
    return AddEvent("guest.placed", req.name, req.tenant,
                    {{"host", d.host}, {"reason", d.reason}, {"score", d.score}, {"rejected", rejected}, {"task", task_id}});
  }));
  Enqueue(task_id);
  UW_ASSIGN_OR_RETURN(Json task, TaskJson(task_id));
  ShowShortNames(p, task);
  return task;
}

Result<Json> Manager::ListGuests(const Principal& p) {
  std::vector<SqlRow> rows;
  if (p.role == Role::kTenant) {
    UW_ASSIGN_OR_RETURN(rows, store_->Query("SELECT * FROM guests WHERE tenant = ? ORDER BY name", {p.tenant}));
  } else {
    UW_ASSIGN_OR_RETURN(rows, store_->Query("SELECT * FROM guests ORDER BY name"));
  }
  Json out = Json::array();
  for (const auto& r : rows) {
    UW_ASSIGN_OR_RETURN(Json j, GuestRowJson(r));
    ShowShortNames(p, j);
    out.push_back(std::move(j));
  }
  return Wrap("guests", std::move(out));
}

Result<Json> Manager::GetGuest(const Principal& p, std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, VisibleGuest(p, name));
  UW_ASSIGN_OR_RETURN(Json j, GuestRowJson(r));
  ShowShortNames(p, j);
  UW_ASSIGN_OR_RETURN(auto leases, store_->Query("SELECT * FROM leases WHERE guest = ? ORDER BY resource", {r.Str("name")}));
  j["leases"] = Json::array();
  for (const auto& l : leases) {
    j["leases"].push_back({{"id", l.Str("id")}, {"resource", l.Str("resource")}, {"floor", l.Real("floor")},
                           {"grant", l.Real("grant_amount")},
                           {"term_end", l.IsNull("term_end_ms") ? Json(nullptr) : Json(l.Int("term_end_ms"))},
                           {"class", l.Str("class")}});
  }
  return j;
}

Result<Json> Manager::GuestOperation(const Principal& p, std::string_view name, std::string_view op, const Json& args) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  std::lock_guard placement_lock(placement_mu_);
  UW_ASSIGN_OR_RETURN(SqlRow g, VisibleGuest(p, name));
  const std::string guest = g.Str("name");
  UW_ASSIGN_OR_RETURN(auto busy, store_->Query("SELECT id, kind FROM tasks WHERE subject = ? AND state IN ('pending', "
                                               "'running')",
                                               {guest}));
  if (!busy.empty()) {
    return FailedPreconditionError("guest '" + guest + "' has task " + busy[0].Str("id") + " (" + busy[0].Str("kind") +
                                   ") in flight: wait for it or cancel it");
  }
  if (g.IsNull("host")) return FailedPreconditionError("guest '" + guest + "' is not placed on a host");
  UW_ASSIGN_OR_RETURN(SqlRow host, store_->QueryOne("SELECT state FROM hosts WHERE name = ?", {g.Str("host")},
                                                    "host of guest vanished"));
  if (host.Str("state") != "connected" && op != "delete") {
    return FailedPreconditionError("host " + g.Str("host") + " of guest '" + guest +
                                   "' is disconnected: wait until it reconnects");
  }
  Json request = {{"guest", guest}, {"host", g.Str("host")}, {"args", args}};
  if (op == "resize") {
    Json spec = g.JsonOf("spec");
    UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(args, ""));
    UW_RETURN_IF_ERROR(v.RejectUnknown({"vcpus", "memory_mib"}));
    if (!v.Has("vcpus") && !v.Has("memory_mib")) return InvalidArgumentError("give vcpus and/or memory_mib to resize");
    if (v.Has("vcpus")) {
      UW_ASSIGN_OR_RETURN(int64_t n, v.PositiveInt("vcpus"));
      if (n > g.Int("vcpus")) {
        return InvalidArgumentError("vcpus: " + std::to_string(n) + " is above the guest's maximum of " +
                                    std::to_string(g.Int("vcpus")) + " (max_vcpus at creation)");
      }
    }
    if (v.Has("memory_mib")) {
      UW_ASSIGN_OR_RETURN(int64_t n, v.PositiveInt("memory_mib"));
      if (n > g.Int("memory_mib")) {
        return InvalidArgumentError("memory_mib: " + std::to_string(n) + " is above the guest's reservation of " +
                                    std::to_string(g.Int("memory_mib")) + " MiB (max_memory_mib at creation)");
      }
    }
  } else if (op == "stop") {
    UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(args, ""));
    UW_RETURN_IF_ERROR(v.RejectUnknown({"force", "timeout_s"}));
    UW_RETURN_IF_ERROR(v.Bool("force", false).status());
    UW_RETURN_IF_ERROR(v.NonNegativeInt("timeout_s", 0).status());
  } else if (op == "delete") {
    // The agent deletes only a stopped guest: refuse here, before any task, unless forced (the
    // task then powers it off first). A lost guest is gone from its host already.
    UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(args, ""));
    UW_RETURN_IF_ERROR(v.RejectUnknown({"force"}));
    UW_ASSIGN_OR_RETURN(bool force, v.Bool("force", false));
    const std::string state = g.Str("state");
    if (!force && state != "shutoff" && state != "lost") {
      return FailedPreconditionError("guest '" + guest + "' is " + state +
                                     ": stop it first, or delete with ?force=true (uwctl guest delete --force) "
                                     "to power it off and delete it");
    }
  } else if (op != "start") {
    return InvalidArgumentError("unknown guest operation '" + std::string(op) + "'");
  }
  UW_ASSIGN_OR_RETURN(Json task, NewTask("guest." + std::string(op), guest, g.Str("tenant"), request));
  ShowShortNames(p, task);
  return task;
}

// ---------------------------------------------------------------------------------------------
// Tasks

Result<Json> Manager::NewTask(std::string_view kind, std::string_view subject, std::string_view tenant,
                              const Json& request) {
  std::string id = NewId("task");
  int64_t now = NowMs();
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec(
        "INSERT INTO tasks(id, kind, subject, tenant, state, request, created_ms, updated_ms) VALUES (?, ?, ?, ?, "
        "'pending', ?, ?, ?)",
        {id, std::string(kind), std::string(subject), std::string(tenant), Dump(request), now, now}));
    return AddEvent("task.created", id, tenant, {{"kind", kind}, {"subject", subject}});
  }));
  if (kind == "guest.migrate") {
    migrator_cv_.notify_all();  // the migrator starts it when its dependencies and the caps allow
  } else {
    Enqueue(id);
  }
  return TaskJson(id);
}

Result<Json> Manager::TaskJson(std::string_view id) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT * FROM tasks WHERE id = ?", {std::string(id)},
                                                 "task '" + std::string(id) + "' not found"));
  Json j = {{"id", r.Str("id")},
            {"kind", r.Str("kind")},
            {"subject", r.Str("subject")},
            {"tenant", r.Str("tenant")},
            {"state", r.Str("state")},
            {"progress", r.Real("progress")},
            {"message", r.Str("message")},
            {"attempts", r.Int("attempts")},
            {"created", FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("created_ms"))))},
            {"updated", FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("updated_ms"))))},
            {"error", nullptr},
            {"result", r.JsonOf("result")}};
  if (!r.IsNull("error_code")) j["error"] = {{"code", r.Str("error_code")}, {"message", r.Str("error_message")}};
  return j;
}

Result<Json> Manager::GetTask(const Principal& p, std::string_view id) {
  UW_ASSIGN_OR_RETURN(Json j, TaskJson(id));
  if (p.role == Role::kTenant && j["tenant"] != p.tenant) return NotFoundError("task '" + std::string(id) + "' not found");
  ShowShortNames(p, j);
  return j;
}

Result<Json> Manager::ListTasks(const Principal& p, int64_t limit) {
  std::vector<SqlRow> rows;
  if (p.role == Role::kTenant) {
    UW_ASSIGN_OR_RETURN(rows, store_->Query("SELECT id FROM tasks WHERE tenant = ? ORDER BY created_ms DESC LIMIT ?",
                                            {p.tenant, limit}));
  } else {
    UW_ASSIGN_OR_RETURN(rows, store_->Query("SELECT id FROM tasks ORDER BY created_ms DESC LIMIT ?", {limit}));
  }
  Json out = Json::array();
  for (const auto& r : rows) {
    UW_ASSIGN_OR_RETURN(Json j, TaskJson(r.Str("id")));
    ShowShortNames(p, j);
    out.push_back(std::move(j));
  }
  return Wrap("tasks", std::move(out));
}

Result<Json> Manager::CancelTask(const Principal& p, std::string_view id) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  UW_ASSIGN_OR_RETURN(Json t, GetTask(p, id));
  Status s = store_->Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT state, kind, subject FROM tasks WHERE id = ?",
                                                   {std::string(id)}, "task vanished"));
    if (r.Str("state") == "running" && r.Str("kind") == "guest.migrate") {
      // Aborted by its migration thread; the task ends cancelled once the guest is back.
      {
        std::lock_guard ml(migrator_mu_);
        cancel_requested_.insert(std::string(id));
      }
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE tasks SET message = 'cancelling', updated_ms = ? WHERE id = ?",
                                      {NowMs(), std::string(id)}));
      return AddEvent("task.cancel_requested", id, t["tenant"].get<std::string>(),
                      {{"kind", r.Str("kind")}, {"subject", r.Str("subject")}});
    }
    if (r.Str("state") != "pending") {
      return FailedPreconditionError("task " + std::string(id) + " is " + r.Str("state") +
                                     "; only a pending task or a running migration can be cancelled");
    }
    UW_RETURN_IF_ERROR(store_->Exec(
        "UPDATE tasks SET state = 'cancelled', error_code = 'aborted', error_message = 'cancelled by request', "
        "updated_ms = ? WHERE id = ?",
        {NowMs(), std::string(id)}));
    if (r.Str("kind") == "guest.create") {
      // Release the reservation: the guest was never created.
      UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM guests WHERE name = ? AND state = 'creating'", {r.Str("subject")}));
    }
    return AddEvent("task.cancelled", id, t["tenant"].get<std::string>(), {{"kind", r.Str("kind")}, {"subject", r.Str("subject")}});
  });
  UW_RETURN_IF_ERROR(s);
  tasks_cv_.notify_all();
  UW_ASSIGN_OR_RETURN(Json task, TaskJson(id));
  ShowShortNames(p, task);
  return task;
}

Result<Json> Manager::WaitTask(std::string_view id, Duration timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    UW_ASSIGN_OR_RETURN(Json j, TaskJson(id));
    if (IsFinal(j["state"].get<std::string>()) || std::chrono::steady_clock::now() >= deadline) return j;
    std::unique_lock l(tasks_mu_);
    tasks_cv_.wait_for(l, std::chrono::milliseconds(50));
  }
}

Status Manager::SetTaskProgress(const std::string& id, double progress, std::string_view message) {
  return store_->Exec("UPDATE tasks SET progress = ?, message = ?, updated_ms = ? WHERE id = ?",
                      {progress, std::string(message), NowMs(), id});
}

Status Manager::FinishTask(const std::string& id, const Status& outcome, const Json& result) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT kind, subject, tenant FROM tasks WHERE id = ?", {id}, "task"));
  Status s = store_->Transact([&]() -> Status {
    if (outcome.ok()) {
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE tasks SET state = 'succeeded', progress = 1, message = 'done', result = ?, "
                                      "error_code = NULL, error_message = NULL, updated_ms = ? WHERE id = ?",
                                      {result.is_null() ? SqlValue(nullptr) : SqlValue(Dump(result)), NowMs(), id}));
    } else {
      UW_RETURN_IF_ERROR(store_->Exec(
          "UPDATE tasks SET state = 'failed', message = 'failed', error_code = ?, error_message = ?, updated_ms = ? "
          "WHERE id = ?",
          {std::string(StatusCodeName(outcome.code())), outcome.message(), NowMs(), id}));
    }
    return AddEvent(outcome.ok() ? "task.succeeded" : "task.failed", id, r.Str("tenant"),
                    {{"kind", r.Str("kind")}, {"subject", r.Str("subject")},
                     {"error", outcome.ok() ? Json(nullptr) : Json(outcome.ToString())}});
  });
  tasks_cv_.notify_all();
  return s;
}

std::shared_ptr<AgentClient> Manager::AgentOf(const std::string& host) { return agents_->For(host); }

std::string Manager::ConsoleTail(const std::string& host, const std::string& guest, size_t bytes) {
  auto tail = AgentOf(host)->ConsoleTail(guest, bytes);
  return tail.ok() ? *tail : "";
}

void Manager::RunTask(const std::string& id) {
  auto claimed = store_->Query(
      "UPDATE tasks SET state = 'running', attempts = attempts + 1, updated_ms = ? WHERE id = ? AND state = 'pending' "
      "RETURNING kind, subject, request",
      {NowMs(), id});
  if (!claimed.ok()) {
    spdlog::error("task {}: cannot claim: {}", id, claimed.status().ToString());
    return;
  }
  if (claimed->empty()) return;  // cancelled meanwhile, or claimed already
  const SqlRow& r = (*claimed)[0];
  std::string kind = r.Str("kind");
  Json request = r.JsonOf("request");
  std::string guest = r.Str("subject");
  Status s;
  if (kind == "guest.create") {
    s = RunCreate(id, request, guest);
  } else if (kind.rfind("guest.", 0) == 0) {
    s = RunGuestOp(id, kind, request, guest);
  } else {
    s = FinishTask(id, InternalError("unknown task kind '" + kind + "'"), nullptr);
  }
  if (!s.ok()) {
    // The store refused a step: end the task explicitly rather than leave it running.
    spdlog::error("task {} ({} {}): {}", id, kind, guest, s.ToString());
    if (Status f = FinishTask(id, s.WithContext("recording the outcome"), nullptr); !f.ok()) {
      spdlog::error("task {}: cannot record failure ({}); it is resumed on the next start", id, f.ToString());
    }
  }
}

Status Manager::RunCreate(const std::string& id, const Json& request, const std::string& guest) {
  std::string host = request.value("host", "");
  UW_RETURN_IF_ERROR(SetTaskProgress(id, 0.2, "creating the guest on host " + host));
  Json spec = request.value("spec", Json::object());
  auto agent = AgentOf(host);
  Result<AgentGuest> created = agent->Create(spec);
  if (!created.ok() && created.status().code() == StatusCode::kAlreadyExists) {
    // Resumed after a crash: the agent made it before the manager could record it.
    created = agent->Get(guest);
  }
  if (!created.ok()) {
    Status cause = created.status();
    if (cause.code() == StatusCode::kDeadlineExceeded) {
      // The agent may have made it after all: best-effort removal before releasing the capacity.
      (void)agent->Delete(guest, false);
    }
    UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
      UW_ASSIGN_OR_RETURN(auto owner, store_->Query("SELECT tenant FROM guests WHERE name = ?", {guest}));
      UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM guests WHERE name = ? AND state = 'creating'", {guest}));
      return AddEvent("guest.create_failed", guest, owner.empty() ? "" : owner[0].Str("tenant"),
                      {{"host", host}, {"error", cause.ToString()}, {"reservation", "released"}});
    }));
    return FinishTask(id, cause, nullptr);
  }
  const std::string state = created->state;
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET state = ?, updated_ms = ? WHERE name = ?", {state, NowMs(), guest}));
    UW_ASSIGN_OR_RETURN(SqlRow g, store_->QueryOne("SELECT tenant FROM guests WHERE name = ?", {guest}, "guest row gone"));
    return AddEvent("guest.created", guest, g.Str("tenant"), {{"host", host}, {"state", state}});
  }));
  return FinishTask(id, Status::Ok(), {{"guest", guest}, {"host", host}, {"state", state}});
}

namespace {

// A guest operation's arguments (checked by GuestOperation) sent to the agent as its typed call.
Result<AgentGuest> CallGuestOp(AgentClient& agent, const std::string& op, const std::string& guest, const Json& args,
                               const std::string& state_before) {
  if (op == "restart" || (op == "start" && state_before == "crashed")) {
    // A crashed domain is kept by libvirt (on_crash preserve): power it off, then boot it again.
    auto stopped = agent.Stop(guest, StopRequest{.force = true, .timeout_s = std::nullopt});
    if (!stopped.ok() && stopped.status().code() != StatusCode::kFailedPrecondition) {
      return stopped.status().WithContext("powering off the crashed guest");
    }
    return agent.Start(guest);
  }
  if (op == "start") return agent.Start(guest);
  if (op == "stop") {
    StopRequest r;
    r.force = args.value("force", false);
    if (args.contains("timeout_s")) r.timeout_s = args["timeout_s"].get<int64_t>();
    return agent.Stop(guest, r);
  }
  if (op == "pause") return agent.Pause(guest);
  if (op == "resume") return agent.Resume(guest);
  if (op == "resize") {
    ResizeRequest r;
    if (args.contains("vcpus")) r.vcpus = args["vcpus"].get<int64_t>();
    if (args.contains("memory_mib")) r.memory_mib = args["memory_mib"].get<int64_t>();
    return agent.Resize(guest, r);
  }
  return InvalidArgumentError("unknown guest operation '" + op + "'");
}

}  // namespace

Status Manager::RunGuestOp(const std::string& id, const std::string& kind, const Json& request,
                           const std::string& guest) {
  std::string host = request.value("host", "");
  std::string op = kind.substr(6);
  Json args = request.value("args", Json::object());
  UW_RETURN_IF_ERROR(SetTaskProgress(id, 0.3, op + " on host " + host));
  auto g = store_->QueryOne("SELECT tenant, spec, state FROM guests WHERE name = ?", {guest},
                            "guest '" + guest + "' not found");
  if (!g.ok()) return FinishTask(id, g.status(), nullptr);
  std::string tenant = g->Str("tenant");
  auto agent = AgentOf(host);
  if (op == "delete") {
    // Forced: the agent powers the guest off (destroy) before it undefines it.
    const bool force = args.value("force", false);
    Status deleted = agent->Delete(guest, force);
    if (!deleted.ok() && deleted.code() != StatusCode::kNotFound) return FinishTask(id, deleted, nullptr);  // gone already
    UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM guests WHERE name = ?", {guest}));
      UW_RETURN_IF_ERROR(RemoveGuestFromRules(guest));
      return AddEvent("guest.deleted", guest, tenant, {{"host", host}, {"forced", force}});
    }));
    return FinishTask(id, Status::Ok(), {{"guest", guest}, {"deleted", true}});
  }
  auto answer = CallGuestOp(*agent, op, guest, args, g->Str("state"));
  if (!answer.ok()) return FinishTask(id, answer.status(), nullptr);
  const std::string state = answer->state;
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    Json spec = g->JsonOf("spec");
    if (op == "resize") {
      if (args.contains("vcpus")) spec["vcpus"] = args["vcpus"];
      if (args.contains("memory_mib")) spec["memory_mib"] = args["memory_mib"];
    }
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET state = ?, spec = ?, updated_ms = ? WHERE name = ?",
                                    {state, Dump(spec), NowMs(), guest}));
    return AddEvent("guest." + op, guest, tenant, {{"host", host}, {"state", state}});
  }));
  return FinishTask(id, Status::Ok(), {{"guest", guest}, {"state", state}});
}

// ---------------------------------------------------------------------------------------------
// Tokens

Result<Json> Manager::CreateToken(std::string_view name, Role role, std::string_view tenant,
                                  const std::vector<std::string>& rights) {
  if (name.empty()) return InvalidArgumentError("name: must not be empty");
  if (name.size() > 128) {
    return InvalidArgumentError("name: expected at most 128 characters, got " + std::to_string(name.size()));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) return InvalidArgumentError("name: control characters are not allowed");
  }
  std::set<std::string, std::less<>> granted;
  for (size_t i = 0; i < rights.size(); ++i) {
    UW_RETURN_IF_ERROR(ValidateRight(rights[i], "rights[" + std::to_string(i) + "]"));
    granted.insert(rights[i]);
  }
  if (!granted.empty() && (role == Role::kAdmin || role == Role::kOperator)) {
    return InvalidArgumentError("rights: admin and operator tokens hold every right already");
  }
  if (!granted.empty() && (role == Role::kBillingReader || role == Role::kReadOnly)) {
    return InvalidArgumentError("rights: a " + std::string(RoleName(role)) + " token cannot create guests");
  }
  const Json rights_json(std::vector<std::string>(granted.begin(), granted.end()));
  if (role == Role::kTenant) {
    if (tenant.empty()) return InvalidArgumentError("tenant: required for a tenant token");
    UW_RETURN_IF_ERROR(ValidateName(tenant, "tenant"));
  } else if (!tenant.empty()) {
    return InvalidArgumentError("tenant: only tenant tokens belong to a tenant");
  }
  std::string id = NewId("tok");
  std::string token = "uw_" + NewUuid() + NewUuid();
  token.erase(std::remove(token.begin(), token.end(), '-'), token.end());
  std::string hash = Sha256Hex(token);
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec(
        "INSERT INTO api_tokens(id, name, role, tenant, token_hash, created_ms, rights) VALUES (?, ?, ?, ?, ?, ?, ?)",
        {id, std::string(name), std::string(RoleName(role)), std::string(tenant), hash, NowMs(), Dump(rights_json)}));
    return AddEvent("token.created", id, "",
                    {{"name", name}, {"role", RoleName(role)}, {"tenant", tenant}, {"rights", rights_json}});
  }));
  {
    std::lock_guard l(tokens_mu_);
    tokens_[hash] = Principal{id, role, std::string(tenant), granted};
  }
  return Json{{"id", id},         {"name", name},         {"role", RoleName(role)},
              {"tenant", tenant}, {"rights", rights_json}, {"token", token}};
}

Result<Json> Manager::ListTokens() {
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT * FROM api_tokens ORDER BY created_ms"));
  Json out = Json::array();
  for (const auto& r : rows) {
    out.push_back(Json{{"id", r.Str("id")},
                       {"name", r.Str("name")},
                       {"role", r.Str("role")},
                       {"tenant", r.Str("tenant")},
                       {"rights", r.JsonOf("rights")},
                       {"created", FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("created_ms"))))}});
  }
  return Wrap("tokens", std::move(out));
}

Status Manager::DeleteToken(std::string_view id) {
  if (id == "bootstrap-admin") {
    return FailedPreconditionError("the bootstrap admin token comes from the config file; change admin_token there");
  }
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT token_hash FROM api_tokens WHERE id = ?", {std::string(id)},
                                                 "token '" + std::string(id) + "' not found"));
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM api_tokens WHERE id = ?", {std::string(id)}));
    return AddEvent("token.revoked", id, "", Json::object());
  }));
  std::lock_guard l(tokens_mu_);
  tokens_.erase(r.Str("token_hash"));
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Pools and rules (stored in the snapshot format; the engine's parser validates them)

Result<Json> Manager::ListPools() {
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT spec FROM pools ORDER BY name"));
  Json out = Json::array();
  for (const auto& r : rows) out.push_back(r.JsonOf("spec"));
  return Wrap("pools", std::move(out));
}

Result<Json> Manager::CreatePool(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_ASSIGN_OR_RETURN(std::string name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(name, "name"));
  UW_ASSIGN_OR_RETURN(std::string parent, v.String("parent", ""));
  // Validate with the engine: a snapshot of just the pools plus this one.
  UW_ASSIGN_OR_RETURN(Json pools, ListPools());
  Json probe = {{"version", 1}, {"hosts", Json::array()}, {"vms", Json::array()}, {"pools", pools["pools"]}};
  probe["pools"].push_back(body);
  UW_ASSIGN_OR_RETURN(placement::Snapshot s, placement::ParseSnapshot(probe));
  Json spec = placement::SnapshotToJson(s)["pools"].back();
  // Admission of the pool: its reservations must be backed by the powered-on hosts, with what the
  // other pools and the guests reserve already (placement_mu_: no guest is admitted meanwhile).
  std::lock_guard placement_lock(placement_mu_);
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, BuildSnapshot());
  const std::vector<placement::AdmissionIssue> before = placement::CheckAdmission(snap);
  snap.pools.push_back(s.pools.back());
  for (const placement::AdmissionIssue& issue : placement::CheckAdmission(snap)) {
    bool old = std::any_of(before.begin(), before.end(), [&](const placement::AdmissionIssue& b) {
      return b.subject == issue.subject && b.reason == issue.reason;
    });
    if (!old) return ResourceExhaustedError("admission control refused pool '" + name + "': " + issue.reason);
  }
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    Status ins = store_->Exec("INSERT INTO pools(name, parent, spec) VALUES (?, ?, ?)",
                              {name, parent.empty() ? SqlValue(nullptr) : SqlValue(parent), Dump(spec)});
    if (ins.code() == StatusCode::kAlreadyExists) return AlreadyExistsError("pool '" + name + "' already exists");
    UW_RETURN_IF_ERROR(ins);
    return AddEvent("pool.created", name, "", spec);
  }));
  return spec;
}

Status Manager::DeletePool(std::string_view name) {
  return store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->QueryOne("SELECT name FROM pools WHERE name = ?", {std::string(name)},
                                        "pool '" + std::string(name) + "' not found")
                           .status());
    Status s = store_->Exec("DELETE FROM pools WHERE name = ?", {std::string(name)});
    if (s.code() == StatusCode::kFailedPrecondition) {
      return FailedPreconditionError("pool '" + std::string(name) + "' still has guests or child pools");
    }
    UW_RETURN_IF_ERROR(s);
    return AddEvent("pool.deleted", name, "", Json::object());
  });
}

Result<Json> Manager::ListRules() {
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT spec FROM rules ORDER BY name"));
  Json out = Json::array();
  for (const auto& r : rows) out.push_back(r.JsonOf("spec"));
  return Wrap("rules", std::move(out));
}

Result<Json> Manager::CreateRule(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_ASSIGN_OR_RETURN(std::string name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(name, "name"));
  // Validated by the engine on the current cluster, where guests the rule names that do not exist
  // yet stand in as unplaced guests (the rule applies to them when they are created).
  UW_ASSIGN_OR_RETURN(placement::Snapshot s, BuildSnapshot());
  UW_ASSIGN_OR_RETURN(placement::Rule rule, placement::ParseRuleJson(body, "rules[0]"));
  std::set<std::string> known;
  for (const auto& vm : s.vms) known.insert(vm.name);
  for (const auto& n : rule.vms) {
    if (!known.insert(n).second) continue;
    UW_RETURN_IF_ERROR(ValidateGuestName(n, "vms[]"));
    placement::Vm placeholder;
    placeholder.name = n;
    placeholder.vcpus = 1;
    placeholder.memory_mib = 1;
    s.vms.push_back(std::move(placeholder));
  }
  s.rules = {rule};
  UW_RETURN_IF_ERROR(placement::ValidateSnapshot(s));
  Json spec = placement::SnapshotToJson(s)["rules"].back();
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    Status ins = store_->Exec("INSERT INTO rules(name, spec) VALUES (?, ?)", {name, Dump(spec)});
    if (ins.code() == StatusCode::kAlreadyExists) return AlreadyExistsError("rule '" + name + "' already exists");
    UW_RETURN_IF_ERROR(ins);
    return AddEvent("rule.created", name, "", spec);
  }));
  return spec;
}

Result<Json> Manager::GetPool(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT spec FROM pools WHERE name = ?", {std::string(name)},
                                                 "pool '" + std::string(name) + "' not found"));
  Json j = r.JsonOf("spec");
  // What it holds now: its own guests and those of its child pools.
  UW_ASSIGN_OR_RETURN(auto guests, store_->Query("SELECT name FROM guests WHERE pool = ? ORDER BY name",
                                                 {std::string(name)}));
  j["guests"] = Json::array();
  for (const auto& g : guests) j["guests"].push_back(g.Str("name"));
  return j;
}

Result<Json> Manager::GetRule(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT spec FROM rules WHERE name = ?", {std::string(name)},
                                                 "rule '" + std::string(name) + "' not found"));
  Json j = r.JsonOf("spec");
  // Guests it names that do not exist (yet): the rule applies to them when they are created.
  UW_ASSIGN_OR_RETURN(auto guests, store_->Query("SELECT name FROM guests"));
  std::set<std::string> known;
  for (const auto& g : guests) known.insert(g.Str("name"));
  j["pending_guests"] = Json::array();
  for (const auto& v : j.value("vms", Json::array())) {
    if (v.is_string() && !known.count(v.get<std::string>())) j["pending_guests"].push_back(v);
  }
  return j;
}

Status Manager::RemoveGuestFromRules(const std::string& guest) {
  UW_ASSIGN_OR_RETURN(auto rules, store_->Query("SELECT name, spec FROM rules ORDER BY name"));
  for (const auto& r : rules) {
    Json spec = r.JsonOf("spec");
    if (!spec.is_object() || !spec.contains("vms") || !spec["vms"].is_array()) continue;
    Json& vms = spec["vms"];
    const size_t before = vms.size();
    vms.erase(std::remove(vms.begin(), vms.end(), Json(guest)), vms.end());
    if (vms.size() == before) continue;
    if (vms.empty()) {
      UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM rules WHERE name = ?", {r.Str("name")}));
      UW_RETURN_IF_ERROR(AddEvent("rule.deleted", r.Str("name"), "",
                                  {{"reason", "its last guest '" + guest + "' was deleted"}}));
      continue;
    }
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE rules SET spec = ? WHERE name = ?", {Dump(spec), r.Str("name")}));
    UW_RETURN_IF_ERROR(AddEvent("rule.changed", r.Str("name"), "",
                                {{"removed", guest}, {"reason", "guest deleted"}, {"vms", vms}}));
  }
  return Status::Ok();
}

namespace {
// The pool and its ancestors, nearest first, as stored specs (snapshot pool format).
Result<std::vector<Json>> PoolChain(Store& store, const std::string& pool) {
  UW_ASSIGN_OR_RETURN(auto rows, store.Query("SELECT name, parent, spec FROM pools"));
  std::map<std::string, const SqlRow*> by_name;
  for (const auto& r : rows) by_name[r.Str("name")] = &r;
  std::vector<Json> chain;
  for (std::string cur = pool; !cur.empty() && chain.size() <= rows.size();) {
    auto it = by_name.find(cur);
    if (it == by_name.end()) return NotFoundError("pool '" + cur + "' not found");
    chain.push_back(it->second->JsonOf("spec"));
    cur = it->second->Str("parent");
  }
  return chain;
}

std::string Figure(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
}  // namespace

Status Manager::CheckPoolLimits(const GuestCreate& req) {
  UW_ASSIGN_OR_RETURN(std::vector<Json> chain, PoolChain(*store_, req.pool));
  UW_ASSIGN_OR_RETURN(auto pools, store_->Query("SELECT name, parent FROM pools"));
  UW_ASSIGN_OR_RETURN(auto pooled, store_->Query("SELECT pool, vcpus, memory_mib FROM guests WHERE pool IS NOT NULL"));
  for (const Json& p : chain) {
    const std::string name = p.value("name", "");
    // Its subtree: the pool and every pool below it.
    std::set<std::string> subtree = {name};
    for (bool grew = true; grew;) {
      grew = false;
      for (const auto& r : pools) {
        if (!r.IsNull("parent") && subtree.count(r.Str("parent")) && subtree.insert(r.Str("name")).second) grew = true;
      }
    }
    int64_t vcpus = 0, memory = 0, guests = 0;
    for (const auto& g : pooled) {
      if (!subtree.count(g.Str("pool"))) continue;
      vcpus += g.Int("vcpus");
      memory += g.Int("memory_mib");
      ++guests;
    }
    const Json cpu_limit = p.value("cpu", Json::object()).value("limit_cores", Json(nullptr));
    if (cpu_limit.is_number() && static_cast<double>(vcpus + req.vcpus) > cpu_limit.get<double>() + 1e-9) {
      return ResourceExhaustedError("pool '" + name + "' CPU limit: its " + std::to_string(guests) + " guests have " +
                                    std::to_string(vcpus) + " vCPUs and '" + req.name + "' asks for " +
                                    std::to_string(req.vcpus) + " (" + std::to_string(vcpus + req.vcpus) +
                                    " > limit of " + Figure(cpu_limit.get<double>()) + " cores)");
    }
    const Json mem_limit = p.value("memory", Json::object()).value("limit_mib", Json(nullptr));
    if (mem_limit.is_number() && static_cast<double>(memory + req.memory_mib) > mem_limit.get<double>() + 1e-9) {
      return ResourceExhaustedError("pool '" + name + "' memory limit: its " + std::to_string(guests) +
                                    " guests have " + std::to_string(memory) + " MiB and '" + req.name +
                                    "' asks for " + std::to_string(req.memory_mib) + " (" +
                                    std::to_string(memory + req.memory_mib) + " > limit of " +
                                    Figure(mem_limit.get<double>()) + " MiB)");
    }
  }
  return Status::Ok();
}

Result<Json> Manager::PoolCpuTune(const std::string& pool, int64_t vcpus, const std::string& kind) {
  if (pool.empty()) return Json(nullptr);
  UW_ASSIGN_OR_RETURN(std::vector<Json> chain, PoolChain(*store_, pool));
  // Shares: the pool's CPU shares relative to a normal pool (4000) scale the cgroup default of
  // 1024 (high 8000 -> 2048, low 2000 -> 512).
  const double pool_shares = chain.front().value("cpu", Json::object()).value("shares", 4000.0);
  const int64_t shares = std::clamp<int64_t>(std::llround(1024.0 * pool_shares / 4000.0), 2, 262144);
  Json tune = {{"shares", shares}};
  // Quota: no guest runs beyond the tightest CPU limit on the way to the root, nor beyond its
  // vCPUs. libvirt applies a QEMU guest's quota to each vCPU thread, a container's to all of it.
  std::optional<double> limit;
  for (const Json& p : chain) {
    const Json l = p.value("cpu", Json::object()).value("limit_cores", Json(nullptr));
    if (l.is_number()) limit = limit ? std::min(*limit, l.get<double>()) : l.get<double>();
  }
  if (limit) {
    constexpr int64_t kPeriodUs = 100000;
    const double cap = std::min(*limit, static_cast<double>(vcpus));
    const double per = kind == "lxc" ? cap : cap / static_cast<double>(vcpus);
    tune["period_us"] = kPeriodUs;
    tune["quota_us"] = std::max<int64_t>(1000, std::llround(per * kPeriodUs));
  }
  return tune;
}

Status Manager::DeleteRule(std::string_view name) {
  return store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->QueryOne("SELECT name FROM rules WHERE name = ?", {std::string(name)},
                                        "rule '" + std::string(name) + "' not found")
                           .status());
    UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM rules WHERE name = ?", {std::string(name)}));
    return AddEvent("rule.deleted", name, "", Json::object());
  });
}

// ---------------------------------------------------------------------------------------------
// DRS

Result<Json> Manager::GetDrsConfig() {
  // min_move_interval_s: the engine's cooldown (placement::DrsSettings), same name and default.
  Json cfg = {{"automation", "manual"},
              {"threshold", 3},
              {"max_moves", nullptr},
              {"policy", "drs"},
              {"allow_cold_moves", false},
              {"min_move_interval_s", placement::DrsSettings().min_move_interval_s},
              {"interval_ms", config_.drs_interval_ms}};
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT value FROM settings WHERE key = 'drs'"));
  if (!rows.empty()) {
    Json stored = rows[0].JsonOf("value");
    if (stored.is_object()) cfg.update(stored);
  }
  cfg["interval_ms"] = config_.drs_interval_ms;
  return cfg;
}

Result<Json> Manager::SetDrsConfig(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(
      v.RejectUnknown({"automation", "threshold", "max_moves", "policy", "allow_cold_moves", "min_move_interval_s"}));
  UW_ASSIGN_OR_RETURN(Json cfg, GetDrsConfig());
  cfg.erase("interval_ms");
  if (v.Has("automation")) {
    UW_ASSIGN_OR_RETURN(std::string a, v.String("automation"));
    if (a != "manual" && a != "automatic") return v.FieldError("automation", "expected manual or automatic");
    cfg["automation"] = a;
  }
  if (v.Has("threshold")) {
    UW_ASSIGN_OR_RETURN(int64_t t, v.Int("threshold"));
    if (t < 1 || t > 5) return v.FieldError("threshold", "expected 1..5");
    cfg["threshold"] = t;
  }
  if (body.contains("max_moves")) {
    UW_ASSIGN_OR_RETURN(auto m, v.OptionalInt("max_moves"));
    if (m && *m < 0) return v.FieldError("max_moves", "expected a non-negative integer or null");
    cfg["max_moves"] = m ? Json(*m) : Json(nullptr);
  }
  if (v.Has("allow_cold_moves")) {
    UW_ASSIGN_OR_RETURN(bool cold, v.Bool("allow_cold_moves"));
    cfg["allow_cold_moves"] = cold;
  }
  if (v.Has("min_move_interval_s")) {
    UW_ASSIGN_OR_RETURN(double cooldown, v.Number("min_move_interval_s"));
    if (!(cooldown >= 0 && cooldown <= 30 * 86400)) {
      return v.FieldError("min_move_interval_s", "expected 0..2592000 seconds");
    }
    cfg["min_move_interval_s"] = cooldown;
  }
  if (v.Has("policy")) {
    UW_ASSIGN_OR_RETURN(std::string p, v.String("policy"));
    if (!placement::MakePolicy(p).ok()) {
      std::string names;
      for (const auto& n : placement::PolicyNames()) names += (names.empty() ? "" : ", ") + n;
      return v.FieldError("policy", "expected one of " + names);
    }
    cfg["policy"] = p;
  }
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec(
        "INSERT INTO settings(key, value) VALUES ('drs', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        {Dump(cfg)}));
    return AddEvent("drs.config_changed", "drs", "", cfg);
  }));
  return GetDrsConfig();
}

Result<Json> Manager::ListRecommendations(bool pending_only) {
  UW_ASSIGN_OR_RETURN(auto rows,
                      store_->Query(pending_only ? "SELECT * FROM recommendations WHERE state = 'pending' ORDER BY "
                                                   "priority, created_ms"
                                                 : "SELECT * FROM recommendations ORDER BY created_ms DESC LIMIT 500"));
  Json out = Json::array();
  for (const auto& r : rows) {
    out.push_back({{"id", r.Str("id")},
                   {"guest", r.Str("guest")},
                   {"from", r.Str("from_host")},
                   {"to", r.Str("to_host")},
                   {"priority", r.Int("priority")},
                   {"reason", r.Str("reason")},
                   {"gain", r.Real("gain")},
                   {"imbalance_before", r.Real("imbalance_before")},
                   {"imbalance_after", r.Real("imbalance_after")},
                   {"state", r.Str("state")},
                   {"note", r.Str("note")},
                   {"created", FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("created_ms"))))}});
  }
  return Wrap("recommendations", std::move(out));
}

Result<Json> Manager::DryRunPlan(const Json* snapshot) {
  Json snap_json;
  if (snapshot) {
    snap_json = *snapshot;
  } else {
    UW_ASSIGN_OR_RETURN(placement::Snapshot built, BuildSnapshot());
    snap_json = placement::SnapshotToJson(built);
  }
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, placement::ParseSnapshot(snap_json));
  UW_ASSIGN_OR_RETURN(Json cfg, GetDrsConfig());
  std::string policy = snapshot ? "drs" : cfg.value("policy", "drs");
  UW_ASSIGN_OR_RETURN(placement::Plan plan, placement::MakePlan(snap, policy));
  return placement::PlanToJson(plan);
}

Result<Json> Manager::RunDrs() {
  UW_ASSIGN_OR_RETURN(Json cfg, GetDrsConfig());
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, BuildSnapshot());
  UW_ASSIGN_OR_RETURN(placement::Plan plan, placement::MakePlan(snap, cfg.value("policy", "drs")));
  // Per-guest automation overrides: "disabled" guests are never moved (they are marked
  // non-migratable in the snapshot); "manual" guests are only recommended even in automatic mode.
  std::map<std::string, std::string> override_of;
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT name, automation FROM guests"));
  for (const auto& r : rows) override_of[r.Str("name")] = r.Str("automation");
  // Guests that stay where they are this pass: a task in flight (a migration, a start...) or
  // automation "disabled". The snapshot marks them non-migratable, which still lets the engine move
  // them cold out of a host in maintenance; their moves are held back (what remains is verified
  // again by OrderMoves when it starts) and the pass says how many were.
  UW_ASSIGN_OR_RETURN(const std::set<std::string> held, GuestsWithTaskInFlight());
  const size_t held_moves = std::erase_if(plan.moves, [&](const placement::Move& m) {
    return held.count(m.vm) > 0 || override_of[m.vm] == "disabled";
  });
  int64_t now = NowMs();
  std::vector<std::string> ids;
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE recommendations SET state = 'superseded' WHERE state = 'pending'"));
    for (const auto& m : plan.moves) {
      std::string id = NewId("rec");
      UW_RETURN_IF_ERROR(store_->Exec(
          "INSERT INTO recommendations(id, created_ms, guest, from_host, to_host, priority, reason, gain, "
          "imbalance_before, imbalance_after, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
          {id, now, m.vm, m.from, m.to, int64_t{m.priority}, m.reason, m.gain, plan.before.imbalance,
           plan.after.imbalance}));
      ids.push_back(id);
    }
    return AddEvent("drs.pass", "drs", "",
                    {{"automation", cfg["automation"]}, {"recommendations", plan.moves.size()},
                     {"imbalance_before", plan.before.imbalance}, {"imbalance_after", plan.after.imbalance},
                     {"unresolved", plan.unresolved.size()}, {"held_back", held_moves}});
  }));
  // Applied now: everything in automatic mode, and in any mode the evacuation of hosts in
  // maintenance (mandatory), except guests whose own automation is manual.
  std::set<std::string> maintenance;
  for (const auto& h : snap.hosts) {
    if (h.state == placement::HostState::kMaintenance) maintenance.insert(h.name);
  }
  std::vector<placement::Move> apply;
  std::vector<std::string> apply_ids;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (override_of[plan.moves[i].vm] == "manual") continue;
    if (cfg["automation"] != "automatic" && !maintenance.count(plan.moves[i].from)) continue;
    apply.push_back(plan.moves[i]);
    apply_ids.push_back(ids[i]);
  }
  Json out = placement::PlanToJson(plan);
  if (!apply.empty()) {
    auto started = StartMoves(apply, apply_ids, Json::object());
    if (!started.ok()) {
      spdlog::warn("DRS could not start its moves: {}", started.status().ToString());
    } else {
      out["started"] = *started;
    }
  }
  return out;
}

Result<Json> Manager::ApplyRecommendation(std::string_view id) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT * FROM recommendations WHERE id = ?", {std::string(id)},
                                                 "recommendation '" + std::string(id) + "' not found"));
  if (r.Str("state") != "pending") {
    return FailedPreconditionError("recommendation " + std::string(id) + " is " + r.Str("state") +
                                   "; only pending ones can be applied (see GET /api/v1/drs/recommendations)");
  }
  // Verify: the move must still be legal on the current state (plan, verify, apply).
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, BuildSnapshot());
  placement::Plan one;
  one.policy = "drs";
  one.moves.push_back({r.Str("guest"), r.Str("from_host"), r.Str("to_host"), static_cast<int>(r.Int("priority")),
                       r.Str("reason"), r.Real("gain")});
  if (Status s = placement::CheckPlan(snap, one); !s.ok()) {
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE recommendations SET state = 'superseded', note = ? WHERE id = ?",
                                    {"stale: " + s.message(), std::string(id)}));
    return AbortedError("recommendation " + std::string(id) + " no longer fits the cluster: " + s.message());
  }
  UW_ASSIGN_OR_RETURN(Json started, StartMoves(one.moves, {std::string(id)}, Json::object()));
  if (started["tasks"].empty()) {
    std::string why = started["unschedulable"].empty() ? "not schedulable"
                                                       : started["unschedulable"][0].value("reason", "not schedulable");
    return AbortedError("recommendation " + std::string(id) + " cannot start: " + why);
  }
  return started["tasks"][0];
}

Result<Json> Manager::ApplyAllRecommendations() {
  UW_ASSIGN_OR_RETURN(Json recs, ListRecommendations(true));
  std::vector<placement::Move> moves;
  std::vector<std::string> ids;
  for (const auto& r : recs["recommendations"]) {
    placement::Move m;
    m.vm = r["guest"].get<std::string>();
    m.from = r["from"].get<std::string>();
    m.to = r["to"].get<std::string>();
    m.priority = r["priority"].get<int>();
    m.reason = r["reason"].get<std::string>();
    m.gain = r["gain"].get<double>();
    moves.push_back(std::move(m));
    ids.push_back(r["id"].get<std::string>());
  }
  // One order for all of them: a move that frees room starts before the one that needs it.
  return StartMoves(moves, ids, Json::object());
}

// ---------------------------------------------------------------------------------------------
// Idempotency

Result<std::optional<Manager::StoredResponse>> Manager::FindIdempotent(const std::string& principal,
                                                                      const std::string& key) {
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT * FROM idempotency WHERE principal = ? AND key = ?",
                                               {principal, key}));
  if (rows.empty()) return std::optional<StoredResponse>();
  StoredResponse r{static_cast<int>(rows[0].Int("status")), rows[0].Str("response"), rows[0].Str("body_hash"),
                   rows[0].Str("method"), rows[0].Str("path")};
  return std::optional<StoredResponse>(std::move(r));
}

Status Manager::SaveIdempotent(const std::string& principal, const std::string& key, const StoredResponse& r) {
  return store_->Exec(
      "INSERT INTO idempotency(principal, key, method, path, body_hash, status, response, created_ms) VALUES "
      "(?, ?, ?, ?, ?, ?, ?, ?)",
      {principal, key, r.method, r.path, r.body_hash, int64_t{r.status}, r.body, NowMs()});
}

}  // namespace uw::manager
