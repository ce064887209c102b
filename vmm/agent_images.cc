// AgentService: copies of the manager's images, for guests' local disks made on them
// ({"base_image": "NAME@VERSION"}). The manager sends an image in pieces before the create that
// needs it (PUT /api/v1/images/{ref}?offset=&total=); the copy grows in state_dir/images/.REF.part
// and becomes REF.qcow2 once whole and checked: a qcow2 with no backing file and no external data
// file of its own (either could name any file on this host). A broken copy goes on from what the host has.
#include <spdlog/spdlog.h>

#include <fstream>
#include <set>

#include "common/json.h"
#include "vmm/agent_internal.h"
#include "vmm/agent_service.h"

namespace uw::vmm {

namespace fs = std::filesystem;

namespace {

Status CheckRef(std::string_view ref) {
  if (IsBaseImageRef(ref)) return Status::Ok();
  return InvalidArgumentError("image: expected IMAGE@VERSION, got '" + std::string(ref) + "'");
}

}  // namespace

Status AppendPiece(const fs::path& part, std::string_view bytes, const std::string& what) {
  std::ofstream out(part, std::ios::binary | std::ios::app);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.flush();
  if (!out) return UnavailableError(what + ": writing " + part.string() + " failed (is the disk full?)");
  return Status::Ok();
}

bool HasExternalDataFile(const Json& info) {
  const auto specific = info.find("format-specific");
  return specific != info.end() && specific->is_object() &&
         specific->value("data", Json::object()).contains("data-file");
}

fs::path AgentService::ImagePartPath(std::string_view ref) const {
  return ImageDir() / ("." + std::string(ref) + ".part");
}

ImageCopy AgentService::ImageHeld(std::string_view ref) const {
  std::error_code ec;
  if (fs::is_regular_file(ImagePath(ref), ec)) {
    return ImageCopy{static_cast<int64_t>(fs::file_size(ImagePath(ref), ec)), true};
  }
  const auto size = fs::file_size(ImagePartPath(ref), ec);
  return ImageCopy{ec ? 0 : static_cast<int64_t>(size), false};
}

Result<ImageCopy> AgentService::ImageState(std::string_view ref) {
  UW_RETURN_IF_ERROR(CheckRef(ref));
  std::lock_guard l(images_mu_);
  return ImageHeld(ref);
}

Result<ImageCopy> AgentService::PutImagePart(std::string_view ref, int64_t offset, int64_t total_bytes,
                                             std::string_view bytes) {
  UW_RETURN_IF_ERROR(CheckRef(ref));
  const std::string what = "image " + std::string(ref) + " on host " + config_.host_name;
  if (total_bytes <= 0)
    return InvalidArgumentError("total: expected the image's size in bytes, got " + std::to_string(total_bytes));
  std::lock_guard l(images_mu_);
  const ImageCopy held = ImageHeld(ref);
  if (held.complete) return held;
  const fs::path part = ImagePartPath(ref);
  const int64_t have = held.bytes;
  std::error_code ec;
  if (offset != have) {
    return FailedPreconditionError("offset: " + what + " has " + std::to_string(have) + " bytes, not " +
                                   std::to_string(offset) + " (go on from there)");
  }
  if (offset + static_cast<int64_t>(bytes.size()) > total_bytes) {
    return InvalidArgumentError("total: " + what + ": " + std::to_string(offset + static_cast<int64_t>(bytes.size())) +
                                " bytes would be more than the total " + std::to_string(total_bytes));
  }
  UW_RETURN_IF_ERROR(AppendPiece(part, bytes, what));
  const int64_t now_have = offset + static_cast<int64_t>(bytes.size());
  if (now_have < total_bytes) return ImageCopy{now_have, false};
  // Whole: only a plain qcow2 becomes an image here.
  auto info = RunTool({"qemu-img", "info", "-U", "--output=json", "-f", "qcow2", part.string()});
  Json j = info.ok() ? Json::parse(*info, nullptr, false) : Json();
  std::string why;
  if (!info.ok()) {
    why = "it is not a qcow2 image: " + info.status().message();
  } else if (!j.is_object() || j.value("format", "") != "qcow2") {
    why = "it is not a qcow2 image";
  } else if (j.contains("backing-filename") || j.contains("full-backing-filename")) {
    why = "it names a backing file of its own";
  } else if (HasExternalDataFile(j)) {
    why = "it keeps its data in an external data file";
  }
  if (!why.empty()) {
    fs::remove(part, ec);
    return InvalidArgumentError(what + ": the copy was refused and removed: " + why);
  }
  fs::rename(part, ImagePath(ref), ec);
  if (ec) return InternalError(what + ": " + ec.message());
  spdlog::info("{}: copy complete ({} bytes)", what, now_have);
  return ImageCopy{now_have, true};
}

int AgentService::PruneImages(std::chrono::seconds keep) {
  const auto cutoff = fs::file_time_type::clock::now() - keep;
  int removed = 0;
  {
    // Disks carried here by a cold move that never finished (no create took them).
    std::lock_guard l(incoming_mu_);
    std::error_code ec;
    for (fs::directory_iterator it(IncomingDir(), ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code e2;
      if (fs::last_write_time(it->path(), e2) > cutoff || e2) continue;
      if (fs::remove(it->path(), e2)) {
        ++removed;
        spdlog::info("removed {}: carried here by a cold move that did not finish", it->path().filename().string());
      }
    }
  }
  std::lock_guard l(images_mu_);
  std::error_code ec;
  // The image copies the local disks are made on (their backing files).
  std::set<std::string> used;
  for (fs::directory_iterator it(LocalDiskDir(), ec), end; !ec && it != end; it.increment(ec)) {
    auto info = RunTool({"qemu-img", "info", "-U", "--output=json", it->path().string()});
    if (!info.ok()) {
      spdlog::warn("image copies not pruned: {}", info.status().ToString());
      return removed;  // a disk that cannot be read might be made on any of them
    }
    const Json j = Json::parse(*info, nullptr, false);
    if (j.is_object()) used.insert(j.value("backing-filename", ""));
  }
  for (fs::directory_iterator it(ImageDir(), ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    std::error_code e2;
    if (used.count(p.string()) || fs::last_write_time(p, e2) > cutoff || e2) continue;
    if (fs::remove(p, e2)) {
      ++removed;
      spdlog::info("removed image copy {}: no local disk is made on it", p.filename().string());
    }
  }
  return removed;
}

}  // namespace uw::vmm
