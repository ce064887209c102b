// In-memory agents for the manager's tests (issue 13): AgentClient implementations that keep
// their hosts' guests in a map and move them between hosts of one InMemoryCluster when a live
// migration completes. They answer as uw-agent does (the same states, error codes and checks):
// manager/agent_client_test.cc runs the same contract cases against them and against the HTTP
// client talking to a real vmm::Agent, so they cannot drift from it.
//
// Tests script what real hosts do to the manager: a host going down (every call kUnavailable), a
// guest crashing, a migration that fails, never converges or kills the guest after the switch-over.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/json.h"
#include "manager/agent_client.h"

namespace uw::manager {

// How the next live migration out of a host goes (per guest, or "*" for any guest).
struct MigrationScript {
  int polls_to_complete = 2;         // MigrationStatus calls while "running" before "completed"
  bool fail = false;                 // ends "failed" (libvirt's error) instead; the guest stays
  bool never_converges = false;      // stays "running" with memory left until cancelled
  bool dies_on_destination = false;  // completes, then the guest is "crashed" on the destination
  int source_down_after_polls = 0;   // > 0: the source host goes down at that poll (stays down)
};

class InMemoryCluster {
 public:
  // A host with `memory_mib` to give guests.
  void AddHost(const std::string& host, int64_t memory_mib = 16384);
  // The client of `host` (also for hosts not added: every call then fails kNotFound).
  std::shared_ptr<AgentClient> Client(const std::string& host);
  // A factory for Manager::SetAgentFactory.
  std::function<std::shared_ptr<AgentClient>(const std::string&, const AgentAddress&)> Factory();

  // Scripting.
  void SetDown(const std::string& host, bool down);  // calls fail kUnavailable while down
  void Script(const std::string& host, const std::string& guest, MigrationScript script);
  void SetState(const std::string& host, const std::string& guest, const std::string& state);
  // Puts a guest on a host behind the manager's back (as if found there).
  void Place(const std::string& host, const AgentGuest& guest);
  // Takes a guest off a host behind the manager's back (as if it vanished).
  void Remove(const std::string& host, const std::string& guest);
  // While held, creates on `host` wait in the call (the guest is being created) until released.
  void HoldCreates(const std::string& host, bool hold);
  // What the guest's daemon prints for a command (a notice: "uw-notice ..."): the output of every
  // command starting with `prefix` (the first prefix that matches; set again, a prefix answers anew;
  // default: the output is empty).
  void SetExecOutput(const std::string& guest, const std::string& prefix, const std::string& output);
  // The CPU cap a resize last gave `guest` (its cgroup's quota per period, µs); -1 when none.
  int64_t CpuQuotaOf(const std::string& guest) const;
  // The commands run in `guest` so far.
  std::vector<std::string> ExecsOf(const std::string& guest) const;

  // What the hosts hold.
  std::set<std::string> GuestsOn(const std::string& host);
  std::string StateOf(const std::string& host, const std::string& guest);  // "" when absent
  int calls() const;
  // Create calls `host` received, and how many of them wait in HoldCreates now.
  int creates(const std::string& host) const;
  int creates_waiting(const std::string& host) const;
  // The spec of the last create of `guest` that `host` received (null when none).
  Json CreateSpec(const std::string& host, const std::string& guest) const;
  // The port NICs the last prepare for `guest` on `host` carried (null when none came).
  Json PreparedNics(const std::string& host, const std::string& guest) const;
  // The size the last ResizeDisk of `guest`'s disk `target` on `host` set (0 when none).
  int64_t DiskMib(const std::string& host, const std::string& guest, const std::string& target) const;
  // The file of `guest`'s local disk `target` on `host` (nullopt when it has none), and setting it
  // (as the guest writing to its disk). A create makes a local disk ({"size_mib"} without rbd) as
  // "empty <size_mib> MiB"; live migrations and cold moves carry it.
  std::optional<std::string> DiskFile(const std::string& host, const std::string& guest,
                                      const std::string& target) const;
  void SetDiskFile(const std::string& host, const std::string& guest, const std::string& target,
                   const std::string& bytes);
  // The bytes of image copy `ref` on `host` ("" when none).
  std::string ImageCopy(const std::string& host, const std::string& ref) const;
  // What uw-agent on `host` sends the manager in a heartbeat (vmm::HeartbeatBody's shape): its
  // guests, a crashed one with its console tail; no usage ("stats": {"guests": []}).
  Json HeartbeatBody(const std::string& host) const;

 private:
  friend class InMemoryAgent;
  struct Job {
    std::string destination;
    std::string state = "running";
    std::string error;
    MigrationScript script;
    int polls = 0;
    bool cancelled = false;
  };
  struct Host {
    int64_t memory_mib = 0;
    bool down = false;
    std::map<std::string, AgentGuest> guests;
    std::map<std::string, Job> jobs;  // outgoing migrations by guest
    std::map<std::string, MigrationScript> scripts;
    std::map<std::string, Json> create_specs;   // the last create of each guest
    std::map<std::string, Json> prepared_nics;  // the port NICs of the last prepare of each guest
    std::map<std::string, std::string> images;  // image copies by "NAME@VERSION" (complete or not)
    std::set<std::string> complete_images;
    std::map<std::string, int64_t> disk_mib;        // "GUEST/TARGET" -> the size its last ResizeDisk set
    std::map<std::string, std::string> disk_files;  // "GUEST/TARGET" -> a local disk's file
    std::map<std::string, std::string> incoming;    // "GUEST/TARGET" -> a disk carried here (cold move)
    std::set<std::string> incoming_whole;
    int creates = 0;
    int creates_waiting = 0;
    bool hold_creates = false;
  };
  mutable std::mutex mu_;
  std::condition_variable creates_released_;  // hold_creates cleared on some host
  std::map<std::string, Host> hosts_;         // guarded by mu_
  int calls_ = 0;                             // guarded by mu_
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> exec_outputs_;  // guarded by mu_
  std::map<std::string, std::vector<std::string>> execs_;
  std::map<std::string, int64_t> cpu_quotas_;  // guarded by mu_                                 // guarded by mu_
};

}  // namespace uw::manager
