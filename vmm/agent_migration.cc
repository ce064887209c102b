// AgentService: local disks and live migration. The destination prepares (room, empty volumes)
// or abandons an incoming guest; the source migrates it peer to peer on a thread of its own and
// reports the job.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "common/base64.h"
#include "common/command.h"
#include "common/id.h"
#include "vmm/agent_internal.h"
#include "vmm/agent_service.h"
#include "vmm/domain_xml.h"

namespace uw::vmm {
namespace {

namespace fs = std::filesystem;

std::string WithoutTrailingSlash(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

}  // namespace

Result<std::string> RunTool(const std::vector<std::string>& argv) {
  UW_ASSIGN_OR_RETURN(CommandResult r, RunCommand(argv, {}, kToolTimeout));
  if (r.exit_code != 0) {
    std::string why = r.err.empty() ? r.out : r.err;
    while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
    return InternalError(argv[0] + " " + (argv.size() > 1 ? argv[1] : "") + " failed: " + why);
  }
  return r.out;
}

// ---------------------------------------------------------------------------------------------
// Local disks

Status AgentService::CreateLocalDisks(GuestSpec& spec, bool carried) {
  const fs::path dir = LocalDiskDir();
  std::vector<std::string> made;
  const auto undo = [&made] {
    std::error_code ec;
    for (const auto& m : made) fs::remove(m, ec);
  };
  for (auto& d : spec.disks) {
    if (!d.path.empty() || d.size_mib <= 0) continue;
    d.path = (dir / (spec.name + "-" + d.target + "." + d.format)).string();
    if (FileExists(d.path)) {
      undo();
      return AlreadyExistsError("local disk " + d.path + " already exists (left by an earlier guest '" + spec.name +
                                "'? delete it first)");
    }
    if (carried) {
      if (Status s = TakeCarriedDisk(spec, d); !s.ok()) {
        undo();
        return s;
      }
      made.push_back(d.path);
      continue;
    }
    std::vector<std::string> argv = {"qemu-img", "create", "-q", "-f", d.format};
    std::unique_lock images(images_mu_, std::defer_lock);  // PruneImages waits until the disk names it
    if (!d.base_image.empty()) {
      images.lock();
      // Copy-on-write on this host's copy of the image (the manager sends it before the create).
      const fs::path base = ImagePath(d.base_image);
      std::error_code ec;
      if (!fs::is_regular_file(base, ec)) {
        undo();
        return FailedPreconditionError("disk " + d.target + ": image " + d.base_image + " is not on host " +
                                       config_.host_name + " (the manager copies it there before the create)");
      }
      argv.insert(argv.end(), {"-F", "qcow2", "-b", base.string()});
      fs::last_write_time(base, fs::file_time_type::clock::now(), ec);  // last used now (PruneImages)
    }
    argv.insert(argv.end(), {d.path, std::to_string(d.size_mib) + "M"});
    auto r = RunTool(argv);
    if (!r.ok()) {
      undo();
      return r.status();
    }
    made.push_back(d.path);
  }
  return Status::Ok();
}

Status AgentService::EnsureCephSecret() {
  const AgentConfig::Ceph& ceph = *config_.ceph;
  std::ifstream in(ceph.keyring);
  if (!in) {
    return FailedPreconditionError("host " + config_.host_name + ": cannot read the Ceph keyring " + ceph.keyring +
                                   " (the agent config's ceph.keyring): " + std::strerror(errno));
  }
  // A keyring is INI-like: "[client.uw]" then "key = BASE64".
  std::string section, key;
  for (std::string line; std::getline(in, line);) {
    const auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos) continue;
    line = line.substr(start);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '\t')) line.pop_back();
    if (line.front() == '[') {
      section = line;
    } else if (section == "[client." + ceph.user + "]" && line.rfind("key", 0) == 0) {
      const auto eq = line.find('=');
      if (eq != std::string::npos) key = line.substr(line.find_first_not_of(" \t", eq + 1));
    }
  }
  if (key.empty()) {
    return FailedPreconditionError("host " + config_.host_name + ": the Ceph keyring " + ceph.keyring +
                                   " has no key for client." + ceph.user);
  }
  auto raw = Base64Decode(key);
  if (!raw.ok()) {
    return FailedPreconditionError("host " + config_.host_name + ": the key of client." + ceph.user + " in " +
                                   ceph.keyring + " is not base64");
  }
  return vm_->DefineCephSecret(ceph.secret_uuid, "client." + ceph.user, *raw);
}

