// Volumes attached to and detached from existing guests (StorageService::AttachVolume and
// DetachVolume; the rest of the catalogue is in storage_service.cc).
//
//   attach: volume and guest checked --> the volume marked the guest's --> the agent hot-plugs it
//           (or adds it to the definition of a stopped guest) --> the guest's spec gets the disk
//   detach: the agent's disk found by its RBD image --> the agent unplugs it --> the spec loses it
//           --> the volume is free
//
// The volume is marked before the agent is asked and freed only after the agent let go, so a
// manager killed in between leaves a volume that no other guest can take; a second attach or
// detach then finishes the job (the agent's answers say what is attached).
#include <spdlog/spdlog.h>

#include <algorithm>

#include "manager/event_log.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/storage_service.h"
#include "vmm/hypervisor.h"

namespace uw::manager::internal {
namespace {

// A guest whose disks can change now: it is on a host, not moving, and running or stopped.
Status CheckAttachable(const Guest& g, std::string_view shown) {
  const std::string what = "guest '" + std::string(shown) + "'";
  if (!g.host) return FailedPreconditionError(what + " is on no host (" + g.state + ")");
  if (g.migrating_to)
    return FailedPreconditionError(what + " is moving to host " + *g.migrating_to + "; try again after");
  if (g.kind == "lxc") return FailedPreconditionError(what + " is a container: it has no disks");
  if (g.state != "running" && g.state != "paused" && g.state != "shutoff") {
    return FailedPreconditionError(what + " is " + g.state + " (its disks change only while it runs or is stopped)");
  }
  return Status::Ok();
}

// The spec's disks with each one's target written out (the agent's default is by position, which
// a detached disk would shift for the disks after it).
Json DisksWithTargets(const Json& spec) {
  Json disks = spec.contains("disks") && spec["disks"].is_array() ? spec["disks"] : Json::array();
  for (size_t i = 0; i < disks.size(); ++i) {
    if (disks[i].is_object() && !disks[i].contains("target")) disks[i]["target"] = vmm::DefaultDiskTarget(i);
  }
  return disks;
}

}  // namespace

Status StorageService::CheckNotBusy(const std::string& key, std::string_view shown) const {
  if (!busy_.count(key)) return Status::Ok();
  return FailedPreconditionError("volume '" + std::string(shown) +
                                 "' is being attached or detached right now; try again when that is done");
}

StorageService::Busy::Busy(StorageService& s, std::string key, std::unique_lock<std::mutex>& held)
    : s_(s), key_(std::move(key)), held_(held) {
  s_.busy_.insert(key_);
  held_.unlock();
}

StorageService::Busy::~Busy() {
  held_.lock();
  s_.busy_.erase(key_);
}

Result<VolumeRecord> StorageService::AttachVolume(const Principal& p, std::string_view name,
                                                  std::string_view guest_name) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, GuestDiskBackend());
  UW_ASSIGN_OR_RETURN(Guest g, d_.visible_guest(p, guest_name));
  std::unique_lock l(mu_);
  UW_ASSIGN_OR_RETURN(VolumeRecord v, Visible(p, name));
  const std::string shown(ShownGuestName(p, v.key)), guest_shown(ShownGuestName(p, g.name));
  UW_RETURN_IF_ERROR(CheckNotBusy(v.key, shown));
  if (v.tenant != g.tenant) {
    return FailedPreconditionError("volume '" + shown + "' belongs to " +
                                   (v.tenant.empty() ? "no tenant" : "tenant " + v.tenant) + ", guest '" + guest_shown +
                                   "' to " + (g.tenant.empty() ? "none" : "tenant " + g.tenant) +
                                   ": a volume is a disk of its own tenant's guests only");
  }
  if (v.state != "ready") return FailedPreconditionError("volume '" + shown + "' is still being created");
  if (v.guest == g.name) return AlreadyExistsError("volume '" + shown + "' is a disk of guest '" + guest_shown + "'");
  if (!v.guest.empty()) {
    return FailedPreconditionError("volume '" + shown + "' is a disk of guest '" +
                                   std::string(ShownGuestName(p, v.guest)) + "': detach it first");
  }
  if (v.delete_with_guest) {  // no guest's, still to be deleted: its guest is gone
    return FailedPreconditionError("volume '" + shown + "' is being deleted (it was a disk of a deleted guest)");
  }
  UW_RETURN_IF_ERROR(CheckAttachable(g, guest_shown));
  UW_ASSIGN_OR_RETURN(storage::DiskSource src, backend->Disk(v.backend_name));
  UW_ASSIGN_OR_RETURN(Json spec, d_.guests.SpecOf(g.name));
  Json disks = DisksWithTargets(spec);
  std::string target;
  for (size_t i = 0; target.empty(); ++i) {
    const std::string t = vmm::DefaultDiskTarget(i);
    if (std::none_of(disks.begin(), disks.end(), [&](const Json& d) { return d.value("target", "") == t; })) target = t;
  }
  // Marked first: nothing else takes the volume while the agent works, which it does without the
  // catalogue's lock (an agent may take its whole timeout to answer).
  UW_RETURN_IF_ERROR(d_.store.Exec("UPDATE volumes SET guest = ? WHERE key = ?", {g.name, v.key}));
  Busy busy(*this, v.key, l);
  auto attached = d_.agent_of(*g.host)->AttachDisk(g.name, {src.name, target});
  if (!attached.ok()) {
    (void)d_.store.Exec("UPDATE volumes SET guest = NULL WHERE key = ? AND guest = ?", {v.key, g.name});
    return attached.status().WithContext("attaching volume '" + shown + "' to guest '" + guest_shown + "' on host " +
                                         *g.host);
  }
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(Json now, d_.guests.SpecOf(g.name));
    Json with = DisksWithTargets(now);
    with.push_back({{"rbd", src.name}, {"target", target}});
    now["disks"] = std::move(with);
    UW_RETURN_IF_ERROR(d_.guests.SetSpec(g.name, now, NowMs()));
    return d_.events.Add("volume.attached", v.key, v.tenant,
                         {{"guest", g.name}, {"host", *g.host}, {"target", target}});
  }));
  v.guest = g.name;
  return v;
}

