// Parsing what the manager reads: its config file and the bodies of guest creates and host joins.
// Part of Manager (manager.h), which is split by responsibility across manager/*.cc.
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "api/http.h"
#include "common/id.h"
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/network_service.h"
#include "manager/snapshot_builder.h"
#include "placement/placement.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

// ---------------------------------------------------------------------------------------------
// Config and request parsing

namespace {

// The config file's "migration" object into `c`.
Status MigrationConfigFromJson(const JsonView& m, ManagerConfig& c) {
  UW_RETURN_IF_ERROR(m.RejectUnknown(
      {"per_host", "cluster", "poll_ms", "agent_grace_ms", "verify_window_ms", "verify_timeout_ms", "convergence"}));
  Json caps = Json::object();
  for (const char* k : {"per_host", "cluster"}) {
    if (m.json().contains(k)) caps[k] = m.json()[k];
  }
  UW_ASSIGN_OR_RETURN(c.migration_caps, migration::ParseCaps(caps, "migration"));
  if (m.Has("convergence")) {
    UW_ASSIGN_OR_RETURN(c.convergence,
                        migration::ParseConvergencePolicy(m.json()["convergence"], "migration.convergence"));
  }
  auto ms_in = [&](std::string_view key, int& out, int64_t lo, int64_t hi, std::string_view range) -> Status {
    UW_ASSIGN_OR_RETURN(int64_t ms, m.Int(key, out));
    if (ms < lo || ms > hi) return m.FieldError(key, "expected " + std::string(range));
    out = static_cast<int>(ms);
    return Status::Ok();
  };
  UW_RETURN_IF_ERROR(ms_in("poll_ms", c.migration_poll_ms, 50, 60000, "50..60000"));
  UW_RETURN_IF_ERROR(ms_in("agent_grace_ms", c.migration_agent_grace_ms, 0, 3600000, "0..3600000"));
  UW_RETURN_IF_ERROR(ms_in("verify_window_ms", c.migration_verify_window_ms, 0, 600000, "0..600000"));
  return ms_in("verify_timeout_ms", c.migration_verify_timeout_ms, c.migration_verify_window_ms, 3600000,
               "verify_window_ms..3600000");
}

// A setting in lo..hi milliseconds (or other integer units) into `out`, which is its default.
Status IntIn(const JsonView& v, std::string_view key, int& out, int64_t lo, int64_t hi) {
  UW_ASSIGN_OR_RETURN(int64_t n, v.Int(key, out));
  if (n < lo || n > hi) return v.FieldError(key, "expected " + std::to_string(lo) + ".." + std::to_string(hi));
  out = static_cast<int>(n);
  return Status::Ok();
}

// The lease_* settings (manager/lease_service.h).
Status LeaseConfigFromJson(const JsonView& v, ManagerConfig& c) {
  UW_RETURN_IF_ERROR(IntIn(v, "lease_notice_ms", c.lease_notice_ms, 0, 86'400'000));
  UW_RETURN_IF_ERROR(IntIn(v, "lease_tick_ms", c.lease_tick_ms, 10, 60'000));
  UW_RETURN_IF_ERROR(IntIn(v, "lease_move_notice_ms", c.lease_move_notice_ms, 0, 600'000));
  UW_ASSIGN_OR_RETURN(c.lease_broker, v.String("lease_broker", c.lease_broker));
  if (c.lease_broker != "accept" && c.lease_broker != "decline" && c.lease_broker != "policy") {
    return v.FieldError("lease_broker", "expected accept, decline or policy");
  }
  if (v.Has("lease_reclaim_policy")) {
    UW_ASSIGN_OR_RETURN(std::string name, v.String("lease_reclaim_policy"));
    auto policy = lease::ParseBrokerPolicy(name);
    if (!policy.ok()) return v.FieldError("lease_reclaim_policy", policy.status().message());
    c.lease_reclaim_policy = *policy;
  }
  UW_ASSIGN_OR_RETURN(c.lease_admission, v.String("lease_admission", c.lease_admission));
  if (c.lease_admission != "reclaim" && c.lease_admission != "refuse") {
    return v.FieldError("lease_admission", "expected reclaim or refuse");
  }
  // Metering's retention (manager/metering_service.h).
  UW_RETURN_IF_ERROR(IntIn(v, "usage_minute_retention_h", c.usage_minute_retention_h, 1, 2160));  // 90 days
  return IntIn(v, "usage_retention_days", c.usage_retention_days, 1, 3650);
}

// Power management's settings (manager/power_service.h).
Status PowerConfigFromJson(const JsonView& v, ManagerConfig& c) {
  UW_RETURN_IF_ERROR(IntIn(v, "power_wake_timeout_ms", c.power_wake_timeout_ms, 1000, 3'600'000));
  UW_ASSIGN_OR_RETURN(c.ipmitool, v.String("ipmitool", c.ipmitool));
  if (c.ipmitool.empty()) return v.FieldError("ipmitool", "expected a program (path or name on PATH)");
  return Status::Ok();
}

// "storage": {"rbd": {...}} or {"local": {...}}: exactly one backend.
Status StorageConfigFromJson(const JsonView& v, ManagerConfig& c) {
  if (!v.Has("storage")) return Status::Ok();
  UW_ASSIGN_OR_RETURN(JsonView st, v.Object("storage"));
  UW_RETURN_IF_ERROR(st.RejectUnknown({"rbd", "local"}));
  if (st.Has("rbd") == st.Has("local")) return v.FieldError("storage", "expected exactly one of rbd and local");
  if (st.Has("local")) {
    UW_ASSIGN_OR_RETURN(JsonView l, st.Object("local"));
    UW_RETURN_IF_ERROR(l.RejectUnknown({"dir", "qemu_img"}));
    UW_ASSIGN_OR_RETURN(c.storage_local.dir, l.String("dir"));
    if (c.storage_local.dir.empty() || c.storage_local.dir[0] != '/')
      return l.FieldError("dir", "expected an absolute path");
    UW_ASSIGN_OR_RETURN(c.storage_local.qemu_img, l.String("qemu_img", c.storage_local.qemu_img));
    c.storage_backend = "local";
    return Status::Ok();
  }
  UW_ASSIGN_OR_RETURN(JsonView r, st.Object("rbd"));
  UW_RETURN_IF_ERROR(r.RejectUnknown({"conf", "user", "keyring", "pool", "secret_uuid", "op_timeout_s"}));
  storage::RbdConfig& k = c.storage_rbd;
  UW_ASSIGN_OR_RETURN(k.config_file, r.String("conf"));
  UW_ASSIGN_OR_RETURN(k.user, r.String("user", k.user));
  if (k.user.empty() || k.user.rfind("client.", 0) == 0) {
    return r.FieldError("user", "expected a cephx user name without 'client.'");
  }
  UW_ASSIGN_OR_RETURN(k.keyring, r.String("keyring"));
  UW_ASSIGN_OR_RETURN(k.pool, r.String("pool", k.pool));
  if (!storage::ValidateName("pool", k.pool).ok()) return r.FieldError("pool", "expected a Ceph pool name");
  UW_ASSIGN_OR_RETURN(k.secret_uuid, r.String("secret_uuid", ""));
  if (!k.secret_uuid.empty() && !IsUuid(k.secret_uuid)) return r.FieldError("secret_uuid", "expected a UUID");
  UW_RETURN_IF_ERROR(IntIn(r, "op_timeout_s", k.op_timeout_s, 1, 600));
  c.storage_backend = "rbd";
  return Status::Ok();
}

}  // namespace

Result<ManagerConfig> ManagerConfigFromJson(const Json& j, std::string_view where) {
  auto fail = [&](const Status& s) { return s.WithContext(where); };
  auto root = JsonView::Of(j, "");
  if (!root.ok()) return fail(root.status());
  const JsonView& v = *root;
  if (Status s = v.RejectUnknown({"db_path",
                                  "listen",
                                  "join_token",
                                  "admin_token",
                                  "heartbeat_interval_ms",
                                  "heartbeat_timeout_ms",
                                  "drs_interval_ms",
                                  "task_workers",
                                  "agent_timeout_ms",
                                  "max_body_bytes",
                                  "heartbeat_max_body_bytes",
                                  "http_workers",
                                  "max_connections",
                                  "max_connections_per_client",
                                  "header_timeout_ms",
                                  "body_timeout_ms",
                                  "placement_policy",
                                  "log_level",
                                  "log_file",
                                  "migration",
                                  "lease_notice_ms",
                                  "lease_tick_ms",
                                  "lease_move_notice_ms",
                                  "lease_broker",
                                  "lease_reclaim_policy",
                                  "lease_admission",
                                  "usage_minute_retention_h",
                                  "usage_retention_days",
                                  "power_wake_timeout_ms",
                                  "ipmitool",
                                  "storage"});
      !s.ok()) {
    return fail(s);
  }
  ManagerConfig c;
#define UW_CFG(lhs, expr)                   \
  do {                                      \
    auto r_ = (expr);                       \
    if (!r_.ok()) return fail(r_.status()); \
    (lhs) = std::move(*r_);                 \
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
  auto int_in = [&](std::string_view key, int& out, int64_t lo, int64_t hi) { return IntIn(v, key, out, lo, hi); };
  if (Status s = int_in("heartbeat_interval_ms", c.heartbeat_interval_ms, 50, 600000); !s.ok()) return fail(s);
  if (Status s = int_in("heartbeat_timeout_ms", c.heartbeat_timeout_ms, 100, 3600000); !s.ok()) return fail(s);
  if (c.heartbeat_timeout_ms <= c.heartbeat_interval_ms) {
    return fail(v.FieldError("heartbeat_timeout_ms", "must be larger than heartbeat_interval_ms"));
  }
  if (Status s = int_in("drs_interval_ms", c.drs_interval_ms, 0, 86400000); !s.ok()) return fail(s);
  if (Status s = PowerConfigFromJson(v, c); !s.ok()) return fail(s);
  if (Status s = StorageConfigFromJson(v, c); !s.ok()) return fail(s);
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
  if (Status s = LeaseConfigFromJson(v, c); !s.ok()) return fail(s);
  UW_CFG(c.placement_policy, v.String("placement_policy", c.placement_policy));
  if (c.placement_policy != "drs" && c.placement_policy != "opportunity-cost") {
    return fail(v.FieldError("placement_policy", "expected drs or opportunity-cost"));
  }
  UW_CFG(c.log_level, v.String("log_level", c.log_level));
  UW_CFG(c.log_file, v.String("log_file", ""));
  if (v.Has("migration")) {
    JsonView m = JsonView::Of(j, "").value();
    UW_CFG(m, v.Object("migration"));
    if (Status s = MigrationConfigFromJson(m, c); !s.ok()) return fail(s);
  }
#undef UW_CFG
  return c;
}

Result<ManagerConfig> LoadManagerConfig(const std::string& path) {
  UW_ASSIGN_OR_RETURN(Json j, LoadJsonFile(path));
  return ManagerConfigFromJson(j, path);
}

namespace {

// A guest disk from the storage catalogue: {"volume": NAME, "target"} or {"image": NAME, "size_gib": N,
// "target"}.
Result<GuestCreate::CatalogueDisk> ParseCatalogueDisk(const JsonView& d) {
  GuestCreate::CatalogueDisk cd;
  if (d.Has("volume")) {
    UW_RETURN_IF_ERROR(d.RejectUnknown({"volume", "target"}));
    UW_ASSIGN_OR_RETURN(cd.volume, d.String("volume"));
    if (!ValidateName(cd.volume, "volume").ok()) return d.FieldError("volume", "expected a volume name");
  } else {
    UW_RETURN_IF_ERROR(d.RejectUnknown({"image", "size_gib", "target"}));
    UW_ASSIGN_OR_RETURN(cd.image, d.String("image"));
    if (!storage::ValidateName("image", cd.image).ok()) return d.FieldError("image", "expected an image name");
    UW_ASSIGN_OR_RETURN(cd.size_gib, d.Int("size_gib", 0));
    if (cd.size_gib < 0 || cd.size_gib > 65536) {
      return d.FieldError("size_gib", "expected 1..65536 (or leave it out: the image's size)");
    }
  }
  UW_ASSIGN_OR_RETURN(cd.target, d.String("target", ""));
  return cd;
}

// A create's disks: local disks the host's agent makes (copied by live migration), Ceph RBD images
// every host reaches (with the right rbd_images), or volumes of the storage catalogue (into
// g.catalogue_disks); host paths are not the cluster's business. Whether an RBD image is named.
Result<bool> ParseGuestDisks(const JsonView& v, GuestCreate& g) {
  bool rbd_disk = false;
  if (!v.Has("disks")) return rbd_disk;
  UW_ASSIGN_OR_RETURN(auto disks, v.Objects("disks"));
  for (size_t i = 0; i < disks.size(); ++i) {
    const JsonView& d = disks[i];
    if (d.Has("volume") || d.Has("image")) {
      UW_ASSIGN_OR_RETURN(GuestCreate::CatalogueDisk cd, ParseCatalogueDisk(d));
      cd.index = i;
      g.catalogue_disks.push_back(std::move(cd));
      continue;
    }
    if (d.Has("rbd")) {
      UW_RETURN_IF_ERROR(d.RejectUnknown({"rbd", "target", "read_only"}));
      rbd_disk = true;
      continue;
    }
    UW_RETURN_IF_ERROR(d.RejectUnknown({"size_mib", "format", "target"}));
    UW_ASSIGN_OR_RETURN(int64_t size, d.PositiveInt("size_mib"));
    if (size > (int64_t{16} << 20)) return d.FieldError("size_mib", "expected at most 16777216");
  }
  return rbd_disk;
}

}  // namespace

Result<GuestCreate> ParseGuestCreate(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown(
      {"name",         "tenant",      "pool",      "kind",   "vcpus", "max_vcpus", "memory_mib",      "max_memory_mib",
       "image",        "boot",        "nics",      "labels", "start", "paravirt",  "automation",      "lease_class",
       "lease_term_s", "lease_floor", "lease_bid", "cpu",    "disks", "on_crash",  "restart_priority"}));
  GuestCreate g;
  UW_ASSIGN_OR_RETURN(g.name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(g.name, "name"));
  UW_ASSIGN_OR_RETURN(g.tenant, v.String("tenant", ""));
  if (!g.tenant.empty()) UW_RETURN_IF_ERROR(ValidateName(g.tenant, "tenant"));
  UW_ASSIGN_OR_RETURN(g.pool, v.String("pool", ""));
  UW_ASSIGN_OR_RETURN(std::string kind, v.String("kind", "qemu"));
  auto parsed_kind = ParseGuestKind(kind);
  if (!parsed_kind.ok()) return v.FieldError("kind", "expected kvm, qemu or lxc");
  g.kind = *parsed_kind;
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
  g.grant = {g.vcpus, mem};
  UW_ASSIGN_OR_RETURN(g.lease_bid, v.Int("lease_bid", 0));
  if (g.lease_bid < 0 || g.lease_bid > 1'000'000'000) {
    return v.FieldError("lease_bid", "expected 0..1000000000 credits per GiB-hour");
  }
  UW_ASSIGN_OR_RETURN(g.lease_term_s, v.OptionalInt("lease_term_s"));
  if (g.lease_term_s && (*g.lease_term_s < 1 || *g.lease_term_s > 10LL * 365 * 86400)) {
    return v.FieldError("lease_term_s", "expected 1..315360000 seconds (or leave it out: open-ended)");
  }
  if (v.Has("lease_floor")) {
    if (g.lease_class != "elastic") return v.FieldError("lease_floor", "only an elastic lease has a floor");
    UW_ASSIGN_OR_RETURN(JsonView f, v.Object("lease_floor"));
    UW_RETURN_IF_ERROR(f.RejectUnknown({"vcpus", "memory_mib"}));
    lease::Resources floor;
    UW_ASSIGN_OR_RETURN(floor.vcpus, f.Int("vcpus", 1));
    UW_ASSIGN_OR_RETURN(floor.memory_mib, f.Int("memory_mib", std::min<int64_t>(mem, 128)));
    if (floor.vcpus < 1 || floor.vcpus > g.vcpus) return f.FieldError("vcpus", "expected 1..vcpus");
    if (floor.memory_mib < 16 || floor.memory_mib > mem) return f.FieldError("memory_mib", "expected 16..memory_mib");
    g.lease_floor = floor;
  }
  UW_ASSIGN_OR_RETURN(g.on_crash, v.String("on_crash", "restart"));
  if (g.on_crash != "restart" && g.on_crash != "keep" && g.on_crash != "stop") {
    return v.FieldError("on_crash", "expected restart, keep or stop");
  }
  UW_ASSIGN_OR_RETURN(g.restart_priority, v.String("restart_priority", "medium"));
  if (g.restart_priority != "high" && g.restart_priority != "medium" && g.restart_priority != "low" &&
      g.restart_priority != "disabled") {
    return v.FieldError("restart_priority", "expected high, medium, low or disabled");
  }
  if (v.Has("image")) UW_RETURN_IF_ERROR(v.String("image").status());
  if (v.Has("start")) UW_RETURN_IF_ERROR(v.Bool("start").status());
  if (v.Has("paravirt")) UW_RETURN_IF_ERROR(v.Bool("paravirt").status());
  UW_ASSIGN_OR_RETURN(const bool rbd_disk, ParseGuestDisks(v, g));
  Json spec = body;
  UW_RETURN_IF_ERROR(internal::ParseNetworkNics(v, g, spec));
  for (const GuestCreate::CatalogueDisk& cd : g.catalogue_disks) {
    // A placeholder the agent's parser accepts, until the catalogue names the volume.
    spec["disks"][cd.index] = {{"rbd", "pending/volume"}};
    if (!cd.target.empty()) spec["disks"][cd.index]["target"] = cd.target;
  }
  for (const char* k : {"tenant", "pool", "automation", "lease_class", "lease_term_s", "lease_floor", "lease_bid",
                        "on_crash", "restart_priority"}) {
    spec.erase(k);
  }
  spec["vcpus"] = g.vcpus;
  spec["max_vcpus"] = max_vcpus;
  g.vcpus = max_vcpus;  // likewise for vCPUs
  spec["memory_mib"] = mem;
  spec["max_memory_mib"] = max_mem;
  spec["kind"] = GuestKindName(g.kind);
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
  if (rbd_disk) need("rbd_images", "disks.rbd");
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

Result<DpmConfig> ParseDpmConfigChange(const Json& body, DpmConfig cfg) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"mode", "band", "min_hosts_on", "keep_on", "hysteresis_s"}));
  if (v.Has("mode")) {
    UW_ASSIGN_OR_RETURN(cfg.mode, v.String("mode"));
    if (cfg.mode != "off" && cfg.mode != "manual" && cfg.mode != "automatic") {
      return v.FieldError("mode", "expected off, manual or automatic");
    }
  }
  if (v.Has("band")) {
    const Json& band = body["band"];
    if (!band.is_array() || band.size() != 2 || !band[0].is_number() || !band[1].is_number()) {
      return v.FieldError("band", "expected [low, high] in percent of capacity, e.g. [45, 81]");
    }
    const double low = band[0].get<double>(), high = band[1].get<double>();
    if (!(low > 0 && low < high && high <= 100)) return v.FieldError("band", "expected 0 < low < high <= 100");
    cfg.band_low = low / 100;
    cfg.band_high = high / 100;
  }
  if (v.Has("min_hosts_on")) {
    UW_ASSIGN_OR_RETURN(cfg.min_hosts_on, v.Int("min_hosts_on"));
    if (cfg.min_hosts_on < 1 || cfg.min_hosts_on > 100000) return v.FieldError("min_hosts_on", "expected 1..100000");
  }
  if (v.Has("keep_on")) {
    UW_ASSIGN_OR_RETURN(cfg.keep_on, v.Strings("keep_on"));
    for (size_t i = 0; i < cfg.keep_on.size(); ++i) {
      UW_RETURN_IF_ERROR(ValidateName(cfg.keep_on[i], "keep_on[" + std::to_string(i) + "]"));
    }
  }
  if (v.Has("hysteresis_s")) {
    UW_ASSIGN_OR_RETURN(cfg.hysteresis_s, v.Number("hysteresis_s"));
    if (!(cfg.hysteresis_s >= 0 && cfg.hysteresis_s <= 86400)) return v.FieldError("hysteresis_s", "expected 0..86400");
  }
  return cfg;
}

Json DpmConfigJson(const DpmConfig& c) {
  return {{"mode", c.mode},
          {"band", {std::lround(c.band_low * 1000) / 10.0, std::lround(c.band_high * 1000) / 10.0}},
          {"min_hosts_on", c.min_hosts_on},
          {"keep_on", c.keep_on},
          {"hysteresis_s", c.hysteresis_s}};
}

Result<HaConfig> ParseHaConfigChange(const Json& body, HaConfig cfg) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"enabled", "host_failures", "isolation_s"}));
  if (v.Has("enabled")) {
    UW_ASSIGN_OR_RETURN(cfg.enabled, v.Bool("enabled"));
  }
  if (v.Has("host_failures")) {
    UW_ASSIGN_OR_RETURN(cfg.host_failures, v.Int("host_failures"));
    if (cfg.host_failures < 0 || cfg.host_failures > 64) return v.FieldError("host_failures", "expected 0..64");
  }
  if (v.Has("isolation_s")) {
    UW_ASSIGN_OR_RETURN(cfg.isolation_s, v.Int("isolation_s"));
    if (cfg.isolation_s < 0 || cfg.isolation_s > 3600) return v.FieldError("isolation_s", "expected 0..3600 seconds");
  }
  return cfg;
}

