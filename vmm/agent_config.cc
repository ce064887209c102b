#include "vmm/agent_config.h"

#include "common/id.h"

namespace uw::vmm {

namespace {

// The `ceph` object: where the cephx key of the user that guests' rbd disks use is, and the libvirt
// secret that holds it.
Result<AgentConfig::Ceph> CephFromJson(const JsonView& v) {
  UW_ASSIGN_OR_RETURN(JsonView ceph, v.Object("ceph"));
  UW_RETURN_IF_ERROR(ceph.RejectUnknown({"conf", "user", "keyring", "secret_uuid", "pool", "storage_heartbeat"}));
  AgentConfig::Ceph k;
  UW_ASSIGN_OR_RETURN(k.conf, ceph.String("conf"));
  UW_ASSIGN_OR_RETURN(k.user, ceph.String("user", k.user));
  UW_ASSIGN_OR_RETURN(k.keyring, ceph.String("keyring"));
  UW_ASSIGN_OR_RETURN(k.secret_uuid, ceph.String("secret_uuid"));
  if (!IsUuid(k.secret_uuid)) return ceph.FieldError("secret_uuid", "expected a UUID");
  UW_ASSIGN_OR_RETURN(k.pool, ceph.String("pool", k.pool));
  if (!ValidateName(k.pool, "ceph.pool").ok()) return ceph.FieldError("pool", "expected a pool name");
  UW_ASSIGN_OR_RETURN(k.storage_heartbeat, ceph.Bool("storage_heartbeat", k.storage_heartbeat));
  if (!ValidateName(k.user, "ceph.user").ok() || k.user.rfind("client.", 0) == 0) {
    return ceph.FieldError("user", "expected a cephx user name without 'client.'");
  }
  return k;
}

// The `network` object: where ovsdb-server listens and the integration bridge to keep there.
Result<AgentConfig::Network> NetworkFromJson(const JsonView& v) {
  UW_ASSIGN_OR_RETURN(JsonView net, v.Object("network"));
  UW_RETURN_IF_ERROR(net.RejectUnknown({"ovsdb", "bridge", "datapath_type"}));
  AgentConfig::Network n;
  UW_ASSIGN_OR_RETURN(n.ovsdb, net.String("ovsdb", n.ovsdb));
  if (n.ovsdb.empty()) return net.FieldError("ovsdb", "expected unix:PATH of ovsdb-server's socket");
  UW_ASSIGN_OR_RETURN(n.bridge, net.String("bridge", n.bridge));
  UW_ASSIGN_OR_RETURN(n.datapath_type, net.String("datapath_type", n.datapath_type));
  if (n.datapath_type != "netdev" && n.datapath_type != "system") {
    return net.FieldError("datapath_type", "expected netdev or system");
  }
  return n;
}

// The optional `ceph` and `network` objects: the host's shared storage and its Open vSwitch.
Status ReadServices(const JsonView& v, AgentConfig& c) {
  if (v.Has("ceph")) {
    UW_ASSIGN_OR_RETURN(c.ceph, CephFromJson(v));
  }
  if (v.Has("network")) {
    UW_ASSIGN_OR_RETURN(c.network, NetworkFromJson(v));
  }
  return Status::Ok();
}

}  // namespace

Result<AgentConfig> AgentConfigFromJson(const Json& j, std::string_view where) {
  auto root = JsonView::Of(j, "");
  if (!root.ok()) return root.status().WithContext(where);
  const JsonView& v = *root;
  auto fail = [&](const Status& s) { return s.WithContext(where); };
  if (Status s = v.RejectUnknown({"host_name",
                                  "listen",
                                  "token",
                                  "libvirt_uri",
                                  "lxc_uri",
                                  "state_dir",
                                  "images",
                                  "guest_assets",
                                  "allow_emulated_kvm",
                                  "log_level",
                                  "log_file",
                                  "sample_interval_ms",
                                  "stop_timeout_s",
                                  "max_body_bytes",
                                  "image_keep_s",
                                  "sys_root",
                                  "manager_url",
                                  "join_token",
                                  "heartbeat_interval_ms",
                                  "advertise_url",
                                  "migration_uri",
                                  "monitor",
                                  "shutdown_command",
                                  "ceph",
                                  "network"});
      !s.ok()) {
    return fail(s);
  }
  AgentConfig c;
#define UW_CFG(lhs, expr)                   \
  do {                                      \
    auto r_ = (expr);                       \
    if (!r_.ok()) return fail(r_.status()); \
    (lhs) = std::move(*r_);                 \
  } while (0)
  UW_CFG(c.host_name, v.String("host_name"));
  if (Status s = ValidateName(c.host_name, "host_name"); !s.ok()) return fail(s);
  if (v.Has("listen")) {
    auto l = v.Object("listen");
    if (!l.ok()) return fail(l.status());
    UW_CFG(c.listen_address, l->String("address", c.listen_address));
    int64_t port = 0;
    UW_CFG(port, l->Int("port", c.listen_port));
    if (port < 0 || port > 65535) return fail(l->FieldError("port", "expected 0..65535"));
    c.listen_port = static_cast<int>(port);
  }
  UW_CFG(c.token, v.String("token"));
  if (c.token.size() < 16) return fail(v.FieldError("token", "must be at least 16 characters"));
  UW_CFG(c.libvirt_uri, v.String("libvirt_uri", c.libvirt_uri));
  UW_CFG(c.lxc_uri, v.String("lxc_uri", ""));
  UW_CFG(c.state_dir, v.String("state_dir", c.state_dir));
  if (v.Has("guest_assets")) {
    std::string dir;
    UW_CFG(dir, v.String("guest_assets"));
    c.images["tiny"] = dir;
  }
  if (v.Has("images")) {
    auto imgs = v.Object("images");
    if (!imgs.ok()) return fail(imgs.status());
    for (auto it = imgs->json().begin(); it != imgs->json().end(); ++it) {
      if (!it->is_string()) return fail(imgs->FieldError(it.key(), "expected a directory path"));
      c.images[it.key()] = it->get<std::string>();
    }
  }
  UW_CFG(c.allow_emulated_kvm, v.Bool("allow_emulated_kvm", false));
  UW_CFG(c.log_level, v.String("log_level", c.log_level));
  UW_CFG(c.log_file, v.String("log_file", ""));
  int64_t n = 0;
  UW_CFG(n, v.Int("sample_interval_ms", c.sample_interval_ms));
  if (n < 100 || n > 3'600'000) return fail(v.FieldError("sample_interval_ms", "expected 100..3600000"));
  c.sample_interval_ms = static_cast<int>(n);
  UW_CFG(n, v.Int("stop_timeout_s", c.stop_timeout_s));
  if (n < 0 || n > 3600) return fail(v.FieldError("stop_timeout_s", "expected 0..3600"));
  c.stop_timeout_s = static_cast<int>(n);
  UW_CFG(n, v.Int("max_body_bytes", static_cast<int64_t>(c.max_body_bytes)));
  if (n < 1024) return fail(v.FieldError("max_body_bytes", "expected at least 1024"));
  c.max_body_bytes = static_cast<size_t>(n);
  UW_CFG(n, v.Int("image_keep_s", c.image_keep_s));
  if (n < 0 || n > 31'536'000) return fail(v.FieldError("image_keep_s", "expected 0..31536000 (a year)"));
  c.image_keep_s = n;
  UW_CFG(c.sys_root, v.String("sys_root", c.sys_root));
  UW_CFG(c.manager_url, v.String("manager_url", ""));
  UW_CFG(c.join_token, v.String("join_token", ""));
  UW_CFG(c.advertise_url, v.String("advertise_url", ""));
  UW_CFG(c.migration_uri, v.String("migration_uri", "qemu+tcp://" + c.listen_address + "/system"));
  if (!c.manager_url.empty() && c.join_token.empty()) {
    return fail(v.FieldError("join_token", "required with manager_url (the join_token of the manager's config)"));
  }
  UW_CFG(n, v.Int("heartbeat_interval_ms", c.heartbeat_interval_ms));
  if (n < 50 || n > 600'000) return fail(v.FieldError("heartbeat_interval_ms", "expected 50..600000"));
  c.heartbeat_interval_ms = static_cast<int>(n);
  if (v.Has("monitor")) {
    auto m = v.Object("monitor");
    if (!m.ok()) return fail(m.status());
    if (Status s = m->RejectUnknown({"timeout_s", "interval_s"}); !s.ok()) return fail(s);
    UW_CFG(n, m->Int("timeout_s", c.monitor_timeout_s));
    if (n < 2 || n > 3600) return fail(m->FieldError("timeout_s", "expected 2..3600"));
    c.monitor_timeout_s = static_cast<int>(n);
    UW_CFG(n, m->Int("interval_s", c.monitor_interval_s));
    if (n < 1 || n > 3600) return fail(m->FieldError("interval_s", "expected 1..3600"));
    c.monitor_interval_s = static_cast<int>(n);
  }
  UW_CFG(c.shutdown_command, v.Strings("shutdown_command", c.shutdown_command));
  if (!c.shutdown_command.empty() && c.shutdown_command[0].empty()) {
    return fail(v.FieldError("shutdown_command", "the program (first element) is empty"));
  }
  if (Status s = ReadServices(v, c); !s.ok()) return fail(s);
#undef UW_CFG
  return c;
}

Result<AgentConfig> LoadAgentConfig(const std::string& path) {
  UW_ASSIGN_OR_RETURN(Json j, LoadJsonFile(path));
  return AgentConfigFromJson(j, path);
}

}  // namespace uw::vmm
