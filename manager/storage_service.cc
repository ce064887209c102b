#include "manager/storage_service.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/id.h"
#include "manager/event_log.h"
#include "manager/guest_table.h"
#include "manager/internal.h"

namespace uw::manager::internal {
namespace {

constexpr const char* kVolumeColumns =
    "key, tenant, name, backend, backend_name, image, size_gib, state, guest, delete_with_guest, created_ms";

VolumeRecord VolumeFromRow(const SqlRow& r) {
  return {.key = r.Str("key"),
          .tenant = r.Str("tenant"),
          .name = r.Str("name"),
          .backend = r.Str("backend"),
          .backend_name = r.Str("backend_name"),
          .image = r.Str("image"),
          .size_gib = r.Int("size_gib"),
          .state = r.Str("state"),
          .guest = r.Str("guest"),
          .delete_with_guest = r.Int("delete_with_guest") != 0,
          .created_ms = r.Int("created_ms")};
}

ImageRecord ImageFromRow(const SqlRow& r) {
  return {.name = r.Str("name"),
          .backend = r.Str("backend"),
          .format = r.Str("format"),
          .source = r.Str("source"),
          .size_bytes = r.Int("size_bytes"),
          .used_bytes = r.Int("used_bytes"),
          .created_ms = r.Int("created_ms"),
          .volumes = r.Int("volumes")};
}

constexpr const char* kImageSelect =
    "SELECT i.name, i.backend, i.format, i.source, i.size_bytes, i.used_bytes, i.created_ms, "
    "(SELECT COUNT(*) FROM volumes v WHERE v.image = i.name) AS volumes FROM images i";

// Whether an image source is a URL the manager downloads (else a file on its host).
bool IsHttpUrl(std::string_view source) { return source.starts_with("http://") || source.starts_with("https://"); }

// Downloads `url` into `path` (replaced), within the backend's tool timeout and at most 64 GiB;
// the caller removes the file.
Result<std::string> Download(const std::string& url, const std::string& path, std::chrono::milliseconds timeout) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return InternalError("a file for downloading " + url + " (" + path + "): " + std::strerror(errno));
  FILE* out = fdopen(fd, "wb");
  if (out == nullptr) {
    close(fd);
    unlink(path.c_str());
    return InternalError("a file for downloading " + url + " (" + path + "): " + std::strerror(errno));
  }
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  char err[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, out);
  curl_easy_setopt(curl.get(), CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(curl.get(), CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl.get(), CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(curl.get(), CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(64) << 30);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, err);
  const CURLcode rc = curl_easy_perform(curl.get());
  const bool closed = std::fclose(out) == 0;
  if (rc != CURLE_OK || !closed) {
    unlink(path.c_str());
    const std::string why = rc != CURLE_OK ? (err[0] ? err : curl_easy_strerror(rc)) : "writing the file failed";
    const bool retry =
        rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST;
    return Status(retry ? StatusCode::kUnavailable : StatusCode::kInvalidArgument,
                  "source: downloading " + url + ": " + why);
  }
  return path;
}

// `source` (a file, or an http(s) URL downloaded first to `download`) imported as image `name`.
Result<storage::ImageInfo> ImportFrom(storage::StorageBackend& backend, const std::string& name,
                                      const std::string& source, const std::string& download,
                                      std::chrono::milliseconds timeout) {
  if (!IsHttpUrl(source)) return backend.ImportImage(name, source);
  UW_ASSIGN_OR_RETURN(std::string file, Download(source, download, timeout));
  auto imported = backend.ImportImage(name, file);
  unlink(file.c_str());
  return imported;
}

Status NeedOperator(const Principal& p, std::string_view what) {
  if (p.IsOperator()) return Status::Ok();
  return PermissionDeniedError(std::string(what) + " needs an admin or operator token (this token's role is " +
                               std::string(RoleName(p.role)) + ")");
}

}  // namespace

StorageService::~StorageService() { Stop(); }

void StorageService::Start() {
  sweeper_ = std::thread([this] {
    std::unique_lock l(sweep_mu_);
    while (!sweep_cv_.wait_for(l, std::chrono::seconds(5), [this] { return stopping_; })) {
      l.unlock();
      Sweep();
      l.lock();
    }
  });
}

void StorageService::Stop() {
  {
    std::lock_guard l(sweep_mu_);
    stopping_ = true;
  }
  sweep_cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
}

int64_t StorageService::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d_.clock.Now().time_since_epoch()).count();
}