Json HaConfigJson(const HaConfig& c) {
  return {{"enabled", c.enabled}, {"host_failures", c.host_failures}, {"isolation_s", c.isolation_s}};
}

Result<DrsConfig> ParseDrsConfigChange(const Json& body, DrsConfig cfg) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown(
      {"automation", "threshold", "max_moves", "policy", "allow_cold_moves", "min_move_interval_s", "dpm", "ha"}));
  if (v.Has("dpm")) {
    auto dpm = ParseDpmConfigChange(body["dpm"], cfg.dpm);
    if (!dpm.ok()) return dpm.status().WithContext("dpm");
    cfg.dpm = std::move(*dpm);
  }
  if (v.Has("ha")) {
    auto ha = ParseHaConfigChange(body["ha"], cfg.ha);
    if (!ha.ok()) return ha.status().WithContext("ha");
    cfg.ha = *ha;
  }
  if (v.Has("automation")) {
    UW_ASSIGN_OR_RETURN(cfg.automation, v.String("automation"));
    if (cfg.automation != "manual" && cfg.automation != "automatic") {
      return v.FieldError("automation", "expected manual or automatic");
    }
  }
  if (v.Has("threshold")) {
    UW_ASSIGN_OR_RETURN(int64_t t, v.Int("threshold"));
    if (t < 1 || t > 5) return v.FieldError("threshold", "expected 1..5");
    cfg.threshold = static_cast<int>(t);
  }
  if (body.contains("max_moves")) {
    UW_ASSIGN_OR_RETURN(cfg.max_moves, v.OptionalInt("max_moves"));
    if (cfg.max_moves && *cfg.max_moves < 0)
      return v.FieldError("max_moves", "expected a non-negative integer or null");
  }
  if (v.Has("allow_cold_moves")) {
    UW_ASSIGN_OR_RETURN(cfg.allow_cold_moves, v.Bool("allow_cold_moves"));
  }
  if (v.Has("min_move_interval_s")) {
    constexpr double kMaxCooldownS = 30 * 86400;
    UW_ASSIGN_OR_RETURN(cfg.min_move_interval_s, v.Number("min_move_interval_s"));
    if (!(cfg.min_move_interval_s >= 0 && cfg.min_move_interval_s <= kMaxCooldownS)) {
      return v.FieldError("min_move_interval_s", "expected 0..2592000 seconds");
    }
  }
  if (v.Has("policy")) {
    UW_ASSIGN_OR_RETURN(cfg.policy, v.String("policy"));
    if (!placement::MakePolicy(cfg.policy).ok()) {
      std::string names;
      for (const auto& n : placement::PolicyNames()) names += (names.empty() ? "" : ", ") + n;
      return v.FieldError("policy", "expected one of " + names);
    }
  }
  return cfg;
}

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

