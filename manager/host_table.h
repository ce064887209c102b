// The hosts table and each host's usage samples: every statement about hosts lives here.
// Private to manager/ (Manager owns one; host sessions, guests and the agent directory call it).
//
//   joins, heartbeats, deadlines, maintenance, groups, listings --typed calls--> HostTable --> Store
//
// A host's reservation totals come from host_reservations, kept by the store's triggers from the
// guests' rows; this table never counts guests itself.
//
// No method opens a transaction: a caller that writes more than one statement (a host change and
// its event) wraps them in Store::Transact, which every method may be called inside.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "manager/agent_client.h"
#include "manager/manager.h"
#include "manager/store.h"

namespace uw::manager::internal {

class HostTable {
 public:
  explicit HostTable(Store& store) : store_(store) {}

  // What a heartbeat is checked against.
  struct Session {
    std::string state;            // connected | disconnected
    std::string host_token_hash;  // SHA-256 of the host's secret, hex
  };
  // A host that has not heartbeaten since `deadline` while connected.
  struct Overdue {
    std::string name;
    int64_t last_heartbeat_ms = 0;
  };
  // One heartbeat's usage: the host's total and each guest's (cores, MiB; -1 MiB when unknown).
  struct Usage {
    double cpu_cores = 0;
    int64_t memory_mib = 0;
    std::map<std::string, std::pair<double, int64_t>> guests;
    // The agent's numbered samples (vmm::SampleBook), for metering; empty from an agent that
    // sends only its latest usage, which is then kept as a sample at the heartbeat's time.
    struct GuestSample {
      double cpu_cores = 0;
      int64_t memory_mib = -1;
      int64_t cpu_us = 0, net_bytes = 0, disk_bytes = 0;  // since the guest's previous sample
      bool baseline = false;  // the guest's first sample since its agent (re)started counting
    };
    struct Sample {
      int64_t seq = 0;
      int64_t at_ms = 0;  // when the agent took it
      std::map<std::string, GuestSample> guests;
    };
    std::vector<Sample> samples;
  };

  // Adds a joining host or updates a known one (address, token, capacity, info), connected as of
  // `now`. Returns whether the host was known before.
  Result<bool> Join(const HostJoin& join, std::string_view host_token_hash, int64_t now);
  // kNotFound "host 'NAME' not found".
  Status Require(std::string_view name);
  Result<Session> SessionOf(std::string_view name);
  Result<AgentAddress> AddressOf(std::string_view name);  // kNotFound names the host
  // The memory on the host that no guest's grant holds (guests moving in hold theirs there too):
  // what a guest on it may grow by. Negative when the host is overcommitted.
  Result<int64_t> FreeMemoryMib(std::string_view name);
  // Marks the host connected as of `now` with the heartbeat's usage, and keeps that usage as
  // samples (a guest's row is rewritten only when its usage changed).
  Status RecordHeartbeat(std::string_view name, int64_t now, const Usage& usage);
  // Connected hosts whose last heartbeat is older than `deadline`.
  Result<std::vector<Overdue>> OverdueSince(int64_t deadline);
  // Connected -> disconnected; false when the host was not connected (any more). Exact only inside
  // a Store::Transact (another thread's write could otherwise come between).
  Result<bool> Disconnect(std::string_view name);
  // A host confirmed off (standby, fenced): disconnected, and nothing in use on it any more.
  Status PoweredOff(std::string_view name);
  // After a restart no host is judged by heartbeats the previous process received: each gets a
  // full timeout from `now`.
  Status ExtendDeadlines(int64_t now);
  Status SetMaintenance(std::string_view name, bool on);
  Status SetGroups(std::string_view name, const std::vector<std::string>& groups);
  // Drops usage samples older than `before`.
  Status PruneUsage(int64_t before);

  Result<Page<Host>> List(const PageQuery& page);
  // Every host as placement reads it, by name: only name, state, maintenance, groups and the
  // capacity are filled (no reservations, usage or agent address).
  Result<std::vector<Host>> ForPlacement();
  // The host with its agent's report about itself (HostDetail's `host` and `info`).
  Result<HostDetail> Get(std::string_view name);

 private:
  Store& store_;
};

// A guest on its host may grow to `memory_mib` only into memory no other grant holds:
// kResourceExhausted naming `field`, the guest, its host and the room there when it does not fit.
// OK for a guest that does not grow or has no host. A released guest holds nothing: starting it
// grows it from nothing.
Status RoomToGrow(HostTable& hosts, const Guest& g, int64_t memory_mib, std::string_view field);

}  // namespace uw::manager::internal
