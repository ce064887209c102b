// LibvirtHypervisor: connection, events, KVM detection, guest lifecycle and live changes. Host
// facts and usage samples are in libvirt_stats.cc, containers in libvirt_container.cc, live
// migration in libvirt_migration.cc.
#include "vmm/libvirt_driver.h"

#include <libvirt/virterror.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "common/units.h"
#include "vmm/domain_xml.h"
#include "vmm/libvirt_internal.h"

namespace uw::vmm {
namespace {

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

std::string StateReason(int state, int reason) {
  switch (state) {
    case VIR_DOMAIN_RUNNING: {
      static const char* r[] = {"unknown",       "booted",   "migrated",           "restored",
                                "from-snapshot", "unpaused", "migration-canceled", "save-canceled",
                                "wakeup",        "crashed",  "post-copy"};
      return reason >= 0 && reason < 11 ? r[reason] : "unknown";
    }
    case VIR_DOMAIN_PAUSED: {
      static const char* r[] = {
          "unknown",       "user",          "migration", "save",    "dump",        "ioerror",   "watchdog",
          "from-snapshot", "shutting-down", "snapshot",  "crashed", "starting-up", "post-copy", "post-copy-failed"};
      return reason >= 0 && reason < 14 ? r[reason] : "unknown";
    }
    case VIR_DOMAIN_SHUTOFF: {
      static const char* r[] = {"unknown", "shutdown", "destroyed",     "crashed", "migrated",
                                "saved",   "failed",   "from-snapshot", "daemon"};
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
  static const char* names[] = {"defined", "undefined", "started",     "suspended", "resumed",
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
      static const char* d[] = {"paused",        "migrated",  "ioerror",   "watchdog",        "restored",
                                "from-snapshot", "api-error", "post-copy", "post-copy-failed"};
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

}  // namespace

GuestState StateFor(int s) {
  switch (s) {
    case VIR_DOMAIN_RUNNING:
      return GuestState::kRunning;
    case VIR_DOMAIN_BLOCKED:
      return GuestState::kBlocked;
    case VIR_DOMAIN_PAUSED:
      return GuestState::kPaused;
    case VIR_DOMAIN_SHUTDOWN:
      return GuestState::kShuttingDown;
    case VIR_DOMAIN_SHUTOFF:
      return GuestState::kShutoff;
    case VIR_DOMAIN_CRASHED:
      return GuestState::kCrashed;
    case VIR_DOMAIN_PMSUSPENDED:
      return GuestState::kSuspended;
    default:
      return GuestState::kUnknown;
  }
}

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
  timer_ = virEventAddTimeout(
      200, [](int, void*) {}, nullptr, nullptr);
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
    k.reason =
        "/dev/kvm is provided by kvm_pvm (paravirtualized KVM inside a VM): stock guests hang at "
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
      return DeadlineExceededError("container '" + std::string(name) +
                                   "' started but its init is not running after 10 s" +
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
  bool asked = virDomainShutdownFlags(d.get(), mode) == 0;
  if (!asked) {
    Status refused = LibvirtError("graceful shutdown of '" + std::string(name) + "'");
    if (mode == VIR_DOMAIN_SHUTDOWN_SIGNAL && refused.code() == StatusCode::kFailedPrecondition) {
      // libvirtd learns a container's init pid from its libvirt_lxc controller some time after
      // the init runs, or never (see ContainerNamespaces): until then it refuses with "Init process
      // ID is not yet known". The init is found from /proc: send it the SIGTERM libvirt would.
      asked = SignalContainerInit(d.get(), name, SIGTERM);
    }
    if (!asked) spdlog::warn("{}", refused.message());
  }
  if (asked) {
    const Duration deadline = clock_.Monotonic() + timeout;
    while (clock_.Monotonic() < deadline) {
      int active = virDomainIsActive(d.get());
      if (active == 0) return Status::Ok();
      if (active < 0) return LibvirtError("watching guest '" + std::string(name) + "' shut down");
      // The init exited on its SIGTERM, but libvirtd may not be told (see ReapEndedContainer).
      if (mode == VIR_DOMAIN_SHUTDOWN_SIGNAL && ReapEndedContainer(d.get(), name)) return Status::Ok();
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
  int max = virDomainGetVcpusFlags(
      d.get(), static_cast<unsigned>(VIR_DOMAIN_AFFECT_CONFIG) | static_cast<unsigned>(VIR_DOMAIN_VCPU_MAXIMUM));
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
  Status s = ApplyLiveAndConfig(
      d.get(), "setting CPU controls of guest '" + std::string(name) + "'",
      [&](unsigned flags) { return virDomainSetSchedulerParametersFlags(d.get(), params, n, flags); });
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
      case VIR_TYPED_PARAM_ULLONG:
        j[p.field] = p.value.ul;
        break;
      case VIR_TYPED_PARAM_LLONG:
        j[p.field] = p.value.l;
        break;
      case VIR_TYPED_PARAM_UINT:
        j[p.field] = p.value.ui;
        break;
      case VIR_TYPED_PARAM_INT:
        j[p.field] = p.value.i;
        break;
      default:
        break;
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

}  // namespace uw::vmm