Result<storage::StorageBackend*> StorageService::Backend() {
  std::lock_guard l(backend_mu_);
  if (backend_) return backend_.get();
  const std::string& kind = d_.config.storage_backend;
  if (kind.empty()) {
    return FailedPreconditionError(
        "this manager has no storage backend: set \"storage\": {\"rbd\": {...}} in its configuration "
        "(manager/README.md)");
  }
  auto opened = kind == "rbd" ? storage::OpenRbdBackend(d_.config.storage_rbd)
                              : storage::OpenLocalBackend(d_.config.storage_local);
  if (!opened.ok()) return opened.status().WithContext("opening the storage backend");
  backend_ = std::move(*opened);
  spdlog::info("storage: {}", backend_->Describe());
  SettleCreating();
  return backend_.get();
}

void StorageService::SettleCreating() {
  // Volumes whose create a killed manager left half-way: the backend says whether they were made.
  auto rows = d_.store.Query(std::string("SELECT ") + kVolumeColumns + " FROM volumes WHERE state = 'creating'");
  if (!rows.ok()) {
    spdlog::warn("storage: reading volumes being created: {}", rows.status().ToString());
    return;
  }
  for (const SqlRow& r : *rows) {
    VolumeRecord v = VolumeFromRow(r);
    auto there = backend_->GetVolume(v.backend_name);
    Status s = Status::Ok();
    if (there.ok()) {
      s = d_.store.Exec("UPDATE volumes SET state = 'ready' WHERE key = ?", {v.key});
    } else if (there.status().code() == StatusCode::kNotFound) {
      s = d_.store.Exec("DELETE FROM volumes WHERE key = ?", {v.key});
    } else {
      s = there.status();
    }
    spdlog::info("storage: volume {} left being created: {}", v.key,
                 s.ok() ? (there.ok() ? "it was made" : "it was not made, forgotten") : s.ToString());
  }
}

// ---- images ----

Result<Page<ImageRecord>> StorageService::ListImages(const Principal& p, const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(RowPage rows, PageByKey(d_.store, kImageSelect, "images", "i.name", "name", {}, page));
  Page<ImageRecord> out;
  out.items.reserve(rows.rows.size());
  for (const SqlRow& r : rows.rows) out.items.push_back(ImageFromRow(r));
  out.total = rows.total;
  out.next = rows.next;
  return out;
}

Result<ImageRecord> StorageService::GetImage(const Principal& p, std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, d_.store.QueryOne(std::string(kImageSelect) + " WHERE i.name = ?", {std::string(name)},
                                                  "image '" + std::string(name) + "' not found"));
  return ImageFromRow(r);
}

Result<Task> StorageService::StartImport(const Principal& p, const ImageImport& req) {
  UW_RETURN_IF_ERROR(NeedOperator(p, "importing an image"));
  UW_RETURN_IF_ERROR(storage::ValidateName("image", req.name));
  std::error_code ec;
  if (!IsHttpUrl(req.source) && !std::filesystem::is_regular_file(req.source, ec)) {
    return NotFoundError("source: no file " + req.source + " on the manager's host");
  }
  UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, Backend());
  // A name the backend holds outside the catalogue is not taken over.
  auto on_backend = backend->GetImage(req.name);
  if (on_backend.ok()) {
    return AlreadyExistsError(
        backend->Describe() + ": image '" + req.name +
        "' exists already (not in the catalogue: delete it on the backend or choose another name)");
  }
  if (on_backend.status().code() != StatusCode::kNotFound) return on_backend.status();
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(auto rows, d_.store.Query("SELECT name FROM images WHERE name = ?", {req.name}));
  if (!rows.empty()) return AlreadyExistsError("image '" + req.name + "' already exists");
  UW_ASSIGN_OR_RETURN(auto running,
                      d_.store.Query("SELECT id FROM tasks WHERE kind = 'image.import' AND subject = ? AND state IN "
                                     "('pending', 'running')",
                                     {req.name}));
  if (!running.empty()) {
    return AlreadyExistsError("image '" + req.name + "' is being imported (task " + running[0].Str("id") + ")");
  }
  return d_.new_task("image.import", req.name, {{"name", req.name}, {"source", req.source}, {"by", p.token_id}});
}

