// How the manager talks to a host's uw-agent: typed calls, one client per host (issue 13).
//
//   Manager (tasks, migrations, reconcile) --AgentClient--> HttpAgentClient --HTTP--> uw-agent
//                                          (AgentDirectory: the client of a host, from the store)
//
// The JSON of the agent's REST API lives only in agent_client.cc: callers get structs, and an
// answer that does not have the shape the agent documents is kInternal naming the host, the call
// and the field (an agent is trusted to be ours, not to be well).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/guest_kind.h"
#include "common/json.h"
#include "common/status.h"
#include "migration/migration.h"

namespace uw::manager {

// A local disk of a guest that a live migration copies (the destination makes an empty one first).
struct LocalDisk {
  std::string target;  // vda
  std::string file;    // its file name in the agent's state directory
  std::string format;  // qcow2, raw
  int64_t virtual_size_bytes = 0;
  friend bool operator==(const LocalDisk&, const LocalDisk&) = default;
};

// A disk of a guest. AttachDisk adds a Ceph RBD image (POST /api/v1/guests/NAME/disks), which
// the agent opens with its host's Ceph user and secret.
// How much of an image's copy a host's agent has (GET/PUT /api/v1/images/{ref}): a guest's local
// disk made on an image ({"base_image": "NAME@VERSION"}) needs the whole copy on its host.
struct ImageCopyState {
  int64_t bytes = 0;  // received so far (0: none)
  bool complete = false;
};

// A piece of a stopped guest's local disk file, read from its host for a cold move, and the file's
// size (GET /api/v1/guests/{name}/disks/{target}/file).
struct DiskFilePiece {
  std::string bytes;
  int64_t total_bytes = 0;
};

struct AttachedDisk {
  std::string rbd;     // POOL/IMAGE; "" for a file on the host
  std::string target;  // vdb
  friend bool operator==(const AttachedDisk&, const AttachedDisk&) = default;
};

// The port NICs (type "port") of a guest spec's `nics`, as the spec has them: what a live move
// hands the destination. Anything else in the array is left out.
Json PortNicsOf(const Json& nics);

// What an agent says of one guest.
struct AgentGuest {
  std::string name;
  std::string state = "unknown";  // running, paused, shutoff, crashed, blocked, ... (vmm's GuestState names)
  GuestKind kind = GuestKind::kQemu;
  int64_t vcpus = 0, max_vcpus = 0;
  int64_t memory_mib = 0, max_memory_mib = 0;
  bool has_channel = false;            // the guest has a control channel (exec works)
  std::vector<LocalDisk> local_disks;  // only from Get
  bool forced = false;                 // only from Stop: the guest was powered off
  std::vector<AttachedDisk> disks;     // only from Get, AttachDisk and DetachDisk
  Json port_nics = Json::array();      // only from Get: the spec's port NICs (type port)
};

struct StopRequest {
  bool force = false;
  std::optional<int64_t> timeout_s;  // the agent's default when empty
};

struct ResizeRequest {
  std::optional<int64_t> vcpus;
  std::optional<int64_t> memory_mib;
  // The CPU cap (libvirt's vcpu_quota per vcpu_period, in the guest's cgroup): how a container's
  // CPU is taken back, since it has no vCPUs to unplug. -1: no cap.
  std::optional<int64_t> cpu_quota_us, cpu_period_us;
};

struct ExecRequest {
  std::string command;  // run by the guest's shell
  int64_t timeout_s = 10;
};

struct ExecResult {
  int64_t exit_code = -1;
  std::string output;
};

// A destination getting ready for an incoming guest (POST /api/v1/migrations/prepare).
struct IncomingRequest {
  std::string guest;
  GuestKind kind = GuestKind::kQemu;
  int64_t memory_mib = 1;
  int64_t vcpus = 1;
  std::vector<LocalDisk> disks;
  Json nics = Json::array();  // its port NICs, as the guest's spec has them (plugged there first)
};

// Where the source sends the guest.
struct IncomingReady {
  std::string host;
  std::string migration_uri;
  std::string state_dir;
};

struct TransferRequest {
  std::string destination_host;
  IncomingReady destination;
  double bandwidth_mib_s = 0;
  int64_t downtime_limit_ms = 0;
  bool auto_converge = false;
  bool postcopy = false;
};

// The source's migration job (GET /api/v1/guests/NAME/migration).
struct MigrationJob {
  std::string state = "none";  // none, running, completed, failed, cancelled
  std::string error;
  // libvirt's job figures when the agent has them. downtime_ms is -1 while unknown.
  std::optional<migration::Stats> stats;
};

class AgentClient {
 public:
  virtual ~AgentClient() = default;
  virtual const std::string& host() const = 0;
  // Whether the agent answers the manager (its host endpoint, with the manager's token): HA's
  // second look at a host that stopped heartbeating.
  virtual Status Ping() = 0;
  // Asks the agent to shut its host down cleanly (the wol power driver's off).
  // kFailedPrecondition while a guest runs there; kUnimplemented when the agent has no
  // shutdown command.
  virtual Status ShutdownHost() = 0;

