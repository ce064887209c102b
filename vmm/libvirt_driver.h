// The libvirt implementation of Hypervisor, the process-wide libvirt event loop, KVM detection
// and the host side of container exec. Used by uw-agent, its tests and benchmarks.
#pragma once

#include <libvirt/libvirt.h>
#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "vmm/cgroups.h"
#include "vmm/hypervisor.h"

namespace uw::vmm {

// libvirt's default event loop on a dedicated thread; needed for lifecycle events and keepalive.
// Start() must run before the first LibvirtHypervisor::Open. Thread-safe; one per process.
class LibvirtEventLoop {
 public:
  static LibvirtEventLoop& Instance();
  Status Start();  // idempotent
  void Stop();     // wakes the thread within ~200 ms and joins it
  bool running() const { return running_; }

 private:
  LibvirtEventLoop() = default;
  ~LibvirtEventLoop() { Stop(); }
  std::mutex mu_;
  std::thread thread_;  // guarded by mu_
  std::atomic<bool> running_{false};
  bool registered_ = false;  // guarded by mu_
  int timer_ = -1;           // guarded by mu_
};

// Inspects the host (under `sys_root`, "/" in production) for usable hardware KVM.
// kvm_pvm (a paravirtual KVM found on some cloud machines) is present but cannot boot stock
// guests: reported as not usable with the reason.
KvmSupport DetectKvm(const std::string& sys_root = "/");

// Whether a process's /proc/PID/cmdline (NUL-separated) is that of `init`: argv[0] is the init,
// or argv[1] is (an init script run by its interpreter).
bool InitCmdlineMatches(std::string_view cmdline, std::string_view init);

class LibvirtHypervisor : public Hypervisor {
 public:
  // Connects to `uri`. kUnavailable when libvirtd cannot be reached (message says which URI).
  static Result<std::unique_ptr<LibvirtHypervisor>> Open(const std::string& uri, Clock& clock = Clock::Real());
  ~LibvirtHypervisor() override;
  LibvirtHypervisor(const LibvirtHypervisor&) = delete;
  LibvirtHypervisor& operator=(const LibvirtHypervisor&) = delete;

  const std::string& uri() const override { return uri_; }
  Result<HostInfo> Host() override;
  Result<GuestInfo> Define(const GuestSpec& spec) override;
  Status Start(std::string_view name) override;
  Status Shutdown(std::string_view name, Duration timeout, bool* forced) override;
  Status Destroy(std::string_view name) override;
  Status Pause(std::string_view name) override;
  Status Resume(std::string_view name) override;
  Status Undefine(std::string_view name) override;
  Status SetMemory(std::string_view name, int64_t mib) override;
  Status SetVcpus(std::string_view name, int vcpus) override;
  Status SetCpuTune(std::string_view name, std::optional<int64_t> shares, std::optional<int64_t> quota_us,
                    std::optional<int64_t> period_us) override;
  Result<GuestInfo> Get(std::string_view name) override;
  Result<std::vector<GuestInfo>> List() override;
  Result<GuestSpec> GetSpec(std::string_view name) override;
  Result<std::vector<GuestCounters>> SampleAll() override;

  // Lifecycle events of every guest on this connection go to `callback` (on the event-loop
  // thread; keep it short). Re-registered after a reconnect. Needs LibvirtEventLoop running.
  // Passing an empty callback stops delivery: once this returns, the old callback is not running
  // and will not be called again.
  Status WatchLifecycle(EventCallback callback);

  // Scheduler parameters as libvirt reports them (cpu_shares, vcpu_quota, vcpu_period).
  Result<Json> SchedulerParameters(std::string_view name);