Result<ImageRecord> StorageService::RunImport(const Json& request) {
  const std::string name = request.value("name", ""), source = request.value("source", "");
  UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, Backend());
  {
    std::lock_guard l(mu_);
    UW_ASSIGN_OR_RETURN(auto rows, d_.store.Query("SELECT name FROM images WHERE name = ?", {name}));
    if (!rows.empty()) return GetImage(Principal{}, name);  // recorded by a run cut short after it
  }
  // A run cut short by a restart may have finished on the backend: images appear under their name
  // only when complete, so such an image is this import's.
  Result<storage::ImageInfo> imported = backend->GetImage(name);
  const bool adopted = imported.ok();
  if (!adopted) {
    if (imported.status().code() != StatusCode::kNotFound) return imported.status();
    // Beside the state file, named after the image: a run cut short by a kill leaves at most this
    // file, which the task's next run replaces.
    std::filesystem::path dir = std::filesystem::path(d_.config.db_path).parent_path();
    if (dir.empty() || d_.config.db_path == ":memory:") dir = std::filesystem::temp_directory_path();
    imported = ImportFrom(
        *backend, name, source, (dir / ("uw-image-" + name + ".download")).string(),
        d_.config.storage_backend == "rbd" ? d_.config.storage_rbd.tool_timeout : d_.config.storage_local.tool_timeout);
    if (!imported.ok()) return imported.status();
  }
  std::lock_guard l(mu_);
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(
        d_.store.Exec("INSERT INTO images(name, backend, format, size_bytes, used_bytes, source, created_ms) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)",
                      {name, std::string(backend->Kind()), imported->format, imported->virtual_bytes,
                       imported->used_bytes, source, NowMs()}));
    return d_.events.Add("image.imported", name, "",
                         {{"source", source},
                          {"size_bytes", imported->virtual_bytes},
                          {"by", request.value("by", "")},
                          {"resumed", adopted}});
  }));
  return GetImage(Principal{}, name);
}

Status StorageService::DeleteImage(const Principal& p, std::string_view name) {
  UW_RETURN_IF_ERROR(NeedOperator(p, "deleting an image"));
  UW_ASSIGN_OR_RETURN(ImageRecord img, GetImage(p, name));
  UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, Backend());
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(auto users,
                      d_.store.Query("SELECT key FROM volumes WHERE image = ? ORDER BY key LIMIT 10", {img.name}));
  if (!users.empty()) {
    std::string names;
    for (const SqlRow& r : users) names += (names.empty() ? "" : ", ") + r.Str("key");
    return FailedPreconditionError("image '" + img.name + "' has volumes cloned from it (" + names +
                                   "): delete them first");
  }
  Status s = backend->DeleteImage(img.name);
  if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
  return d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(d_.store.Exec("DELETE FROM images WHERE name = ?", {img.name}));
    return d_.events.Add("image.deleted", img.name, "", {{"by", p.token_id}});
  });
}

// ---- volumes ----

Result<std::optional<VolumeRecord>> StorageService::FindVolume(const std::string& key) {
  UW_ASSIGN_OR_RETURN(auto rows,
                      d_.store.Query(std::string("SELECT ") + kVolumeColumns + " FROM volumes WHERE key = ?", {key}));
  if (rows.empty()) return std::optional<VolumeRecord>();
  return std::optional<VolumeRecord>(VolumeFromRow(rows[0]));
}

Result<VolumeRecord> StorageService::Visible(const Principal& p, std::string_view name) {
  UW_ASSIGN_OR_RETURN(
      SqlRow row, FindTenantObject(d_.store, p, name, std::string("SELECT ") + kVolumeColumns + " FROM volumes", "key",
                                   "name", "volume"));
  return VolumeFromRow(row);
}