Result<GuestOp> ParseGuestOp(std::string_view op, const Json& args) {
  GuestOp out;
  out.op = op;
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(args, ""));
  if (op == "resize") {
    UW_RETURN_IF_ERROR(v.RejectUnknown({"vcpus", "memory_mib"}));
    if (!v.Has("vcpus") && !v.Has("memory_mib")) return InvalidArgumentError("give vcpus and/or memory_mib to resize");
    if (v.Has("vcpus")) {
      UW_ASSIGN_OR_RETURN(out.vcpus, v.PositiveInt("vcpus"));
    }
    if (v.Has("memory_mib")) {
      UW_ASSIGN_OR_RETURN(out.memory_mib, v.PositiveInt("memory_mib"));
    }
  } else if (op == "stop") {
    UW_RETURN_IF_ERROR(v.RejectUnknown({"force", "timeout_s"}));
    UW_ASSIGN_OR_RETURN(out.force, v.Bool("force", false));
    if (v.Has("timeout_s")) {
      UW_ASSIGN_OR_RETURN(out.timeout_s, v.NonNegativeInt("timeout_s", 0));
    }
  } else if (op == "delete") {
    UW_RETURN_IF_ERROR(v.RejectUnknown({"force"}));
    UW_ASSIGN_OR_RETURN(out.force, v.Bool("force", false));
  } else if (op != "start") {
    return InvalidArgumentError("unknown guest operation '" + std::string(op) + "'");
  }
  return out;
}

