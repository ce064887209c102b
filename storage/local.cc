// The local backend: qcow2 files under one directory.
//
//   DIR/images/NAME.qcow2    an image (imported with qemu-img convert)
//   DIR/volumes/NAME.qcow2   a volume; a clone's backing file is its image's absolute path
//   DIR/*/.NAME.part         an import or a new volume being made (renamed into place when done)
//
// Which volumes clone an image is read from the volumes' qcow2 headers (the backing file name),
// so the directory itself is the catalogue and nothing can drift. A volume is in use when a running
// QEMU holds its locks (HeldByQemu asks without taking any); qemu-img always runs with -U to read.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "storage/internal.h"
#include "storage/storage.h"

namespace uw::storage {
namespace {

namespace fs = std::filesystem;
using internal::RunTool;

// The backing file name in a qcow2 header: bytes 8-15 its offset, 16-19 its length, big-endian
// (QEMU's docs/interop/qcow2.txt). Empty for no backing file or a file that is not qcow2.
std::string Qcow2BackingFile(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  unsigned char h[20];
  if (!in.read(reinterpret_cast<char*>(h), sizeof h)) return "";
  if (!(h[0] == 'Q' && h[1] == 'F' && h[2] == 'I' && h[3] == 0xfb)) return "";
  uint64_t offset = 0;
  for (int i = 8; i < 16; ++i) offset = (offset << 8) | h[i];
  uint32_t len = 0;
  for (int i = 16; i < 20; ++i) len = (len << 8) | h[i];
  if (offset == 0 || len == 0 || len > 4096) return "";
  std::string name(len, '\0');
  in.seekg(static_cast<std::streamoff>(offset));
  if (!in.read(name.data(), len)) return "";
  return name;
}

// Whether a QEMU holds `file` open: QEMU takes OFD locks on bytes 100-299 of every image it opens
// (one byte per permission it uses or refuses to share). F_OFD_GETLK only asks, so a guest that is
// opening the image at this moment is not disturbed (`qemu-img info` without -U takes shared locks
// and made a QEMU opening the image fail with "Failed to get write lock").
bool HeldByQemu(const fs::path& file) {
  const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  probe.l_start = 100;
  probe.l_len = 200;
  const bool held = fcntl(fd, F_OFD_GETLK, &probe) == 0 && probe.l_type != F_UNLCK;
  close(fd);
  return held;
}

int64_t AllocatedBytes(const fs::path& file) {
  struct stat st {};
  if (stat(file.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_blocks) * 512;
}

// rename(2) that refuses to replace: the name appears only when the file is complete.
Status RenameNew(const fs::path& from, const fs::path& to, const std::string& what) {
  if (renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return Status::Ok();
  const int err = errno;
  std::error_code ec;
  fs::remove(from, ec);
  if (err == EEXIST) return AlreadyExistsError(what + " exists already");
  return InternalError(what + ": rename " + from.string() + ": " + std::strerror(err));
}

class LocalBackend final : public StorageBackend {
 public:
  explicit LocalBackend(LocalConfig c)
      : c_(std::move(c)), images_(fs::path(c_.dir) / "images"), volumes_(fs::path(c_.dir) / "volumes") {}

  std::string_view Kind() const override { return "local"; }
  std::string Describe() const override { return "local storage in " + c_.dir; }

  Result<ImageInfo> ImportImage(const std::string& name, const std::string& source_file) override {
    UW_RETURN_IF_ERROR(ValidateName("image", name));
    const std::string what = Describe() + ": image '" + name + "'";
    std::error_code ec;
    if (!fs::is_regular_file(source_file, ec)) return NotFoundError(what + ": no file " + source_file);
    if (fs::exists(ImagePath(name), ec)) return AlreadyExistsError(what + " exists already");
    const fs::path part = images_ / ("." + name + ".part");
    fs::remove(part, ec);
    UW_ASSIGN_OR_RETURN(std::string src_info, RunTool({c_.qemu_img, "info", "-U", "--output=json", source_file},
                                                      c_.tool_timeout, what + ": reading " + source_file));
    UW_ASSIGN_OR_RETURN(auto src, internal::ParseToolImageInfo(src_info, what));
    if (src.format != "qcow2" && src.format != "raw") {
      return InvalidArgumentError(what + ": " + source_file + " is " + src.format + ", expected qcow2 or raw");
    }
    auto converted = RunTool({c_.qemu_img, "convert", "-q", "-f", src.format, "-O", "qcow2", source_file, part},
                             c_.tool_timeout, what + ": importing " + source_file);
    if (!converted.ok()) {
      fs::remove(part, ec);
      return converted.status();
    }
    UW_RETURN_IF_ERROR(RenameNew(part, ImagePath(name), what));
    return GetImage(name);
  }

  Result<ImageInfo> GetImage(const std::string& name) override {
    UW_RETURN_IF_ERROR(ValidateName("image", name));
    const fs::path path = ImagePath(name);
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) return NotFoundError(Describe() + ": no image '" + name + "'");
    UW_ASSIGN_OR_RETURN(auto info, Info(path, "image '" + name + "'"));
    ImageInfo image{name, info.format, info.virtual_bytes, AllocatedBytes(path), {}};
    for (const auto& [volume, backing] : Backings()) {
      if (backing == path.string()) image.volumes.push_back(volume);
    }
    return image;
  }

  Result<std::vector<ImageInfo>> ListImages() override {
    return internal::GetEach<ImageInfo>(Names(images_), [this](const std::string& n) { return GetImage(n); });
  }

  Status DeleteImage(const std::string& name) override {
    UW_ASSIGN_OR_RETURN(ImageInfo image, GetImage(name));
    UW_RETURN_IF_ERROR(internal::RefuseIfCloned(Describe(), image));
    std::error_code ec;
    if (!fs::remove(ImagePath(name), ec) && ec) {
      return InternalError(Describe() + ": image '" + name + "': " + ec.message());
    }
    return Status::Ok();
  }

  Result<VolumeInfo> CreateVolume(const VolumeRequest& r) override {
    UW_RETURN_IF_ERROR(ValidateName("volume", r.name));
    const std::string what = Describe() + ": volume '" + r.name + "'";
    if (r.size_bytes < 0) return InvalidArgumentError(what + ": size must not be negative");
    if (r.image.empty() && r.size_bytes == 0) return InvalidArgumentError(what + ": an empty volume needs a size");
    std::error_code ec;
    if (fs::exists(VolumePath(r.name), ec)) return AlreadyExistsError(what + " exists already");
    std::vector<std::string> argv = {c_.qemu_img, "create", "-q", "-f", "qcow2"};
    int64_t size = r.size_bytes;
    if (!r.image.empty()) {
      UW_ASSIGN_OR_RETURN(ImageInfo image, GetImage(r.image));
      if (size == 0) size = image.virtual_bytes;
      if (size < image.virtual_bytes) {
        return InvalidArgumentError(what + ": " + std::to_string(size) + " bytes is smaller than image '" + r.image +
                                    "' (" + std::to_string(image.virtual_bytes) + " bytes)");
      }
      argv.insert(argv.end(), {"-F", "qcow2", "-b", ImagePath(r.image).string()});
    }
    fs::create_directories(volumes_, ec);
    const fs::path part = volumes_ / ("." + r.name + ".part");
    fs::remove(part, ec);
    argv.insert(argv.end(), {part.string(), std::to_string(size)});
    if (auto made = RunTool(argv, c_.tool_timeout, what); !made.ok()) {
      fs::remove(part, ec);
      return made.status();
    }
    UW_RETURN_IF_ERROR(RenameNew(part, VolumePath(r.name), what));
    return GetVolume(r.name);
  }

  Result<VolumeInfo> GetVolume(const std::string& name) override {
    UW_RETURN_IF_ERROR(ValidateName("volume", name));
    const fs::path path = VolumePath(name);
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) return NotFoundError(Describe() + ": no volume '" + name + "'");
    const std::string what = "volume '" + name + "'";
    VolumeInfo v;
    v.name = name;
    v.in_use = HeldByQemu(path);
    auto locked = Info(path, what);
    if (!locked.ok()) return locked.status();
    v.virtual_bytes = locked->virtual_bytes;
    v.used_bytes = AllocatedBytes(path);
    v.snapshots = locked->snapshots;
    if (!locked->backing_file.empty()) v.image = ImageNameOf(locked->backing_file);
    return v;
  }

  Result<std::vector<VolumeInfo>> ListVolumes() override {
    return internal::GetEach<VolumeInfo>(Names(volumes_), [this](const std::string& n) { return GetVolume(n); });
  }

  Result<VolumeInfo> ResizeVolume(const std::string& name, int64_t size_bytes) override {
    UW_ASSIGN_OR_RETURN(VolumeInfo v, GetVolume(name));
    const std::string what = Describe() + ": volume '" + name + "'";
    if (size_bytes < v.virtual_bytes) {
      return InvalidArgumentError(what + ": volumes only grow (" + std::to_string(size_bytes) + " bytes < " +
                                  std::to_string(v.virtual_bytes) + " bytes now)");
    }
    if (size_bytes == v.virtual_bytes) return v;
    if (v.in_use)
      return FailedPreconditionError(what + ": a running guest uses it (resize it through the guest's host)");
    UW_RETURN_IF_ERROR(
        RunTool({c_.qemu_img, "resize", "-q", "-f", "qcow2", VolumePath(name), std::to_string(size_bytes)},
                c_.tool_timeout, what + ": resize")
            .status());
    return GetVolume(name);
  }

  Status SnapshotVolume(const std::string& name, const std::string& snapshot) override {
    UW_RETURN_IF_ERROR(ValidateName("snapshot", snapshot));
    UW_ASSIGN_OR_RETURN(VolumeInfo v, GetVolume(name));
    const std::string what = Describe() + ": volume '" + name + "'";
    if (std::find(v.snapshots.begin(), v.snapshots.end(), snapshot) != v.snapshots.end()) {
      return AlreadyExistsError(what + ": snapshot '" + snapshot + "' exists already");
    }
    if (v.in_use) return FailedPreconditionError(what + ": a running guest uses it (qemu-img cannot snapshot it)");
    return RunTool({c_.qemu_img, "snapshot", "-q", "-c", snapshot, VolumePath(name)}, c_.tool_timeout,
                   what + ": snapshot '" + snapshot + "'")
        .status();
  }

  Status DeleteVolume(const std::string& name) override {
    UW_ASSIGN_OR_RETURN(VolumeInfo v, GetVolume(name));
    if (v.in_use) {
      return FailedPreconditionError(Describe() + ": volume '" + name + "' is in use by a running guest");
    }
    std::error_code ec;
    if (!fs::remove(VolumePath(name), ec) && ec) {
      return InternalError(Describe() + ": volume '" + name + "': " + ec.message());
    }
    return Status::Ok();
  }

  Result<Capacity> GetCapacity() override {
    struct statvfs s {};
    if (statvfs(c_.dir.c_str(), &s) != 0) {
      return InternalError(Describe() + ": statvfs: " + std::strerror(errno));
    }
    Capacity c;
    c.total_bytes = static_cast<int64_t>(s.f_blocks) * static_cast<int64_t>(s.f_frsize);
    c.available_bytes = static_cast<int64_t>(s.f_bavail) * static_cast<int64_t>(s.f_frsize);
    for (const fs::path& d : {images_, volumes_}) {
      for (const auto& name : Names(d)) c.used_bytes += AllocatedBytes(d / (name + ".qcow2"));
    }
    return c;
  }

  Result<DiskSource> Disk(const std::string& volume) override {
    UW_RETURN_IF_ERROR(ValidateName("volume", volume));
    std::error_code ec;
    if (!fs::is_regular_file(VolumePath(volume), ec)) {
      return NotFoundError(Describe() + ": no volume '" + volume + "'");
    }
    DiskSource d;
    d.type = "file";
    d.format = "qcow2";
    d.path = VolumePath(volume).string();
    return d;
  }

  Result<ImageChunk> ReadImage(const std::string& name, int64_t offset, int64_t max_bytes) {
    UW_RETURN_IF_ERROR(ValidateName("image", name));
    const std::string what = Describe() + ": image '" + name + "'";
    std::ifstream in(ImagePath(name), std::ios::binary);
    if (!in) return NotFoundError(Describe() + ": no image '" + name + "'");
    in.seekg(0, std::ios::end);
    ImageChunk chunk;
    chunk.total_bytes = static_cast<int64_t>(in.tellg());
    if (offset < 0 || offset > chunk.total_bytes) {
      return InvalidArgumentError(what + ": offset " + std::to_string(offset) + " is past its " +
                                  std::to_string(chunk.total_bytes) + " bytes");
    }
    chunk.bytes.resize(static_cast<size_t>(std::min(max_bytes, chunk.total_bytes - offset)));
    in.seekg(offset);
    in.read(chunk.bytes.data(), static_cast<std::streamsize>(chunk.bytes.size()));
    if (!in) return InternalError(what + ": reading at " + std::to_string(offset) + " failed");
    return chunk;
  }

  Status Init() {
    std::error_code ec;
    fs::create_directories(images_, ec);
    if (!ec) fs::create_directories(volumes_, ec);
    if (ec) return InternalError(Describe() + ": " + ec.message());
    return Status::Ok();
  }

 private:
  fs::path ImagePath(const std::string& name) const { return images_ / (name + ".qcow2"); }
  fs::path VolumePath(const std::string& name) const { return volumes_ / (name + ".qcow2"); }

  // The image whose file is `backing` (as written in a volume), or the path itself when it is not
  // one of this backend's images.
  std::string ImageNameOf(const std::string& backing) const {
    const fs::path p(backing);
    if (p.parent_path() == images_ && p.extension() == ".qcow2") return p.stem().string();
    return backing;
  }

  // Names (without .qcow2) of the finished files in `dir`, sorted.
  static std::vector<std::string> Names(const fs::path& dir) {
    std::vector<std::string> names;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const fs::path& p = it->path();
      const std::string file = p.filename().string();
      if (file.empty() || file[0] == '.' || p.extension() != ".qcow2") continue;
      if (ValidateName("file", p.stem().string()).ok()) names.push_back(p.stem().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  // (volume, backing file) for every volume.
  std::vector<std::pair<std::string, std::string>> Backings() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& name : Names(volumes_)) out.emplace_back(name, Qcow2BackingFile(VolumePath(name)));
    return out;
  }

  // qemu-img info -U: it takes no lock, so it never stands in the way of a guest opening the image.
  Result<internal::ToolImageInfo> Info(const fs::path& path, const std::string& what) const {
    std::vector<std::string> argv = {c_.qemu_img, "info", "--output=json", "-U", path.string()};
    UW_ASSIGN_OR_RETURN(std::string out, RunTool(argv, c_.tool_timeout, Describe() + ": " + what));
    return internal::ParseToolImageInfo(out, Describe() + ": " + what);
  }

  const LocalConfig c_;
  const fs::path images_;
  const fs::path volumes_;
};

}  // namespace

Result<ImageChunk> ReadLocalImage(StorageBackend& backend, const std::string& image, int64_t offset,
                                  int64_t max_bytes) {
  auto* local = dynamic_cast<LocalBackend*>(&backend);
  if (local == nullptr) {
    return FailedPreconditionError(backend.Describe() + ": image '" + image +
                                   "' is not a local file (only the local backend's images are copied to hosts)");
  }
  return local->ReadImage(image, offset, max_bytes);
}

Result<std::unique_ptr<StorageBackend>> OpenLocalBackend(const LocalConfig& config) {
  if (config.dir.empty()) return InvalidArgumentError("local storage: dir must not be empty");
  LocalConfig c = config;
  c.dir = std::filesystem::absolute(c.dir).lexically_normal().string();
  if (!c.dir.empty() && c.dir.size() > 1 && c.dir.back() == '/') c.dir.pop_back();
  auto backend = std::make_unique<LocalBackend>(std::move(c));
  UW_RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<StorageBackend>(std::move(backend));
}

}  // namespace uw::storage
