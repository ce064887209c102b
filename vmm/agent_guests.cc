// AgentService: creating guests and what is done to them afterwards (start, stop, pause, resize,
// delete, exec, console).
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/id.h"
#include "vmm/agent_internal.h"
#include "vmm/agent_service.h"

namespace uw::vmm {
namespace {

namespace fs = std::filesystem;

// The guest's console log and control channel socket under the agent's state directory.
Status PlaceConsoleAndChannel(GuestSpec& spec, const std::string& state_dir) {
  if (spec.kind == GuestKind::kLxc) return Status::Ok();
  spec.console_log = (fs::path(state_dir) / "console" / (spec.name + ".log")).string();
  std::string sock = (fs::path(state_dir) / "channels" / (spec.name + ".sock")).string();
  if (sock.size() >= 107) return InvalidArgumentError("state_dir is too long for a channel socket path: " + sock);
  spec.channels = {{kGuestChannel, sock}};
  return Status::Ok();
}

// What an image directory supplies to a spec that does not say it itself.
void ApplyImage(GuestSpec& spec, const fs::path& dir) {
  if (spec.kind == GuestKind::kLxc) {
    if (spec.lxc_root.empty()) spec.lxc_root = (dir / "lxc-rootfs").string();
    if (spec.lxc_init == "/bin/sh" && spec.lxc_init_args.empty()) {
      // The image's own init when it has one (prints the ready marker and idles), else a shell
      // that idles.
      if (FileExists(spec.lxc_root + "/sbin/uw-container-init")) {
        spec.lxc_init = "/sbin/uw-container-init";
      } else {
        spec.lxc_init_args = {"-c", "while :; do sleep 3600; done"};
      }
    }
  } else if (spec.kernel.empty()) {
    spec.kernel = FileExists((dir / "vmlinux").string()) ? (dir / "vmlinux").string() : (dir / "vmlinuz").string();
    if (spec.initrd.empty() && FileExists((dir / "initrd.img").string())) spec.initrd = (dir / "initrd.img").string();
    // panic=0: a panicked kernel waits (after telling QEMU through pvpanic) instead of rebooting,
    // so the crash is seen and the console kept.
    if (spec.cmdline.empty()) spec.cmdline = "console=ttyS0 quiet panic=0";
  }
}

// The files a spec names exist on this host.
Status CheckFilesExist(const GuestSpec& spec) {
  if (!spec.kernel.empty() && !FileExists(spec.kernel))
    return InvalidArgumentError("spec.boot.kernel: " + spec.kernel + ": no such file");
  if (!spec.initrd.empty() && !FileExists(spec.initrd))
    return InvalidArgumentError("spec.boot.initrd: " + spec.initrd + ": no such file");
  for (size_t i = 0; i < spec.disks.size(); ++i) {
    if (spec.disks[i].path.empty()) continue;  // a local disk the agent makes (CreateLocalDisks)
    if (!FileExists(spec.disks[i].path)) {
      return InvalidArgumentError("spec.disks[" + std::to_string(i) + "].path: " + spec.disks[i].path +
                                  ": no such file");
    }
  }
  if (spec.kind == GuestKind::kLxc && !spec.lxc_root.empty() && !fs::is_directory(spec.lxc_root)) {
    return InvalidArgumentError("spec.lxc.root: " + spec.lxc_root + ": no such directory");
  }
  return Status::Ok();
}

}  // namespace

Status AgentService::ResolveImage(GuestSpec& spec, const std::optional<std::string>& image) {
  if (image) {
    auto it = config_.images.find(*image);
    if (it == config_.images.end()) {
      std::string have;
      for (const auto& [k, v] : config_.images) have += (have.empty() ? "" : ", ") + k;
      return InvalidArgumentError("spec.image: no image '" + *image + "' on host " + config_.host_name +
                                  " (available: " + (have.empty() ? "none" : have) + ")");
    }
    ApplyImage(spec, it->second);
  }
  if (spec.kind == GuestKind::kKvm && !kvm_.usable) {
    if (!config_.allow_emulated_kvm) {
      return FailedPreconditionError("host " + config_.host_name + " cannot run kind kvm: " + kvm_.reason +
                                     " (or set allow_emulated_kvm in the agent config)");
    }
    spec.emulated = true;
  }
  if (spec.kind == GuestKind::kLxc && !ct_) {
    return FailedPreconditionError("host " + config_.host_name + " has no container driver (lxc_uri is not set)");
  }
  return CheckFilesExist(spec);
}

Status AgentService::CheckFitsHost(GuestSpec& spec) {
  UW_RETURN_IF_ERROR(ValidateGuestSpec(spec));
  UW_ASSIGN_OR_RETURN(HostInfo host, vm_->Host());
  if (spec.max_memory_mib > host.memory_mib) {
    return ResourceExhaustedError("guest '" + spec.name + "' asks for " + std::to_string(spec.max_memory_mib) +
                                  " MiB but host " + config_.host_name + " has " + std::to_string(host.memory_mib) +
                                  " MiB in all");
  }
  if (spec.max_vcpus > host.cpu_cores) {
    return ResourceExhaustedError("guest '" + spec.name + "' asks for " + std::to_string(spec.max_vcpus) +
                                  " vCPUs but host " + config_.host_name + " has " + std::to_string(host.cpu_cores) +
                                  " CPUs");
  }
  return PlaceConsoleAndChannel(spec, config_.state_dir);
}

Result<GuestStatus> AgentService::Create(CreateRequest request) {
  GuestSpec& spec = request.spec;
  UW_RETURN_IF_ERROR(ResolveImage(spec, request.image));
  UW_RETURN_IF_ERROR(CheckFitsHost(spec));
  // Names are unique across both drivers of this host.
  for (Hypervisor* h : {vm_.get(), ct_.get()}) {
    if (h && h->Get(spec.name).ok()) {
      return AlreadyExistsError("guest '" + spec.name + "' already exists on host " + config_.host_name);
    }
  }
  UW_RETURN_IF_ERROR(AttachPorts(spec));
  if (Status s = PrepareRbdDisks(spec); !s.ok() || !(s = CreateLocalDisks(spec, request.disks_carried)).ok()) {
    DetachPorts(spec);
    return s;
  }
  Hypervisor* h = HypervisorFor(spec.kind);
  auto info = h->Define(spec);
  if (!info.ok()) {
    for (const auto& d : spec.disks) {
      if (d.size_mib > 0) fs::remove(d.path);
    }
    DetachPorts(spec);
    return info.status();
  }
  if (request.start) {
    if (Status s = h->Start(spec.name); !s.ok()) {
      // Leave nothing half-made behind.
      if (Status u = h->Undefine(spec.name); !u.ok()) spdlog::warn("cleanup of {}: {}", spec.name, u.ToString());
      DetachPorts(spec);
      return s;
    }
    info = h->Get(spec.name);
    if (!info.ok()) return info.status();
    ObserveGuest(*info);
  }
  spdlog::info("created guest {} ({}{}){}", spec.name, GuestKindName(spec.kind), spec.emulated ? ", emulated" : "",
               request.start ? " and started it" : "");
  return StatusOf(h, *info);
}

Result<GuestDetails> AgentService::Get(std::string_view name) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  GuestDetails d;
  UW_ASSIGN_OR_RETURN(d.status, StatusNow(h, name));
  if (auto spec = h->GetSpec(d.status.info.name); spec.ok()) {
    // What a live migration must copy (and the destination prepare).
    if (auto disks = LocalDisks(*spec); disks.ok()) {
      d.local_disks = std::move(*disks);
    } else {
      spdlog::warn("local disks of {}: {}", d.status.info.name, disks.status().ToString());
    }
    d.spec = std::move(*spec);
  }
  return d;
}