Result<Page<VolumeRecord>> StorageService::ListVolumes(const Principal& p, const PageQuery& page) {
  SqlFilter scope;
  if (p.role == Role::kTenant) scope.And("tenant = ?", {p.tenant});
  PageQuery stored = page;  // a tenant's cursor is a short name, its volumes are "<tenant>:<name>"
  stored.after = StoredCursor(p, page.after);
  UW_ASSIGN_OR_RETURN(RowPage rows, PageByKey(d_.store, std::string("SELECT ") + kVolumeColumns + " FROM volumes",
                                              "volumes", "key", "key", scope, stored));
  Page<VolumeRecord> out;
  out.items.reserve(rows.rows.size());
  for (const SqlRow& r : rows.rows) out.items.push_back(VolumeFromRow(r));
  out.total = rows.total;
  if (rows.next) out.next = std::string(ShownGuestName(p, *rows.next));
  return out;
}

Result<VolumeRecord> StorageService::GetVolume(const Principal& p, std::string_view name) { return Visible(p, name); }

Status StorageService::CheckQuota(const std::string& tenant, int64_t more_gib) {
  UW_ASSIGN_OR_RETURN(auto quota, d_.store.Query("SELECT gib FROM storage_quotas WHERE tenant = ?", {tenant}));
  if (quota.empty()) return Status::Ok();
  UW_ASSIGN_OR_RETURN(
      auto used, d_.store.Query("SELECT COALESCE(SUM(size_gib), 0) AS gib FROM volumes WHERE tenant = ?", {tenant}));
  const int64_t limit = quota[0].Int("gib"), have = used[0].Int("gib");
  if (have + more_gib <= limit) return Status::Ok();
  return ResourceExhaustedError("tenant '" + tenant + "' has a storage quota of " + std::to_string(limit) +
                                " GiB and its volumes have " + std::to_string(have) +
                                " GiB: " + std::to_string(more_gib) + " GiB more do not fit");
}

Result<VolumeRecord> StorageService::MakeVolume(const std::string& tenant, const std::string& name,
                                                const std::string& image, int64_t size_gib, const std::string& guest) {
  UW_RETURN_IF_ERROR(ValidateName(name, "volume name"));
  UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, Backend());
  if (!image.empty()) {
    UW_ASSIGN_OR_RETURN(auto img, d_.store.Query("SELECT size_bytes FROM images WHERE name = ?", {image}));
    if (img.empty()) return NotFoundError("image '" + image + "' not found");
    const int64_t image_gib = GiBUp(img[0].Int("size_bytes"));
    if (size_gib == 0) size_gib = image_gib;
    if (size_gib < image_gib) {
      return InvalidArgumentError("size_gib: image '" + image + "' is " + std::to_string(image_gib) +
                                  " GiB; a volume cloned from it is at least that");
    }
  }
  if (size_gib < 1) return InvalidArgumentError("size_gib: an empty volume needs a size (1 GiB or more)");
  VolumeRecord v{.key = GuestKey(tenant, name),
                 .tenant = tenant,
                 .name = name,
                 .backend = std::string(backend->Kind()),
                 .backend_name = NewId("vol"),
                 .image = image,
                 .size_gib = size_gib,
                 .state = "creating",
                 .guest = guest,
                 .delete_with_guest = !guest.empty(),
                 .created_ms = NowMs()};
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(auto taken, d_.store.Query("SELECT key FROM volumes WHERE key = ?", {v.key}));
    if (!taken.empty()) return AlreadyExistsError("volume '" + name + "' already exists: choose another name");
    UW_RETURN_IF_ERROR(CheckQuota(tenant, size_gib));
    return d_.store.Exec(
        "INSERT INTO volumes(key, tenant, name, backend, backend_name, image, size_gib, state, guest, "
        "delete_with_guest, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?)",
        {v.key, tenant, name, v.backend, v.backend_name, image.empty() ? SqlValue(nullptr) : SqlValue(image), size_gib,
         guest.empty() ? SqlValue(nullptr) : SqlValue(guest), int64_t{v.delete_with_guest}, v.created_ms});
  }));
  auto made = backend->CreateVolume({.name = v.backend_name, .size_bytes = size_gib * kGiB, .image = image});
  if (!made.ok()) {
    (void)d_.store.Exec("DELETE FROM volumes WHERE key = ?", {v.key});
    return made.status().WithContext("volume '" + name + "'");
  }
  v.state = "ready";
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(d_.store.Exec("UPDATE volumes SET state = 'ready' WHERE key = ?", {v.key}));
    Json data = {{"size_gib", size_gib}, {"backend_name", v.backend_name}};
    if (!image.empty()) data["image"] = image;
    if (!guest.empty()) data["guest"] = guest;
    return d_.events.Add("volume.created", v.key, tenant, data);
  }));
  return v;
}

