// Private to manager/: small helpers shared by manager.cc and migrations.cc.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"

namespace uw::manager::internal {

inline std::string Dump(const Json& j) { return j.dump(); }

// A page of a list (see PageQuery): {"<key>": items, "next": next or null, "total": total}.
Json PageJson(const char* key, Json items, int64_t total, const std::optional<std::string>& next);

// SQLite's LIMIT for a page: one more than asked, to learn whether a next page exists (-1: all).
inline int64_t FetchLimit(const PageQuery& page) { return page.limit > 0 ? page.limit + 1 : -1; }

// A WHERE clause built from conditions, with its parameters.
struct SqlFilter {
  std::string where;  // "" or " WHERE ... AND ..."
  std::vector<SqlValue> params;
  void And(std::string_view condition, std::vector<SqlValue> values = {}) {
    where += where.empty() ? " WHERE " : " AND ";
    where += condition;
    for (auto& v : values) params.push_back(std::move(v));
  }
};

// One page of rows, with the count of all rows in scope and the key that starts the next page.
struct RowPage {
  std::vector<SqlRow> rows;
  int64_t total = 0;
  std::optional<std::string> next;
};
// Rows of `select` ("SELECT ... FROM table [alias]") in `scope`, ordered by the text column
// `key` (unique; "h.name"), after page.after. next is the last row's `key_name` column.
Result<RowPage> PageByKey(Store& store, std::string_view select, std::string_view table, std::string_view key,
                          std::string_view key_name, const SqlFilter& scope, const PageQuery& page);
// Rows of `table` in `scope`, newest first (created_ms, then rowid, descending), after the row
// whose `id` is page.after (kInvalidArgument when no row in scope has it). next is an id.
Result<RowPage> PageNewestFirst(Store& store, std::string_view table, const SqlFilter& scope, const PageQuery& page);

// The row of a catalogue object kept per tenant (a volume, a network) that `p` names `name`: for a
// tenant its own ("web" or "acme:web"); for others the full name, or a short name that names one
// tenant's object. `select` is "SELECT ... FROM table [alias]" and `key`, `name_column` its
// columns ("n.key", "n.name"). kNotFound "<what> 'NAME' not found" (another tenant's too);
// kFailedPrecondition listing them for a short name of several tenants' objects.
Result<SqlRow> FindTenantObject(Store& store, const Principal& p, std::string_view name, std::string_view select,
                                std::string_view key, std::string_view name_column, std::string_view what);

// kInvalidArgument: a page's `after` names no item of the list.
Status UnknownCursor(const std::string& after);

// Pages a short list held in memory, in its order. With `by_key` the list is sorted by key and
// the page starts at the first key above `after`; otherwise it starts after the item whose key is
// `after` (UnknownCursor when there is none). `key_of(item)` is the item's key.
template <class T, class KeyOf>
Result<Page<T>> PageList(std::vector<T> items, const PageQuery& page, KeyOf key_of, bool by_key) {
  Page<T> out;
  out.total = static_cast<int64_t>(items.size());
  size_t from = 0;
  if (!page.after.empty()) {
    if (by_key) {
      while (from < items.size() && key_of(items[from]) <= page.after) ++from;
    } else {
      while (from < items.size() && key_of(items[from]) != page.after) ++from;
      if (from == items.size()) return UnknownCursor(page.after);
      ++from;
    }
  }
  size_t to = items.size();
  if (page.limit > 0 && to - from > static_cast<size_t>(page.limit)) to = from + static_cast<size_t>(page.limit);
  out.items.reserve(to - from);
  for (size_t i = from; i < to; ++i) out.items.push_back(std::move(items[i]));
  if (to < items.size()) out.next = std::string(key_of(out.items.back()));
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

// What a tenant names by `name`: its short name ("web1" and "acme:web1" are both acme's "web1"), or
// nullopt for another tenant's full name (which a tenant never sees: not found).
inline std::optional<std::string> TenantShortName(const Principal& p, std::string_view name) {
  const size_t colon = name.find(':');
  if (colon == std::string_view::npos) return std::string(name);
  if (colon != p.tenant.size() || name.compare(0, colon, p.tenant) != 0) return std::nullopt;
  return std::string(name.substr(colon + 1));
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

// A resize's task arguments (RunOperation reads them): a VM's vCPUs are hot-plugged or unplugged;
// a container has no vCPUs to unplug, so its CPU is capped in its cgroup instead (vcpu_quota of N
// CPUs' worth per 100 ms period), and its memory limit is its cgroup's.
inline constexpr int64_t kCpuPeriodUs = 100000;
inline Json ResizeArgs(std::string_view kind, std::optional<int64_t> vcpus, std::optional<int64_t> memory_mib) {
  Json args = Json::object();
  if (vcpus) {
    args["vcpus"] = *vcpus;
    if (kind == "lxc") {
      args["cpu_quota_us"] = *vcpus * kCpuPeriodUs;
      args["cpu_period_us"] = kCpuPeriodUs;
    }
  }
  if (memory_mib) args["memory_mib"] = *memory_mib;
  return args;
}

inline Status NeedWrite(const Principal& p) {
  if (p.CanWrite()) return Status::Ok();
  return PermissionDeniedError("this token's role (" + std::string(RoleName(p.role)) + ") is read-only");
}

}  // namespace uw::manager::internal