Result<MigrateRequest> ParseMigrateRequest(const Json& body) {
  MigrateRequest out;
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, "body"));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"host", "mode", "bandwidth_mib_s", "downtime_limit_ms", "allow_postcopy"}));
  UW_ASSIGN_OR_RETURN(out.host, v.String("host"));
  UW_ASSIGN_OR_RETURN(std::string mode, v.String("mode", "live"));
  if (mode != "live" && mode != "cold") return v.FieldError("mode", "expected live or cold");
  out.cold = mode == "cold";
  if (v.Has("bandwidth_mib_s")) {
    UW_ASSIGN_OR_RETURN(double bw, v.Number("bandwidth_mib_s"));
    if (!(bw > 0)) return v.FieldError("bandwidth_mib_s", "expected a positive number");
    out.bandwidth_mib_s = bw;
  }
  if (v.Has("downtime_limit_ms")) {
    UW_ASSIGN_OR_RETURN(out.downtime_limit_ms, v.PositiveInt("downtime_limit_ms"));
  }
  if (v.Has("allow_postcopy")) {
    UW_ASSIGN_OR_RETURN(out.allow_postcopy, v.Bool("allow_postcopy"));
  }
  return out;
}

Result<std::string> ParsePowerAction(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"action"}));
  UW_ASSIGN_OR_RETURN(std::string action, v.String("action"));
  if (action != "on" && action != "off" && action != "cycle") {
    return v.FieldError("action", "expected on, off or cycle");
  }
  return action;
}

