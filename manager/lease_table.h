// The leases, notices and repossessions tables (manager/store.cc, schema 7): one lease per guest
// while it holds resources (closed leases are kept), the notices sent before anything is taken
// from a guest, and the records of what was. Private to manager/. Like the other tables it holds
// only a reference to the store and opens no transaction: the lease service wraps each change
// and its events in Store::Transact.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "lease/lease.h"
#include "manager/manager.h"
#include "manager/store.h"

namespace uw::manager::internal {

// Who may see which rows: a tenant its own, everyone else all; `guest` (a cluster name) narrows.
struct LeaseScope {
  std::optional<std::string> tenant;
  std::string guest;
};

class LeaseTable {
 public:
  // `changed` is told the guest whose lease, notice or record a write touched (the lease service
  // publishes the guest's holdings to it); it must not call back into the table.
  explicit LeaseTable(Store& store, std::function<void(std::string_view guest)> changed = {})
      : store_(store), changed_(std::move(changed)) {}

  Status Insert(const LeaseRecord& r, int64_t now_ms);
  // Writes everything but the id, guest, tenant and start.
  Status Save(const LeaseRecord& r, int64_t now_ms);
  Result<LeaseRecord> Get(std::string_view id);  // kNotFound "lease 'ID' not found"
  // The guest's lease that is neither closed nor failed; nullopt when it has none.
  Result<std::optional<LeaseRecord>> LiveOf(std::string_view guest);
  // Newest first.
  Result<std::vector<LeaseRecord>> OfGuest(std::string_view guest);
  Result<Page<LeaseRecord>> List(const LeaseScope& scope, const PageQuery& page);
  // Active leases whose term ends by `by_ms`.
  Result<std::vector<LeaseRecord>> TermEndingBy(int64_t by_ms);
  // Active elastic and preemptible leases with no notice open: what a broker may take from.
  Result<std::vector<LeaseRecord>> Reclaimable();

  Status InsertNotice(const NoticeRecord& n, int64_t now_ms);
  Status SaveNotice(const NoticeRecord& n, int64_t now_ms);
  Result<NoticeRecord> GetNotice(std::string_view id);  // kNotFound
  Result<Page<NoticeRecord>> ListNotices(const LeaseScope& scope, const PageQuery& page);
  // The lease's notice that has not been acted on; nullopt when none.
  Result<std::optional<NoticeRecord>> OpenNoticeOf(std::string_view lease_id);
  // Not acted on yet, oldest first: all of them (deliveries, counters and due actions are found
  // among these; there are a few per guest at most).
  Result<std::vector<NoticeRecord>> OpenNotices();

  // Tenants' budgets for the market broker: the most their leases' bids may cost per hour.
  Result<std::optional<int64_t>> BudgetOf(std::string_view tenant);  // nullopt: none set
  Status SetBudget(std::string_view tenant, int64_t per_hour, int64_t now_ms);
  // With what the live leases' bids cost now; one tenant's, or all.
  Result<std::vector<Budget>> Budgets(const std::optional<std::string>& tenant);
  // The tenant's leases that are neither closed nor failed.
  Result<std::vector<lease::Lease>> LiveOfTenant(std::string_view tenant);

  Status InsertRepossession(const lease::Repossession& r);
  Result<Page<lease::Repossession>> ListRepossessions(const LeaseScope& scope, const PageQuery& page);

 private:
  void Changed(std::string_view guest) const {
    if (changed_) changed_(guest);
  }

  Store& store_;
  std::function<void(std::string_view guest)> changed_;
};

}  // namespace uw::manager::internal
