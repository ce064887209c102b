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
//
// The same policy can weigh a counter-offer (JudgeCounter): what the countering lease would keep
// beyond its notice must be given by leases the policy takes from before it.
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

// The broker's answer to a counter-offer: `countering` asks to keep `keeps_more` beyond what its
// notice leaves it. `others` are the leases that could give instead (its host's, with no notice
// open); only those the policy ranks below the countering lease may:
//   strict-priority  leases of a class taken before its class (preemptible before elastic)
//   proportional     any other lease that may give (the burden is spread over them)
//   market           leases that bid less per GiB-hour (a tenant that bids more keeps more)
// Accepted, with the takes that cover it (planned under `policy`), when they cover all of it;
// declined otherwise, `why` saying what they could give. A counter that keeps nothing more (a later
// time only, which ApplyReply bounds by the deadline) takes from nobody: accepted, no cover.
struct CounterVerdict {
  bool accept = false;
  std::string why;
  std::vector<Take> cover;
};
CounterVerdict JudgeCounter(const Lease& countering, const Resources& keeps_more, const std::vector<Lease>& others,
                            BrokerPolicy policy);

// What a lease's bid costs its tenant per hour: bid x its memory grant in GiB (rounded up).
int64_t BidCost(const Lease& lease);
// A tenant's live leases within its budget (credits per hour): kResourceExhausted naming the
// total and the budget when their bids cost more. A negative bid is kInvalidArgument.
Status CheckBudget(const std::vector<Lease>& leases, int64_t budget_per_hour);

}  // namespace uw::lease
