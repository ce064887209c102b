#include "manager/auth.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>

#include "common/id.h"
#include "common/json.h"
#include "manager/event_log.h"

namespace uw::manager {

std::string_view RoleName(Role r) {
  switch (r) {
    case Role::kAdmin:
      return "admin";
    case Role::kOperator:
      return "operator";
    case Role::kTenant:
      return "tenant";
    case Role::kBillingReader:
      return "billing-reader";
    case Role::kReadOnly:
      return "read-only";
  }
  return "?";
}

Result<Role> ParseRole(std::string_view name) {
  if (name == "admin") return Role::kAdmin;
  if (name == "operator") return Role::kOperator;
  if (name == "tenant") return Role::kTenant;
  if (name == "billing-reader") return Role::kBillingReader;
  if (name == "read-only") return Role::kReadOnly;
  return InvalidArgumentError("role: expected admin, operator, tenant, billing-reader or read-only, got '" +
                              std::string(name) + "'");
}

std::string Sha256Hex(std::string_view text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(text.data(), text.size(), md, &n, EVP_sha256(), nullptr);
  std::string out;
  char buf[3];
  for (unsigned i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", md[i]);
    out += buf;
  }
  return out;
}

Status ValidateRight(std::string_view name, std::string_view field) {
  for (std::string_view r : kSpecRights) {
    if (r == name) return Status::Ok();
  }
  std::string all;
  for (std::string_view r : kSpecRights) all += (all.empty() ? "" : ", ") + std::string(r);
  return InvalidArgumentError(std::string(field) + ": unknown right '" + std::string(name) + "' (rights: " + all + ")");
}

namespace internal {
namespace {

// A token row's rights column (a JSON array of names; null for tokens without rights).
std::vector<std::string> StoredRights(const SqlRow& r) {
  std::vector<std::string> out;
  const Json rights = r.JsonOf("rights");
  if (!rights.is_array()) return out;
  for (const auto& right : rights) {
    if (right.is_string()) out.push_back(right.get<std::string>());
  }
  return out;
}

}  // namespace

TokenRegistry::TokenRegistry(Store& store, EventLog& events, Clock& clock)
    : store_(store), events_(events), clock_(clock) {}

int64_t TokenRegistry::NowMs() const { return ToUnixMillis(clock_.Now()); }

Status TokenRegistry::Load(std::string_view bootstrap_admin_token) {
  // The bootstrap admin token (replaced when the configured one changes).
  UW_RETURN_IF_ERROR(store_.Exec(
      "INSERT INTO api_tokens(id, name, role, tenant, token_hash, created_ms) VALUES ('bootstrap-admin', "
      "'bootstrap admin (config)', 'admin', '', ?, ?) ON CONFLICT(id) DO UPDATE SET token_hash = excluded.token_hash",
      {Sha256Hex(bootstrap_admin_token), NowMs()}));
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT id, role, tenant, token_hash, rights FROM api_tokens"));
  std::lock_guard l(mu_);
  by_hash_.clear();
  for (const auto& r : rows) {
    auto role = ParseRole(r.Str("role"));
    if (!role.ok()) continue;
    Principal p{r.Str("id"), *role, r.Str("tenant"), {}};
    for (std::string& right : StoredRights(r)) {
      if (ValidateRight(right, "rights").ok()) p.rights.insert(std::move(right));
    }
    by_hash_[r.Str("token_hash")] = std::move(p);
  }
  return Status::Ok();
}

Result<Principal> TokenRegistry::Authenticate(std::string_view bearer_token) const {
  if (bearer_token.empty()) {
    return UnauthenticatedError(
        "missing bearer token: send 'Authorization: Bearer <token>' (uwctl: --token or UW_TOKEN)");
  }
  std::lock_guard l(mu_);
  auto it = by_hash_.find(Sha256Hex(bearer_token));
  if (it == by_hash_.end()) return UnauthenticatedError("unknown or revoked API token");
  return it->second;
}

Result<NewToken> TokenRegistry::Create(std::string_view name, Role role, std::string_view tenant,
                                       const std::vector<std::string>& rights) {
  if (name.empty()) return InvalidArgumentError("name: must not be empty");
  if (name.size() > 128) {
    return InvalidArgumentError("name: expected at most 128 characters, got " + std::to_string(name.size()));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) return InvalidArgumentError("name: control characters are not allowed");
  }
  std::set<std::string, std::less<>> granted;
  for (size_t i = 0; i < rights.size(); ++i) {
    UW_RETURN_IF_ERROR(ValidateRight(rights[i], "rights[" + std::to_string(i) + "]"));
    granted.insert(rights[i]);
  }
  if (!granted.empty() && (role == Role::kAdmin || role == Role::kOperator)) {
    return InvalidArgumentError("rights: admin and operator tokens hold every right already");
  }
  if (!granted.empty() && (role == Role::kBillingReader || role == Role::kReadOnly)) {
    return InvalidArgumentError("rights: a " + std::string(RoleName(role)) + " token cannot create guests");
  }
  const Json rights_json(std::vector<std::string>(granted.begin(), granted.end()));
  if (role == Role::kTenant) {
    if (tenant.empty()) return InvalidArgumentError("tenant: required for a tenant token");
    UW_RETURN_IF_ERROR(ValidateName(tenant, "tenant"));
  } else if (!tenant.empty()) {
    return InvalidArgumentError("tenant: only tenant tokens belong to a tenant");
  }
  std::string id = NewId("tok");
  std::string token = "uw_" + NewUuid() + NewUuid();
  token.erase(std::remove(token.begin(), token.end(), '-'), token.end());
  std::string hash = Sha256Hex(token);
  const int64_t now = NowMs();
  UW_RETURN_IF_ERROR(store_.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_.Exec(
        "INSERT INTO api_tokens(id, name, role, tenant, token_hash, created_ms, rights) VALUES (?, ?, ?, ?, ?, ?, ?)",
        {id, std::string(name), std::string(RoleName(role)), std::string(tenant), hash, now, rights_json.dump()}));
    return events_.Add("token.created", id, "",
                       {{"name", name}, {"role", RoleName(role)}, {"tenant", tenant}, {"rights", rights_json}});
  }));
  {
    std::lock_guard l(mu_);
    by_hash_[hash] = Principal{id, role, std::string(tenant), granted};
  }
  NewToken made{TokenInfo{id, std::string(name), role, std::string(tenant), {granted.begin(), granted.end()}, now},
                std::move(token)};
  return made;
}

Result<std::vector<TokenInfo>> TokenRegistry::List() const {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT * FROM api_tokens ORDER BY created_ms, rowid"));
  std::vector<TokenInfo> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    auto role = ParseRole(r.Str("role"));
    if (!role.ok()) return role.status().WithContext("token " + r.Str("id"));
    out.push_back(TokenInfo{r.Str("id"), r.Str("name"), *role, r.Str("tenant"), StoredRights(r), r.Int("created_ms")});
  }
  return out;
}

Status TokenRegistry::Delete(std::string_view id) {
  if (id == "bootstrap-admin") {
    return FailedPreconditionError("the bootstrap admin token comes from the config file; change admin_token there");
  }
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT token_hash FROM api_tokens WHERE id = ?", {std::string(id)},
                                                "token '" + std::string(id) + "' not found"));
  UW_RETURN_IF_ERROR(store_.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_.Exec("DELETE FROM api_tokens WHERE id = ?", {std::string(id)}));
    return events_.Add("token.revoked", id, "", Json::object());
  }));
  std::lock_guard l(mu_);
  by_hash_.erase(r.Str("token_hash"));
  return Status::Ok();
}

}  // namespace internal
}  // namespace uw::manager
