#include "vmm/libvirt_driver.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <libvirt/libvirt-lxc.h>
#include <libvirt/virterror.h>
#include <spdlog/spdlog.h>

#include "common/units.h"
#include "vmm/domain_xml.h"

namespace uw::vmm {
namespace {

struct DomainDeleter {
  void operator()(virDomainPtr d) const {
    if (d) virDomainFree(d);
  }
};
using DomainHandle = std::unique_ptr<virDomain, DomainDeleter>;

void QuietErrorHandler(void*, virErrorPtr) {}

StatusCode CodeFor(int code) {
  switch (code) {
    case VIR_ERR_NO_DOMAIN:
    case VIR_ERR_NO_NETWORK:
    case VIR_ERR_NO_STORAGE_POOL:
    case VIR_ERR_NO_STORAGE_VOL:
      return StatusCode::kNotFound;
    case VIR_ERR_DOM_EXIST:
      return StatusCode::kAlreadyExists;
    case VIR_ERR_OPERATION_INVALID:
    case VIR_ERR_OPERATION_FAILED:
    case VIR_ERR_AGENT_UNRESPONSIVE:
      return StatusCode::kFailedPrecondition;
    case VIR_ERR_NO_SUPPORT:
    case VIR_ERR_OPERATION_UNSUPPORTED:
    case VIR_ERR_ARGUMENT_UNSUPPORTED:
      return StatusCode::kUnimplemented;
    case VIR_ERR_NO_CONNECT:
    case VIR_ERR_RPC:
      return StatusCode::kUnavailable;
    case VIR_ERR_XML_ERROR:
    case VIR_ERR_XML_DETAIL:
    case VIR_ERR_INVALID_ARG:
    case VIR_ERR_CONFIG_UNSUPPORTED:
      return StatusCode::kInvalidArgument;
    case VIR_ERR_OPERATION_TIMEOUT:
      return StatusCode::kDeadlineExceeded;
    case VIR_ERR_OPERATION_ABORTED:
      return StatusCode::kAborted;
    case VIR_ERR_OPERATION_DENIED:
    case VIR_ERR_AUTH_FAILED:
      return StatusCode::kPermissionDenied;
    default:
      return StatusCode::kInternal;
  }
}

GuestState StateFor(int s) {
  switch (s) {
    case VIR_DOMAIN_RUNNING: return GuestState::kRunning;
    case VIR_DOMAIN_BLOCKED: return GuestState::kBlocked;
    case VIR_DOMAIN_PAUSED: return GuestState::kPaused;
    case VIR_DOMAIN_SHUTDOWN: return GuestState::kShuttingDown;
    case VIR_DOMAIN_SHUTOFF: return GuestState::kShutoff;
    case VIR_DOMAIN_CRASHED: return GuestState::kCrashed;
    case VIR_DOMAIN_PMSUSPENDED: return GuestState::kSuspended;
    default: return GuestState::kUnknown;
  }
}

std::string StateReason(int state, int reason) {
  switch (state) {
    case VIR_DOMAIN_RUNNING: {
      static const char* r[] = {"unknown", "booted", "migrated", "restored", "from-snapshot", "unpaused",
                                "migration-canceled", "save-canceled", "wakeup", "crashed", "post-copy"};
      return reason >= 0 && reason < 11 ? r[reason] : "unknown";
    }
    case VIR_DOMAIN_PAUSED: {
      static const char* r[] = {"unknown", "user", "migration", "save", "dump", "ioerror", "watchdog",
                                "from-snapshot", "shutting-down", "snapshot", "crashed", "starting-up",
                                "post-copy", "post-copy-failed"};
      return reason >= 0 && reason < 14 ? r[reason] : "unknown";
    }
    case VIR_DOMAIN_SHUTOFF: {
      static const char* r[] = {"unknown", "shutdown", "destroyed", "crashed", "migrated", "saved",
                                "failed", "from-snapshot", "daemon"};
      return reason >= 0 && reason < 9 ? r[reason] : "unknown";
    }
    case VIR_DOMAIN_CRASHED: {
      static const char* r[] = {"unknown", "panicked"};
      return reason >= 0 && reason < 2 ? r[reason] : "unknown";
    }
    default:
      return "";
  }
}

const char* EventName(int event) {
  static const char* names[] = {"defined", "undefined", "started", "suspended", "resumed",
                                "stopped", "shutdown",  "pmsuspended", "crashed"};
  return event >= 0 && event < 9 ? names[event] : "unknown";
}

std::string EventDetail(int event, int detail) {
  switch (event) {
    case VIR_DOMAIN_EVENT_STARTED: {
      static const char* d[] = {"booted", "migrated", "restored", "from-snapshot", "wakeup"};
      return detail >= 0 && detail < 5 ? d[detail] : "";
    }
    case VIR_DOMAIN_EVENT_STOPPED: {
      static const char* d[] = {"shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from-snapshot"};
      return detail >= 0 && detail < 7 ? d[detail] : "";
    }
    case VIR_DOMAIN_EVENT_SUSPENDED: {
      static const char* d[] = {"paused", "migrated", "ioerror", "watchdog", "restored", "from-snapshot",
                                "api-error", "post-copy", "post-copy-failed"};
      return detail >= 0 && detail < 9 ? d[detail] : "";
    }
    case VIR_DOMAIN_EVENT_RESUMED: {
      static const char* d[] = {"unpaused", "migrated", "from-snapshot", "post-copy", "post-copy-failed"};
      return detail >= 0 && detail < 5 ? d[detail] : "";
    }
    case VIR_DOMAIN_EVENT_DEFINED: {
      static const char* d[] = {"added", "updated", "renamed", "from-snapshot"};
      return detail >= 0 && detail < 4 ? d[detail] : "";
    }
    case VIR_DOMAIN_EVENT_CRASHED: {
      static const char* d[] = {"panicked", "crashloaded"};
      return detail >= 0 && detail < 2 ? d[detail] : "";
    }
    default:
      return "";
  }
}

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Status LibvirtError(std::string_view what) {
  virErrorPtr err = virGetLastError();
  if (!err) return InternalError(std::string(what) + ": libvirt failed without an error message");
  StatusCode code = CodeFor(err->code);
  // Transport failures (a dead or restarting daemon) are worth retrying; the same generic codes
  // from a driver (a file QEMU cannot open) are not.
  if (err->domain == VIR_FROM_RPC || err->domain == VIR_FROM_REMOTE) {
    if (code == StatusCode::kInternal || err->code == VIR_ERR_SYSTEM_ERROR) code = StatusCode::kUnavailable;
  }
  Status s(code, std::string(what) + ": " + (err->message ? err->message : "unknown libvirt error"));
  virResetLastError();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Event loop

LibvirtEventLoop& LibvirtEventLoop::Instance() {
  static LibvirtEventLoop loop;
  return loop;
}

Status LibvirtEventLoop::Start() {
  std::lock_guard l(mu_);
  if (running_) return Status::Ok();
  virSetErrorFunc(nullptr, QuietErrorHandler);
  if (!registered_) {
    if (virEventRegisterDefaultImpl() < 0) return LibvirtError("registering libvirt's event loop");
    registered_ = true;
  }
  // A periodic no-op timer so that virEventRunDefaultImpl returns and can see running_ drop.
  timer_ = virEventAddTimeout(200, [](int, void*) {}, nullptr, nullptr);
  running_ = true;
  thread_ = std::thread([this] {
    while (running_) {
      if (virEventRunDefaultImpl() < 0) {
        spdlog::warn("libvirt event loop iteration failed: {}", LibvirtError("event loop").message());
      }
    }
  });
  return Status::Ok();
}

void LibvirtEventLoop::Stop() {
  std::lock_guard l(mu_);
  if (!running_) return;
  running_ = false;
  if (thread_.joinable()) thread_.join();
  if (timer_ >= 0) virEventRemoveTimeout(timer_);
  timer_ = -1;
}

// ---------------------------------------------------------------------------------------------
// KVM detection

KvmSupport DetectKvm(const std::string& sys_root) {
  namespace fs = std::filesystem;
  KvmSupport k;
  fs::path root(sys_root);
  std::error_code ec;
  k.device_present = fs::exists(root / "dev/kvm", ec);
  for (const char* m : {"kvm_pvm", "kvm_intel", "kvm_amd"}) {
    if (fs::exists(root / "sys/module" / m, ec)) {
      k.module = m;
      break;
    }
  }
  if (!k.device_present) {
    k.reason = "/dev/kvm is absent: no KVM on this host";
  } else if (k.module == "kvm_pvm") {
    k.reason = "/dev/kvm is provided by kvm_pvm (paravirtualized KVM inside a VM): stock guests hang at "
               "boot and host-passthrough CPUs abort; run guests emulated (kind qemu)";
  } else if (k.module.empty()) {
    k.reason = "/dev/kvm exists but neither kvm_intel nor kvm_amd is loaded";
  } else if (::access((root / "dev/kvm").c_str(), R_OK | W_OK) != 0) {
    k.reason = "/dev/kvm is not accessible to this process";
  } else {
    k.usable = true;
  }
  return k;
}

// ---------------------------------------------------------------------------------------------
// Connection

Result<std::unique_ptr<LibvirtHypervisor>> LibvirtHypervisor::Open(const std::string& uri, Clock& clock) {
  virSetErrorFunc(nullptr, QuietErrorHandler);
  std::unique_ptr<LibvirtHypervisor> h(new LibvirtHypervisor(uri, clock));
  std::lock_guard l(h->mu_);
  UW_RETURN_IF_ERROR(h->Connect());
  return h;
}

LibvirtHypervisor::~LibvirtHypervisor() {
  {
    std::lock_guard l(sink_->mu);  // waits for a callback in progress
    sink_->callback = nullptr;
  }
  std::lock_guard l(mu_);
  if (conn_) {
    if (event_callback_id_ >= 0) virConnectDomainEventDeregisterAny(conn_, event_callback_id_);
    virConnectClose(conn_);
  }
}

Status LibvirtHypervisor::Connect() {
  if (conn_) {
    if (event_callback_id_ >= 0) virConnectDomainEventDeregisterAny(conn_, event_callback_id_);
    virConnectClose(conn_);
    conn_ = nullptr;
    event_callback_id_ = -1;
  }
  conn_ = virConnectOpen(uri_.c_str());
  bool want_events;
  {
    std::lock_guard l(sink_->mu);
    want_events = static_cast<bool>(sink_->callback);
  }
  if (!conn_) {
    Status s = LibvirtError("connecting to " + uri_);
    return UnavailableError(s.message());
  }
  if (LibvirtEventLoop::Instance().running() && uri_.rfind("test:", 0) != 0) {
    // Detect a dead daemon within ~15 s even when idle.
    virConnectSetKeepAlive(conn_, 5, 3);
  }
  if (want_events) return RegisterEvents();
  return Status::Ok();
}

Result<virConnectPtr> LibvirtHypervisor::Conn() {
  std::lock_guard l(mu_);
  if (conn_ && virConnectIsAlive(conn_) == 1) return conn_;
  spdlog::warn("connection to {} is down; reconnecting", uri_);
  UW_RETURN_IF_ERROR(Connect());
  return conn_;
}

Status LibvirtHypervisor::RegisterEvents() {
  auto cb = [](virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
    EventSink& sink = **static_cast<std::shared_ptr<EventSink>*>(opaque);
    // Not LibvirtHypervisor::mu_: the callback may run while another thread holds it in Conn().
    std::lock_guard l(sink.mu);
    if (!sink.callback) return 0;
    LifecycleEvent e;
    e.at = sink.clock.Now();
    e.guest = virDomainGetName(dom);
    char uuid[VIR_UUID_STRING_BUFLEN];
    if (virDomainGetUUIDString(dom, uuid) == 0) e.uuid = uuid;
    e.event = EventName(event);
    e.detail = EventDetail(event, detail);
    e.source = sink.uri;
    if (unsigned id = virDomainGetID(dom); id != static_cast<unsigned>(-1)) e.id = id;
    sink.callback(e);
    return 0;
  };
  auto* ref = new std::shared_ptr<EventSink>(sink_);
  auto free_ref = [](void* opaque) { delete static_cast<std::shared_ptr<EventSink>*>(opaque); };
  event_callback_id_ = virConnectDomainEventRegisterAny(conn_, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                        VIR_DOMAIN_EVENT_CALLBACK(+cb), ref, +free_ref);
  // On failure `ref` is not freed: whether libvirt already called free_ref is not documented, and a
  // leaked pointer on a failed registration is cheaper than a double free.
  if (event_callback_id_ < 0) return LibvirtError("watching lifecycle events on " + uri_);
  return Status::Ok();
}

Status LibvirtHypervisor::WatchLifecycle(EventCallback callback) {
  if (!LibvirtEventLoop::Instance().running()) {
    return FailedPreconditionError("the libvirt event loop is not running");
  }
  const bool wanted = static_cast<bool>(callback);
  {
    std::lock_guard l(sink_->mu);
    sink_->callback = std::move(callback);
  }
  std::lock_guard l(mu_);
  if (!wanted || event_callback_id_ >= 0) return Status::Ok();
  return RegisterEvents();
}

Result<virDomainPtr> LibvirtHypervisor::Lookup(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virConnectPtr c, Conn());
  std::string n(name);
  virDomainPtr d = virDomainLookupByName(c, n.c_str());
  if (!d) {
    Status s = LibvirtError("guest '" + n + "'");
    if (s.code() == StatusCode::kNotFound) return NotFoundError("guest '" + n + "' does not exist on " + uri_);
    return s;
  }
  return d;
}

// ---------------------------------------------------------------------------------------------
// Host

Result<HostInfo> LibvirtHypervisor::Host() {
  UW_ASSIGN_OR_RETURN(virConnectPtr c, Conn());
  HostInfo h;
  h.uri = uri_;
  virNodeInfo node;
  if (virNodeGetInfo(c, &node) < 0) return LibvirtError("reading node info of " + uri_);
  h.cpu_model = node.model;
  h.cpu_cores = static_cast<int>(node.cpus);
  h.memory_mib = static_cast<int64_t>(node.memory / 1024);
  if (char* hn = virConnectGetHostname(c)) {
    h.hostname = hn;
    free(hn);
  }
  if (const char* t = virConnectGetType(c)) h.hypervisor = t;
  unsigned long lib = 0;
  if (virConnectGetLibVersion(c, &lib) == 0) h.libvirt_version = lib;
  unsigned long long free_bytes = virNodeGetFreeMemory(c);
  if (free_bytes > 0) h.free_memory_mib = static_cast<int64_t>(free_bytes / kBytesPerMiB);
  int n = 0;
  if (virNodeGetCPUStats(c, VIR_NODE_CPU_STATS_ALL_CPUS, nullptr, &n, 0) == 0 && n > 0) {
    std::vector<virNodeCPUStats> stats(n);
    if (virNodeGetCPUStats(c, VIR_NODE_CPU_STATS_ALL_CPUS, stats.data(), &n, 0) == 0) {
      uint64_t busy = 0, total = 0;
      for (int i = 0; i < n; ++i) {
        std::string f = stats[i].field;
        if (f == VIR_NODE_CPU_STATS_IDLE || f == VIR_NODE_CPU_STATS_IOWAIT) {
          total += stats[i].value;
        } else if (f == VIR_NODE_CPU_STATS_KERNEL || f == VIR_NODE_CPU_STATS_USER) {
          busy += stats[i].value;
          total += stats[i].value;
        }
      }
      std::lock_guard l(host_mu_);
      if (prev_total_ns_ > 0 && total > prev_total_ns_) {
        h.cpu_busy_fraction = static_cast<double>(busy - prev_busy_ns_) / static_cast<double>(total - prev_total_ns_);
      }
      prev_busy_ns_ = busy;
      prev_total_ns_ = total;
    }
  } else {
    virResetLastError();
  }
  std::istringstream load(ReadSmallFile("/proc/loadavg"));
  load >> h.load1;
  return h;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

Result<GuestInfo> LibvirtHypervisor::Define(const GuestSpec& spec) {
  UW_RETURN_IF_ERROR(ValidateGuestSpec(spec));
  UW_ASSIGN_OR_RETURN(virConnectPtr c, Conn());
  if (virDomainPtr existing = virDomainLookupByName(c, spec.name.c_str())) {
    virDomainFree(existing);
    return AlreadyExistsError("guest '" + spec.name + "' already exists on " + uri_);
  }
  virResetLastError();
  std::string xml = BuildDomainXml(spec);
  DomainHandle d(virDomainDefineXML(c, xml.c_str()));
  if (!d) return LibvirtError("defining guest '" + spec.name + "'");
  return InfoOf(d.get());
}

Status LibvirtHypervisor::Start(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainIsActive(d.get()) == 1) {
    return FailedPreconditionError("guest '" + std::string(name) + "' is already running");
  }
  if (virDomainCreate(d.get()) < 0) return LibvirtError("starting guest '" + std::string(name) + "'");
  bool container = false;
  if (char* os = virDomainGetOSType(d.get())) {
    container = std::string(os) == "exe";
    free(os);
  }
  if (!container) return Status::Ok();
  // A container runs once its init does: right after virDomainCreate its pid 1 may still be the
  // libvirt_lxc child that is about to exec the init. Wait for the exec (bounded).
  const Duration deadline = clock_.Monotonic() + std::chrono::seconds(10);
  while (true) {
    auto running = ContainerInitRunning(name);
    if (running.ok() && *running) return Status::Ok();
    if (clock_.Monotonic() >= deadline) {
      return DeadlineExceededError("container '" + std::string(name) + "' started but its init is not running after 10 s" +
                                   (running.ok() ? std::string() : ": " + running.status().message()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Status LibvirtHypervisor::Shutdown(std::string_view name, Duration timeout, bool* forced) {
  if (forced) *forced = false;
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainIsActive(d.get()) != 1) {
    return FailedPreconditionError("guest '" + std::string(name) + "' is not running");
  }
  // VMs get the ACPI power button (the guest must run acpid or similar); containers get SIGTERM
  // to their init (libvirt's default tries /dev/initctl first, which busybox inits ignore).
  unsigned int mode = VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN;
  if (char* os = virDomainGetOSType(d.get())) {
    if (std::string(os) == "exe") mode = VIR_DOMAIN_SHUTDOWN_SIGNAL;
    free(os);
  }
  if (virDomainShutdownFlags(d.get(), mode) < 0) {
    spdlog::warn("{}", LibvirtError("graceful shutdown of '" + std::string(name) + "'").message());
  } else {
    const Duration deadline = clock_.Monotonic() + timeout;
    while (clock_.Monotonic() < deadline) {
      int active = virDomainIsActive(d.get());
      if (active == 0) return Status::Ok();
      if (active < 0) return LibvirtError("watching guest '" + std::string(name) + "' shut down");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  if (forced) *forced = true;
  if (virDomainDestroy(d.get()) < 0 && virDomainIsActive(d.get()) == 1) {
    return LibvirtError("forcing off guest '" + std::string(name) + "'");
  }
  virResetLastError();
  return Status::Ok();
}

Status LibvirtHypervisor::Destroy(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainIsActive(d.get()) != 1) {
    return FailedPreconditionError("guest '" + std::string(name) + "' is not running");
  }
  if (virDomainDestroy(d.get()) < 0) return LibvirtError("forcing off guest '" + std::string(name) + "'");
  return Status::Ok();
}

Status LibvirtHypervisor::Pause(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainSuspend(d.get()) < 0) return LibvirtError("pausing guest '" + std::string(name) + "'");
  return Status::Ok();
}

Status LibvirtHypervisor::Resume(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainResume(d.get()) < 0) return LibvirtError("resuming guest '" + std::string(name) + "'");
  return Status::Ok();
}

Status LibvirtHypervisor::Undefine(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainIsActive(d.get()) == 1) {
    return FailedPreconditionError("guest '" + std::string(name) + "' is running; stop it first");
  }
  if (virDomainUndefine(d.get()) < 0) return LibvirtError("deleting guest '" + std::string(name) + "'");
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Live changes

namespace {
// Applies a change to the running guest (when it runs) and to its persistent definition, as two
// calls: some drivers refuse AFFECT_LIVE and AFFECT_CONFIG together.
template <typename F>
Status ApplyLiveAndConfig(virDomainPtr d, const std::string& what, F apply) {
  if (virDomainIsActive(d) == 1) {
    if (apply(VIR_DOMAIN_AFFECT_LIVE) < 0) return LibvirtError(what);
    if (virDomainIsPersistent(d) != 1) return Status::Ok();
  }
  if (apply(VIR_DOMAIN_AFFECT_CONFIG) < 0) {
    Status s = LibvirtError(what + " (persistent definition)");
    if (virDomainIsActive(d) == 1) {
      // The live change took effect; the definition keeps the old value until the next change.
      spdlog::warn("{}", s.message());
      return Status::Ok();
    }
    return s;
  }
  return Status::Ok();
}
}  // namespace

Status LibvirtHypervisor::SetMemory(std::string_view name, int64_t mib) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  unsigned long max_kib = virDomainGetMaxMemory(d.get());
  if (max_kib > 0 && static_cast<unsigned long>(mib) * 1024 > max_kib) {
    return InvalidArgumentError("guest '" + std::string(name) + "': memory " + std::to_string(mib) +
                                " MiB is above its maximum of " + std::to_string(max_kib / 1024) + " MiB");
  }
  if (mib < 16) return InvalidArgumentError("guest '" + std::string(name) + "': memory must be at least 16 MiB");
  return ApplyLiveAndConfig(d.get(), "setting memory of guest '" + std::string(name) + "'", [&](unsigned flags) {
    return virDomainSetMemoryFlags(d.get(), static_cast<unsigned long>(mib) * 1024, flags);
  });
}

Status LibvirtHypervisor::SetVcpus(std::string_view name, int vcpus) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  int max = virDomainGetVcpusFlags(d.get(), static_cast<unsigned>(VIR_DOMAIN_AFFECT_CONFIG) | static_cast<unsigned>(VIR_DOMAIN_VCPU_MAXIMUM));
  if (max > 0 && (vcpus < 1 || vcpus > max)) {
    return InvalidArgumentError("guest '" + std::string(name) + "': vcpus must be within 1.." + std::to_string(max));
  }
  return ApplyLiveAndConfig(d.get(), "setting vCPUs of guest '" + std::string(name) + "'",
                            [&](unsigned flags) { return virDomainSetVcpusFlags(d.get(), vcpus, flags); });
}

Status LibvirtHypervisor::SetCpuTune(std::string_view name, std::optional<int64_t> shares,
                                     std::optional<int64_t> quota_us, std::optional<int64_t> period_us) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  virTypedParameterPtr params = nullptr;
  int n = 0, max = 0;
  if (shares) virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_SCHEDULER_CPU_SHARES, *shares);
  if (period_us) virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_SCHEDULER_VCPU_PERIOD, *period_us);
  if (quota_us) virTypedParamsAddLLong(&params, &n, &max, VIR_DOMAIN_SCHEDULER_VCPU_QUOTA, *quota_us);
  if (n == 0) return Status::Ok();
  Status s = ApplyLiveAndConfig(d.get(), "setting CPU controls of guest '" + std::string(name) + "'",
                                [&](unsigned flags) {
                                  return virDomainSetSchedulerParametersFlags(d.get(), params, n, flags);
                                });
  virTypedParamsFree(params, n);
  return s;
}