  // Runs `argv` inside a running container's namespaces (lxc:// connections on this host only)
  // and returns its exit code and combined output (truncated at 1 MiB). kDeadlineExceeded
  // after `timeout` (the command is killed).
  Result<ExecResult> ExecInContainer(std::string_view name, const std::vector<std::string>& argv,
                                     Duration timeout) override;
  // From /proc: the libvirt_lxc controller's (pid = domain id) child has exec'ed the configured
  // init. Start waits for this (up to 10 s) before it returns for a container. (Whether libvirtd
  // has learnt the init's pid too does not matter: ExecInContainer does without it.)
  Result<bool> ContainerInitRunning(std::string_view name) override;
  Result<std::string> MigratableXml(std::string_view name) override;
  Status Migrate(std::string_view name, const MigrationRequest& request) override;
  Result<MigrationJob> GetMigrationJob(std::string_view name, bool completed) override;
  Status AbortMigration(std::string_view name) override;
  Status SetMigrationBandwidth(std::string_view name, double mib_s) override;
  Status DefineCephSecret(const std::string& uuid, const std::string& usage, const std::string& value) override;
  Status StartPostCopy(std::string_view name) override;
  Status AttachDisk(std::string_view name, const DiskSpec& disk) override;
  Status ResizeRunningDisk(std::string_view name, std::string_view target, int64_t bytes) override;  // libvirt_disks.cc
  Status DetachDisk(std::string_view name, std::string_view target, Duration timeout) override;

 private:
  // Where lifecycle events go. libvirt holds its own reference as the callback's opaque and drops it
  // (free callback) only once no dispatch can still run, so a late event finds `callback` empty
  // rather than a destroyed hypervisor.
  struct EventSink {
    EventSink(std::string u, Clock& c) : uri(std::move(u)), clock(c) {}
    const std::string uri;
    Clock& clock;
    std::mutex mu;           // held while the callback runs; never with LibvirtHypervisor::mu_
    EventCallback callback;  // guarded by mu
  };

  LibvirtHypervisor(std::string uri, Clock& clock)
      : uri_(std::move(uri)), clock_(clock), sink_(std::make_shared<EventSink>(uri_, clock)) {}
  // The live connection, reconnecting when the old one died. kUnavailable when it cannot.
  Result<virConnectPtr> Conn();
  Status Connect();         // requires mu_
  Status RegisterEvents();  // requires mu_
  Result<virDomainPtr> Lookup(std::string_view name);
  Result<GuestInfo> InfoOf(virDomainPtr dom);
  // The pid (in this agent's pid namespace) of the running container's configured init, or 0
  // while the controller's child has not exec'ed it yet.
  Result<pid_t> ContainerInitPid(virDomainPtr dom, std::string_view name);
  // Sends `signal` to the container's init found from /proc; false (logged) when there is none.
  bool SignalContainerInit(virDomainPtr dom, std::string_view name, int signal);
  // A container whose libvirt_lxc controller (pid = domain id) has exited is over, but when
  // libvirtd has lost its monitor connection to that controller it still calls the domain running
  // (with libvirt 11.3, about 1 start in 20 on this test bed: the controller logs an EOF right
  // after start, then "Dropping event ... because libvirtd is not connected"). After a second's
  // grace for libvirtd to notice by itself, destroys the stale domain so that libvirt's state (and
  // ours) says it stopped. True when the container had ended.
  bool ReapEndedContainer(virDomainPtr dom, std::string_view name);
  // File descriptors of the running container's namespaces (the caller closes them): libvirt's,
  // or its init's from /proc when libvirtd does not know the init's pid.
  Result<std::vector<int>> ContainerNamespaces(virDomainPtr dom, std::string_view name);

  const std::string uri_;
  Clock& clock_;
  std::mutex mu_;
  virConnectPtr conn_ = nullptr;  // guarded by mu_
  const std::shared_ptr<EventSink> sink_;
  int event_callback_id_ = -1;  // guarded by mu_
  std::mutex host_mu_;
  uint64_t prev_busy_ns_ = 0, prev_total_ns_ = 0;  // guarded by host_mu_
};

// The Status for libvirt's last error on this thread, prefixed with `what`.
Status LibvirtError(std::string_view what);

}  // namespace uw::vmm
