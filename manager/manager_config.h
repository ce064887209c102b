// uw-manager's configuration (its JSON file): part of the public header manager/manager.h, which
// includes it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/json.h"
#include "common/status.h"
#include "lease/broker.h"
#include "migration/migration.h"
#include "storage/storage.h"

namespace uw::manager {

struct ManagerConfig {
  std::string db_path = "/var/lib/underware/manager.db";
  std::string listen_address = "127.0.0.1";
  int listen_port = 7800;
  std::string join_token;            // agents present it to join (>= 16 characters)
  std::string admin_token;           // bootstrap admin API token (>= 16 characters)
  int heartbeat_interval_ms = 2000;  // told to agents on join
  int heartbeat_timeout_ms = 10000;  // no heartbeat for this long: host disconnected
  // Power management: how long a powered-on host's agent may take to join before host.wake_failed,
  // and the ipmitool program the ipmi driver runs.
  int power_wake_timeout_ms = 300000;
  std::string ipmitool = "ipmitool";
  int drs_interval_ms = 60000;  // DRS reconcile period (0: never run on a timer)
  int task_workers = 4;
  int agent_timeout_ms = 120000;  // one call to an agent
  size_t max_body_bytes = 256 << 10;
  // The heartbeat route's own body limit. uw-agent sends about 230 bytes per guest (vmm::HeartbeatBody):
  // a host with 1,024 guests sends about 235 KB; this leaves room for 4,000 guests with long names.
  size_t heartbeat_max_body_bytes = 1 << 20;
  int http_workers = 16;                 // handler threads (event streams hold none)
  int max_connections = 4096;            // open connections (event streams included), in total
  int max_connections_per_client = 256;  // and per client address (raise it behind a proxy or NAT)
  // A request head must be in within header_timeout_ms (of the connection or the previous
  // answer), its body within body_timeout_ms of the head; else 408 and the connection is closed.
  int header_timeout_ms = 10000;
  int body_timeout_ms = 30000;
  std::string placement_policy = "drs";
  std::string log_level = "info";
  std::string log_file;
  // Live migration ("migration": {"per_host", "cluster", "poll_ms", "agent_grace_ms", "convergence": {...}}).
  migration::Caps migration_caps;
  migration::ConvergencePolicy convergence;
  int migration_poll_ms = 500;           // progress checks of a running migration
  int migration_agent_grace_ms = 60000;  // an agent unreachable mid-migration is waited for this long
  // After the switch-over the destination must show the guest running for verify_window_ms and,
  // when it has a control channel, answering it within verify_timeout_ms; else the migration ends
  // failed_after_switchover.
  int migration_verify_window_ms = 10000;
  int migration_verify_timeout_ms = 90000;
  // Leases (manager/lease_service.h): the notice before an unrenewed term end takes anything, how
  // often the lease loop runs, and the broker's answer to counter-offers: accept | decline all, or
  // policy (lease_reclaim_policy weighs each: accepted when leases it ranks below the countering
  // one, on the same host, can give what the counter keeps; they get notices of their own).
  int lease_notice_ms = 30000;
  int lease_tick_ms = 1000;
  // Before a live or cold move the guest is sent a `migrate` notice; the move waits for its answer
  // (ack, release) or this long, whichever comes first (a guest that cannot be reached: not at all).
  int lease_move_notice_ms = 2000;
  std::string lease_broker = "accept";
  // Which leases give back when the system needs room (lease/broker.h): for a host reclaim that
  // names no policy and for admission. With lease_admission "reclaim", a guaranteed or elastic
  // guest that no host has room for is admitted where elastic and preemptible leases can give
  // what is missing: they get notices, and the guest is created once those are acted on.
  // "refuse" answers 409 instead.
  lease::BrokerPolicy lease_reclaim_policy = lease::BrokerPolicy::kStrictPriority;
  std::string lease_admission = "reclaim";
  // Metering (manager/metering_service.h): minute records are kept this many hours, hourly and
  // daily rollups this many days.
  int usage_minute_retention_h = 48;
  int usage_retention_days = 400;
  // The storage catalogue's backend (manager/storage_service.h): "storage": {"rbd": {"conf",
  // "user", "keyring", "pool", "secret_uuid"}} (Ceph, which every host reaches) or {"local":
  // {"dir"}} (qcow2 files on the manager's host: images and volumes only, no guest disks). None:
  // the image and volume routes answer 409.
  std::string storage_backend;  // "" | "rbd" | "local"
  storage::RbdConfig storage_rbd;
  storage::LocalConfig storage_local;
};

// Errors name the file and the field.
Result<ManagerConfig> ManagerConfigFromJson(const Json& j, std::string_view where);
Result<ManagerConfig> LoadManagerConfig(const std::string& path);

}  // namespace uw::manager