Result<Json> LibvirtHypervisor::SchedulerParameters(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  int n = 0;
  char* type = virDomainGetSchedulerType(d.get(), &n);
  if (!type) return LibvirtError("reading scheduler of guest '" + std::string(name) + "'");
  free(type);
  std::vector<virTypedParameter> params(std::max(n, 1));
  if (virDomainGetSchedulerParametersFlags(d.get(), params.data(), &n, VIR_DOMAIN_AFFECT_CURRENT) < 0) {
    return LibvirtError("reading scheduler of guest '" + std::string(name) + "'");
  }
  Json j = Json::object();
  for (int i = 0; i < n; ++i) {
    const auto& p = params[i];
    switch (p.type) {
      case VIR_TYPED_PARAM_ULLONG: j[p.field] = p.value.ul; break;
      case VIR_TYPED_PARAM_LLONG: j[p.field] = p.value.l; break;
      case VIR_TYPED_PARAM_UINT: j[p.field] = p.value.ui; break;
      case VIR_TYPED_PARAM_INT: j[p.field] = p.value.i; break;
      default: break;
    }
  }
  return j;
}

// ---------------------------------------------------------------------------------------------
// Reading state

Result<GuestInfo> LibvirtHypervisor::InfoOf(virDomainPtr dom) {
  GuestInfo i;
  i.name = virDomainGetName(dom);
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) == 0) i.uuid = uuid;
  virDomainInfo info;
  if (virDomainGetInfo(dom, &info) < 0) return LibvirtError("reading guest '" + i.name + "'");
  int state = 0, reason = 0;
  if (virDomainGetState(dom, &state, &reason, 0) == 0) {
    i.state = StateFor(state);
    i.state_reason = StateReason(state, reason);
    // A guest whose QEMU was torn down after a panic (on_crash destroy, domains defined before
    // on_crash preserve) is just as dead as a preserved one.
    if (state == VIR_DOMAIN_SHUTOFF && reason == VIR_DOMAIN_SHUTOFF_CRASHED) i.state = GuestState::kCrashed;
  } else {
    i.state = StateFor(info.state);
  }
  if (virDomainIsActive(dom) == 1) i.id = static_cast<int64_t>(virDomainGetID(dom));
  i.memory_mib = static_cast<int64_t>(info.memory / 1024);
  i.max_memory_mib = static_cast<int64_t>(info.maxMem / 1024);
  i.vcpus = info.nrVirtCpu;
  i.cpu_time_ns = info.cpuTime;
  i.persistent = virDomainIsPersistent(dom) == 1;
  // The persistent definition holds the targets we set (balloon size, vCPUs); the live XML's
  // currentMemory follows QEMU's balloon as it moves.
  char* xml = virDomainGetXMLDesc(dom, i.persistent ? VIR_DOMAIN_XML_INACTIVE : 0);
  if (!xml) return LibvirtError("reading guest '" + i.name + "'");
  auto spec = ParseDomainXml(xml);
  free(xml);
  if (spec.ok()) {
    i.kind = spec->kind;
    i.emulated = spec->emulated;
    i.max_vcpus = spec->max_vcpus;
    i.console_log = spec->console_log;
    i.channels = spec->channels;
    // The balloon target (currentMemory), not QEMU's actual balloon size, which trails a change
    // by up to a second; the actual size is in the usage samples.
    i.memory_mib = spec->memory_mib;
    if (i.state == GuestState::kShutoff) i.vcpus = spec->vcpus;
  } else {
    i.max_vcpus = i.vcpus;
  }
  return i;
}

