// uw-agent's configuration (the JSON file uw-agent reads at start) and its parser.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace uw::vmm {

struct AgentConfig {
  std::string host_name;
  std::string listen_address = "127.0.0.1";
  int listen_port = 7700;
  std::string token;  // bearer token the manager must present
  std::string libvirt_uri = "qemu:///system";
  std::string lxc_uri;  // empty: no containers on this host
  std::string state_dir = "/var/lib/underware/agent";
  std::map<std::string, std::string> images;  // image name -> directory (vmlinux|vmlinuz, initrd.img, lxc-rootfs)
  bool allow_emulated_kvm = false;            // run kind=kvm guests under TCG when KVM is unusable
  std::string log_level = "info";
  std::string log_file;
  int sample_interval_ms = 1000;
  int stop_timeout_s = 30;  // graceful stop, then force
  size_t max_body_bytes = 256 << 10;
  // How long a copy of the manager's image (state_dir/images) that no local disk uses is kept, in
  // case the next guest needs it, before it is removed.
  int64_t image_keep_s = 86400;
  std::string sys_root = "/";  // where DetectKvm looks (tests point it elsewhere)
  // Cluster membership (vmm/manager_link.h); empty manager_url: standalone agent.
  std::string manager_url;
  std::string join_token;
  int heartbeat_interval_ms = 2000;
  std::string advertise_url;  // how the manager reaches this agent; default http://listen address:port
  // How another host's libvirtd reaches this one for live migration (peer-to-peer).
  // Default qemu+tcp://<listen address>/system.
  std::string migration_uri;
  // Guest health watch (vmm/health.h): ping every `monitor.interval_s` once ready; no answer for
  // `monitor.timeout_s` makes a ready guest unresponsive.
  int monitor_interval_s = 5;
  int monitor_timeout_s = 30;
  // What POST /api/v1/host/shutdown runs (detached, in its own session) to power the host off
  // cleanly: the Wake-on-LAN power driver's "off". Empty: the endpoint refuses (501).
  std::vector<std::string> shutdown_command = {"systemctl", "poweroff"};
  // Ceph for guests' rbd disks (absent: this host runs none). The key is read from `keyring` when
  // a guest needs it and given to libvirt as the secret `secret_uuid`, the same on every host so
  // that a guest's domain XML is valid wherever it moves.
  struct Ceph {
    std::string conf;  // ceph.conf with the monitors
    std::string user = "uw";
    std::string keyring;  // holds "key = BASE64" for client.USER
    std::string secret_uuid;
    // HA's storage heartbeat (storage/heartbeat.h): the agent beats in this pool (the guests'
    // volumes') every heartbeat_interval_ms, so the manager can tell a host cut off from it from one
    // that is down.
    std::string pool = "rbd";
    bool storage_heartbeat = true;
  };
  std::optional<Ceph> ceph;
  // Open vSwitch for guests' networks (absent: this host has none): the agent keeps its
  // integration bridge in ovsdb-server's database (netvirt/bridge.h) from its start.
  struct Network {
    std::string ovsdb = "unix:/run/openvswitch/db.sock";
    std::string bridge = "uw-int";
    std::string datapath_type = "netdev";  // netdev (userspace) or system (the kernel module)
  };
  std::optional<Network> network;
};

// Reads the agent's JSON config. Errors name the file and field ("agent.json: listen.port: ...").
Result<AgentConfig> AgentConfigFromJson(const Json& j, std::string_view where);
Result<AgentConfig> LoadAgentConfig(const std::string& path);

}  // namespace uw::vmm
