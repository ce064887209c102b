// The storage catalogue: which images and volumes exist on the cluster's storage backend
// (storage/storage.h), whose each volume is, which guest uses it, and each tenant's quota. Private to
// manager/ (Manager owns one, made by Start).
//
//   POST /images {name, source}  --> image.import task (202) --> a worker: RunImport --> backend
//        ImportImage --> images row (the task's result); a manager restarted meanwhile runs it again
//   POST /volumes {name, size}   --> row `creating` (quota checked) --> backend CreateVolume --> `ready`
//   POST /guests {disks: [{volume}|{image, size_gib}]} --> AttachForCreate: each volume marked as the
//        guest's (an image disk makes a volume deleted with the guest) --> the agent's {rbd} disks
//   POST /volumes/{name}/attach {guest}, /detach --> AttachVolume, DetachVolume (storage_attach.cc)
//   guest deleted, or its create failed --> ReleaseGuest: its volumes are free again (or deleted)
//
// The backend is opened on first use (Ceph may be down when the manager starts: then each call
// answers kUnavailable and the next one tries again). A volume is `creating` while the backend makes
// it; a manager killed then finds the row when the backend is next opened and settles it (ready when
// the backend has the volume, gone when not). Volume names are unique per tenant ("<tenant>:<name>",
// as guests'); on the backend a volume is named by a random id, so tenants never meet there.
//
// Thread safety: every method may be called from any thread; catalogue changes are serialized.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "manager/agent_client.h"
#include "manager/manager.h"
#include "manager/store.h"
#include "storage/storage.h"

namespace uw::manager::internal {

class EventLog;
class GuestTable;

inline constexpr int64_t kGiB = int64_t{1} << 30;
inline int64_t GiBUp(int64_t bytes) { return (bytes + kGiB - 1) / kGiB; }

// The backend name of a volume that is a local disk on its guest's host (made by the agent).
inline constexpr std::string_view kHostLocalBackend = "local-host";

class StorageService {
 public:
  struct Deps {
    Store& store;
    EventLog& events;
    Clock& clock;
    const ManagerConfig& config;  // storage_backend, storage_rbd, storage_local
    GuestTable& guests;
    std::function<std::shared_ptr<AgentClient>(const std::string& host)> agent_of;
    std::function<Result<Guest>(const Principal& p, std::string_view name)> visible_guest;
    // Journals and queues a task (Manager::NewTask, no tenant).
    std::function<Result<Task>(std::string_view kind, std::string_view subject, const Json& request)> new_task;
  };
  explicit StorageService(Deps deps) : d_(std::move(deps)) {}
  ~StorageService();
  StorageService(const StorageService&) = delete;
  StorageService& operator=(const StorageService&) = delete;

  Result<Page<ImageRecord>> ListImages(const Principal& p, const PageQuery& page);
  Result<ImageRecord> GetImage(const Principal& p, std::string_view name);
  // Checks the request (an operator's; a free name; a file source that exists; the backend
  // reachable) and starts an image.import task; the name stays taken while it runs.
  Result<Task> StartImport(const Principal& p, const ImageImport& req);
  // The task's work (a worker thread): the import, or, resumed after a restart, what the last
  // run left (an image the backend has already is adopted). The image is the task's result.
  Result<ImageRecord> RunImport(const Json& request);
  Status DeleteImage(const Principal& p, std::string_view name);

  Result<Page<VolumeRecord>> ListVolumes(const Principal& p, const PageQuery& page);
  Result<VolumeRecord> GetVolume(const Principal& p, std::string_view name);
  Result<VolumeRecord> CreateVolume(const Principal& p, const VolumeCreate& req);
  Result<VolumeRecord> ResizeVolume(const Principal& p, std::string_view name, int64_t size_gib);
  Status DeleteVolume(const Principal& p, std::string_view name);
  // storage_attach.cc: a ready, free volume becomes a disk of an existing guest of its tenant (the
  // guest's agent hot-plugs it; its spec keeps it for a restart elsewhere), and back. Only RBD
  // volumes; kFailedPrecondition while the guest moves, is on no host or is neither running nor
  // stopped. The agent works without the catalogue's lock; the volume is marked busy meanwhile.
  Result<VolumeRecord> AttachVolume(const Principal& p, std::string_view name, std::string_view guest);
  Result<VolumeRecord> DetachVolume(const Principal& p, std::string_view name);

  Result<std::vector<StorageQuota>> ListQuotas(const Principal& p);
  Result<StorageQuota> SetQuota(const Principal& p, std::string_view tenant, std::optional<int64_t> gib);
  Result<StorageInfo> Info(const Principal& p);

