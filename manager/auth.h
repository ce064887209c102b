// Who may call the manager: roles, principals, API tokens. The token registry owns the api_tokens
// table and the in-memory index that authenticates every request without touching the store.
//
//   bearer token --SHA-256--> index (by hash) --> Principal {token id, role, tenant, rights}
//
// Tokens are stored hashed; the secret is shown once, by Create. Thread safety: every method may
// be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "manager/store.h"

namespace uw::manager {

// admin: everything; operator: the cluster (not tokens); read-only: reads the cluster, changes
// nothing; tenant: its own guests, tasks and events; billing-reader: reads, for billing.
enum class Role { kAdmin, kOperator, kTenant, kBillingReader, kReadOnly };
std::string_view RoleName(Role r);
Result<Role> ParseRole(std::string_view name);

// Rights on guest spec fields beyond the basics (name, kind, sizes, image, labels, user-mode NICs,
// local disks, lease class, on_crash). Admin and operator tokens hold them all; an admin grants
// them to other tokens one by one (POST /api/v1/tokens {"rights": [...]}).
//   host_paths  boot.kernel / boot.initrd (files on the host)
//   bridges     NICs of type bridge or ovs (a host bridge by name)
//   vlans       a NIC's VLAN tag
//   cpu_tuning  cpu.shares / cpu.quota_us / cpu.period_us
//   pools       creating into a resource pool
//   automation  a DRS automation level other than default (disabled pins a guest)
// rbd_images: a disk that names a Ceph RBD image directly ({"rbd": "POOL/IMAGE"}), any image in the
// cluster's pool: an operator's tool until the manager's volume catalogue gives tenants their own.
inline constexpr std::string_view kSpecRights[] = {"host_paths", "bridges",    "vlans",     "cpu_tuning",
                                                   "pools",      "automation", "rbd_images"};
// kInvalidArgument naming `field` unless `name` is one of kSpecRights.
Status ValidateRight(std::string_view name, std::string_view field);

// Who is calling, as established from the bearer token.
struct Principal {
  std::string token_id;
  Role role = Role::kTenant;
  std::string tenant;                         // set for kTenant only
  std::set<std::string, std::less<>> rights;  // granted spec rights (see kSpecRights)
  bool CanWrite() const { return role == Role::kAdmin || role == Role::kOperator || role == Role::kTenant; }
  bool IsOperator() const { return role == Role::kAdmin || role == Role::kOperator; }
  bool Holds(std::string_view right) const { return IsOperator() || rights.count(right) > 0; }
};

// SHA-256 of `text` as lower-case hex (tokens are stored hashed).
std::string Sha256Hex(std::string_view text);

// An API token as listed (never its secret).
struct TokenInfo {
  std::string id;
  std::string name;
  Role role = Role::kTenant;
  std::string tenant;
  std::vector<std::string> rights;  // sorted
  int64_t created_ms = 0;
};
// A token just made: its secret is shown only here.
struct NewToken {
  TokenInfo info;
  std::string token;
};

namespace internal {

class EventLog;

class TokenRegistry {
 public:
  TokenRegistry(Store& store, EventLog& events, Clock& clock);
  // Installs the bootstrap admin token (id bootstrap-admin; its hash replaced when the configured
  // secret changes) and loads every stored token into the index.
  Status Load(std::string_view bootstrap_admin_token);
  // kUnauthenticated for a missing or unknown token.
  Result<Principal> Authenticate(std::string_view bearer_token) const;
  // Names are 1..128 characters without control characters; rights are kSpecRights names, for
  // tenant tokens only; a tenant token names a valid tenant. kInvalidArgument naming the field.
  Result<NewToken> Create(std::string_view name, Role role, std::string_view tenant,
                          const std::vector<std::string>& rights);
  // Oldest first.
  Result<std::vector<TokenInfo>> List() const;
  // kNotFound; kFailedPrecondition for the bootstrap token (it comes from the config file).
  Status Delete(std::string_view id);

 private:
  int64_t NowMs() const;

  Store& store_;
  EventLog& events_;
  Clock& clock_;
  mutable std::mutex mu_;
  std::map<std::string, Principal, std::less<>> by_hash_;  // guarded by mu_
};

}  // namespace internal
}  // namespace uw::manager