Result<VolumeRecord> StorageService::CreateVolume(const Principal& p, const VolumeCreate& req) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  std::string tenant = req.tenant;
  if (p.role == Role::kTenant) {
    if (!tenant.empty() && tenant != p.tenant) {
      return PermissionDeniedError("tenant: a tenant token may only create volumes for its own tenant '" + p.tenant +
                                   "'");
    }
    tenant = p.tenant;
  }
  std::lock_guard l(mu_);
  return MakeVolume(tenant, req.name, req.image, req.size_gib, "");
}

Result<VolumeRecord> StorageService::ResizeVolume(const Principal& p, std::string_view name, int64_t size_gib) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, Backend());
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(VolumeRecord v, Visible(p, name));
  const std::string shown(ShownGuestName(p, v.key));
  if (v.state != "ready") return FailedPreconditionError("volume '" + shown + "' is still being created");
  if (size_gib < v.size_gib) {
    return InvalidArgumentError("size_gib: volume '" + shown + "' is " + std::to_string(v.size_gib) +
                                " GiB and a resize only grows it");
  }
  if (size_gib == v.size_gib) return v;
  UW_RETURN_IF_ERROR(d_.store.Transact([&] { return CheckQuota(v.tenant, size_gib - v.size_gib); }));
  if (v.backend == kHostLocalBackend) {
    UW_RETURN_IF_ERROR(ResizeHostLocalDisk(v, size_gib).WithContext("volume '" + shown + "'"));
  } else {
    UW_RETURN_IF_ERROR(
        backend->ResizeVolume(v.backend_name, size_gib * kGiB).status().WithContext("volume '" + shown + "'"));
  }
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(d_.store.Exec("UPDATE volumes SET size_gib = ? WHERE key = ?", {size_gib, v.key}));
    return d_.events.Add("volume.resized", v.key, v.tenant, {{"from_gib", v.size_gib}, {"size_gib", size_gib}});
  }));
  v.size_gib = size_gib;
  if (v.backend != kHostLocalBackend && !v.guest.empty()) {
    // The image is bigger; the guest's QEMU still has the old size until it is told (or restarts).
    if (Status told = TellGuestOfGrowth(*backend, v); !told.ok()) {
      spdlog::warn("storage: volume {} grew, but its guest {} does not see it yet: {}", v.key, v.guest,
                   told.ToString());
      (void)d_.events.Add("volume.resize_unseen", v.key, v.tenant,
                          {{"guest", v.guest}, {"size_gib", size_gib}, {"error", told.ToString()}});
    }
  }
  return v;
}

Status StorageService::TellGuestOfGrowth(storage::StorageBackend& backend, const VolumeRecord& v) {
  UW_ASSIGN_OR_RETURN(Guest g, d_.guests.Get(v.guest));
  if (!g.host) return Status::Ok();  // on no host: it sees the size when it starts
  UW_ASSIGN_OR_RETURN(storage::DiskSource src, backend.Disk(v.backend_name));
  auto agent = d_.agent_of(*g.host);
  UW_ASSIGN_OR_RETURN(AgentGuest there, agent->Get(g.name));
  for (const AttachedDisk& d : there.disks) {
    if (d.rbd == src.name) return agent->ResizeDisk(g.name, d.target, v.size_gib * 1024).status();
  }
  return Status::Ok();  // not plugged in there (yet): it opens the image at its new size
}

Status StorageService::RemoveVolume(const VolumeRecord& v) {
  // A disk on its guest's host went with the guest: the agent deletes a guest's local disks.
  if (v.backend != kHostLocalBackend) {
    UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, Backend());
    Status s = backend->DeleteVolume(v.backend_name);
    if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
  }
  return d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(d_.store.Exec("DELETE FROM volumes WHERE key = ?", {v.key}));
    return d_.events.Add("volume.deleted", v.key, v.tenant, {{"backend_name", v.backend_name}});
  });
}

