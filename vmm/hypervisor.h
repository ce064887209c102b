// The per-host hypervisor interface of uw-agent and the vocabulary of guests on one host.
//
//   GuestSpec --BuildDomainXml--> libvirt domain XML --Hypervisor::Define/Start--> running guest
//   Hypervisor::SampleAll --> GuestCounters --UsageTracker--> GuestUsage (rates)
//   libvirt events --EventLoop thread--> LifecycleEvent callbacks
//
// One Hypervisor talks to one libvirt connection (qemu:///system for kvm and qemu guests,
// lxc:///system for containers, test:///default in unit tests). The agent composes two of them.
// Guest kinds:
//   kKvm   full virtualization, host-passthrough CPU; needs usable hardware KVM.
//   kQemu  emulation (TCG); runs anywhere.
//   kLxc   OS container; no live migration.
// "Paravirtualized" is a device model, not a kind: GuestSpec::paravirt gives kvm and qemu guests
// virtio disk, net, console, balloon and serial channel devices (the default).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/guest_kind.h"
#include "common/json.h"
#include "common/status.h"

namespace uw::vmm {

using ::uw::GuestKind;  // common/guest_kind.h: one kind type for vmm, placement and manager
using ::uw::GuestKindName;
using ::uw::ParseGuestKind;

enum class GuestState { kShutoff, kRunning, kPaused, kShuttingDown, kCrashed, kBlocked, kSuspended, kUnknown };
std::string_view GuestStateName(GuestState state);  // "shutoff", "running", ...

struct DiskSpec {
  std::string path;              // file or block device on the host (must exist)
  std::string format = "qcow2";  // qcow2 | raw
  std::string target = "vda";    // guest device name
  bool read_only = false;
  // Agent API only: no path and a size means "make me a local qcow2 of this size" (the agent
  // creates it under its state_dir/disks, and live migration copies it).
  int64_t size_mib = 0;
  // Agent API only, with size_mib: the local qcow2 is made on image "NAME@VERSION" of the manager's
  // local storage (its backing file is the agent's copy, under state_dir/images, fetched from the
  // manager the first time a guest on this host needs that version).
  std::string base_image{};
  // A Ceph RBD image "POOL/IMAGE" instead of a path (format raw): the guest opens it over the
  // network, so live migration moves memory only and any host can start the guest. The agent fills
  // the rest from its `ceph` config before the domain is defined.
  std::string rbd{};
  std::string rbd_user{};         // cephx user without "client."
  std::string rbd_secret_uuid{};  // the libvirt secret holding that user's key
  std::string rbd_config_file{};  // ceph.conf (the monitors) that QEMU's librbd reads
};

struct NicSpec {
  // user (QEMU's own NAT) | bridge (Linux bridge) | ovs (Open vSwitch bridge) | port (a manager's
  // port on one of its networks: the agent makes a tap on its integration bridge, see vmm/README.md)
  std::string type = "user";
  std::string source;  // bridge name for bridge/ovs; port: the integration bridge (the agent's)
  std::string mac;     // empty: libvirt picks one; port: the port's
  int vlan = 0;        // ovs only: access VLAN tag, 0 for none
  // port only:
  std::string port{};     // the manager's port id (external_ids:iface-id)
  std::string network{};  // the network's key (one local VLAN per network on a host)
  std::string address{};  // the port's IPv4 address with the subnet's prefix ("10.0.0.5/24")
  std::string gateway{};  // the subnet's gateway, or empty
  std::string device{};   // the tap (set by the agent: "uwp" and the port id's first 12 hex digits)
};

struct ChannelSpec {
  std::string name;         // virtio-serial port name seen by the guest ("org.underware.guest.0")
  std::string socket_path;  // unix socket on the host (libvirt binds it)
};

struct GuestSpec {
  std::string name;
  std::string uuid;  // empty: libvirt generates one
  GuestKind kind = GuestKind::kQemu;
  bool paravirt = true;  // virtio devices; false: emulated IDE/e1000 for kvm/qemu
  int vcpus = 1;
  int max_vcpus = 1;             // >= vcpus; the rest can be hot-plugged
  int64_t memory_mib = 256;      // current (balloon target at boot)
  int64_t max_memory_mib = 256;  // >= memory_mib
  // Direct kernel boot (kvm/qemu).
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  std::vector<DiskSpec> disks;
  std::vector<NicSpec> nics;
  std::vector<ChannelSpec> channels;
  std::string console_log;  // serial console written to this file (kvm/qemu)
  // CPU controls (0 = libvirt default).
  int64_t cpu_shares = 0;
  int64_t cpu_quota_us = 0;  // per period; -1 or 0 = unlimited
  int64_t cpu_period_us = 0;
  // Containers (lxc): root directory and init.
  std::string lxc_root;
  std::string lxc_init = "/bin/sh";
  std::vector<std::string> lxc_init_args;
  // Set by the agent when a kvm guest runs emulated because hardware KVM is unusable.
  bool emulated = false;
  // Free-form operator labels kept in the domain metadata.
  std::vector<std::pair<std::string, std::string>> labels;
};

// Parses the agent API's guest JSON (see vmm/README.md). Field errors name the path ("spec.vcpus").
Result<GuestSpec> GuestSpecFromJson(const Json& j, std::string_view path = "spec");
Json GuestSpecToJson(const GuestSpec& spec);
// One disk of the guest JSON (an element of its "disks"), with `default_target` when it names none
// (an empty default leaves the target empty: the caller picks one).
// "IMAGE@VERSION": an image name (1-63 of [a-z0-9._-], starting with a letter or digit) and its
// version (decimal digits), as DiskSpec::base_image holds it.
bool IsBaseImageRef(std::string_view ref);
// A manager's port id: "port-" and 16 lowercase hex digits (common/id.h NewId).
bool IsPortId(std::string_view id);
// The tap of a port NIC: "uwp" and the port id's first 12 hex digits (15 characters, Linux's limit).
std::string PortDevice(std::string_view port_id);
// A disk's device name in the guest: vd, sd or hd and one or two letters.
bool IsDiskTarget(std::string_view target);
Result<DiskSpec> DiskSpecFromJson(const Json& j, std::string_view path, const std::string& default_target);
// The target a guest's disk number `index` gets when it names none: vda, vdb, ..., vdz, vdaa, ...
std::string DefaultDiskTarget(size_t index);
// Checks internal consistency (names, vcpus <= max, memory <= max, kernel for vm kinds, root for lxc,
// CPU tuning ranges). With `image_named` the spec names an image the agent resolves later, which
// may supply the kernel or the container root: their absence is then not an error.
Status ValidateGuestSpec(const GuestSpec& spec, bool image_named = false);

struct GuestInfo {
  std::string name;
  std::string uuid;
  GuestKind kind = GuestKind::kQemu;
  bool emulated = false;
  GuestState state = GuestState::kUnknown;
  std::string state_reason;
  int64_t id = -1;  // libvirt's domain id while it runs (a new one per start), else -1
  int vcpus = 0;
  int max_vcpus = 0;
  int64_t memory_mib = 0;  // current balloon size
  int64_t max_memory_mib = 0;
  uint64_t cpu_time_ns = 0;
  bool persistent = true;
  std::string console_log;  // from the domain XML, if any
  std::vector<ChannelSpec> channels;
};
Json GuestInfoToJson(const GuestInfo& info);

// Raw cumulative counters of one guest at one instant.
struct GuestCounters {
  std::string name;
  std::string uuid;
  GuestState state = GuestState::kUnknown;
  int64_t id = -1;  // libvirt's domain id while it runs, else -1
  Duration at{0};   // monotonic time of the sample
  uint64_t cpu_time_ns = 0;
  int vcpus = 0;
  int64_t balloon_current_kib = -1;  // -1 when unknown
  int64_t balloon_maximum_kib = -1;
  int64_t balloon_usable_kib = -1;  // guest-reported, needs balloon stats
  int64_t balloon_available_kib = -1;
  int64_t rss_kib = -1;
  uint64_t block_rd_bytes = 0, block_wr_bytes = 0, block_rd_reqs = 0, block_wr_reqs = 0;
  uint64_t net_rx_bytes = 0, net_tx_bytes = 0;
};

// Counters turned into usage over the interval since the previous sample.
struct GuestUsage {
  GuestCounters counters;
  double interval_s = 0;  // 0 for the first sample of a guest
  double cpu_cores = 0;   // CPU time per wall time
  double block_rd_bps = 0, block_wr_bps = 0, net_rx_bps = 0, net_tx_bps = 0;
  int64_t memory_used_mib = -1;  // maximum - usable when the guest reports it, else rss
};
Json GuestUsageToJson(const GuestUsage& usage);

struct KvmSupport {
  bool device_present = false;  // /dev/kvm exists
  bool usable = false;          // hardware KVM that stock guests can boot with
  std::string module;           // kvm_intel, kvm_amd, kvm_pvm, ...
  std::string reason;           // why not usable (shown to operators)
};

struct HostInfo {
  std::string hostname;
  std::string uri;
  std::string hypervisor;        // "QEMU", "LXC", "TEST"
  uint64_t libvirt_version = 0;  // major * 1,000,000 + minor * 1,000 + release
  std::string cpu_model;
  int cpu_cores = 0;  // logical CPUs
  int64_t memory_mib = 0;
  int64_t free_memory_mib = -1;
  double cpu_busy_fraction = -1;  // host CPU busy over the last sampling interval, -1 unknown
  double load1 = -1;
};
Json HostInfoToJson(const HostInfo& info);

struct LifecycleEvent {
  TimePoint at;
  std::string guest;
  std::string uuid;
  std::string
      event;  // "defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown", "crashed", ...
  std::string detail;  // libvirt's detail ("booted", "migrated", "destroyed", ...)
  std::string source;  // the connection URI
  int64_t id = -1;     // libvirt's domain id when the event happened (-1 unknown or not running)
};
using EventCallback = std::function<void(const LifecycleEvent&)>;

// What a command run inside a guest returned.
struct ExecResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// A live migration the source hypervisor starts (libvirt peer-to-peer: the source libvirtd talks
// to the destination's directly, so the migration continues if the agent that asked dies).
struct MigrationRequest {
  std::string dest_uri;           // "qemu+tcp://10.77.0.2/system"
  std::string dest_xml;           // domain XML for the destination (paths rewritten); "" = as is
  std::string migrate_uri;        // data connection ("tcp://10.77.0.2"); "" = libvirt picks
  double bandwidth_mib_s = 0;     // 0 = libvirt's default
  int64_t downtime_limit_ms = 0;  // 0 = QEMU's default (300 ms)
  bool copy_storage = false;      // copy local disks (the destination has empty volumes ready)
  bool auto_converge = false;     // throttle the guest's vCPUs when it dirties faster than we send
  bool postcopy = false;          // arm post-copy (StartPostCopy may then switch to it)
};

// libvirt's statistics of a guest's current (or last completed) migration job.
struct MigrationJob {
  bool active = false;  // a migration job is running now
  int64_t elapsed_ms = 0;
  int64_t downtime_ms = -1;  // set once completed
  int64_t memory_total_bytes = 0;
  int64_t memory_processed_bytes = 0;
  int64_t memory_remaining_bytes = 0;
  int64_t dirty_rate_pages_s = 0;
  int64_t memory_iteration = 0;
  int64_t expected_downtime_ms = -1;
  int64_t disk_total_bytes = 0;
  int64_t disk_remaining_bytes = 0;
  int64_t bandwidth_mib_s = 0;  // current limit
};
Json MigrationJobToJson(const MigrationJob& job);

// A connection to one libvirt driver. All methods are thread-safe. Errors:
//   kNotFound (no such guest), kAlreadyExists (name taken), kFailedPrecondition (wrong state, e.g.
//   start a running guest; KVM unusable), kInvalidArgument (spec rejected), kUnavailable (libvirtd
//   unreachable; retry), kUnimplemented (the driver lacks the operation), kDeadlineExceeded.
class Hypervisor {
 public:
  virtual ~Hypervisor() = default;

