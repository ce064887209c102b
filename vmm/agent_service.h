// AgentService: the typed core of uw-agent. It owns the host's hypervisors and everything the
// agent knows besides what libvirt holds (usage samples, the lifecycle event log, guest health,
// crashes, outgoing migrations), and offers one typed call per operation. It knows no JSON and no
// HTTP: vmm/agent.cc parses requests into the structs below and renders the results.
//
//   Agent (HTTP: parse, render) -> AgentService (checks, order of steps) -> Hypervisor (libvirt)
//                                        |-> sampler thread -> UsageTracker -> UsageReport
//                                        |-> monitor thread -> HealthTracker <- GuestChannel pings
//                                        `-> migration threads (one per outgoing guest)
//
// Thread safety: every public method may be called from any thread, concurrently. Errors use the
// Hypervisor's codes (vmm/hypervisor.h): kNotFound names the guest and the host, kAlreadyExists a
// name taken, kFailedPrecondition a guest in the wrong state, kResourceExhausted a host too small.
// Errors about a request field name it as the agent API spells it ("body.memory_mib: ...").
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "netvirt/ovsdb.h"
#include "vmm/agent_config.h"
#include "vmm/cgroups.h"
#include "vmm/guest_channel.h"
#include "vmm/health.h"
#include "vmm/hypervisor.h"
#include "vmm/usage.h"