Result<GuestInfo> LibvirtHypervisor::Get(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  return InfoOf(d.get());
}

Result<std::vector<GuestInfo>> LibvirtHypervisor::List() {
  UW_ASSIGN_OR_RETURN(virConnectPtr c, Conn());
  virDomainPtr* doms = nullptr;
  int n = virConnectListAllDomains(c, &doms, 0);
  if (n < 0) return LibvirtError("listing guests on " + uri_);
  std::vector<DomainHandle> handles;
  for (int i = 0; i < n; ++i) handles.emplace_back(doms[i]);
  free(doms);
  std::vector<GuestInfo> out;
  for (auto& d : handles) {
    auto info = InfoOf(d.get());
    if (info.ok()) {
      out.push_back(std::move(*info));
    } else if (info.status().code() != StatusCode::kNotFound) {
      return info.status();
    }  // a guest undefined while we listed is simply gone
  }
  return out;
}

Result<GuestSpec> LibvirtHypervisor::GetSpec(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  char* xml = virDomainGetXMLDesc(d.get(), VIR_DOMAIN_XML_INACTIVE);
  if (!xml) return LibvirtError("reading guest '" + std::string(name) + "'");
  auto spec = ParseDomainXml(xml);
  free(xml);
  return spec;
}

namespace {
uint64_t ULL(virTypedParameterPtr p, int n, const std::string& key) {
  unsigned long long v = 0;
  if (virTypedParamsGetULLong(p, n, key.c_str(), &v) == 1) return v;
  return 0;
}
int64_t KiB(virTypedParameterPtr p, int n, const char* key) {
  unsigned long long v = 0;
  if (virTypedParamsGetULLong(p, n, key, &v) == 1) return static_cast<int64_t>(v);
  return -1;
}
}  // namespace

