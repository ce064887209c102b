// AgentService: cold moves of guests with local disks. The manager stops the guest, reads each
// local disk's file from the source in pieces (ReadLocalDisk) and sends them to the destination
// (PutIncomingDisk), which keeps them as state_dir/incoming/.NAME-TARGET.part and then NAME-TARGET
// once whole; the create that follows (disks_carried) checks each file and takes it as the disk.
// A disk made on an image copy keeps that layering: its backing file is rebased onto this host's
// copy of the same image version, which the manager sends first.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>

#include "common/id.h"
#include "common/json.h"
#include "vmm/agent_internal.h"
#include "vmm/agent_service.h"

namespace uw::vmm {

namespace fs = std::filesystem;

namespace {

Status CheckDisk(std::string_view name, std::string_view target) {
  UW_RETURN_IF_ERROR(ValidateGuestName(name, "guest name"));
  if (!IsDiskTarget(target)) {
    return InvalidArgumentError("disk target: expected vd, sd or hd and one or two letters, got '" +
                                std::string(target) + "'");
  }
  return Status::Ok();
}

}  // namespace

fs::path AgentService::IncomingPath(std::string_view name, std::string_view target, bool whole) const {
  const std::string base = std::string(name) + "-" + std::string(target);
  return IncomingDir() / (whole ? base : "." + base + ".part");
}

bool AgentService::IsDiskFileOf(std::string_view file, std::string_view name) {
  if (file.size() > 6 && file.front() == '.' && file.substr(file.size() - 5) == ".part") {
    file = file.substr(1, file.size() - 6);  // a carried disk still arriving
  }
  if (file.size() <= name.size() + 1 || file.substr(0, name.size()) != name || file[name.size()] != '-') return false;
  std::string_view rest = file.substr(name.size() + 1);
  const auto dot = rest.find('.');
  const std::string_view suffix = dot == std::string_view::npos ? "" : rest.substr(dot);
  return IsDiskTarget(rest.substr(0, dot)) && (suffix.empty() || suffix == ".qcow2" || suffix == ".raw");
}

Result<DiskPiece> AgentService::ReadLocalDisk(std::string_view name, std::string_view target, int64_t offset,
                                              int64_t length) {
  UW_RETURN_IF_ERROR(CheckDisk(name, target));
  const std::string what = "disk " + std::string(target) + " of guest '" + std::string(name) + "'";
  if (offset < 0) return InvalidArgumentError("offset: expected 0 or more, got " + std::to_string(offset));
  if (length <= 0 || length > kDiskPieceMaxBytes) {
    return InvalidArgumentError("length: expected 1.." + std::to_string(kDiskPieceMaxBytes) + " bytes, got " +
                                std::to_string(length));
  }
  UW_ASSIGN_OR_RETURN(Hypervisor * h, Find(name));
  UW_ASSIGN_OR_RETURN(GuestSpec spec, h->GetSpec(name));
  const auto d =
      std::find_if(spec.disks.begin(), spec.disks.end(), [&](const DiskSpec& x) { return x.target == target; });
  if (d == spec.disks.end()) return NotFoundError(what + ": the guest has no such disk");
  if (!IsLocalDisk(d->path)) {
    return FailedPreconditionError(what + " is not a local disk of host " + config_.host_name + " (" +
                                   (d->rbd.empty() ? d->path : "rbd " + d->rbd) + "): only local disks are copied");
  }
  UW_ASSIGN_OR_RETURN(GuestInfo info, h->Get(name));
  if (info.state != GuestState::kShutoff) {
    return FailedPreconditionError(what + " is read only while the guest is shut off (it is " +
                                   std::string(GuestStateName(info.state)) + "; a cold move stops it first)");
  }
  std::ifstream in(d->path, std::ios::binary);
  std::error_code ec;
  const auto total = fs::file_size(d->path, ec);
  if (!in || ec) return UnavailableError(what + ": cannot read " + d->path);
  DiskPiece piece;
  piece.total_bytes = static_cast<int64_t>(total);
  if (offset > piece.total_bytes) {
    return InvalidArgumentError("offset: " + what + " has " + std::to_string(piece.total_bytes) + " bytes, not " +
                                std::to_string(offset));
  }
  piece.bytes.resize(static_cast<size_t>(std::min(length, piece.total_bytes - offset)));
  in.seekg(offset);
  in.read(piece.bytes.data(), static_cast<std::streamsize>(piece.bytes.size()));
  if (in.gcount() != static_cast<std::streamsize>(piece.bytes.size())) {
    return UnavailableError(what + ": reading " + d->path + " at " + std::to_string(offset) + " ended early");
  }
  return piece;
}

Result<ImageCopy> AgentService::PutIncomingDisk(std::string_view name, std::string_view target, int64_t offset,
                                                int64_t total_bytes, std::string_view bytes) {
  UW_RETURN_IF_ERROR(CheckDisk(name, target));
  const std::string what =
      "disk " + std::string(target) + " of guest '" + std::string(name) + "' carried to host " + config_.host_name;
  if (total_bytes <= 0) {
    return InvalidArgumentError("total: expected the disk file's size in bytes, got " + std::to_string(total_bytes));
  }
  if (offset < 0) return InvalidArgumentError("offset: expected 0 or more, got " + std::to_string(offset));
  if (offset + static_cast<int64_t>(bytes.size()) > total_bytes) {
    return InvalidArgumentError("total: " + what + ": " + std::to_string(offset + static_cast<int64_t>(bytes.size())) +
                                " bytes would be more than the total " + std::to_string(total_bytes));
  }
  for (Hypervisor* hv : {vm_.get(), ct_.get()}) {
    if (hv && hv->Get(name).ok()) {
      return AlreadyExistsError("guest '" + std::string(name) + "' already exists on host " + config_.host_name +
                                ": its disks are not replaced");
    }
  }
  std::lock_guard l(incoming_mu_);
  const fs::path part = IncomingPath(name, target, false), whole = IncomingPath(name, target, true);
  std::error_code ec;
  if (offset == 0) {  // a (new) copy starts
    fs::remove(part, ec);
    fs::remove(whole, ec);
  }
  const auto size = fs::file_size(part, ec);
  const int64_t have = ec ? 0 : static_cast<int64_t>(size);
  if (offset != have) {
    return FailedPreconditionError("offset: " + what + " has " + std::to_string(have) + " bytes, not " +
                                   std::to_string(offset) + " (go on from there, or start again at 0)");
  }
  UW_RETURN_IF_ERROR(AppendPiece(part, bytes, what));
  const int64_t now_have = offset + static_cast<int64_t>(bytes.size());
  if (now_have < total_bytes) return ImageCopy{now_have, false};
  fs::rename(part, whole, ec);
  if (ec) return InternalError(what + ": " + ec.message());
  spdlog::info("{}: whole ({} bytes)", what, now_have);
  return ImageCopy{now_have, true};
}

Status AgentService::TakeCarriedDisk(const GuestSpec& spec, const DiskSpec& d) {
  const std::string what = "disk " + d.target + " of guest '" + spec.name + "' carried to host " + config_.host_name;
  std::lock_guard l(incoming_mu_);
  const fs::path file = IncomingPath(spec.name, d.target, true);
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    return FailedPreconditionError(what + " has not arrived whole (a cold move sends it before the create)");
  }
  // Only the disk's own format, with no external data file, and a backing file only on this host's
  // copy of the disk's image: a carried file must not name any other file on this host.
  auto refuse = [&](const std::string& why) {
    fs::remove(file, ec);
    return InvalidArgumentError(what + ": refused and removed: " + why);
  };
  auto info = RunTool({"qemu-img", "info", "--output=json", "-f", d.format, file.string()});
  if (!info.ok()) return refuse("it is not a " + d.format + " image: " + info.status().message());
  const Json j = Json::parse(*info, nullptr, false);
  if (!j.is_object()) return refuse("qemu-img info gave no JSON");
  if (HasExternalDataFile(j)) {
    return refuse("it keeps its data in an external data file");
  }
  std::unique_lock images(images_mu_, std::defer_lock);
  if (j.contains("backing-filename")) {
    if (d.base_image.empty()) return refuse("it names a backing file but the disk is made on no image");
    images.lock();  // PruneImages waits until the disk names the copy
    const fs::path base = ImagePath(d.base_image);
    if (!fs::is_regular_file(base, ec)) {
      return FailedPreconditionError(what + ": image " + d.base_image + " is not on this host (the manager copies it " +
                                     "there before the create)");
    }
    UW_RETURN_IF_ERROR(
        RunTool({"qemu-img", "rebase", "-u", "-f", d.format, "-F", "qcow2", "-b", base.string(), file.string()})
            .status());
    fs::last_write_time(base, fs::file_time_type::clock::now(), ec);
  }
  fs::rename(file, d.path, ec);
  if (ec) return InternalError(what + ": moving it to " + d.path + ": " + ec.message());
  spdlog::info("{}: taken as {}", what, d.path);
  return Status::Ok();
}

}  // namespace uw::vmm