namespace uw::vmm {

// What a crashed guest's JSON shows of its serial console: the last 2 KiB, reaching further back
// (up to 8 KiB) to start at the last "Kernel panic" line when there is one, since the kernel prints
// that line before the stack dump that follows it. Invalid UTF-8 bytes become '?'.
std::string CrashConsoleTail(std::string_view console);

struct AgentEvent {
  uint64_t seq = 0;
  LifecycleEvent event;
};

struct GuestCrash {
  TimePoint at;
  std::string console_tail;  // CrashConsoleTail of its console log ("" without one)
};

// A guest as the agent reports it: libvirt's view plus the health watch and any crash.
struct GuestStatus {
  GuestInfo info;
  Health health = Health::kNone;          // containers: always kNone (no control channel)
  bool ready = false;                     // answered its control channel (containers: init runs)
  std::optional<TimePoint> health_since;  // virtual machines with a watch
  std::optional<TimePoint> unresponsive_since;
  std::optional<GuestCrash> crash;  // while crashed
  // When the guest last asked, in its answer to a health ping ("pong ask"), to be told again what
  // it holds (guest/README.md, "Holdings"): the manager sends it its holdings.
  std::optional<TimePoint> asked_at;
};

// A local disk (under state_dir/disks) with its virtual size: what a live migration copies.
struct LocalDisk {
  std::string target;
  std::string file;  // file name within the disk directory
  std::string format;
  int64_t virtual_size_bytes = 0;
};

struct GuestDetails {
  GuestStatus status;
  std::optional<GuestSpec> spec;                      // absent when libvirt's XML cannot be read back
  std::optional<std::vector<LocalDisk>> local_disks;  // absent when qemu-img could not say
};

struct CreateRequest {
  GuestSpec spec;                    // parsed, not yet resolved against the host
  std::optional<std::string> image;  // an image of AgentConfig::images supplying kernel or root
  bool start = true;
  // A cold move: the guest's local disks arrived before the create (PutIncomingDisk) and are
  // taken as they are rather than made anew.
  bool disks_carried = false;
};

struct StopRequest {
  bool force = false;
  Duration timeout = std::chrono::seconds(30);  // graceful shutdown, then forced
};
struct StopResult {
  GuestStatus guest;
  bool forced = false;  // it had to be powered off
};

// Each field set is changed; the request's ranges are checked by the parser, the guest's maxima
// here. Nothing set changes nothing.
struct ResizeRequest {
  std::optional<int64_t> memory_mib;
  std::optional<int64_t> vcpus;
  std::optional<int64_t> cpu_shares;
  std::optional<int64_t> cpu_quota_us;
  std::optional<int64_t> cpu_period_us;
};

// A virtual machine runs `command` through its control channel; a container runs `argv`, or
// `command` under /bin/sh -c. A missing one is kInvalidArgument naming body.command.
struct ExecRequest {
  std::optional<std::string> command;
  std::optional<std::vector<std::string>> argv;
  Duration timeout = std::chrono::seconds(10);
};

struct HostReport {
  HostInfo host;
  KvmSupport kvm;
  CgroupLayout cgroups;
  std::vector<std::string> kinds;    // guest kinds this host runs
  std::vector<std::string> images;   // image names, sorted
  std::vector<std::string> adopted;  // guests found running when the agent started
  double cpu_busy_fraction = -1;     // from the last sample
  size_t guests = 0;                 // guests in the last sample
  // The integration bridge (config `network`; nullopt without it): made and kept by the agent.
  struct Network {
    std::string bridge{};
    bool ready = false;
    std::string error{};  // why it is not ready
  };
  std::optional<Network> network{};
};

struct UsageReport {
  TimePoint sampled_at;
  HostInfo host;
  std::vector<GuestUsage> guests;  // by name
};

struct EventPage {
  std::vector<AgentEvent> events;  // at most 1,000, oldest first
  uint64_t next = 0;               // the last sequence number recorded (the next `since`)
};

// Live migration, destination side.
struct IncomingDisk {
  std::string file;  // plain file name
  std::string format = "qcow2";
  int64_t virtual_size_bytes = 0;
};
struct IncomingRequest {
  std::string guest;
  GuestKind kind = GuestKind::kQemu;  // never kLxc (the parser refuses it)
  int64_t memory_mib = 0;
  int64_t vcpus = 1;
  std::vector<IncomingDisk> disks;
  std::vector<NicSpec> nics;  // port NICs: plugged here before the guest arrives
};
struct PreparedIncoming {
  std::string host;
  std::string migration_uri;  // where the source's libvirtd sends the guest
  std::string state_dir;
  std::vector<std::pair<std::string, std::string>> disks;  // file, path of each empty volume made
};

// Live migration, source side.
struct MigrateRequest {
  std::string dest_host;       // for reports; "" = the URI
  std::string dest_uri;        // the destination libvirtd (PreparedIncoming::migration_uri)
  std::string dest_state_dir;  // absolute
  double bandwidth_mib_s = 0;
  int64_t downtime_limit_ms = 0;
  bool auto_converge = false;
  bool postcopy = false;
};
struct MigrationStarted {
  std::string destination;  // the destination URI
  bool copy_storage = false;
};
// This agent's view of a guest's outgoing migration. state: none | running | completed | failed |
// cancelled. `tracked` says this agent started it (then destination and error are set).
struct MigrationReport {
  std::string state = "none";
  bool tracked = false;
  std::string destination;
  std::string error;
  // libvirt's statistics: live while running, final once completed.
  std::optional<MigrationJob> job;
  std::string guest_state;  // GuestStateName, or "absent"
};
enum class MigrationAction { kCancel, kBandwidth, kPostcopy };
// How much of an image's copy (or of a local disk carried by a cold move) this host has
// (vmm/agent_images.cc, vmm/agent_disk_copies.cc).
struct ImageCopy {
  int64_t bytes = 0;
  bool complete = false;
};
// A piece of a stopped guest's local disk file, and the file's size.
struct DiskPiece {
  std::string bytes;
  int64_t total_bytes = 0;
};

class AgentService {
 public:
  // `vm` serves kvm/qemu guests; `ct` containers (may be null). The service owns both.
  AgentService(AgentConfig config, std::unique_ptr<Hypervisor> vm, std::unique_ptr<Hypervisor> ct, KvmSupport kvm,
               Clock& clock = Clock::Real());
  ~AgentService();
  AgentService(const AgentService&) = delete;
  AgentService& operator=(const AgentService&) = delete;

  // Makes the state directories, adopts the guests libvirt runs, takes a first sample and starts
  // the sampler and health threads. kUnavailable when a directory cannot be made.
  Status Start();
  // Wakes every waiter (long polls, exec waiting for readiness): they return at once. Then Stop.
  void BeginStop();
  // BeginStop, then joins the service's threads (outgoing migrations finish in libvirtd).
  void Stop();

  // Records a lifecycle event (from libvirt's event thread, and the agent itself). A "crashed"
  // event also records the crash.
  void RecordEvent(LifecycleEvent e);
  // Takes one sample of every guest now.
  Status SampleNow();

  Result<HostReport> Host();
  UsageReport Usage();
  // kNotFound when no sample of the guest exists (yet).
  Result<GuestUsage> GuestUsageOf(std::string_view name);
  // Events after `since`, waiting up to `wait` for one (returns early when the service stops).
  EventPage EventsSince(uint64_t since, Duration wait);