Status StorageService::DeleteVolume(const Principal& p, std::string_view name) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(VolumeRecord v, Visible(p, name));
  const std::string shown(ShownGuestName(p, v.key));
  if (!v.guest.empty()) {
    return FailedPreconditionError("volume '" + shown + "' is a disk of guest '" +
                                   std::string(ShownGuestName(p, v.guest)) + "': detach it or delete the guest first");
  }
  if (v.state != "ready") return FailedPreconditionError("volume '" + shown + "' is still being created");
  return RemoveVolume(v).WithContext("volume '" + shown + "'");
}

// ---- quotas ----

Result<std::vector<StorageQuota>> StorageService::ListQuotas(const Principal& p) {
  std::string sql =
      "SELECT t.tenant, q.gib, (SELECT COALESCE(SUM(size_gib), 0) FROM volumes v WHERE v.tenant = t.tenant) AS used "
      "FROM (SELECT tenant FROM storage_quotas UNION SELECT tenant FROM volumes WHERE tenant != '') t "
      "LEFT JOIN storage_quotas q ON q.tenant = t.tenant";
  std::vector<SqlValue> args;
  if (p.role == Role::kTenant) {
    sql += " WHERE t.tenant = ?";
    args.emplace_back(p.tenant);
  }
  UW_ASSIGN_OR_RETURN(auto rows, d_.store.Query(sql + " ORDER BY t.tenant", args));
  std::vector<StorageQuota> out;
  for (const SqlRow& r : rows) {
    out.push_back(
        {r.Str("tenant"), r.IsNull("gib") ? std::nullopt : std::optional<int64_t>(r.Int("gib")), r.Int("used")});
  }
  if (out.empty() && p.role == Role::kTenant) out.push_back({p.tenant, std::nullopt, 0});
  return out;
}

Result<StorageQuota> StorageService::SetQuota(const Principal& p, std::string_view tenant, std::optional<int64_t> gib) {
  UW_RETURN_IF_ERROR(NeedOperator(p, "setting a storage quota"));
  UW_RETURN_IF_ERROR(ValidateName(tenant, "tenant"));
  const std::string t(tenant);
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    if (gib) {
      // A quota below what the tenant has is allowed: it only stops new volumes and growth.
      UW_RETURN_IF_ERROR(d_.store.Exec(
          "INSERT INTO storage_quotas(tenant, gib, updated_ms) VALUES (?, ?, ?) ON CONFLICT(tenant) DO UPDATE SET "
          "gib = excluded.gib, updated_ms = excluded.updated_ms",
          {t, *gib, NowMs()}));
    } else {
      UW_RETURN_IF_ERROR(d_.store.Exec("DELETE FROM storage_quotas WHERE tenant = ?", {t}));
    }
    return d_.events.Add("storage.quota_set", t, t, {{"gib", gib ? Json(*gib) : Json(nullptr)}});
  }));
  Principal as_tenant = p;
  as_tenant.role = Role::kTenant;
  as_tenant.tenant = t;
  UW_ASSIGN_OR_RETURN(auto quotas, ListQuotas(as_tenant));
  return quotas.at(0);
}

Result<StorageInfo> StorageService::Info(const Principal& p) {
  StorageInfo out;
  if (d_.config.storage_backend.empty()) return out;
  UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, Backend());
  out.backend = std::string(backend->Kind());
  out.describe = backend->Describe();
  UW_ASSIGN_OR_RETURN(out.capacity, backend->GetCapacity());
  return out;
}

// ---- guests' disks ----

Result<storage::StorageBackend*> StorageService::GuestDiskBackend() {
  UW_ASSIGN_OR_RETURN(storage::StorageBackend * backend, Backend());
  if (backend->Kind() == "rbd") return backend;
  return FailedPreconditionError(
      "volumes on the " + std::string(backend->Kind()) +
      " backend cannot be a guest's disks (only Ceph RBD volumes, which every host reaches)");
}