Result<std::vector<GuestStatus>> AgentService::List() {
  std::vector<GuestStatus> out;
  for (Hypervisor* h : {vm_.get(), ct_.get()}) {
    if (!h) continue;
    UW_ASSIGN_OR_RETURN(auto guests, h->List());
    for (const auto& g : guests) out.push_back(StatusOf(h, g));
  }
  return out;
}

Result<GuestStatus> AgentService::Start(std::string_view name) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_ASSIGN_OR_RETURN(GuestInfo before, h->Get(name));
  if (before.state == GuestState::kCrashed && before.id >= 0) {
    // A crashed guest is kept (on_crash preserve) with its QEMU stopped: power it off first.
    if (Status s = h->Destroy(name); !s.ok() && s.code() != StatusCode::kFailedPrecondition) return s;
  }
  UW_RETURN_IF_ERROR(h->Start(name));
  UW_ASSIGN_OR_RETURN(GuestInfo info, h->Get(name));
  ObserveGuest(info);
  return StatusOf(h, info);
}

Result<StopResult> AgentService::Stop(std::string_view name, const StopRequest& request) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  bool forced = request.force;
  UW_ASSIGN_OR_RETURN(GuestInfo before, h->Get(name));
  if (before.state == GuestState::kCrashed) forced = true;  // a panicked guest cannot shut down
  if (forced) {
    if (Status s = h->Destroy(name); !s.ok()) {
      // A guest torn down by its crash (on_crash destroy) is off already.
      if (!(before.state == GuestState::kCrashed && s.code() == StatusCode::kFailedPrecondition)) return s;
    }
  } else {
    UW_RETURN_IF_ERROR(h->Shutdown(name, request.timeout, &forced));
  }
  StopResult r;
  UW_ASSIGN_OR_RETURN(r.guest, StatusNow(h, name));
  r.forced = forced;
  return r;
}