  // Guests. `spec` is the create request the manager stored for the guest (the agent's guest
  // spec document: vmm::GuestSpecFromJson's input, plus image and start).
  virtual Result<AgentGuest> Create(const Json& spec) = 0;
  virtual Result<AgentGuest> Get(const std::string& guest) = 0;
  virtual Result<AgentGuest> Start(const std::string& guest) = 0;
  virtual Result<AgentGuest> Stop(const std::string& guest, const StopRequest& request) = 0;
  virtual Result<AgentGuest> Pause(const std::string& guest) = 0;
  virtual Result<AgentGuest> Resume(const std::string& guest) = 0;
  virtual Result<AgentGuest> Resize(const std::string& guest, const ResizeRequest& request) = 0;
  // Only a stopped guest, unless forced (the agent powers it off first).
  virtual Status Delete(const std::string& guest, bool force) = 0;
  // Adds a disk to the guest, hot-plugged when it runs. kAlreadyExists when its target is taken.
  virtual Result<AgentGuest> AttachDisk(const std::string& guest, const AttachedDisk& disk) = 0;
  // Removes the disk at `target`. kNotFound when the guest has no such disk; kDeadlineExceeded
  // when the running guest did not let go of it (it stays until the guest stops).
  virtual Result<AgentGuest> DetachDisk(const std::string& guest, const std::string& target) = 0;
  // Grows the guest's local disk at `target` (one its agent made) to `size_mib`; a running guest
  // sees it at once. kInvalidArgument for a smaller size.
  virtual Result<AgentGuest> ResizeDisk(const std::string& guest, const std::string& target, int64_t size_mib) = 0;
  virtual Result<ExecResult> Exec(const std::string& guest, const ExecRequest& request) = 0;
  // The last `bytes` of the guest's serial console.
  virtual Result<std::string> ConsoleTail(const std::string& guest, size_t bytes) = 0;

  // Images for guests' local disks: how much of image `ref` ("NAME@VERSION") the agent has, and
  // the next piece of it at `offset` (which must be what it has) of `total_bytes`. The agent checks
  // the whole copy before it calls it complete. StorageService::CopyBaseImages drives it.
  virtual Result<ImageCopyState> ImageState(const std::string& ref) = 0;
  virtual Result<ImageCopyState> PutImagePart(const std::string& ref, int64_t offset, int64_t total_bytes,
                                              const std::string& bytes) = 0;

  // Cold moves of guests with local disks: the source's file of a stopped guest's disk, read in
  // pieces of up to 4 MiB (kFailedPrecondition while the guest runs), and the destination taking
  // them in order (offset 0 starts again) for a guest it does not have. A create whose spec has
  // "disks_carried": true then takes the whole files as the guest's local disks.
  virtual Result<DiskFilePiece> ReadDiskPart(const std::string& guest, const std::string& target, int64_t offset,
                                             int64_t length) = 0;
  virtual Result<ImageCopyState> PutIncomingDiskPart(const std::string& guest, const std::string& target,
                                                     int64_t offset, int64_t total_bytes, const std::string& bytes) = 0;

  // Live migration: the destination's side.
  virtual Result<IncomingReady> PrepareIncoming(const IncomingRequest& request) = 0;
  // Removes what an incoming copy of `guest` left (a running copy is refused by the agent).
  virtual Status AbandonIncoming(const std::string& guest) = 0;
  // The source's side.
  virtual Status StartMigration(const std::string& guest, const TransferRequest& request) = 0;
  virtual Result<MigrationJob> MigrationStatus(const std::string& guest) = 0;
  virtual Status CancelMigration(const std::string& guest) = 0;
  virtual Status SetMigrationBandwidth(const std::string& guest, double mib_s) = 0;
  virtual Status StartPostCopy(const std::string& guest) = 0;
};

// Where a host's agent is (the store's hosts row).
struct AgentAddress {
  std::string url;
  std::string token;
  friend bool operator==(const AgentAddress&, const AgentAddress&) = default;
};

// The client of each host, kept between calls (the HTTP client keeps its connections open).
class AgentDirectory {
 public:
  // `lookup` says where a host's agent is: kNotFound for a host that is not in the cluster.
  using Lookup = std::function<Result<AgentAddress>(const std::string& host)>;
  using Factory = std::function<std::shared_ptr<AgentClient>(const std::string& host, const AgentAddress& address)>;
  AgentDirectory(Lookup lookup, Factory factory);

  // The client of `host`; a new one when the host rejoined with another address or token. A host
  // the lookup does not find gets a client whose calls fail with the lookup's error.
  std::shared_ptr<AgentClient> For(const std::string& host);

 private:
  Lookup lookup_;
  Factory factory_;
  std::mutex mu_;
  std::map<std::string, std::pair<AgentAddress, std::shared_ptr<AgentClient>>> clients_;
};

// A client whose every call fails with `why` (a host that is no longer in the cluster).
std::shared_ptr<AgentClient> NewFailingAgentClient(const std::string& host, Status why);

// The HTTP client of one agent. Every call has `timeout_ms`; errors carry "agent of host NAME".
std::shared_ptr<AgentClient> NewHttpAgentClient(const std::string& host, const AgentAddress& address, int timeout_ms);

// What a host says of a guest's presence, for migration::Reconcile: a shut-off definition is not
// a running copy; an error other than kNotFound is kUnknown.
migration::Presence PresenceOf(const Result<AgentGuest>& guest);

}  // namespace uw::manager
