// Storage heartbeats: HA's path to a host that does not go through the manager's network
// (issue 15). Every agent whose host reaches Ceph sets its own key in the omap of one RADOS object
// in the guests' pool every second; the manager reads every key in one call and notes, on its own
// clock (hosts' clocks may differ), when each value last changed.
//
//   agent:   HeartbeatWriter thread --Beat--> omap of `uw-host-heartbeats`: HOST = "START-SEQ"
//   manager: HA pass --ReadAll--> HeartbeatWatch::Observe --> State(host): live | stopped | unknown
//
// A host whose network heartbeats stopped but whose storage heartbeat is live still runs (and may
// still write its guests' shared volumes); one whose storage heartbeat stopped too is down on both
// paths. After a fence, a storage heartbeat that still changes says the fence did not reach the host.
//
// Thread safety: StorageHeartbeats may be called from any thread; HeartbeatWatch is the caller's
// to guard; HeartbeatWriter's Start and Stop from one thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "storage/storage.h"

namespace uw::storage {

// The RADOS object whose omap holds one key per host.
inline constexpr const char* kHeartbeatObject = "uw-host-heartbeats";

class StorageHeartbeats {
 public:
  virtual ~StorageHeartbeats() = default;
  StorageHeartbeats() = default;
  StorageHeartbeats(const StorageHeartbeats&) = delete;
  StorageHeartbeats& operator=(const StorageHeartbeats&) = delete;

  // Sets `host`'s key to `value` (the object is made on the first beat).
  virtual Status Beat(const std::string& host, const std::string& value) = 0;
  // Every host's key and value; empty before any host beat. kUnavailable past the op timeout.
  virtual Result<std::map<std::string, std::string>> ReadAll() = 0;
};

// Connects as `config`'s user to its pool (the same errors as OpenRbdBackend).
Result<std::unique_ptr<StorageHeartbeats>> OpenStorageHeartbeats(const RbdConfig& config);

// What the manager makes of the values it read, per host.
enum class BeatState {
  kUnknown,  // never seen, seen for less than the timeout, or the last good read is too old
  kLive,     // its value changed less than the timeout ago
  kStopped,  // its value has not changed for the timeout while reads succeeded
};
std::string_view BeatStateName(BeatState s);  // "unknown" | "live" | "stopped"

class HeartbeatWatch {
 public:
  explicit HeartbeatWatch(int64_t timeout_ms) : timeout_ms_(timeout_ms) {}

  // A successful read at `now_ms`. A host missing from `values` keeps what was seen of it.
  void Observe(const std::map<std::string, std::string>& values, int64_t now_ms);
  BeatState State(const std::string& host, int64_t now_ms) const;
  // The host's value as last read ("" when never seen).
  std::string Value(const std::string& host) const;
  // How long the host's value has stood unchanged, from when it last changed or was first seen.
  int64_t UnchangedMs(const std::string& host, int64_t now_ms) const;

 private:
  struct Seen {
    std::string value;
    int64_t first_seen_ms = 0;
    int64_t changed_ms = -1;  // -1: no change seen yet
  };
  int64_t timeout_ms_;
  int64_t last_read_ms_ = -1;
  std::map<std::string, Seen> hosts_;
};

// The agent's side: beats every `interval` on a thread of its own, connecting (and reconnecting
// after an error) as it goes, so a Ceph that is down when the agent starts is picked up later.
class HeartbeatWriter {
 public:
  HeartbeatWriter(RbdConfig config, std::string host, std::chrono::milliseconds interval);
  ~HeartbeatWriter();  // Stops.
  HeartbeatWriter(const HeartbeatWriter&) = delete;
  HeartbeatWriter& operator=(const HeartbeatWriter&) = delete;
  void Start();
  void Stop();
  int64_t beats() const;  // successful beats so far

 private:
  void Loop();
  const RbdConfig config_;
  const std::string host_;
  const std::chrono::milliseconds interval_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  int64_t beats_ = 0;      // guarded by mu_
  std::thread thread_;
};

}  // namespace uw::storage