  virtual const std::string& uri() const = 0;
  virtual Result<HostInfo> Host() = 0;

  // Defines a persistent guest from the spec (does not start it).
  virtual Result<GuestInfo> Define(const GuestSpec& spec) = 0;
  virtual Status Start(std::string_view name) = 0;
  // ACPI power-button, then waits up to `timeout` for shutoff, then destroys. Returns
  // kOk either way; `forced` (if given) says whether it had to destroy.
  virtual Status Shutdown(std::string_view name, Duration timeout, bool* forced) = 0;
  virtual Status Destroy(std::string_view name) = 0;  // immediate power-off
  virtual Status Pause(std::string_view name) = 0;
  virtual Status Resume(std::string_view name) = 0;
  // Removes the definition; the guest must be shut off.
  virtual Status Undefine(std::string_view name) = 0;

  // Live changes (also written to the persistent config).
  virtual Status SetMemory(std::string_view name, int64_t mib) = 0;  // balloon target
  virtual Status SetVcpus(std::string_view name, int vcpus) = 0;
  virtual Status SetCpuTune(std::string_view name, std::optional<int64_t> shares, std::optional<int64_t> quota_us,
                            std::optional<int64_t> period_us) = 0;

  virtual Result<GuestInfo> Get(std::string_view name) = 0;
  virtual Result<std::vector<GuestInfo>> List() = 0;
  // The guest's spec as recorded in its domain (metadata + XML); used to adopt guests on restart.
  virtual Result<GuestSpec> GetSpec(std::string_view name) = 0;
  // Cumulative counters of every guest (running or not).
  virtual Result<std::vector<GuestCounters>> SampleAll() = 0;