Result<VolumeRecord> StorageService::DetachVolume(const Principal& p, std::string_view name) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, Backend());
  std::unique_lock l(mu_);
  UW_ASSIGN_OR_RETURN(VolumeRecord v, Visible(p, name));
  const std::string shown(ShownGuestName(p, v.key));
  UW_RETURN_IF_ERROR(CheckNotBusy(v.key, shown));
  if (v.guest.empty()) return FailedPreconditionError("volume '" + shown + "' is no guest's disk");
  UW_ASSIGN_OR_RETURN(storage::DiskSource src, backend->Disk(v.backend_name));
  UW_ASSIGN_OR_RETURN(std::optional<Guest> g, d_.guests.Find(v.guest));
  if (g) UW_RETURN_IF_ERROR(CheckAttachable(*g, ShownGuestName(p, g->name)));
  Busy busy(*this, v.key, l);  // the agent works without the catalogue's lock
  std::string host, target;
  if (g) {
    const std::string guest_shown(ShownGuestName(p, g->name));
    host = *g->host;
    auto agent = d_.agent_of(host);
    UW_ASSIGN_OR_RETURN(AgentGuest there, agent->Get(g->name));
    for (const AttachedDisk& d : there.disks) {
      if (d.rbd == src.name) target = d.target;
    }
    if (!target.empty()) {
      auto detached = agent->DetachDisk(g->name, target);
      if (!detached.ok() && detached.status().code() != StatusCode::kNotFound) {
        return detached.status().WithContext("detaching volume '" + shown + "' from guest '" + guest_shown +
                                             "' on host " + host);
      }
    }
  }
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    if (g) {
      UW_ASSIGN_OR_RETURN(Json spec, d_.guests.SpecOf(g->name));
      Json kept = Json::array();
      for (Json& d : DisksWithTargets(spec)) {
        if (d.value("rbd", "") != src.name) kept.push_back(std::move(d));
      }
      spec["disks"] = std::move(kept);
      UW_RETURN_IF_ERROR(d_.guests.SetSpec(g->name, spec, NowMs()));
    }
    // A disk made with its guest is an ordinary volume once detached: it outlives the guest.
    UW_RETURN_IF_ERROR(d_.store.Exec("UPDATE volumes SET guest = NULL, delete_with_guest = 0 WHERE key = ?", {v.key}));
    return d_.events.Add("volume.detached", v.key, v.tenant, {{"guest", v.guest}, {"host", host}, {"target", target}});
  }));
  v.guest.clear();
  v.delete_with_guest = false;
  return v;
}

}  // namespace uw::manager::internal
