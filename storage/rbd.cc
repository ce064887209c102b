// The Ceph RBD backend over librados/librbd (their C APIs: no exceptions cross into the project).
//
//   image NAME   RBD image uw-img-NAME (raw) with the protected snapshot `golden`
//   volume NAME  RBD image uw-vol-NAME: a clone of uw-img-IMAGE@golden, or created empty
//
// An import goes to uw-img-NAME.part first (qemu-img convert into rbd:) and is renamed when done.
// Every call is bounded by rados_osd_op_timeout / rados_mon_op_timeout; -ETIMEDOUT is kUnavailable
// (retry later), and after one the client refreshes its OSD map (a client that saw timeouts stays
// stuck on a stale map until it does: ../shared/recipes/ceph.md).
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "storage/internal.h"
#include "storage/storage.h"

namespace uw::storage {
namespace {

constexpr const char* kImagePrefix = "uw-img-";
constexpr const char* kVolumePrefix = "uw-vol-";
constexpr const char* kGolden = "golden";

std::string ImageRbd(const std::string& name) { return kImagePrefix + name; }
std::string VolumeRbd(const std::string& name) { return kVolumePrefix + name; }

bool StartsWith(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// Calls list(buffer, &count) with a buffer grown until librbd stops answering -ERANGE (it then
// sets count to the size it needs); returns list's result with `out` sized to the last buffer.
template <typename T, typename Count, typename List>
int ListAll(std::vector<T>& out, Count& count, List list) {
  for (;;) {
    out.assign(static_cast<size_t>(count), T{});
    const int r = list(out.data(), &count);
    if (r != -ERANGE) return r;
  }
}

// An open RBD image, closed on scope exit.
class OpenImage {
 public:
  OpenImage() = default;
  OpenImage(const OpenImage&) = delete;
  OpenImage& operator=(const OpenImage&) = delete;
  ~OpenImage() {
    if (image_ != nullptr) rbd_close(image_);
  }
  rbd_image_t* out() { return &image_; }
  rbd_image_t get() const { return image_; }

 private:
  rbd_image_t image_ = nullptr;
};

class RbdBackend final : public StorageBackend {
 public:
  explicit RbdBackend(const RbdConfig& c) : c_(c), pool_(c, "rbd pool '" + c.pool + "' (" + c.config_file + ")") {}

  std::string_view Kind() const override { return "rbd"; }
  std::string Describe() const override { return pool_.describe(); }

  Status Connect() { return pool_.Connect(); }

  Result<ImageInfo> ImportImage(const std::string& name, const std::string& source_file) override {
    UW_RETURN_IF_ERROR(ValidateName("image", name));
    const std::string what = "image '" + name + "'";
    std::error_code ec;
    if (!std::filesystem::is_regular_file(source_file, ec)) {
      return NotFoundError(Describe() + ": " + what + ": no file " + source_file);
    }
    if (Exists(ImageRbd(name))) return AlreadyExistsError(Describe() + ": " + what + " exists already");
    UW_ASSIGN_OR_RETURN(std::string src_info,
                        internal::RunTool({c_.qemu_img, "info", "-U", "--output=json", source_file}, c_.tool_timeout,
                                          Describe() + ": " + what + ": reading " + source_file));
    UW_ASSIGN_OR_RETURN(auto src, internal::ParseToolImageInfo(src_info, what));
    if (src.format != "qcow2" && src.format != "raw") {
      return InvalidArgumentError(Describe() + ": " + what + ": " + source_file + " is " + src.format +
                                  ", expected qcow2 or raw");
    }
    const std::string part = ImageRbd(name) + ".part";
    rbd_remove(pool_.io(), part.c_str());  // a previous import that died half-way
    auto converted =
        internal::RunTool({c_.qemu_img, "convert", "-q", "-f", src.format, "-O", "raw", source_file,
                           "rbd:" + c_.pool + "/" + part + ":id=" + c_.user + ":conf=" + c_.config_file +
                               ":keyring=" + c_.keyring + ":rados_osd_op_timeout=" + std::to_string(c_.op_timeout_s)},
                          c_.tool_timeout, Describe() + ": " + what + ": importing " + source_file);
    if (!converted.ok()) {
      rbd_remove(pool_.io(), part.c_str());
      return converted.status();
    }
    Status golden = [&]() -> Status {
      OpenImage img;
      int r = rbd_open(pool_.io(), part.c_str(), img.out(), nullptr);
      if (r < 0) return Error(r, what + ": opening the import");
      if ((r = rbd_snap_create(img.get(), kGolden)) < 0) return Error(r, what + ": snapshot");
      if ((r = rbd_snap_protect(img.get(), kGolden)) < 0) return Error(r, what + ": protecting its snapshot");
      return Status::Ok();
    }();
    if (golden.ok()) {
      const int r = rbd_rename(pool_.io(), part.c_str(), ImageRbd(name).c_str());
      if (r < 0) golden = Error(r, what);
    }
    if (!golden.ok()) {
      if (Status gone = RemoveWithSnapshots(part); !gone.ok()) {
        return Status(golden.code(), golden.message() + "; the half-made " + part + " stays: " + gone.message());
      }
      return golden;
    }
    return GetImage(name);
  }

  Result<ImageInfo> GetImage(const std::string& name) override {
    UW_RETURN_IF_ERROR(ValidateName("image", name));
    const std::string what = "image '" + name + "'";
    OpenImage img;
    int r = rbd_open_read_only(pool_.io(), ImageRbd(name).c_str(), img.out(), kGolden);
    if (r < 0) return Error(r, what);
    ImageInfo info;
    info.name = name;
    info.format = "raw";
    UW_ASSIGN_OR_RETURN(info.virtual_bytes, Size(img.get(), what));
    info.used_bytes = Used(img.get());
    UW_ASSIGN_OR_RETURN(info.volumes, Children(img.get(), what));
    return info;
  }

  Result<std::vector<ImageInfo>> ListImages() override {
    UW_ASSIGN_OR_RETURN(auto names, List(kImagePrefix));
    return internal::GetEach<ImageInfo>(names, [this](const std::string& n) { return GetImage(n); });
  }

  Status DeleteImage(const std::string& name) override {
    UW_ASSIGN_OR_RETURN(ImageInfo image, GetImage(name));
    UW_RETURN_IF_ERROR(internal::RefuseIfCloned(Describe(), image));
    return RemoveWithSnapshots(ImageRbd(name));
  }

  Result<VolumeInfo> CreateVolume(const VolumeRequest& req) override {
    UW_RETURN_IF_ERROR(ValidateName("volume", req.name));
    const std::string what = "volume '" + req.name + "'";
    if (req.size_bytes < 0) return InvalidArgumentError(Describe() + ": " + what + ": size must not be negative");
    if (req.image.empty() && req.size_bytes == 0) {
      return InvalidArgumentError(Describe() + ": " + what + ": an empty volume needs a size");
    }
    if (Exists(VolumeRbd(req.name))) return AlreadyExistsError(Describe() + ": " + what + " exists already");
    rbd_image_options_t opts;
    rbd_image_options_create(&opts);
    std::unique_ptr<void, void (*)(void*)> free_opts(opts, [](void* o) { rbd_image_options_destroy(o); });
    if (req.image.empty()) {
      const int r = rbd_create4(pool_.io(), VolumeRbd(req.name).c_str(), static_cast<uint64_t>(req.size_bytes), opts);
      if (r < 0) return Error(r, what);
      return GetVolume(req.name);
    }
    // Only the image's size: GetImage would also list its clones, which librbd does by opening
    // each of them (50 clones in a row took 270 ms each that way, 51 ms without).
    UW_RETURN_IF_ERROR(ValidateName("image", req.image));
    int64_t image_bytes = 0;
    {
      OpenImage img;
      const int r = rbd_open_read_only(pool_.io(), ImageRbd(req.image).c_str(), img.out(), kGolden);
      if (r < 0) return Error(r, "image '" + req.image + "'");
      UW_ASSIGN_OR_RETURN(image_bytes, Size(img.get(), "image '" + req.image + "'"));
    }
    if (req.size_bytes != 0 && req.size_bytes < image_bytes) {
      return InvalidArgumentError(Describe() + ": " + what + ": " + std::to_string(req.size_bytes) +
                                  " bytes is smaller than image '" + req.image + "' (" + std::to_string(image_bytes) +
                                  " bytes)");
    }
    int r = rbd_clone3(pool_.io(), ImageRbd(req.image).c_str(), kGolden, pool_.io(), VolumeRbd(req.name).c_str(), opts);
    if (r < 0) return Error(r, what + ": clone of image '" + req.image + "'");
    if (req.size_bytes > image_bytes) {
      Status grown = Resize(VolumeRbd(req.name), req.size_bytes, what);
      if (!grown.ok()) {
        rbd_remove(pool_.io(), VolumeRbd(req.name).c_str());
        return grown;
      }
    }
    return GetVolume(req.name);
  }

  Result<VolumeInfo> GetVolume(const std::string& name) override {
    UW_RETURN_IF_ERROR(ValidateName("volume", name));
    const std::string what = "volume '" + name + "'";
    OpenImage img;
    int r = rbd_open_read_only(pool_.io(), VolumeRbd(name).c_str(), img.out(), nullptr);
    if (r < 0) return Error(r, what);
    VolumeInfo v;
    v.name = name;
    UW_ASSIGN_OR_RETURN(v.virtual_bytes, Size(img.get(), what));
    v.used_bytes = Used(img.get());
    rbd_linked_image_spec_t parent{};
    rbd_snap_spec_t parent_snap{};
    r = rbd_get_parent(img.get(), &parent, &parent_snap);
    if (r == 0) {
      const std::string p = parent.image_name != nullptr ? parent.image_name : "";
      v.image = StartsWith(p, kImagePrefix) ? p.substr(std::strlen(kImagePrefix)) : p;
      rbd_linked_image_spec_cleanup(&parent);
      rbd_snap_spec_cleanup(&parent_snap);
    } else if (r != -ENOENT) {
      return Error(r, what + ": its parent");
    }
    UW_ASSIGN_OR_RETURN(v.snapshots, Snapshots(img.get(), what));
    UW_ASSIGN_OR_RETURN(auto watchers, Watchers(img.get(), what));
    v.in_use = !watchers.empty();
    return v;
  }

  Result<std::vector<VolumeInfo>> ListVolumes() override {
    UW_ASSIGN_OR_RETURN(auto names, List(kVolumePrefix));
    return internal::GetEach<VolumeInfo>(names, [this](const std::string& n) { return GetVolume(n); });
  }

  Result<VolumeInfo> ResizeVolume(const std::string& name, int64_t size_bytes) override {
    UW_ASSIGN_OR_RETURN(VolumeInfo v, GetVolume(name));
    if (size_bytes < v.virtual_bytes) {
      return InvalidArgumentError(Describe() + ": volume '" + name + "': volumes only grow (" +
                                  std::to_string(size_bytes) + " bytes < " + std::to_string(v.virtual_bytes) +
                                  " bytes now)");
    }
    if (size_bytes == v.virtual_bytes) return v;
    UW_RETURN_IF_ERROR(Resize(VolumeRbd(name), size_bytes, "volume '" + name + "'"));
    return GetVolume(name);
  }

  Status SnapshotVolume(const std::string& name, const std::string& snapshot) override {
    UW_RETURN_IF_ERROR(ValidateName("volume", name));
    UW_RETURN_IF_ERROR(ValidateName("snapshot", snapshot));
    const std::string what = "volume '" + name + "'";
    OpenImage img;
    int r = rbd_open(pool_.io(), VolumeRbd(name).c_str(), img.out(), nullptr);
    if (r < 0) return Error(r, what);
    if ((r = rbd_snap_create(img.get(), snapshot.c_str())) < 0) return Error(r, what + ": snapshot '" + snapshot + "'");
    return Status::Ok();
  }

  Status DeleteVolume(const std::string& name) override {
    UW_RETURN_IF_ERROR(ValidateName("volume", name));
    std::vector<std::string> watchers;
    {
      OpenImage img;
      const int r = rbd_open_read_only(pool_.io(), VolumeRbd(name).c_str(), img.out(), nullptr);
      if (r < 0) return Error(r, "volume '" + name + "'");
      UW_ASSIGN_OR_RETURN(watchers, Watchers(img.get(), "volume '" + name + "'"));
    }
    if (!watchers.empty()) {
      // A client that died keeps its watch until the OSD times it out (osd_client_watch_timeout,
      // 30 s by default), so "in use" can outlive a killed guest by that much.
      return FailedPreconditionError(Describe() + ": volume '" + name + "' is open by " +
                                     internal::JoinNames(watchers) +
                                     " (a running guest, or one killed less than osd_client_watch_timeout ago)");
    }
    return RemoveWithSnapshots(VolumeRbd(name));
  }

  // Ceph reports the cluster's size and free space through its manager daemon (ceph-mgr); without
  // one they are 0 (unknown). What this backend allocated is counted from its own images.
  Result<Capacity> GetCapacity() override {
    rados_cluster_stat_t s{};
    int r = rados_cluster_stat(pool_.cluster(), &s);
    if (r < 0) return Error(r, "cluster usage");
    Capacity c;
    c.total_bytes = static_cast<int64_t>(s.kb) * 1024;
    c.available_bytes = static_cast<int64_t>(s.kb_avail) * 1024;
    for (const char* prefix : {kImagePrefix, kVolumePrefix}) {
      UW_ASSIGN_OR_RETURN(auto names, List(prefix));
      for (const auto& n : names) {
        OpenImage img;
        if ((r = rbd_open_read_only(pool_.io(), (prefix + n).c_str(), img.out(), nullptr)) == -ENOENT) continue;
        if (r < 0) return Error(r, prefix + n);
        c.used_bytes += Used(img.get());
      }
    }
    return c;
  }

  Result<DiskSource> Disk(const std::string& volume) override {
    UW_RETURN_IF_ERROR(ValidateName("volume", volume));
    if (!Exists(VolumeRbd(volume))) return NotFoundError(Describe() + ": no volume '" + volume + "'");
    DiskSource d;
    d.type = "network";
    d.format = "raw";
    d.protocol = "rbd";
    d.name = c_.pool + "/" + VolumeRbd(volume);
    d.config_file = c_.config_file;
    d.auth_user = c_.user;
    d.secret_uuid = c_.secret_uuid;
    return d;
  }

 private:
  // Maps a librados/librbd error: the code says what the caller should do.
  Status Error(int r, const std::string& what) { return pool_.Error(r, what); }

  bool Exists(const std::string& rbd_name) {
    OpenImage img;
    return rbd_open_read_only(pool_.io(), rbd_name.c_str(), img.out(), nullptr) == 0;
  }

  // Names after `prefix` of the pool's RBD images, sorted.
  Result<std::vector<std::string>> List(const char* prefix) {
    size_t n = 64;
    std::vector<rbd_image_spec_t> specs;
    const int r = ListAll(specs, n, [&](rbd_image_spec_t* b, size_t* c) { return rbd_list2(pool_.io(), b, c); });
    if (r < 0) return Error(r, "listing images");
    std::vector<std::string> names;
    for (size_t i = 0; i < n; ++i) {
      const std::string s = specs[i].name != nullptr ? specs[i].name : "";
      if (StartsWith(s, prefix) && s.find('.', std::strlen(prefix)) == std::string::npos) {
        names.push_back(s.substr(std::strlen(prefix)));
      }
    }
    rbd_image_spec_list_cleanup(specs.data(), n);
    std::sort(names.begin(), names.end());
    return names;
  }

  Result<int64_t> Size(rbd_image_t img, const std::string& what) {
    uint64_t size = 0;
    const int r = rbd_get_size(img, &size);
    if (r < 0) return Error(r, what + ": its size");
    return static_cast<int64_t>(size);
  }

  // Bytes allocated in the image itself (whole objects; 0 when the cluster cannot say).
  static int64_t Used(rbd_image_t img) {
    uint64_t size = 0;
    if (rbd_get_size(img, &size) < 0) return 0;
    int64_t used = 0;
    auto add = [](uint64_t, size_t len, int exists, void* arg) -> int {
      if (exists != 0) *static_cast<int64_t*>(arg) += static_cast<int64_t>(len);
      return 0;
    };
    if (rbd_diff_iterate2(img, nullptr, 0, size, 0, 1, add, &used) < 0) return 0;
    return used;
  }

  Result<std::vector<std::string>> Children(rbd_image_t img, const std::string& what) {
    size_t n = 16;
    std::vector<rbd_linked_image_spec_t> kids;
    const int r =
        ListAll(kids, n, [&](rbd_linked_image_spec_t* b, size_t* c) { return rbd_list_children3(img, b, c); });
    if (r < 0) return Error(r, what + ": its clones");
    std::vector<std::string> names;
    for (size_t i = 0; i < n; ++i) {
      const std::string s = kids[i].image_name != nullptr ? kids[i].image_name : "";
      names.push_back(StartsWith(s, kVolumePrefix) ? s.substr(std::strlen(kVolumePrefix)) : s);
    }
    rbd_linked_image_spec_list_cleanup(kids.data(), n);
    std::sort(names.begin(), names.end());
    return names;
  }

  Result<std::vector<std::string>> Snapshots(rbd_image_t img, const std::string& what) {
    int max = 16;
    std::vector<rbd_snap_info_t> snaps;
    const int r = ListAll(snaps, max, [&](rbd_snap_info_t* b, int* c) { return rbd_snap_list(img, b, c); });
    if (r < 0) return Error(r, what + ": its snapshots");
    std::vector<std::string> names;
    for (int i = 0; i < r; ++i) names.emplace_back(snaps[static_cast<size_t>(i)].name);
    rbd_snap_list_end(snaps.data());
    return names;
  }

  // The addresses of the clients that hold the image open (RBD watchers), sorted.
  Result<std::vector<std::string>> Watchers(rbd_image_t img, const std::string& what) {
    size_t n = 8;
    std::vector<rbd_image_watcher_t> w;
    const int r = ListAll(w, n, [&](rbd_image_watcher_t* b, size_t* c) { return rbd_watchers_list(img, b, c); });
    if (r < 0) return Error(r, what + ": its watchers");
    std::vector<std::string> addrs;
    for (size_t i = 0; i < n; ++i) addrs.emplace_back(w[i].addr != nullptr ? w[i].addr : "?");
    rbd_watchers_list_cleanup(w.data(), n);
    std::sort(addrs.begin(), addrs.end());
    return addrs;
  }

  Status Resize(const std::string& rbd_name, int64_t size, const std::string& what) {
    OpenImage img;
    int r = rbd_open(pool_.io(), rbd_name.c_str(), img.out(), nullptr);
    if (r < 0) return Error(r, what);
    auto quiet = [](uint64_t, uint64_t, void*) { return 0; };
    if ((r = rbd_resize2(img.get(), static_cast<uint64_t>(size), false, quiet, nullptr)) < 0) {
      return Error(r, what + ": resize");
    }
    return Status::Ok();
  }

  // Unprotects and removes every snapshot (refused while one has clones), then the image.
  Status RemoveWithSnapshots(const std::string& rbd_name) {
    {
      OpenImage img;
      int r = rbd_open(pool_.io(), rbd_name.c_str(), img.out(), nullptr);
      if (r < 0) return Error(r, rbd_name);
      UW_ASSIGN_OR_RETURN(auto snaps, Snapshots(img.get(), rbd_name));
      for (const auto& s : snaps) {
        int protected_ = 0;
        if (rbd_snap_is_protected(img.get(), s.c_str(), &protected_) == 0 && protected_ != 0) {
          if ((r = rbd_snap_unprotect(img.get(), s.c_str())) < 0) {
            return Error(r, rbd_name + ": snapshot '" + s + "' (it has clones)");
          }
        }
        if ((r = rbd_snap_remove(img.get(), s.c_str())) < 0) return Error(r, rbd_name + ": snapshot '" + s + "'");
      }
    }
    const int r = rbd_remove(pool_.io(), rbd_name.c_str());
    if (r < 0) return Error(r, rbd_name);
    return Status::Ok();
  }

  const RbdConfig c_;
  internal::RadosPool pool_;
};

}  // namespace

Result<std::unique_ptr<StorageBackend>> OpenRbdBackend(const RbdConfig& config) {
  UW_RETURN_IF_ERROR(internal::CheckRbdConfig(config));
  auto backend = std::make_unique<RbdBackend>(config);
  UW_RETURN_IF_ERROR(backend->Connect());
  return std::unique_ptr<StorageBackend>(std::move(backend));
}

}  // namespace uw::storage