Result<std::vector<GuestCounters>> LibvirtHypervisor::SampleAll() {
  UW_ASSIGN_OR_RETURN(virConnectPtr c, Conn());
  std::vector<GuestCounters> out;
  virDomainStatsRecordPtr* records = nullptr;
  const unsigned int groups = VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL | VIR_DOMAIN_STATS_BALLOON |
                              VIR_DOMAIN_STATS_VCPU | VIR_DOMAIN_STATS_INTERFACE | VIR_DOMAIN_STATS_BLOCK;
  int n = virConnectGetAllDomainStats(c, groups, &records, 0);
  const Duration now = clock_.Monotonic();
  if (n >= 0) {
    for (int i = 0; i < n; ++i) {
      virDomainStatsRecordPtr r = records[i];
      GuestCounters g;
      g.name = virDomainGetName(r->dom);
      char uuid[VIR_UUID_STRING_BUFLEN];
      if (virDomainGetUUIDString(r->dom, uuid) == 0) g.uuid = uuid;
      g.at = now;
      if (unsigned id = virDomainGetID(r->dom); id != static_cast<unsigned>(-1)) g.id = id;
      int st = 0;
      virTypedParamsGetInt(r->params, r->nparams, "state.state", &st);
      g.state = StateFor(st);
      g.cpu_time_ns = ULL(r->params, r->nparams, "cpu.time");
      unsigned int vc = 0;
      if (virTypedParamsGetUInt(r->params, r->nparams, "vcpu.current", &vc) == 1) g.vcpus = static_cast<int>(vc);
      g.balloon_current_kib = KiB(r->params, r->nparams, "balloon.current");
      g.balloon_maximum_kib = KiB(r->params, r->nparams, "balloon.maximum");
      g.balloon_usable_kib = KiB(r->params, r->nparams, "balloon.usable");
      g.balloon_available_kib = KiB(r->params, r->nparams, "balloon.available");
      g.rss_kib = KiB(r->params, r->nparams, "balloon.rss");
      unsigned int nb = 0, nn = 0;
      virTypedParamsGetUInt(r->params, r->nparams, "block.count", &nb);
      for (unsigned int b = 0; b < nb; ++b) {
        std::string p = "block." + std::to_string(b) + ".";
        g.block_rd_bytes += ULL(r->params, r->nparams, p + "rd.bytes");
        g.block_wr_bytes += ULL(r->params, r->nparams, p + "wr.bytes");
        g.block_rd_reqs += ULL(r->params, r->nparams, p + "rd.reqs");
        g.block_wr_reqs += ULL(r->params, r->nparams, p + "wr.reqs");
      }
      virTypedParamsGetUInt(r->params, r->nparams, "net.count", &nn);
      for (unsigned int k = 0; k < nn; ++k) {
        std::string p = "net." + std::to_string(k) + ".";
        g.net_rx_bytes += ULL(r->params, r->nparams, p + "rx.bytes");
        g.net_tx_bytes += ULL(r->params, r->nparams, p + "tx.bytes");
      }
      out.push_back(std::move(g));
    }
    virDomainStatsRecordListFree(records);
    return out;
  }
  Status s = LibvirtError("sampling guests on " + uri_);
  if (s.code() != StatusCode::kUnimplemented) return s;
  // Drivers without bulk stats (LXC): one virDomainGetInfo per guest.
  virDomainPtr* doms = nullptr;
  int nd = virConnectListAllDomains(c, &doms, 0);
  if (nd < 0) return LibvirtError("listing guests on " + uri_);
  for (int i = 0; i < nd; ++i) {
    DomainHandle d(doms[i]);
    virDomainInfo info;
    if (virDomainGetInfo(d.get(), &info) < 0) {
      virResetLastError();
      continue;
    }
    GuestCounters g;
    g.name = virDomainGetName(d.get());
    char uuid[VIR_UUID_STRING_BUFLEN];
    if (virDomainGetUUIDString(d.get(), uuid) == 0) g.uuid = uuid;
    g.at = now;
    if (unsigned id = virDomainGetID(d.get()); id != static_cast<unsigned>(-1)) g.id = id;
    g.state = StateFor(info.state);
    g.cpu_time_ns = info.cpuTime;
    g.vcpus = info.nrVirtCpu;
    g.balloon_maximum_kib = static_cast<int64_t>(info.maxMem);
    g.balloon_current_kib = static_cast<int64_t>(info.memory);
    // For containers libvirt reports the memory in use as `memory` when running.
    if (g.state == GuestState::kRunning) g.rss_kib = static_cast<int64_t>(info.memory);
    out.push_back(std::move(g));
  }
  free(doms);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Container init

bool InitCmdlineMatches(std::string_view cmdline, std::string_view init) {
  if (init.empty()) return false;
  std::vector<std::string_view> argv;
  for (size_t start = 0; start < cmdline.size() && argv.size() < 2;) {
    size_t end = cmdline.find('\0', start);
    if (end == std::string_view::npos) end = cmdline.size();
    argv.push_back(cmdline.substr(start, end - start));
    start = end + 1;
  }
  // The init itself, or the interpreter of an init script ("#!/bin/sh" makes argv
  // "/bin/sh /sbin/uw-container-init").
  return (!argv.empty() && argv[0] == init) || (argv.size() > 1 && argv[1] == init);
}

Result<bool> LibvirtHypervisor::ContainerInitRunning(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainIsActive(d.get()) != 1) return false;
  UW_ASSIGN_OR_RETURN(pid_t init, ContainerInitPid(d.get(), name));
  return init > 0;
}