Result<std::vector<std::string>> ParseHostGroups(const Json& body) {
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
  return groups;
}

Result<placement::Pool> ParsePoolCreate(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_ASSIGN_OR_RETURN(std::string name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(name, "name"));
  return placement::ParsePoolJson(body, "");
}

Result<placement::Rule> ParseRuleCreate(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_ASSIGN_OR_RETURN(std::string name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(name, "name"));
  UW_ASSIGN_OR_RETURN(placement::Rule rule, placement::ParseRuleJson(body, ""));
  for (size_t i = 0; i < rule.vms.size(); ++i) {
    UW_RETURN_IF_ERROR(ValidateGuestName(rule.vms[i], "vms[" + std::to_string(i) + "]"));
  }
  return rule;
}

Result<ImageImport> ParseImageImport(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"name", "source"}));
  ImageImport r;
  UW_ASSIGN_OR_RETURN(r.name, v.String("name"));
  if (!storage::ValidateName("image", r.name).ok()) {
    return v.FieldError("name", "expected 1-63 of [a-z0-9._-], starting with a letter or digit");
  }
  UW_ASSIGN_OR_RETURN(r.source, v.String("source"));
  const bool url = r.source.rfind("http://", 0) == 0 || r.source.rfind("https://", 0) == 0;
  if (r.source.size() > 4096 || (!url && (r.source.empty() || r.source[0] != '/'))) {
    return v.FieldError("source", "expected an absolute path on the manager's host or an http(s) URL");
  }
  return r;
}