  // Guests. `name` is checked (kInvalidArgument "guest name: ...") and looked up on both drivers.
  Result<GuestStatus> Create(CreateRequest request);
  Result<GuestDetails> Get(std::string_view name);
  Result<std::vector<GuestStatus>> List();
  // A crashed guest is powered off first.
  Result<GuestStatus> Start(std::string_view name);
  Result<StopResult> Stop(std::string_view name, const StopRequest& request);
  Result<GuestStatus> Pause(std::string_view name);
  Result<GuestStatus> Resume(std::string_view name);
  // kInvalidArgument when a value is above the guest's maximum; nothing is changed then.
  Result<GuestStatus> Resize(std::string_view name, const ResizeRequest& request);
  // Adds an existing disk (a file or block device, or an rbd image, which gets this host's Ceph
  // user and secret) to a guest, running (a hot-plug) or not; an empty target is the first free
  // one. kAlreadyExists when the target is taken.
  Result<GuestDetails> AttachDisk(std::string_view name, DiskSpec disk);
  // Removes the disk at `target`; a running guest must let go of it within kDiskDetachTimeout
  // (kDeadlineExceeded otherwise). kNotFound when the guest has no such disk.
  Result<GuestDetails> DetachDisk(std::string_view name, std::string_view target);
  static constexpr Duration kDiskDetachTimeout = std::chrono::seconds(20);
  // Grows the local disk (one the agent made, under state_dir/disks) at `target` to `size_mib`:
  // a running guest sees the new size at once, a stopped one at its next start. kInvalidArgument
  // for a smaller size, kFailedPrecondition for a file disk that is not local. An rbd disk's image
  // is grown by the manager first; here a running guest's QEMU is told the new size.
  Result<GuestDetails> ResizeDisk(std::string_view name, std::string_view target, int64_t size_mib);
  // Copies of the manager's images for local disks made on them (DiskSpec::base_image), by
  // "NAME@VERSION": how much this host has, and the next piece at `offset` (what it has; else
  // kFailedPrecondition saying how much) of `total_bytes`. A whole copy must be a qcow2 without a
  // backing file (else kInvalidArgument, and the copy is removed).
  Result<ImageCopy> ImageState(std::string_view ref);
  Result<ImageCopy> PutImagePart(std::string_view ref, int64_t offset, int64_t total_bytes, std::string_view bytes);
  // Cold moves of guests with local disks (vmm/agent_disk_copies.cc). The source reads the file of
  // a stopped guest's local disk in pieces (kFailedPrecondition while it runs); the destination
  // takes them in order for a guest it does not have (offset 0 starts again, any other offset
  // must be what it has), and a create with disks_carried takes the whole file as the disk.
  Result<DiskPiece> ReadLocalDisk(std::string_view name, std::string_view target, int64_t offset, int64_t length);
  Result<ImageCopy> PutIncomingDisk(std::string_view name, std::string_view target, int64_t offset, int64_t total_bytes,
                                    std::string_view bytes);
  static constexpr int64_t kDiskPieceMaxBytes = 4 << 20;
  // `file` (a name under the disk or incoming directory) belongs to guest `name`.
  static bool IsDiskFileOf(std::string_view file, std::string_view name);
  // Removes the image copies (and broken copies) that no local disk is made on and that were last
  // used more than `keep` ago, and disks carried here that no create took; returns how many. Run at start, after a
  // guest is deleted and after one left by live migration, with the config's image_keep_s.
  int PruneImages(std::chrono::seconds keep);
  // kFailedPrecondition for a guest not shut off unless `force`. Removes its local disks.
  Status Delete(std::string_view name, bool force);
  // kFailedPrecondition when the guest is not running or not ready within the timeout.
  Result<ExecResult> Exec(std::string_view name, const ExecRequest& request);
  // The last `bytes` of the serial console; kUnimplemented for a guest without a console log.
  Result<std::string> ConsoleTail(std::string_view name, size_t bytes);
  // kNotFound unless `name` is a guest here (the lookup every call above starts with).
  Status CheckExists(std::string_view name);