  // Runs argv inside a running container (kLxc). kUnimplemented for drivers without containers;
  // virtual machines are reached through their guest channel instead.
  virtual Result<ExecResult> ExecInContainer(std::string_view name, const std::vector<std::string>& argv,
                                             Duration timeout) {
    return UnimplementedError("this hypervisor does not run containers");
  }
  // Whether a running container's init process is its configured init (not still the container
  // runtime that is about to exec it). kUnimplemented for drivers without containers.
  virtual Result<bool> ContainerInitRunning(std::string_view name) {
    return UnimplementedError("this hypervisor does not run containers");
  }

  // Live migration (kUnimplemented for drivers without it).
  // The guest's domain XML as the destination should receive it (migratable, with secure parts).
  virtual Result<std::string> MigratableXml(std::string_view name) {
    return UnimplementedError("this hypervisor cannot migrate guests");
  }
  // Migrates a running guest and returns when it finished (kOk: running on the destination and
  // undefined here) or failed (the guest keeps running here). kAborted when AbortMigration
  // cancelled it; kUnavailable when the destination could not be reached.
  virtual Status Migrate(std::string_view name, const MigrationRequest& request) {
    return UnimplementedError("this hypervisor cannot migrate guests");
  }
  // The current migration job's statistics; with `completed`, the last finished job's instead.
  // kNotFound when the guest is not here.
  virtual Result<MigrationJob> GetMigrationJob(std::string_view name, bool completed) {
    return UnimplementedError("this hypervisor cannot migrate guests");
  }
  virtual Status AbortMigration(std::string_view name) {
    return UnimplementedError("this hypervisor cannot migrate guests");
  }
  virtual Status SetMigrationBandwidth(std::string_view name, double mib_s) {
    return UnimplementedError("this hypervisor cannot migrate guests");
  }
  virtual Status StartPostCopy(std::string_view name) {
    return UnimplementedError("this hypervisor cannot migrate guests");
  }