Status StorageService::AttachForCreate(GuestCreate& req) {
  if (req.catalogue_disks.empty()) return Status::Ok();
  if (auto b = Backend(); b.ok() && (*b)->Kind() == "local") return AttachHostLocalForCreate(req);
  auto guest_disks = GuestDiskBackend();
  if (!guest_disks.ok()) return guest_disks.status().WithContext("disks");
  storage::StorageBackend* backend = *guest_disks;
  const std::string short_name(req.name.substr(req.tenant.empty() ? 0 : req.tenant.size() + 1));
  std::lock_guard l(mu_);
  std::vector<VolumeRecord> attached;
  auto undo = [&] {
    for (const VolumeRecord& v : attached) {
      if (v.delete_with_guest) {
        (void)RemoveVolume(v);
      } else {
        (void)d_.store.Exec("UPDATE volumes SET guest = NULL WHERE key = ?", {v.key});
      }
    }
  };
  Status s = [&]() -> Status {
    for (const GuestCreate::CatalogueDisk& cd : req.catalogue_disks) {
      const std::string at = "disks[" + std::to_string(cd.index) + "]";
      VolumeRecord v;
      if (!cd.volume.empty()) {
        // mu_ serializes every change of a volume's guest: what is read here stays true.
        UW_ASSIGN_OR_RETURN(std::optional<VolumeRecord> found, FindVolume(GuestKey(req.tenant, cd.volume)));
        if (!found) return NotFoundError(at + ".volume: volume '" + cd.volume + "' not found");
        v = std::move(*found);
        if (v.state != "ready") return FailedPreconditionError(at + ".volume: '" + cd.volume + "' is being created");
        if (v.delete_with_guest) {
          return FailedPreconditionError(at + ".volume: '" + cd.volume +
                                         "' is being deleted (it was a disk of a deleted guest)");
        }
        if (!v.guest.empty()) {
          return FailedPreconditionError(at + ".volume: '" + cd.volume + "' is a disk of guest '" + v.guest +
                                         "' already");
        }
        UW_RETURN_IF_ERROR(d_.store.Exec("UPDATE volumes SET guest = ? WHERE key = ?", {req.name, v.key}));
        v.guest = req.name;
      } else {
        auto made =
            MakeVolume(req.tenant, short_name + "-disk" + std::to_string(cd.index), cd.image, cd.size_gib, req.name);
        if (!made.ok()) return made.status().WithContext(at);
        v = std::move(*made);
      }
      attached.push_back(v);
      UW_ASSIGN_OR_RETURN(storage::DiskSource src, backend->Disk(v.backend_name));
      Json disk = {{"rbd", src.name}};
      if (!cd.target.empty()) disk["target"] = cd.target;
      req.agent_spec["disks"][cd.index] = disk;
    }
    return Status::Ok();
  }();
  if (!s.ok()) undo();
  return s;
}

void StorageService::ReleaseGuest(const std::string& guest, const std::string& tenant) {
  std::lock_guard l(mu_);
  auto rows =
      d_.store.Query(std::string("SELECT ") + kVolumeColumns + " FROM volumes WHERE guest = ? ORDER BY key", {guest});
  if (!rows.ok()) {
    spdlog::warn("storage: the volumes of guest {}: {}", guest, rows.status().ToString());
    return;
  }
  for (const SqlRow& r : *rows) {
    VolumeRecord v = VolumeFromRow(r);
    Status s =
        v.delete_with_guest ? RemoveVolume(v) : d_.store.Exec("UPDATE volumes SET guest = NULL WHERE key = ?", {v.key});
    if (!s.ok()) {
      // No guest's any more, still to be deleted: Sweep tries again.
      (void)d_.store.Exec("UPDATE volumes SET guest = NULL WHERE key = ?", {v.key});
      (void)d_.events.Add("volume.release_failed", v.key, v.tenant,
                          {{"guest", guest}, {"error", s.ToString()}, {"retry", v.delete_with_guest}});
    }
  }
}

void StorageService::Sweep() {
  std::lock_guard l(mu_);
  auto rows = d_.store.Query(std::string("SELECT ") + kVolumeColumns +
                             " FROM volumes WHERE guest IS NULL AND delete_with_guest = 1 AND state = 'ready' "
                             "ORDER BY key LIMIT 20");
  if (!rows.ok() || rows->empty()) return;
  for (const SqlRow& r : *rows) {
    const VolumeRecord v = VolumeFromRow(r);
    if (Status s = RemoveVolume(v); !s.ok())
      spdlog::debug("storage: volume {} still not deleted: {}", v.key, s.ToString());
  }
}

}  // namespace uw::manager::internal
