// Images and volumes for guests' disks, on one interface with two backends.
//
//   operator's file --ImportImage--> image (golden, read-only)
//   image --CreateVolume{image}--> volume (a copy-on-write clone)   CreateVolume{} --> empty volume
//   volume --Disk--> DiskSource --DiskXml--> libvirt <disk> element --> the guest's domain
//
// Backends:
//   local  qcow2 files under one directory (the agent's state directory): images/NAME.qcow2 and
//          volumes/NAME.qcow2 whose backing file is its image. No daemon. Live migration copies a
//          volume (copy-storage); its image must be at the same path on the destination.
//   rbd    a Ceph pool through librados/librbd: image NAME is the RBD image `uw-img-NAME` with a
//          protected snapshot `golden`; a volume is `uw-vol-NAME`, cloned from that snapshot in
//          milliseconds. Guests open it over the network (cephx key in a libvirt secret), so live
//          migration moves memory only and any host can restart the guest.
//
// Vocabulary: an image's or a volume's name is 1-63 of [a-z0-9._-], starting with a letter or a
// digit (it becomes a file or an RBD image name: no paths). Sizes are bytes.
//
// Errors say which backend, which image or volume, and why:
//   kInvalidArgument    a bad name or size (resize smaller, size below the image's)
//   kNotFound           no such image, volume or source file
//   kAlreadyExists      the name is taken
//   kFailedPrecondition the thing is in use: an image with volumes cloned from it, a volume a
//                       running guest has open, a volume with snapshots that have clones
//   kUnavailable        the backend did not answer in time (a Ceph monitor or OSD down, or a tool
//                       past its deadline): retry later; nothing was changed by this call, or it is
//                       named in the message
//   kInternal           anything else the backend reported
//
// Thread safety: a backend may be called from any thread at once. Two calls on the same name at once
// are the caller's to order (the manager holds its catalogue's lock); the backend keeps each call
// all-or-nothing where it can (imports and new volumes appear under their name only when complete).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace uw::storage {

struct ImageInfo {
  std::string name;
  std::string format;                // on the backend: qcow2 (local), raw (rbd)
  int64_t virtual_bytes = 0;         // the disk size a guest sees
  int64_t used_bytes = 0;            // allocated on the backend
  std::vector<std::string> volumes;  // volumes cloned from it, sorted
};

struct VolumeInfo {
  std::string name;
  std::string image;  // the image it was cloned from; empty for an empty volume
  int64_t virtual_bytes = 0;
  int64_t used_bytes = 0;  // allocated by the volume itself (not counting its image)
  std::vector<std::string> snapshots;
  bool in_use = false;  // a running guest has it open (a QEMU file lock, an RBD watcher)
};

struct Capacity {
  int64_t total_bytes = 0;      // 0: the backend cannot say (Ceph without a ceph-mgr)
  int64_t used_bytes = 0;       // allocated by this backend's images and volumes
  int64_t available_bytes = 0;  // 0 with total_bytes 0: unknown
};

struct VolumeRequest {
  std::string name;
  int64_t size_bytes = 0;  // 0 with an image: the image's size; an empty volume needs a size
  std::string image;       // clone of this image; empty: an empty volume
};

// Where a guest's disk is: what the domain XML needs. Plain data.
struct DiskSource {
  std::string type;    // "file" | "network"
  std::string format;  // qcow2 | raw
  std::string path;    // file: the volume's path
  // network (rbd):
  std::string protocol;            // "rbd"
  std::string name;                // POOL/IMAGE
  std::vector<std::string> hosts;  // monitors as "ADDR:PORT" (msgr v1)
  std::string config_file;         // ceph.conf that QEMU's librbd reads
  std::string auth_user;           // cephx user without "client."
  std::string secret_uuid;         // libvirt secret holding the user's key
};

// libvirt's <disk type=... device='disk'> element for `source` as the guest's `target` (vda, vdb,
// ...) on `bus` (virtio, sata). Network disks use cache='none' (required for live migration on
// shared storage).
std::string DiskXml(const DiskSource& source, std::string_view target, std::string_view bus = "virtio");