  // Live migration (vmm/README.md): the destination prepares, the source migrates.
  Result<PreparedIncoming> PrepareIncoming(const IncomingRequest& request);
  // Removes what an incoming migration left here; false when there was nothing. A running copy is
  // kFailedPrecondition: it may be the only one.
  Result<bool> AbandonIncoming(std::string_view guest);
  // Starts migrating on a thread of its own; kFailedPrecondition when the guest is a container,
  // not running or paused, or already migrating.
  Result<MigrationStarted> Migrate(std::string_view name, const MigrateRequest& request);
  // After an agent restart a migration libvirt still runs is reported as running (adopted).
  MigrationReport MigrationStatus(std::string_view name);
  // `bandwidth_mib_s` is used by kBandwidth only (> 0).
  Status ControlMigration(std::string_view name, MigrationAction action, double bandwidth_mib_s = 0);

  const AgentConfig& config() const { return config_; }

 private:
  Hypervisor* HypervisorFor(GuestKind kind);
  // The hypervisor holding guest `name`, kNotFound otherwise.
  Result<Hypervisor*> Find(std::string_view name);
  Status ResolveImage(GuestSpec& spec, const std::optional<std::string>& image);
  Status CheckFitsHost(GuestSpec& spec);
  std::shared_ptr<GuestChannel> ChannelFor(const std::string& socket_path);
  bool Stopping();

  // Health watch and crashes (agent_health.cc). ObserveGuest tells the tracker what a guest is
  // now (a new domain id starts a new watch); StatusOf adds health, readiness and crash to info.
  void ObserveGuest(const GuestInfo& info);
  void ObserveSample(const std::vector<GuestCounters>& vms, const std::vector<GuestCounters>& cts);
  // Records that `name` crashed (once per crash); `event_seen` says libvirt's event was recorded.
  void NoteCrash(const std::string& name, const std::string& uuid, int64_t id, bool event_seen);
  void AppendEvent(LifecycleEvent e);
  GuestStatus StatusOf(Hypervisor* h, const GuestInfo& info);
  Result<GuestStatus> StatusNow(Hypervisor* h, std::string_view name);
  void RecordHealthEvents(const std::vector<HealthEvent>& events);
  void MonitorLoop();
  // Waits (up to `deadline`, monotonic) until a starting guest answers; kFailedPrecondition
  // "not ready yet" when it does not.
  Status WaitUntilReady(const std::string& name, Duration deadline);
  Result<ExecResult> ExecInVm(const GuestInfo& info, const std::string& command, Duration timeout);
  void ForgetGuest(const GuestInfo& info);

  // Local disks live under state_dir/disks (a disk elsewhere is shared storage, at the same path
  // on every host). LocalDisks lists a guest's with their virtual sizes.
  std::filesystem::path LocalDiskDir() const { return std::filesystem::path(config_.state_dir) / "disks"; }
  bool IsLocalDisk(const std::string& path) const { return path.rfind(LocalDiskDir().string() + "/", 0) == 0; }
  Result<std::vector<LocalDisk>> LocalDisks(const GuestSpec& spec);
  std::filesystem::path ImageDir() const { return std::filesystem::path(config_.state_dir) / "images"; }
  std::filesystem::path ImagePath(std::string_view ref) const { return ImageDir() / (std::string(ref) + ".qcow2"); }
  std::filesystem::path ImagePartPath(std::string_view ref) const;  // a copy still arriving
  ImageCopy ImageHeld(std::string_view ref) const;                  // requires images_mu_
  Status CreateLocalDisks(GuestSpec& spec, bool carried);
  // A disk carried here by a cold move (state_dir/incoming): what is arriving and what is whole.
  std::filesystem::path IncomingDir() const { return std::filesystem::path(config_.state_dir) / "incoming"; }
  std::filesystem::path IncomingPath(std::string_view name, std::string_view target, bool whole) const;
  // Checks a carried disk (the format, no external data file, a backing file only on this host's
  // copy of d.base_image, which it is rebased onto) and moves it to d.path.
  Status TakeCarriedDisk(const GuestSpec& spec, const DiskSpec& d);
  // Fills a spec's rbd disks from the `ceph` config and gives libvirt the key (kFailedPrecondition
  // when this host has no Ceph or its keyring cannot be read).
  Status PrepareRbdDisks(GuestSpec& spec);
  Status EnsureCephSecret();
  Status CheckRoomForIncoming(const IncomingRequest& request);
  // agent_network.cc: makes or repairs the integration bridge (config `network`) when it is due:
  // every 30 s, every 5 s while it is not ready. Called by the sampler thread.
  void KeepNetwork();
  // agent_network.cc: a spec's port NICs on this host's integration bridge: each its tap, its port
  // (the network's local VLAN, one per network on this host), its anti-spoofing flows, and its
  // address on the kernel command line (uw.nic=MAC,ADDRESS[,GATEWAY], which the test guest's init
  // reads). All or nothing: what was made is undone on a failure.
  Status AttachPorts(GuestSpec& spec);
  // Undoes AttachPorts for `spec`'s port NICs (flows, port, tap); logs what it cannot undo.
  void DetachPorts(const GuestSpec& spec);
  // AttachPorts' work under ovsdb_mu_: each NIC in `ports` plugged, and appended to `made` before
  // it is tried (so that the undo finds a half-made one too).
  Status PlugPorts(const std::string& guest, const std::vector<NicSpec*>& ports, std::vector<NicSpec>& made);
  // Puts back the rules of every port NIC of this host's VMs whose ofport has none (a restarted
  // ovs-vswitchd). Requires ovsdb_mu_.
  Status RestorePortFlowsLocked(netvirt::OvsdbClient& client);
  // The OVSDB connection, (re)connected when needed. Requires ovsdb_mu_.
  Result<netvirt::OvsdbClient*> OvsdbLocked();
  struct Outgoing;
  // The body of an outgoing migration's thread: migrates, confirms, records the outcome in `out`.
  void RunMigration(Outgoing* out, const std::string& name, Hypervisor* h, const MigrationRequest& mr,
                    const std::vector<std::string>& local_disks);

