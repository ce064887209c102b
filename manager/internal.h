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

// A guest's cluster-wide name: a tenant's guest "web1" is "acme:web1" (names are unique per tenant).
inline std::string GuestKey(const std::string& tenant, const std::string& name) {
  return tenant.empty() ? name : tenant + ":" + name;
}

// Tenants see their guests by their short names: strips "<tenant>:" from the guest-naming fields
// of `j` (name, subject, guest, and data.subject / data.guest of events). A no-op for other roles.
inline void ShowShortNames(const Principal& p, Json& j) {
  if (p.role != Role::kTenant || !j.is_object()) return;
  auto strip = [&](Json& o, const char* field) {
    auto it = o.find(field);
    if (it == o.end() || !it->is_string()) return;
    const std::string& v = it->get_ref<const std::string&>();
    if (std::string_view shown = ShownGuestName(p, v); shown.size() != v.size()) *it = std::string(shown);
  };
  for (const char* f : {"name", "subject", "guest"}) strip(j, f);
  if (auto d = j.find("data"); d != j.end() && d->is_object()) {
    for (const char* f : {"subject", "guest"}) strip(*d, f);
  }
}

inline Status NeedWrite(const Principal& p) {
  if (p.CanWrite()) return Status::Ok();
  return PermissionDeniedError("this token's role (" + std::string(RoleName(p.role)) + ") is read-only");
}

}  // namespace uw::manager::internal