class StorageBackend {
 public:
  virtual ~StorageBackend() = default;
  StorageBackend() = default;
  StorageBackend(const StorageBackend&) = delete;
  StorageBackend& operator=(const StorageBackend&) = delete;

  virtual std::string_view Kind() const = 0;  // "local" | "rbd"
  virtual std::string Describe() const = 0;   // for messages: "local storage in DIR", "rbd pool 'rbd' ..."

  // Images. ImportImage reads `source_file` (qcow2 or raw; qemu-img finds out) and makes it image
  // `name`; the source is not changed. DeleteImage refuses while volumes are cloned from it.
  virtual Result<ImageInfo> ImportImage(const std::string& name, const std::string& source_file) = 0;
  virtual Result<ImageInfo> GetImage(const std::string& name) = 0;
  virtual Result<std::vector<ImageInfo>> ListImages() = 0;
  virtual Status DeleteImage(const std::string& name) = 0;

  // Volumes. ResizeVolume only grows. SnapshotVolume takes a point-in-time snapshot named `snapshot`
  // (a volume in use may refuse: the local backend's qemu-img cannot snapshot a running disk).
  // DeleteVolume refuses while a running guest has it open; its snapshots go with it.
  virtual Result<VolumeInfo> CreateVolume(const VolumeRequest& request) = 0;
  virtual Result<VolumeInfo> GetVolume(const std::string& name) = 0;
  virtual Result<std::vector<VolumeInfo>> ListVolumes() = 0;
  virtual Result<VolumeInfo> ResizeVolume(const std::string& name, int64_t size_bytes) = 0;
  virtual Status SnapshotVolume(const std::string& name, const std::string& snapshot) = 0;
  virtual Status DeleteVolume(const std::string& name) = 0;

  virtual Result<Capacity> GetCapacity() = 0;
  // Where the guest finds the volume (kNotFound when there is no such volume).
  virtual Result<DiskSource> Disk(const std::string& volume) = 0;
};

// kInvalidArgument naming `what` ("image", "volume", "snapshot") unless `name` is a valid name.
Status ValidateName(std::string_view what, std::string_view name);

struct LocalConfig {
  std::string dir;                                 // created when missing (images/ and volumes/ in it)
  std::string qemu_img = "qemu-img";               // the tool, searched on PATH
  std::chrono::milliseconds tool_timeout{120000};  // each qemu-img run (an import copies the image)
};
// kInvalidArgument for an empty dir; kInternal when it cannot be created.
Result<std::unique_ptr<StorageBackend>> OpenLocalBackend(const LocalConfig& config);

// Up to `max_bytes` of a local backend's image file (its qcow2 bytes) from `offset`: how hosts get
// a copy of an image for guests' local disks. kFailedPrecondition for another backend, kNotFound for
// no such image, kInvalidArgument for an offset past its end.
struct ImageChunk {
  std::string bytes;
  int64_t total_bytes = 0;  // the whole file's size
};
Result<ImageChunk> ReadLocalImage(StorageBackend& backend, const std::string& image, int64_t offset, int64_t max_bytes);

struct RbdConfig {
  std::string config_file;  // ceph.conf (mon host, ...); required
  std::string user = "uw";  // cephx user without "client."
  std::string keyring;      // keyring file with the user's key; required
  std::string pool = "rbd";
  std::string secret_uuid;  // the libvirt secret the agents define with the user's key (for Disk)
  int op_timeout_s = 5;     // rados_osd_op_timeout and rados_mon_op_timeout
  int mount_timeout_s = 3;  // client_mount_timeout: how long connecting may take
  std::string qemu_img = "qemu-img";
  std::chrono::milliseconds tool_timeout{120000};
};
// Connects to the cluster and opens the pool: kUnavailable when no monitor answers in time,
// kNotFound for a missing pool, kPermissionDenied when cephx refuses the user.
Result<std::unique_ptr<StorageBackend>> OpenRbdBackend(const RbdConfig& config);

}  // namespace uw::storage