  // Adds `disk` to a guest: to the running guest (a hot-plug) and to its persistent definition, or
  // to the definition only when it is shut off. kAlreadyExists when its target is taken,
  // kFailedPrecondition for a container.
  virtual Status AttachDisk(std::string_view name, const DiskSpec& disk) {
    return UnimplementedError("this hypervisor cannot attach disks");
  }
  // Removes the disk at `target` from the definition and from the running guest, which must let go
  // of it (a PCI unplug through ACPI) within `timeout`: kDeadlineExceeded when it does not (the disk
  // stays in the running guest until it stops). kNotFound when the guest has no such disk.
  virtual Status DetachDisk(std::string_view name, std::string_view target, Duration timeout) {
    return UnimplementedError("this hypervisor cannot detach disks");
  }

  // Grows the disk at `target` of a running guest to `bytes` (QEMU's block_resize: the guest sees
  // the new size at once). kNotFound when the guest has no such disk.
  virtual Status ResizeRunningDisk(std::string_view name, std::string_view target, int64_t bytes) {
    return UnimplementedError("this hypervisor cannot resize disks");
  }

  // Defines (or updates) the private libvirt secret `uuid` for Ceph user `usage` ("client.uw") with
  // `value` (the raw key bytes), which network disks name in their <auth>. kUnimplemented for
  // drivers without secrets.
  virtual Status DefineCephSecret(const std::string& uuid, const std::string& usage, const std::string& value) {
    return UnimplementedError("this hypervisor keeps no secrets");
  }
};

}  // namespace uw::vmm