Result<VolumeCreate> ParseVolumeCreate(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"name", "size_gib", "image", "tenant"}));
  VolumeCreate r;
  UW_ASSIGN_OR_RETURN(r.name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(r.name, "name"));
  UW_ASSIGN_OR_RETURN(r.tenant, v.String("tenant", ""));
  if (!r.tenant.empty()) UW_RETURN_IF_ERROR(ValidateName(r.tenant, "tenant"));
  UW_ASSIGN_OR_RETURN(r.image, v.String("image", ""));
  if (!r.image.empty() && !storage::ValidateName("image", r.image).ok()) {
    return v.FieldError("image", "expected an image name");
  }
  if (r.image.empty() && !v.Has("size_gib")) return v.FieldError("size_gib", "an empty volume needs a size");
  UW_ASSIGN_OR_RETURN(r.size_gib, v.Int("size_gib", 0));
  if ((v.Has("size_gib") && r.size_gib < 1) || r.size_gib > 65536) return v.FieldError("size_gib", "expected 1..65536");
  return r;
}

Result<int64_t> ParseVolumeResize(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"size_gib"}));
  UW_ASSIGN_OR_RETURN(int64_t gib, v.Int("size_gib"));
  if (gib < 1 || gib > 65536) return v.FieldError("size_gib", "expected 1..65536");
  return gib;
}

Result<std::optional<int64_t>> ParseStorageQuota(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"gib"}));
  if (!body.contains("gib")) return v.FieldError("gib", "expected a number of GiB, or null for no quota");
  UW_ASSIGN_OR_RETURN(std::optional<int64_t> gib, v.OptionalInt("gib"));
  if (gib && (*gib < 0 || *gib > (int64_t{1} << 40))) return v.FieldError("gib", "expected 0 or more GiB");
  return gib;
}

}  // namespace uw::manager