  // A guest being created (its key in req.name, its tenant in req.tenant): each of its catalogue
  // disks becomes the guest's (a {volume} must be the tenant's, ready and no guest's disk; an
  // {image, size_gib} makes volume "<guest>-disk<i>", deleted with the guest) and the agent's disk
  // in req.agent_spec. All or nothing: on an error nothing stays attached or made.
  Status AttachForCreate(GuestCreate& req);
  // Before `spec` is created on `agent`'s host (a create, an HA restart, a cold move): copies there
  // each image its disks are made on ({"base_image": "NAME@VERSION"}) that the host does not have
  // whole yet, 4 MiB a call, going on from what the host has. kNotFound for an image deleted
  // meanwhile, kFailedPrecondition for one imported again under its name; the agent's errors
  // with the host and image named. A second copy of the same image to the same host waits for the
  // first; copies to other hosts go on at once.
  Status CopyBaseImages(AgentClient& agent, const Json& spec);
  static constexpr int64_t kImageChunkBytes = 3 << 20;
  // A cold move of stopped guest `guest` with local disks `disks` (the source's Get): copies each
  // disk's file from `from` to `to` in pieces of kImageChunkBytes (the destination keeps them for
  // the create with "disks_carried"). Adds the bytes copied to *carried. Errors name the disk and
  // both hosts; what arrived stays on `to` until AbandonIncoming or its agent's pruning.
  static Status CarryLocalDisks(AgentClient& from, AgentClient& to, const std::string& guest,
                                const std::vector<LocalDisk>& disks, int64_t* carried);
  // The guest is gone (deleted, or its create failed): its volumes are no guest's disk any more,
  // and the ones made with it are deleted. Errors are logged as events, not returned.
  void ReleaseGuest(const std::string& guest, const std::string& tenant);
  // Starts and stops the sweeper: its own thread that deletes again, every 5 s, the volumes made
  // for guests that are gone which the backend refused to delete then (an RBD watch of a crashed
  // host's QEMU lasts up to 30 s). Off the manager's monitor loop, which a Ceph that does not
  // answer would otherwise hold up for its op timeout.
  void Start();
  void Stop();

 private:
  // The backend, opened on first use; kFailedPrecondition when the manager has none configured.
  Result<storage::StorageBackend*> Backend();
  // The backend when its volumes can be guests' disks (Ceph RBD, which every host reaches);
  // kFailedPrecondition naming the backend otherwise.
  Result<storage::StorageBackend*> GuestDiskBackend();
  Result<VolumeRecord> Visible(const Principal& p, std::string_view name);
  // On the local backend, an {image, size_gib} disk is made by the guest's agent on its host: a
  // qcow2 whose backing file is the agent's copy of the image (fetched with ImageForHost); its
  // volume row (backend kHostLocalBackend) counts towards the quota and goes with the guest. A
  // {volume} disk is refused there (those volumes are files on the manager's machine).
  Status AttachHostLocalForCreate(GuestCreate& req);  // requires no lock held
  Result<std::optional<VolumeRecord>> FindVolume(const std::string& key);
  void Sweep();
  // A volume being attached or detached (storage_attach.cc): marked in busy_ while its agent works
  // without mu_, so a second attach or detach of it is refused rather than interleaved.
  Status CheckNotBusy(const std::string& key, std::string_view shown) const;  // requires mu_
  class Busy {
   public:
    Busy(StorageService& s, std::string key, std::unique_lock<std::mutex>& held);  // marks, unlocks
    ~Busy();                                                                       // locks, unmarks
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;

   private:
    StorageService& s_;
    std::string key_;
    std::unique_lock<std::mutex>& held_;
  };
  Result<VolumeRecord> MakeVolume(const std::string& tenant, const std::string& name, const std::string& image,
                                  int64_t size_gib, const std::string& guest);
  Status RemoveVolume(const VolumeRecord& v);
  Status CheckQuota(const std::string& tenant, int64_t more_gib);  // inside a transaction
  Status CopyImage(AgentClient& agent, const std::string& ref);    // one image of CopyBaseImages
  // Grows a local-host volume: its guest's agent grows the disk, and the guest's spec records it.
  Status ResizeHostLocalDisk(const VolumeRecord& v, int64_t size_gib);  // requires mu_
  // An RBD volume `v` (at its new size) grew under its guest: the guest's agent tells its QEMU.
  Status TellGuestOfGrowth(storage::StorageBackend& backend, const VolumeRecord& v);
  void SettleCreating();  // requires backend_mu_
  int64_t NowMs() const;

  Deps d_;
  std::mutex backend_mu_;
  std::unique_ptr<storage::StorageBackend> backend_;  // guarded by backend_mu_ (set once)
  std::mutex copy_mu_;
  std::condition_variable copy_done_;
  std::set<std::string> copying_;  // guarded by copy_mu_: "HOST REF" being copied (one copy of each at a time)
  std::mutex mu_;                  // one catalogue change at a time
  std::set<std::string> busy_;     // guarded by mu_: volumes being attached or detached
  std::mutex sweep_mu_;
  std::condition_variable sweep_cv_;
  bool stopping_ = false;  // guarded by sweep_mu_
  std::thread sweeper_;
};

}  // namespace uw::manager::internal
