// The broker: which leases give back how much when the system needs `need` back from a set of
// leases (a host's, say). Pure logic like the rest of lease/; the policy is a setting. Only what
// Reclaimable allows is ever planned: nothing from a guaranteed lease, an elastic one down to its
// floor, a preemptible one whole (its guest stops).
//
//   strict-priority  preemptible leases first (whole, largest first), then elastic ones, the
//                    most above their floor first, until `need` is met
//   proportional     every reclaimable lease gives in proportion to what it may give, weighed by
//                    its class (preemptible counts double) and its CPU shares (twice the shares,
//                    half the weight); rounded up per lease, never past its reclaimable amount
//   market           the lowest bid per GiB-hour gives first (ties: preemptible before elastic,
//                    then the most above its floor), each as much as is still needed; tenants'
//                    bids are bounded by their budgets (BidCost, CheckBudget)
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "lease/lease.h"

namespace uw::lease {

enum class BrokerPolicy { kStrictPriority, kProportional, kMarket };
std::string_view BrokerPolicyName(BrokerPolicy p);
Result<BrokerPolicy> ParseBrokerPolicy(std::string_view name);  // kInvalidArgument naming the choices

struct Take {
  std::string lease_id;
  NoticeAction action = NoticeAction::kShrink;  // kStop: the whole lease
  Resources after;                              // what the lease keeps
};
struct ReclaimPlan {
  std::vector<Take> takes;
  Resources shortfall;  // what the leases could not give
};

// Active leases only; the order of `leases` breaks ties.
ReclaimPlan PlanReclaim(const std::vector<Lease>& leases, const Resources& need, BrokerPolicy policy);

// What a lease's bid costs its tenant per hour: bid x its memory grant in GiB (rounded up).
int64_t BidCost(const Lease& lease);
// A tenant's live leases within its budget (credits per hour): kResourceExhausted naming the
// total and the budget when their bids cost more. A negative bid is kInvalidArgument.
Status CheckBudget(const std::vector<Lease>& leases, int64_t budget_per_hour);

}  // namespace uw::lease