Result<pid_t> LibvirtHypervisor::ContainerInitPid(virDomainPtr dom, std::string_view name) {
  char* xml = virDomainGetXMLDesc(dom, 0);
  if (!xml) return LibvirtError("reading guest '" + std::string(name) + "'");
  auto spec = ParseDomainXml(xml);
  free(xml);
  if (!spec.ok()) return spec.status();
  if (spec->kind != GuestKind::kLxc) return InvalidArgumentError("guest '" + std::string(name) + "' is not a container");
  // The domain id of a container is the pid of its libvirt_lxc controller; the container's
  // init is the controller's child (a clone in new namespaces that execs the init).
  const int id = virDomainGetID(dom);
  if (id <= 0) return 0;
  const std::string controller = std::to_string(id);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = e.path().filename().string();
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = ReadSmallFile("/proc/" + pid + "/stat");
    // pid (comm) state ppid ...; comm may hold spaces and parentheses: parse after the last ')'.
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid != controller) continue;
    if (InitCmdlineMatches(ReadSmallFile("/proc/" + pid + "/cmdline"), spec->lxc_init)) {
      return static_cast<pid_t>(std::stol(pid));
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Container exec

Result<ExecResult> LibvirtHypervisor::ExecInContainer(std::string_view name,
                                                                         const std::vector<std::string>& argv,
                                                                         Duration timeout) {
  if (argv.empty()) return InvalidArgumentError("exec: empty command");
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainIsActive(d.get()) != 1) {
    return FailedPreconditionError("guest '" + std::string(name) + "' is not running");
  }
  int* fds = nullptr;
  int nfds = virDomainLxcOpenNamespace(d.get(), &fds, 0);
  if (nfds < 0) {
    // libvirtd learns the init's pid from an event its libvirt_lxc controller sends to its first
    // monitor client only; when that connection is lost at start-up (seen under load with libvirt
    // 11.3: "Init pid is not yet available" for the container's whole life while its init runs),
    // libvirtd never learns it. The namespaces are the init's: open them from /proc, as libvirt
    // itself does once it knows the pid.
    Status s = LibvirtError("entering container '" + std::string(name) + "'");
    if (s.code() != StatusCode::kFailedPrecondition && s.code() != StatusCode::kInternal) return s;
    UW_ASSIGN_OR_RETURN(pid_t init, ContainerInitPid(d.get(), name));
    if (init <= 0) {
      return FailedPreconditionError("container '" + std::string(name) + "' has no running init yet (" + s.message() +
                                     ")");
    }
    std::vector<int> opened;
    for (const char* ns : {"user", "ipc", "uts", "net", "pid", "mnt"}) {
      const std::string path = "/proc/" + std::to_string(init) + "/ns/" + ns;
      int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        opened.push_back(fd);
      } else if (errno != ENOENT) {
        Status err = InternalError("entering container '" + std::string(name) + "': " + path + ": " + std::strerror(errno));
        for (int o : opened) close(o);
        return err;
      }
    }
    fds = static_cast<int*>(malloc(sizeof(int) * std::max<size_t>(opened.size(), 1)));
    for (size_t i = 0; i < opened.size(); ++i) fds[i] = opened[i];
    nfds = static_cast<int>(opened.size());
  }
  auto close_fds = [&] {
    for (int i = 0; i < nfds; ++i) close(fds[i]);
    free(fds);
  };
  // The command joins the container's cgroups too, so that it is accounted and limited with the
  // container: the cgroups of its libvirt_lxc process (whose pid is the domain id).
  std::vector<std::string> procs_files;
  {
    const std::string lxc_pid = std::to_string(virDomainGetID(d.get()));
    std::stringstream cgs, mis;
    cgs << std::ifstream("/proc/" + lxc_pid + "/cgroup").rdbuf();
    mis << std::ifstream("/proc/self/mountinfo").rdbuf();
    const std::string proc_cgroup = cgs.str();
    if (proc_cgroup.empty()) {
      close_fds();
      return InternalError("cannot read the cgroups of container '" + std::string(name) + "' (process " + lxc_pid +
                           ")");
    }
    procs_files = CgroupProcsFiles(proc_cgroup, mis.str());
  }
  int pipefd[2], gate[2];
  if (pipe2(pipefd, O_CLOEXEC) < 0) {
    close_fds();
    return InternalError(std::string("pipe: ") + std::strerror(errno));
  }
  if (pipe2(gate, O_CLOEXEC) < 0) {
    close(pipefd[0]);
    close(pipefd[1]);
    close_fds();
    return InternalError(std::string("pipe: ") + std::strerror(errno));
  }
  // Everything the child needs is prepared before fork: it may only make async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  char env_path[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  char* envp[] = {env_path, nullptr};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 1);
    dup2(pipefd[1], 2);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    // Wait until the parent has put this process into the container's cgroups.
    close(gate[1]);
    char go = 0;
    if (read(gate[0], &go, 1) != 1) _exit(125);
    for (int i = 0; i < nfds; ++i) {
      // EINVAL means we are in that namespace already (the user namespace of a container without
      // one): harmless, as libvirt's own virProcessSetNamespaces treats it.
      if (setns(fds[i], 0) < 0 && errno != EINVAL) {
        // Only async-signal-safe calls here: report which namespace and errno by hand.
        char msg[] = "uw-agent: setns #N failed: errno NNN\n";
        msg[17] = static_cast<char>('0' + i % 10);
        int e = errno;
        msg[33] = static_cast<char>('0' + e / 100 % 10);
        msg[34] = static_cast<char>('0' + e / 10 % 10);
        msg[35] = static_cast<char>('0' + e % 10);
        (void)!write(2, msg, sizeof msg - 1);
        _exit(125);
      }
    }
    if (chdir("/") < 0) _exit(125);
    pid_t inner = fork();  // the pid namespace applies to children only
    if (inner == 0) {
      execve(args[0], args.data(), envp);
      _exit(127);
    }
    int status = 0;
    if (inner < 0 || waitpid(inner, &status, 0) < 0) _exit(125);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  close(pipefd[1]);
  close(gate[0]);
  close_fds();
  if (pid < 0) {
    close(pipefd[0]);
    close(gate[1]);
    return InternalError(std::string("fork: ") + std::strerror(errno));
  }
  std::string join_error;
  const std::string pid_text = std::to_string(pid);
  for (const auto& file : procs_files) {
    int fd = open(file.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, pid_text.data(), pid_text.size()) < 0) {
      join_error = file + ": " + std::strerror(errno);
    }
    if (fd >= 0) close(fd);
    if (!join_error.empty()) break;
  }
  if (join_error.empty()) (void)!write(gate[1], "1", 1);
  close(gate[1]);  // without the byte the child exits before entering the container
  if (!join_error.empty()) {
    close(pipefd[0]);
    waitpid(pid, nullptr, 0);
    return InternalError("could not put the command into the cgroups of container '" + std::string(name) +
                         "': " + join_error);
  }
  ExecResult result;
  const Duration deadline = clock_.Monotonic() + timeout;
  char buf[4096];
  bool timed_out = false;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_.Monotonic()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{pipefd[0], POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t got = read(pipefd[0], buf, sizeof buf);
    if (got <= 0) break;
    if (result.output.size() < (1u << 20)) result.output.append(buf, static_cast<size_t>(got));
  }
  close(pipefd[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  if (timed_out) return DeadlineExceededError("command in container '" + std::string(name) + "' timed out");
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (result.exit_code == 125 && result.output.rfind("uw-agent: setns", 0) == 0) {
    return InternalError("could not enter the namespaces of container '" + std::string(name) + "': " + result.output);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Live migration
// ---------------------------------------------------------------------------------------------

Result<std::string> LibvirtHypervisor::MigratableXml(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  char* xml = virDomainGetXMLDesc(d.get(), VIR_DOMAIN_XML_MIGRATABLE | VIR_DOMAIN_XML_SECURE);
  if (!xml) return LibvirtError("reading the domain XML of guest '" + std::string(name) + "'");
  std::string out(xml);
  free(xml);
  return out;
}

Status LibvirtHypervisor::Migrate(std::string_view name, const MigrationRequest& r) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  virTypedParameterPtr params = nullptr;
  int n = 0, max = 0;
  auto fail = [&](const char* what) {
    virTypedParamsFree(params, n);
    return InternalError(std::string("building migration parameters: ") + what);
  };
  if (!r.dest_xml.empty()) {
    if (virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_DEST_XML, r.dest_xml.c_str()) < 0 ||
        virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_PERSIST_XML, r.dest_xml.c_str()) < 0) {
      return fail("dest_xml");
    }
  }
  if (!r.migrate_uri.empty() &&
      virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_URI, r.migrate_uri.c_str()) < 0) {
    return fail("migrate_uri");
  }
  if (r.bandwidth_mib_s > 0 &&
      virTypedParamsAddULLong(&params, &n, &max, VIR_MIGRATE_PARAM_BANDWIDTH,
                              static_cast<unsigned long long>(r.bandwidth_mib_s)) < 0) {
    return fail("bandwidth");
  }
  // No VIR_MIGRATE_UNDEFINE_SOURCE: the shut-off source keeps the completed job's statistics until
  // the caller reads them and undefines it (the confirm phase).
  unsigned int flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST;
  if (r.copy_storage) flags |= VIR_MIGRATE_NON_SHARED_DISK;
  if (r.auto_converge) flags |= VIR_MIGRATE_AUTO_CONVERGE;
  if (r.postcopy) flags |= VIR_MIGRATE_POSTCOPY;
  if (r.downtime_limit_ms > 0) {
    // Set before the job starts; libvirt keeps it for the next migration of this domain.
    if (virDomainMigrateSetMaxDowntime(d.get(), static_cast<unsigned long long>(r.downtime_limit_ms), 0) < 0) {
      spdlog::warn("{}", LibvirtError("setting the downtime limit of '" + std::string(name) + "'").message());
    }
  }
  spdlog::info("migrating guest {} to {} (bandwidth {} MiB/s{}{}{})", name, r.dest_uri, r.bandwidth_mib_s,
               r.copy_storage ? ", copying disks" : "", r.auto_converge ? ", auto-converge" : "",
               r.postcopy ? ", post-copy armed" : "");
  int rc = virDomainMigrateToURI3(d.get(), r.dest_uri.c_str(), params, static_cast<unsigned int>(n), flags);
  virTypedParamsFree(params, n);
  if (rc < 0) return LibvirtError("migrating guest '" + std::string(name) + "' to " + r.dest_uri);
  return Status::Ok();
}