Status AgentService::PrepareRbdDisks(GuestSpec& spec) {
  const auto rbd = std::find_if(spec.disks.begin(), spec.disks.end(), [](const DiskSpec& d) { return !d.rbd.empty(); });
  if (rbd == spec.disks.end()) return Status::Ok();
  if (!config_.ceph) {
    return FailedPreconditionError("host " + config_.host_name + " has no Ceph (no `ceph` in its agent config): " +
                                   "it cannot open rbd disk " + rbd->rbd);
  }
  UW_RETURN_IF_ERROR(EnsureCephSecret());
  for (auto& d : spec.disks) {
    if (d.rbd.empty()) continue;
    d.rbd_user = config_.ceph->user;
    d.rbd_secret_uuid = config_.ceph->secret_uuid;
    d.rbd_config_file = config_.ceph->conf;
  }
  return Status::Ok();
}

Result<std::vector<LocalDisk>> AgentService::LocalDisks(const GuestSpec& spec) {
  std::vector<LocalDisk> out;
  for (const auto& d : spec.disks) {
    if (!IsLocalDisk(d.path)) continue;
    // -U: the running guest holds the image lock.
    UW_ASSIGN_OR_RETURN(std::string info, RunTool({"qemu-img", "info", "-U", "--output=json", d.path}));
    UW_ASSIGN_OR_RETURN(Json j, ParseJson(info, "qemu-img info " + d.path));
    out.push_back({d.target, fs::path(d.path).filename().string(), d.format, j.value("virtual-size", int64_t{0})});
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Destination

Status AgentService::CheckRoomForIncoming(const IncomingRequest& r) {
  for (Hypervisor* h : {vm_.get(), ct_.get()}) {
    if (!h) continue;
    auto existing = h->Get(r.guest);
    if (existing.ok() && existing->state != GuestState::kShutoff) {
      return AlreadyExistsError("guest '" + r.guest + "' is already " + std::string(GuestStateName(existing->state)) +
                                " on host " + config_.host_name);
    }
    if (existing.ok()) {
      // A shut-off leftover of an earlier attempt: the incoming definition replaces it.
      UW_RETURN_IF_ERROR(h->Undefine(r.guest));
    }
  }
  UW_ASSIGN_OR_RETURN(HostInfo host, vm_->Host());
  if (host.free_memory_mib >= 0 && r.memory_mib > host.free_memory_mib) {
    return ResourceExhaustedError("host " + config_.host_name + " has " + std::to_string(host.free_memory_mib) +
                                  " MiB free, guest '" + r.guest + "' needs " + std::to_string(r.memory_mib));
  }
  if (r.vcpus > host.cpu_cores) {
    return ResourceExhaustedError("host " + config_.host_name + " has " + std::to_string(host.cpu_cores) +
                                  " CPUs, guest '" + r.guest + "' needs " + std::to_string(r.vcpus));
  }
  return Status::Ok();
}

Result<PreparedIncoming> AgentService::PrepareIncoming(const IncomingRequest& r) {
  UW_RETURN_IF_ERROR(ValidateGuestName(r.guest, "body.guest"));
  if (r.kind == GuestKind::kKvm && !kvm_.usable && !config_.allow_emulated_kvm) {
    return FailedPreconditionError("host " + config_.host_name + " cannot run kind kvm: " + kvm_.reason);
  }
  UW_RETURN_IF_ERROR(CheckRoomForIncoming(r));
  if (config_.ceph) {
    // The guest's rbd disks (if any) name the Ceph secret, which must exist here before it arrives.
    if (Status s = EnsureCephSecret(); !s.ok()) spdlog::warn("incoming guest {}: {}", r.guest, s.ToString());
  }
  PreparedIncoming out{config_.host_name, config_.migration_uri, config_.state_dir, {}};
  const fs::path dir = LocalDiskDir();
  for (const auto& d : r.disks) {
    const std::string path = (dir / d.file).string();
    std::error_code ec;
    fs::remove(path, ec);  // a leftover of an earlier attempt
    UW_RETURN_IF_ERROR(
        RunTool({"qemu-img", "create", "-q", "-f", d.format, path, std::to_string(d.virtual_size_bytes)}).status());
    out.disks.emplace_back(d.file, path);
  }
  if (!r.nics.empty()) {
    // Its port NICs' taps, ports and rules, before QEMU opens them (the guest keeps MAC and address).
    GuestSpec ports;
    ports.name = r.guest;
    ports.kind = r.kind;
    ports.nics = r.nics;
    UW_RETURN_IF_ERROR(AttachPorts(ports));
    std::lock_guard l(incoming_ports_mu_);
    incoming_ports_[r.guest] = ports;
  }
  spdlog::info("prepared host {} for incoming guest {} ({} MiB, {} local disks, {} port NICs)", config_.host_name,
               r.guest, r.memory_mib, out.disks.size(), r.nics.size());
  return out;
}

Result<bool> AgentService::AbandonIncoming(std::string_view guest) {
  UW_RETURN_IF_ERROR(ValidateGuestName(guest, "body.guest"));
  const std::string name(guest);
  bool removed = false;
  auto info = vm_->Get(name);
  if (info.ok()) {
    if (info->state == GuestState::kRunning) {
      return FailedPreconditionError("guest '" + name + "' runs on host " + config_.host_name +
                                     "; not removing a running copy");
    }
    if (info->state != GuestState::kShutoff) {
      if (Status s = vm_->Destroy(name); !s.ok() && s.code() != StatusCode::kFailedPrecondition) return s;
    }
    if (Status s = vm_->Undefine(name); !s.ok() && s.code() != StatusCode::kNotFound) return s;
    removed = true;
  }
  std::optional<GuestSpec> ports;
  {
    std::lock_guard l(incoming_ports_mu_);
    if (auto it = incoming_ports_.find(name); it != incoming_ports_.end()) {
      ports = std::move(it->second);
      incoming_ports_.erase(it);
    }
  }
  if (ports) {
    DetachPorts(*ports);
    removed = true;
  }
  std::error_code ec;
  for (const fs::path& dir : {LocalDiskDir(), IncomingDir()}) {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (IsDiskFileOf(e.path().filename().string(), name)) {
        fs::remove(e.path(), ec);
        removed = true;
      }
    }
  }
  return removed;
}

// ---------------------------------------------------------------------------------------------
// Source

Result<MigrationStarted> AgentService::Migrate(std::string_view guest, const MigrateRequest& r) {
  const std::string name(guest);
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_ASSIGN_OR_RETURN(GuestInfo info, h->Get(name));
  if (info.kind == GuestKind::kLxc) {
    return FailedPreconditionError("guest '" + name + "' is a container: containers move cold, not live");
  }
  if (info.state != GuestState::kRunning && info.state != GuestState::kPaused) {
    return FailedPreconditionError("guest '" + name + "' is " + std::string(GuestStateName(info.state)) +
                                   "; only a running guest migrates live");
  }
  UW_ASSIGN_OR_RETURN(GuestSpec spec, h->GetSpec(name));
  std::vector<std::string> local_disks;  // copied to the destination, removed here once it runs there
  for (const auto& d : spec.disks) {
    if (IsLocalDisk(d.path)) local_disks.push_back(d.path);
  }
  MigrationRequest mr;
  mr.dest_uri = r.dest_uri;
  mr.bandwidth_mib_s = r.bandwidth_mib_s;
  mr.downtime_limit_ms = r.downtime_limit_ms;
  mr.auto_converge = r.auto_converge;
  mr.postcopy = r.postcopy;
  mr.copy_storage = !local_disks.empty();
  UW_ASSIGN_OR_RETURN(std::string xml, h->MigratableXml(name));
  // The destination keeps consoles, channels and local disks under its own state directory.
  UW_ASSIGN_OR_RETURN(mr.dest_xml, MoveDomainPaths(xml, WithoutTrailingSlash(config_.state_dir),
                                                   WithoutTrailingSlash(r.dest_state_dir)));

  std::lock_guard l(migrations_mu_);
  auto it = migrations_.find(name);
  if (it != migrations_.end()) {
    if (it->second->state == "running") {
      return FailedPreconditionError("guest '" + name + "' is already migrating to " + it->second->destination);
    }
    if (it->second->thread.joinable()) it->second->thread.join();
    migrations_.erase(it);
  }
  if (auto job = h->GetMigrationJob(name, false); job.ok() && job->active) {
    return FailedPreconditionError("guest '" + name + "' already has a migration job running in libvirt");
  }
  auto m = std::make_unique<Outgoing>();
  m->destination = r.dest_host.empty() ? r.dest_uri : r.dest_host;
  // `raw` outlives the thread: Stop and a later Migrate join it before dropping the record.
  Outgoing* raw = m.get();
  m->thread = std::thread([this, raw, name, h, mr, local_disks] { RunMigration(raw, name, h, mr, local_disks); });
  migrations_[name] = std::move(m);
  RecordEvent({clock_.Now(), name, info.uuid, "migrating", "to " + r.dest_uri, h->uri()});
  return MigrationStarted{r.dest_uri, mr.copy_storage};
}

void AgentService::RunMigration(Outgoing* raw, const std::string& name, Hypervisor* h, const MigrationRequest& mr,
                                const std::vector<std::string>& local_disks) {
  Status st = h->Migrate(name, mr);
  MigrationJob final_job;
  if (st.ok()) {
    if (auto j = h->GetMigrationJob(name, true); j.ok()) final_job = *j;
    // Confirm: the destination runs it; the shut-off source definition goes, and its port NICs here
    // (the destination plugged its own before the switchover).
    auto spec = h->GetSpec(name);
    if (Status u = h->Undefine(name); !u.ok() && u.code() != StatusCode::kNotFound) {
      spdlog::warn("removing the source copy of migrated guest {}: {}", name, u.ToString());
    }
    if (spec.ok()) DetachPorts(*spec);
    for (const auto& path : local_disks) {
      std::error_code ec;
      fs::remove(path, ec);
    }
    if (!local_disks.empty()) PruneImages(std::chrono::seconds(config_.image_keep_s));
  }
  std::lock_guard l(migrations_mu_);
  raw->final_job = final_job;
  if (st.ok()) {
    raw->state = "completed";
    spdlog::info("guest {} migrated to {} in {} ms (downtime {} ms)", name, raw->destination, final_job.elapsed_ms,
                 final_job.downtime_ms);
  } else {
    raw->state = raw->cancel_requested || st.code() == StatusCode::kAborted ? "cancelled" : "failed";
    raw->error = st.message();
    spdlog::warn("migration of guest {} to {} {}: {}", name, raw->destination, raw->state, st.message());
  }
}

MigrationReport AgentService::MigrationStatus(std::string_view guest) {
  const std::string name(guest);
  MigrationReport out;
  {
    std::lock_guard l(migrations_mu_);
    auto it = migrations_.find(name);
    if (it != migrations_.end()) {
      out.tracked = true;
      out.state = it->second->state;
      out.destination = it->second->destination;
      out.error = it->second->error;
      if (out.state == "completed") out.job = it->second->final_job;
    }
  }
  auto h = Find(name);
  if (!h.ok()) {
    out.guest_state = "absent";
    return out;
  }
  auto info = (*h)->Get(name);
  if (info.ok()) out.guest_state = GuestStateName(info->state);
  if (out.state != "completed") {
    auto job = (*h)->GetMigrationJob(name, false);
    if (job.ok()) {
      out.job = *job;
      if (job->active && out.state == "none") out.state = "running";  // adopted after a restart
    }
  }
  return out;
}

Status AgentService::ControlMigration(std::string_view guest, MigrationAction action, double bandwidth_mib_s) {
  const std::string name(guest);
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  switch (action) {
    case MigrationAction::kCancel: {
      {
        std::lock_guard l(migrations_mu_);
        auto it = migrations_.find(name);
        if (it != migrations_.end()) it->second->cancel_requested = true;
      }
      return h->AbortMigration(name);
    }
    case MigrationAction::kBandwidth:
      if (!(bandwidth_mib_s > 0)) return InvalidArgumentError("body.bandwidth_mib_s: expected a positive number");
      return h->SetMigrationBandwidth(name, bandwidth_mib_s);
    case MigrationAction::kPostcopy:
      return h->StartPostCopy(name);
  }
  return InvalidArgumentError("unknown migration action");
}

}  // namespace uw::vmm