  const AgentConfig config_;
  std::mutex images_mu_;    // one image copy step at a time
  std::mutex incoming_mu_;  // one carried-disk step at a time
  std::mutex incoming_ports_mu_;
  // Port NICs plugged for incoming migrations (PrepareIncoming), removed by AbandonIncoming.
  std::map<std::string, GuestSpec> incoming_ports_;  // guarded by incoming_ports_mu_
  std::unique_ptr<Hypervisor> vm_;
  std::unique_ptr<Hypervisor> ct_;
  const KvmSupport kvm_;
  Clock& clock_;
  std::vector<std::string> adopted_;  // set once in Start
  CgroupLayout cgroups_;              // set once in Start

  std::mutex network_mu_;
  HostReport::Network network_;                  // guarded by network_mu_
  std::mutex ovsdb_mu_;                          // one OVSDB or OpenFlow change at a time
  std::unique_ptr<netvirt::OvsdbClient> ovsdb_;  // guarded by ovsdb_mu_
  Duration network_due_{0};                      // guarded by network_mu_ (monotonic)

  std::mutex usage_mu_;
  UsageTracker tracker_;                     // guarded by usage_mu_
  std::map<std::string, GuestUsage> usage_;  // guarded by usage_mu_ (by guest name)
  HostInfo host_usage_;                      // guarded by usage_mu_
  TimePoint sampled_at_{};                   // guarded by usage_mu_

  std::mutex events_mu_;
  std::condition_variable events_cv_;
  std::deque<AgentEvent> events_;  // guarded by events_mu_; the last kEventLogSize
  uint64_t next_seq_ = 1;          // guarded by events_mu_

  std::mutex channels_mu_;
  std::map<std::string, std::shared_ptr<GuestChannel>> channels_;  // guarded by channels_mu_

  // Never held while talking to libvirt or a guest.
  std::mutex health_mu_;
  std::condition_variable health_cv_;  // a guest became ready (or the agent stops)
  HealthTracker health_;               // guarded by health_mu_
  struct Crash {
    TimePoint at;
    int64_t id = -1;  // the domain id that crashed: one record per crash
  };
  std::map<std::string, Crash> crashes_;    // guarded by health_mu_ (by guest, while crashed)
  std::map<std::string, TimePoint> asked_;  // guarded by health_mu_ (by guest: its last ask)
  std::thread monitor_;

  // A migration this agent started as the source; the thread runs Hypervisor::Migrate.
  struct Outgoing {
    std::string state = "running";  // running | completed | failed | cancelled
    std::string destination;
    std::string error;
    MigrationJob final_job;  // completed job statistics
    bool cancel_requested = false;
    std::thread thread;
  };
  std::mutex migrations_mu_;
  // By guest; guarded by migrations_mu_.
  std::map<std::string, std::unique_ptr<Outgoing>> migrations_;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread sampler_;
};

}  // namespace uw::vmm