Result<MigrationJob> LibvirtHypervisor::GetMigrationJob(std::string_view name, bool completed) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  int type = VIR_DOMAIN_JOB_NONE;
  virTypedParameterPtr params = nullptr;
  int n = 0;
  if (virDomainGetJobStats(d.get(), &type, &params, &n, completed ? VIR_DOMAIN_JOB_STATS_COMPLETED : 0) < 0) {
    return LibvirtError("reading the migration job of guest '" + std::string(name) + "'");
  }
  MigrationJob job;
  job.active = !completed && (type == VIR_DOMAIN_JOB_BOUNDED || type == VIR_DOMAIN_JOB_UNBOUNDED);
  auto ull = [&](const char* field) -> int64_t {
    unsigned long long v = 0;
    return virTypedParamsGetULLong(params, n, field, &v) == 1 ? static_cast<int64_t>(v) : -1;
  };
  auto or0 = [](int64_t v) { return v < 0 ? 0 : v; };
  // An active job of another kind (a save, a dump) is not a migration.
  int op = 0;
  if (virTypedParamsGetInt(params, n, VIR_DOMAIN_JOB_OPERATION, &op) == 1 && job.active &&
      op != VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT && op != VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN) {
    job.active = false;
  }
  job.elapsed_ms = or0(ull(VIR_DOMAIN_JOB_TIME_ELAPSED));
  // DOWNTIME is QEMU's expectation while the job runs and the measured figure once it completed.
  (job.active ? job.expected_downtime_ms : job.downtime_ms) = ull(VIR_DOMAIN_JOB_DOWNTIME);
  job.memory_total_bytes = or0(ull(VIR_DOMAIN_JOB_MEMORY_TOTAL));
  job.memory_processed_bytes = or0(ull(VIR_DOMAIN_JOB_MEMORY_PROCESSED));
  job.memory_remaining_bytes = or0(ull(VIR_DOMAIN_JOB_MEMORY_REMAINING));
  job.dirty_rate_pages_s = or0(ull(VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE));
  job.memory_iteration = or0(ull(VIR_DOMAIN_JOB_MEMORY_ITERATION));
  job.disk_total_bytes = or0(ull(VIR_DOMAIN_JOB_DISK_TOTAL));
  job.disk_remaining_bytes = or0(ull(VIR_DOMAIN_JOB_DISK_REMAINING));
  virTypedParamsFree(params, n);
  unsigned long bw = 0;
  if (virDomainMigrateGetMaxSpeed(d.get(), &bw, 0) == 0) job.bandwidth_mib_s = static_cast<int64_t>(bw);
  else virResetLastError();
  return job;
}

Status LibvirtHypervisor::AbortMigration(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainAbortJob(d.get()) < 0) return LibvirtError("cancelling the migration of guest '" + std::string(name) + "'");
  return Status::Ok();
}

Status LibvirtHypervisor::SetMigrationBandwidth(std::string_view name, double mib_s) {
  if (!(mib_s > 0)) return InvalidArgumentError("migration bandwidth must be positive");
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainMigrateSetMaxSpeed(d.get(), static_cast<unsigned long>(mib_s), 0) < 0) {
    return LibvirtError("setting the migration bandwidth of guest '" + std::string(name) + "'");
  }
  return Status::Ok();
}

Status LibvirtHypervisor::StartPostCopy(std::string_view name) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  if (virDomainMigrateStartPostCopy(d.get(), 0) < 0) {
    return LibvirtError("switching the migration of guest '" + std::string(name) + "' to post-copy");
  }
  return Status::Ok();
}

}  // namespace uw::vmm
