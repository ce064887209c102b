// Private to manager/: small helpers shared by manager.cc and migrations.cc.
#pragma once

#include <string>
#include <string_view>

#include "common/json.h"
#include "common/status.h"
#include "manager/manager.h"

namespace uw::manager::internal {

inline constexpr int kMaxTaskAttempts = 3;

inline bool IsFinal(std::string_view state) {
  return state == "succeeded" || state == "failed" || state == "cancelled";
}

inline std::string Dump(const Json& j) { return j.dump(); }

// {"key": list} without copying the list (an initializer list would copy it).
inline Json Wrap(const char* key, Json list) {
  Json out = Json::object();
  out[key] = std::move(list);
  return out;
}

// The name `p` knows guest `key` by: a tenant sees its guests by their short names ("acme:web1" is
// "web1"); everyone else sees the full name.
inline std::string_view ShownGuestName(const Principal& p, std::string_view key) {
  if (p.role != Role::kTenant || key.size() <= p.tenant.size() + 1 || key.compare(0, p.tenant.size(), p.tenant) != 0 ||
      key[p.tenant.size()] != ':') {
    return key;
  }
  return key.substr(p.tenant.size() + 1);
}

inline Status NeedWrite(const Principal& p) {
  if (p.CanWrite()) return Status::Ok();
  return PermissionDeniedError("this token's role (" + std::string(RoleName(p.role)) + ") is read-only");
}

}  // namespace uw::manager::internal
