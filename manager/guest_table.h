// The guests table and the lease rows of each guest's grants: the statements of admission,
// reconcile, crash policy, duplicate alerts, guest tasks and migrations live here.
// Private to manager/ (Manager owns one).
//
//   creates, heartbeats' reconcile, crash handling, guest tasks --typed calls--> GuestTable --> Store
//
// A guest row with a host is that host's capacity reservation (the store's triggers keep
// host_reservations from it).
//
// No method opens a transaction: a caller that writes more than one statement (a change and its
// event) wraps them in Store::Transact, which every method may be called inside.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"

namespace uw::manager::internal {

// The tenant whose guests `p` lists (ScanListing, Count, List); nullopt: everyone's.
std::optional<std::string> ListingTenant(const Principal& p);
// A page's cursor as the store keys guests: a tenant's cursor is a short name, its guests are
// "<tenant>:<name>" in the store.
std::string StoredCursor(const Principal& p, const std::string& after);

// A guests row (SELECT *) as the core returns it.
Guest GuestOfRow(const SqlRow& r);

// A guest as a heartbeat's reconcile compares it with the agent's report.
struct KnownGuest {
  std::string name, tenant, state, health, on_crash;
  Json crash;  // null when it never crashed
};

// A pooled guest's grant, as pool limits count it.
struct PooledGrant {
  std::string pool;
  int64_t vcpus = 0, memory_mib = 0;
};

// A guest as placement reads it (those whose lease ended, released, are not: they hold no room).
struct PlacementGuest {
  std::string name;
  std::optional<std::string> host, pool;
  std::string kind, state, automation;
  int64_t vcpus = 0, memory_mib = 0;        // what its lease grants now (its spec), not its maxima
  double cpu_used = 0;                      // cores, from the last heartbeat
  int64_t memory_used_mib = -1;             // < 0: not reported
  std::optional<std::string> migrating_to;  // a move in flight holds memory there too
  std::string restart_priority = "medium";
};

class GuestTable {
 public:
  explicit GuestTable(Store& store) : store_(store) {}

  // A guest admitted by placement: its row (state `creating`, the host's reservation from now).
  // Its lease is the lease service's (lease_service.h), written in the same transaction.
  struct Admitted {
    std::string name, tenant, host;
    std::optional<std::string> pool;
    std::string kind;
    int64_t vcpus = 0, memory_mib = 0;  // the reservation (the maxima)
    Json spec;                          // what the agent is asked to create
    std::string automation, placement_reason, on_crash;
    std::string restart_priority = "medium";
    int64_t now_ms = 0;
  };
  // A guest an agent reports that the manager did not know: recorded so its capacity counts.
  struct Found {
    std::string name, tenant, host, kind, state;
    int64_t vcpus = 0, memory_mib = 0;
    Json spec;
    int64_t now_ms = 0;
  };
  struct Alerted {
    std::string name, tenant;
    Json alert;  // null when none
  };

  Status Admit(const Admitted& g);
  Status AddFound(const Found& g);
  // Removes a reservation whose create never happened (the row is still `creating`).
  Status ReleaseCreating(std::string_view name);
  Status Remove(std::string_view name);

  // nullopt when there is no such guest.
  Result<std::optional<Guest>> Find(std::string_view name);
  // kNotFound "guest 'NAME' not found".
  Result<Guest> Get(std::string_view name);
  // A tenant's guest by its cluster name `key` or, for one created before names were per tenant,
  // by its short name; the cluster name wins.
  Result<std::optional<Guest>> FindOfTenant(std::string_view tenant, std::string_view key, std::string_view short_name);
  // Every tenant's guest whose cluster name is TENANT:short_name, in name order.
  Result<std::vector<Guest>> WithShortName(std::string_view short_name);
  // Whether `key`, or the tenant's own guest under the short name, is taken.
  Result<bool> NameTaken(std::string_view key, std::string_view tenant, std::string_view short_name);
  Result<std::string> TenantOf(std::string_view name);  // kNotFound
  Result<Json> SpecOf(std::string_view name);           // kNotFound

  // The guests on `host`, in name order.
  Result<std::vector<KnownGuest>> OnHost(std::string_view host);
  Result<std::vector<std::string>> NamesOn(std::string_view host);
  Result<std::vector<PlacementGuest>> ForPlacement();  // in name order

  // The listing (GET /api/v1/guests): a tenant's guests, or everyone's when `tenant` is nullopt,
  // in name order after `after` (a cluster name; "" from the start), at most `limit` rows (< 0:
  // all). Each row is handed to `row` in place (SqlCursor), its columns indexed by ListingColumn.
  enum ListingColumn {
    kName,
    kTenant,
    kHost,
    kPool,
    kKind,
    kSpec,
    kState,
    kVcpus,
    kMemoryMib,
    kAutomation,
    kMigratingTo,
    kPlacementReason,
    kAlert,
    kHealth,
    kOnCrash,
    kRestartPriority,
    kCrash,
    kCpuUsed,
    kMemoryUsedMib,
    kCreatedMs,
    kRowid,
  };
  Status ScanListing(const std::optional<std::string>& tenant, std::string_view after, int64_t limit,
                     const std::function<Status(const SqlCursor&)>& row);
  Result<int64_t> Count(const std::optional<std::string>& tenant);
  // The same rows typed, a page at a time; `page.after` is a cluster name, and so is `next`.
  Result<Page<Guest>> List(const std::optional<std::string>& tenant, const PageQuery& page);
  Result<std::set<std::string>> Names();
  Result<std::vector<std::string>> NamesInPool(std::string_view pool);  // in name order
  Result<std::vector<PooledGrant>> PooledGrants();                      // every guest in a pool
  // Each guest's DRS automation override (automatic | manual | disabled), by name.
  Result<std::map<std::string, std::string>> AutomationByGuest();

  Status SetState(std::string_view name, std::string_view state, int64_t now_ms);
  // Whether the guest's lease ended while it stays defined (it holds no room on its host).
  Status SetReleased(std::string_view name, bool released);
  Status SetStateAndSpec(std::string_view name, std::string_view state, const Json& spec, int64_t now_ms);
  Status SetSpec(std::string_view name, const Json& spec, int64_t now_ms);
  Status SetHealth(std::string_view name, std::string_view health);  // "" clears
  Result<Json> CrashOf(std::string_view name);                       // kNotFound; null when none
  Status SetCrash(std::string_view name, const Json& crash);
  // A move's hold on its destination's capacity (memory counts on both hosts until it ends).
  Status HoldMove(std::string_view name, std::string_view destination);
  // The move ended: the hold goes; the guest is on `host` in `state` where they are given.
  Status EndMove(std::string_view name, const std::optional<std::string>& host, const std::optional<std::string>& state,
                 int64_t now_ms);
  Result<Alerted> AlertOf(std::string_view name);  // kNotFound
  Result<std::vector<Alerted>> WithAlerts();
  Status SetAlert(std::string_view name, const Json& alert);  // null clears

 private:
  Store& store_;
};

}  // namespace uw::manager::internal
