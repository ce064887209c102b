// Guests' disks on the local backend (StorageService::AttachHostLocalForCreate and
// CopyBaseImages; the rest of the catalogue is in storage_service.cc).
//
//   POST /guests {disks: [{image, size_gib}]} --> a volume row `local-host` (quota checked), the
//        agent's disk {size_mib, base_image: "NAME@VERSION"} (VERSION: the image's created_ms)
//   the create task, before the agent's create --> CopyBaseImages: the image file to the host in
//        pieces (GET/PUT /api/v1/images/REF on the agent), unless it has it whole
//   the agent --> a qcow2 whose backing file is its copy; deleted with the guest
//   a cold move --> CopyBaseImages to the destination, then CarryLocalDisks: each disk's file read
//        from the source in pieces and sent to the destination, which rebases it on its own copy
//
// The image's version keeps a host from making a disk on an older file of the same name (an image
// deleted and imported again).
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>

#include "common/id.h"
#include "manager/event_log.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/storage_service.h"
#include "vmm/hypervisor.h"

namespace uw::manager::internal {

Status StorageService::AttachHostLocalForCreate(GuestCreate& req) {
  const std::string short_name(req.name.substr(req.tenant.empty() ? 0 : req.tenant.size() + 1));
  std::lock_guard l(mu_);
  std::vector<std::string> made;
  Status s = [&]() -> Status {
    for (const GuestCreate::CatalogueDisk& cd : req.catalogue_disks) {
      const std::string at = "disks[" + std::to_string(cd.index) + "]";
      if (!cd.volume.empty()) {
        return FailedPreconditionError(
            at + ".volume: volumes on the local backend are files on the manager's machine and cannot be a " +
            "guest's disk; give {image, size_gib} for a disk made from an image on the guest's host");
      }
      UW_ASSIGN_OR_RETURN(auto img,
                          d_.store.Query("SELECT size_bytes, created_ms FROM images WHERE name = ?", {cd.image}));
      if (img.empty()) return NotFoundError(at + ".image: image '" + cd.image + "' not found");
      const int64_t image_gib = GiBUp(img[0].Int("size_bytes"));
      const int64_t size_gib = cd.size_gib == 0 ? image_gib : cd.size_gib;
      if (size_gib < image_gib) {
        return InvalidArgumentError(at + ".size_gib: image '" + cd.image + "' is " + std::to_string(image_gib) +
                                    " GiB; a disk made from it is at least that");
      }
      const std::string name = short_name + "-disk" + std::to_string(cd.index);
      UW_RETURN_IF_ERROR(ValidateName(name, "volume name").WithContext(at));
      const std::string key = GuestKey(req.tenant, name), backend_name = NewId("vol");
      UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
        UW_ASSIGN_OR_RETURN(auto taken, d_.store.Query("SELECT key FROM volumes WHERE key = ?", {key}));
        if (!taken.empty()) return AlreadyExistsError(at + ": volume '" + name + "' already exists");
        UW_RETURN_IF_ERROR(CheckQuota(req.tenant, size_gib).WithContext(at));
        UW_RETURN_IF_ERROR(d_.store.Exec(
            "INSERT INTO volumes(key, tenant, name, backend, backend_name, image, size_gib, state, guest, "
            "delete_with_guest, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, 'ready', ?, 1, ?)",
            {key, req.tenant, name, std::string(kHostLocalBackend), backend_name, cd.image, size_gib, req.name,
             NowMs()}));
        return d_.events.Add(
            "volume.created", key, req.tenant,
            {{"size_gib", size_gib}, {"image", cd.image}, {"guest", req.name}, {"on", "the guest's host"}});
      }));
      made.push_back(key);
      // The agent makes a qcow2 whose backing file is its copy of the image, this version of it (an
      // image deleted and imported again under its name is another file).
      Json disk = {{"size_mib", size_gib * 1024},
                   {"base_image", cd.image + "@" + std::to_string(img[0].Int("created_ms"))}};
      if (!cd.target.empty()) disk["target"] = cd.target;
      req.agent_spec["disks"][cd.index] = disk;
    }
    return Status::Ok();
  }();
  if (!s.ok()) {
    for (const std::string& key : made) (void)d_.store.Exec("DELETE FROM volumes WHERE key = ?", {key});
  }
  return s;
}

Status StorageService::ResizeHostLocalDisk(const VolumeRecord& v, int64_t size_gib) {
  UW_ASSIGN_OR_RETURN(Guest g, d_.guests.Get(v.guest));
  if (!g.host) return FailedPreconditionError("its guest is on no host (" + g.state + ")");
  if (g.migrating_to)
    return FailedPreconditionError("its guest is moving to host " + *g.migrating_to + "; try again after");
  // The disk is the guest's disk number i (the volume is "<guest>-disk<i>"): on the local backend no
  // disk is attached or detached later, so it is still at that place in the spec.
  const auto at = v.name.rfind("-disk");
  UW_ASSIGN_OR_RETURN(Json spec, d_.guests.SpecOf(g.name));
  size_t index = 0;
  const bool named = at != std::string::npos &&
                     std::from_chars(v.name.data() + at + 5, v.name.data() + v.name.size(), index).ec == std::errc();
  if (!named || !spec.contains("disks") || index >= spec["disks"].size() ||
      !spec["disks"][index].contains("base_image")) {
    return InternalError("the spec of guest '" + g.name + "' has no local disk for it");
  }
  Json& disk = spec["disks"][index];
  const std::string target = disk.value("target", vmm::DefaultDiskTarget(index));
  auto grown = d_.agent_of(*g.host)->ResizeDisk(g.name, target, size_gib * 1024);
  if (!grown.ok())
    return grown.status().WithContext("disk " + target + " of guest '" + g.name + "' on host " + *g.host);
  disk["size_mib"] = size_gib * 1024;
  return d_.guests.SetSpec(g.name, spec, NowMs());
}