Result<GuestStatus> AgentService::Pause(std::string_view name) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_RETURN_IF_ERROR(h->Pause(name));
  return StatusNow(h, name);
}

Result<GuestStatus> AgentService::Resume(std::string_view name) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_RETURN_IF_ERROR(h->Resume(name));
  return StatusNow(h, name);
}

Result<GuestStatus> AgentService::Resize(std::string_view name, const ResizeRequest& r) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_ASSIGN_OR_RETURN(GuestInfo before, h->Get(name));
  if (r.memory_mib && *r.memory_mib > before.max_memory_mib) {
    return InvalidArgumentError("body.memory_mib: " + std::to_string(*r.memory_mib) +
                                " is above the guest's maximum of " + std::to_string(before.max_memory_mib) + " MiB");
  }
  if (r.vcpus && *r.vcpus > before.max_vcpus) {
    return InvalidArgumentError("body.vcpus: " + std::to_string(*r.vcpus) + " is above the guest's maximum of " +
                                std::to_string(before.max_vcpus));
  }
  if (r.memory_mib) UW_RETURN_IF_ERROR(h->SetMemory(name, *r.memory_mib));
  if (r.vcpus) UW_RETURN_IF_ERROR(h->SetVcpus(name, static_cast<int>(*r.vcpus)));
  if (r.cpu_shares || r.cpu_quota_us || r.cpu_period_us) {
    UW_RETURN_IF_ERROR(h->SetCpuTune(name, r.cpu_shares, r.cpu_quota_us, r.cpu_period_us));
  }
  return StatusNow(h, name);
}

Result<GuestDetails> AgentService::AttachDisk(std::string_view name, DiskSpec disk) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  if (disk.size_mib > 0) {
    return InvalidArgumentError("body.size_mib: an attached disk exists already (give its path or rbd image)");
  }
  UW_ASSIGN_OR_RETURN(GuestSpec spec, h->GetSpec(name));
  for (size_t i = 0; disk.target.empty(); ++i) {
    const std::string t = DefaultDiskTarget(i);
    if (std::none_of(spec.disks.begin(), spec.disks.end(), [&](const DiskSpec& d) { return d.target == t; })) {
      disk.target = t;
    }
  }
  GuestSpec one;
  one.disks = {disk};
  UW_RETURN_IF_ERROR(PrepareRbdDisks(one));
  UW_RETURN_IF_ERROR(h->AttachDisk(name, one.disks[0]));
  spdlog::info("attached disk {} ({}) to guest {}", disk.target, disk.rbd.empty() ? disk.path : "rbd " + disk.rbd,
               name);
  return Get(name);
}

Result<GuestDetails> AgentService::DetachDisk(std::string_view name, std::string_view target) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_RETURN_IF_ERROR(h->DetachDisk(name, target, kDiskDetachTimeout));
  spdlog::info("detached disk {} from guest {}", target, name);
  return Get(name);
}

Result<GuestDetails> AgentService::ResizeDisk(std::string_view name, std::string_view target, int64_t size_mib) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_ASSIGN_OR_RETURN(GuestSpec spec, h->GetSpec(name));
  const std::string what = "disk " + std::string(target) + " of guest '" + std::string(name) + "'";
  auto d = std::find_if(spec.disks.begin(), spec.disks.end(), [&](const DiskSpec& x) { return x.target == target; });
  if (d == spec.disks.end()) return NotFoundError(what + ": the guest has no such disk");
  const int64_t bytes = size_mib << 20;
  if (!d->rbd.empty()) {
    // The RBD image grows where it lives (the manager's Ceph call, first): a running guest's QEMU
    // is told its new size (never a smaller one); a stopped guest sees it at its next start.
    UW_ASSIGN_OR_RETURN(GuestInfo info, h->Get(name));
    if (info.state != GuestState::kShutoff) UW_RETURN_IF_ERROR(h->ResizeRunningDisk(name, target, bytes));
    spdlog::info("{} (rbd {}) is now {} MiB", what, d->rbd, size_mib);
    return Get(name);
  }
  if (!IsLocalDisk(d->path)) {
    return FailedPreconditionError(what + " is not a local disk of this host (" + d->path +
                                   "); it is resized where it lives");
  }
  UW_ASSIGN_OR_RETURN(std::vector<LocalDisk> disks, LocalDisks(spec));
  const auto have = std::find_if(disks.begin(), disks.end(), [&](const LocalDisk& x) { return x.target == target; });
  if (have != disks.end() && bytes < have->virtual_size_bytes) {
    return InvalidArgumentError("size_mib: " + what + " is " + std::to_string(have->virtual_size_bytes >> 20) +
                                " MiB and a resize only grows it");
  }
  UW_ASSIGN_OR_RETURN(GuestInfo info, h->Get(name));
  if (info.state == GuestState::kShutoff) {
    UW_RETURN_IF_ERROR(RunTool({"qemu-img", "resize", "-q", "-f", d->format, d->path, std::to_string(bytes)}).status());
  } else {
    UW_RETURN_IF_ERROR(h->ResizeRunningDisk(name, target, bytes));
  }
  spdlog::info("grew {} to {} MiB", what, size_mib);
  return Get(name);
}

