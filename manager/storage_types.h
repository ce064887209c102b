// The storage catalogue's public types (manager/storage_service.h has the service): part of the
// public header manager/manager.h, which includes it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/json.h"
#include "common/status.h"
#include "storage/storage.h"

namespace uw::manager {

// The storage catalogue (manager/storage_service.h). An image is the cluster's (operators import
// it); a volume is a tenant's, named uniquely per tenant, and lives on the backend under
// `backend_name`.
struct ImageRecord {
  std::string name, backend, format, source;
  int64_t size_bytes = 0, used_bytes = 0;
  int64_t created_ms = 0;
  int64_t volumes = 0;  // volumes cloned from it
};
struct VolumeRecord {
  std::string key;  // "<tenant>:<name>" ("<name>" without a tenant)
  std::string tenant, name, backend, backend_name;
  std::string image;  // "" for an empty volume
  int64_t size_gib = 0;
  std::string state = "ready";  // creating | ready
  std::string guest;            // "" unless it is a guest's disk (the guest's key)
  bool delete_with_guest = false;
  int64_t created_ms = 0;
};
// POST /api/v1/images: {"name", "source": an absolute path on the manager's host or an http(s) URL}.
struct ImageImport {
  std::string name, source;
};
// POST /api/v1/volumes: {"name", "size_gib" (optional with an image: its size), "image", "tenant"}.
struct VolumeCreate {
  std::string name, tenant, image;
  int64_t size_gib = 0;  // 0: the image's size, rounded up to a GiB
};
// A tenant's storage quota (GET/PUT /api/v1/storage/quotas): the most GiB its volumes may have.
struct StorageQuota {
  std::string tenant;
  std::optional<int64_t> gib;  // nullopt: unlimited
  int64_t used_gib = 0;
};
struct StorageInfo {
  std::string backend;  // "" when the manager has none
  std::string describe;
  storage::Capacity capacity;
};
Result<ImageImport> ParseImageImport(const Json& body);
Result<VolumeCreate> ParseVolumeCreate(const Json& body);
// POST /api/v1/volumes/{name}/resize: {"size_gib": N}.
Result<int64_t> ParseVolumeResize(const Json& body);
// PUT /api/v1/storage/quotas/{tenant}: {"gib": N or null}.
Result<std::optional<int64_t>> ParseStorageQuota(const Json& body);

}  // namespace uw::manager