Status StorageService::CopyBaseImages(AgentClient& agent, const Json& spec) {
  if (!spec.contains("disks") || !spec["disks"].is_array()) return Status::Ok();
  for (const Json& disk : spec["disks"]) {
    if (!disk.is_object() || !disk.contains("base_image") || !disk["base_image"].is_string()) continue;
    const std::string key = agent.host() + " " + disk["base_image"].get<std::string>();
    {
      std::unique_lock l(copy_mu_);
      copy_done_.wait(l, [&] { return copying_.count(key) == 0; });
      copying_.insert(key);
    }
    const Status copied = CopyImage(agent, disk["base_image"].get<std::string>());
    {
      std::lock_guard l(copy_mu_);
      copying_.erase(key);
    }
    copy_done_.notify_all();
    UW_RETURN_IF_ERROR(copied);
  }
  return Status::Ok();
}

Status StorageService::CopyImage(AgentClient& agent, const std::string& ref) {
  const auto at = ref.find('@');
  if (at == std::string::npos) return InvalidArgumentError("base_image: expected IMAGE@VERSION, got '" + ref + "'");
  const std::string image = ref.substr(0, at), version = ref.substr(at + 1);
  const std::string what = "copying image '" + image + "' to host " + agent.host();
  UW_ASSIGN_OR_RETURN(ImageCopyState have, agent.ImageState(ref));
  if (have.complete) return Status::Ok();
  UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, Backend());
  UW_ASSIGN_OR_RETURN(auto img, d_.store.Query("SELECT created_ms FROM images WHERE name = ?", {image}));
  if (img.empty()) return NotFoundError(what + ": the image was deleted");
  if (std::to_string(img[0].Int("created_ms")) != version) {
    return FailedPreconditionError(what + ": the guest's disk was made on version " + version +
                                   ", and the image was deleted and imported again since");
  }
  const auto start = std::chrono::steady_clock::now();
  const int64_t from = have.bytes;
  int64_t total = 0;
  while (!have.complete) {
    auto chunk = storage::ReadLocalImage(*backend, image, have.bytes, kImageChunkBytes);
    if (!chunk.ok()) return chunk.status().WithContext(what);
    total = chunk->total_bytes;
    if (chunk->bytes.empty()) {
      return InternalError(what + ": the host has all " + std::to_string(total) +
                           " bytes and does not call the copy whole");
    }
    auto put = agent.PutImagePart(ref, have.bytes, total, chunk->bytes);
    if (!put.ok()) return put.status().WithContext(what);
    have = *put;
  }
  spdlog::info("storage: copied image {} to host {} ({} bytes, {} of them now) in {} ms", ref, agent.host(), total,
               total - from,
               std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count());
  return Status::Ok();
}

Status StorageService::CarryLocalDisks(AgentClient& from, AgentClient& to, const std::string& guest,
                                       const std::vector<LocalDisk>& disks, int64_t* carried) {
  for (const LocalDisk& disk : disks) {
    const std::string what =
        "copying disk " + disk.target + " of guest " + guest + " from host " + from.host() + " to host " + to.host();
    const auto start = std::chrono::steady_clock::now();
    int64_t offset = 0, total = -1;
    while (total < 0 || offset < total) {
      auto piece = from.ReadDiskPart(guest, disk.target, offset, kImageChunkBytes);
      if (!piece.ok()) return piece.status().WithContext(what);
      if (total >= 0 && piece->total_bytes != total) {
        return AbortedError(what + ": the file changed size during the copy (" + std::to_string(total) + " then " +
                            std::to_string(piece->total_bytes) + " bytes)");
      }
      total = piece->total_bytes;
      const auto got = static_cast<int64_t>(piece->bytes.size());
      if (got > kImageChunkBytes || (got == 0 && offset < total)) {
        return InternalError(what + ": host " + from.host() + " answered " + std::to_string(got) + " bytes at offset " +
                             std::to_string(offset) + " of " + std::to_string(total));
      }
      if (total == 0) return InternalError(what + ": the source's file is empty");
      auto put = to.PutIncomingDiskPart(guest, disk.target, offset, total, piece->bytes);
      if (!put.ok()) return put.status().WithContext(what);
      offset += got;
      if (put->bytes != offset || put->complete != (offset == total)) {
        return InternalError(what + ": host " + to.host() + " has " + std::to_string(put->bytes) + " bytes, not " +
                             std::to_string(offset));
      }
    }
    if (carried) *carried += total;
    spdlog::info(
        "storage: {}: {} bytes in {} ms", what, total,
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count());
  }
  return Status::Ok();
}

}  // namespace uw::manager::internal