Status AgentService::Delete(std::string_view name, bool force) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_ASSIGN_OR_RETURN(GuestInfo info, h->Get(name));
  if (info.state != GuestState::kShutoff) {
    if (!force) {
      return FailedPreconditionError("guest '" + std::string(name) + "' is " + std::string(GuestStateName(info.state)) +
                                     "; stop it first or delete with ?force=true");
    }
    if (Status s = h->Destroy(name); !s.ok() && s.code() != StatusCode::kFailedPrecondition) return s;
  }
  auto spec = h->GetSpec(name);
  UW_RETURN_IF_ERROR(h->Undefine(name));
  if (spec.ok()) {
    for (const auto& d : spec->disks) {
      std::error_code ec;
      if (IsLocalDisk(d.path)) fs::remove(d.path, ec);
    }
    DetachPorts(*spec);
  }
  ForgetGuest(info);
  PruneImages(std::chrono::seconds(config_.image_keep_s));
  return Status::Ok();
}

void AgentService::ForgetGuest(const GuestInfo& info) {
  for (const auto& c : info.channels) {
    std::lock_guard l(channels_mu_);
    channels_.erase(c.socket_path);
  }
  std::lock_guard l(health_mu_);
  health_.Forget(info.name);
  crashes_.erase(info.name);
}

Result<ExecResult> AgentService::Exec(std::string_view name, const ExecRequest& request) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_ASSIGN_OR_RETURN(GuestInfo info, h->Get(name));
  if (info.state != GuestState::kRunning) {
    return FailedPreconditionError("guest '" + std::string(name) + "' is " + std::string(GuestStateName(info.state)));
  }
  Result<ExecResult> result = InternalError("unreachable");
  if (info.kind == GuestKind::kLxc && request.argv) {
    result = h->ExecInContainer(name, *request.argv, request.timeout);
  } else if (!request.command) {
    return InvalidArgumentError("body.command: required string is missing");
  } else if (info.kind == GuestKind::kLxc) {
    result = h->ExecInContainer(name, {"/bin/sh", "-c", *request.command}, request.timeout);
  } else {
    result = ExecInVm(info, *request.command, request.timeout);
  }
  if (!result.ok() && result.status().code() == StatusCode::kInternal) {
    spdlog::warn("exec in {}: {}", name, result.status().ToString());
  }
  return result;
}

Result<ExecResult> AgentService::ExecInVm(const GuestInfo& info, const std::string& command, Duration timeout) {
  const std::string& name = info.name;
  const std::string socket = ControlChannelOf(info);
  if (socket.empty()) return FailedPreconditionError("guest '" + name + "' has no control channel " + kGuestChannel);
  // A guest that has not answered since it started gets the request's timeout to do so.
  const Duration deadline = clock_.Monotonic() + timeout;
  {
    std::optional<HealthView> v;
    {
      std::lock_guard l(health_mu_);
      v = health_.View(name);
    }
    if (!v || v->instance != info.id || !v->running) ObserveGuest(info);
  }
  UW_RETURN_IF_ERROR(WaitUntilReady(name, deadline));
  const Duration left = std::max<Duration>(deadline - clock_.Monotonic(), std::chrono::seconds(1));
  auto result = ChannelFor(socket)->Call(command, left);
  if (result.ok()) {
    std::vector<HealthEvent> events;
    {
      std::lock_guard l(health_mu_);
      events = health_.Heard(name, info.id, clock_.Monotonic(), clock_.Now());
    }
    health_cv_.notify_all();
    RecordHealthEvents(events);
  }
  return result;
}

Result<std::string> AgentService::ConsoleTail(std::string_view name, size_t bytes) {
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_ASSIGN_OR_RETURN(GuestInfo info, h->Get(name));
  if (info.console_log.empty()) return UnimplementedError("guest '" + std::string(name) + "' has no console log");
  return ReadTail(info.console_log, bytes);
}

}  // namespace uw::vmm
