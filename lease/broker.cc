// The broker's plans (broker.h).
#include "lease/broker.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

namespace uw::lease {
namespace {

struct Candidate {
  const Lease* lease;
  Resources can;  // what it may give
};

int64_t CeilDiv(int64_t a, int64_t b) { return b == 0 ? 0 : (a + b - 1) / b; }

Take TakeFrom(const Candidate& c, const Resources& give) {
  Take t;
  t.lease_id = c.lease->id;
  t.after = {c.lease->granted.vcpus - give.vcpus, c.lease->granted.memory_mib - give.memory_mib};
  // A preemptible lease that gives everything (or keeps too little to run) ends: its guest stops.
  if (c.lease->lease_class == LeaseClass::kPreemptible &&
      (give == c.can || t.after.vcpus < 1 || t.after.memory_mib < 16)) {
    t.action = NoticeAction::kStop;
    t.after = {};
  }
  return t;
}

Resources Gives(const Take& t, const Candidate& c) {
  return {c.lease->granted.vcpus - t.after.vcpus, c.lease->granted.memory_mib - t.after.memory_mib};
}

// Takes from the candidates in `cs`'s order, each as much as is still needed (a preemptible lease
// whole when `whole_preemptible`), until `need` is met.
void InOrder(const std::vector<Candidate>& cs, Resources need, bool whole_preemptible, ReclaimPlan& plan) {
  for (const Candidate& c : cs) {
    if (need.vcpus <= 0 && need.memory_mib <= 0) break;
    Resources give{std::min(c.can.vcpus, std::max<int64_t>(need.vcpus, 0)),
                   std::min(c.can.memory_mib, std::max<int64_t>(need.memory_mib, 0))};
    if (give.vcpus == 0 && give.memory_mib == 0) continue;
    if (whole_preemptible && c.lease->lease_class == LeaseClass::kPreemptible) give = c.can;
    Take t = TakeFrom(c, give);
    const Resources gave = Gives(t, c);
    need.vcpus -= gave.vcpus;
    need.memory_mib -= gave.memory_mib;
    plan.takes.push_back(std::move(t));
  }
  plan.shortfall = {std::max<int64_t>(need.vcpus, 0), std::max<int64_t>(need.memory_mib, 0)};
}

// Preemptible before elastic, then the most it may give first.
bool ByClassThenSize(const Candidate& a, const Candidate& b) {
  const bool pa = a.lease->lease_class == LeaseClass::kPreemptible;
  const bool pb = b.lease->lease_class == LeaseClass::kPreemptible;
  if (pa != pb) return pa;
  return a.can.memory_mib + a.can.vcpus * 1024 > b.can.memory_mib + b.can.vcpus * 1024;
}

void StrictPriority(std::vector<Candidate> cs, const Resources& need, ReclaimPlan& plan) {
  std::stable_sort(cs.begin(), cs.end(), ByClassThenSize);
  InOrder(cs, need, true, plan);  // preemptible leases whole, under this policy
}

void Market(std::vector<Candidate> cs, const Resources& need, ReclaimPlan& plan) {
  std::stable_sort(cs.begin(), cs.end(), [](const Candidate& a, const Candidate& b) {
    if (a.lease->bid != b.lease->bid) return a.lease->bid < b.lease->bid;
    return ByClassThenSize(a, b);
  });
  InOrder(cs, need, false, plan);
}

// A lease's weight in the proportional broker: what it may give, scaled by its class (a preemptible
// lease counts double) and by its CPU shares (the default 1024 counts once; twice the shares, half).
double Weight(const Candidate& c, int64_t can) {
  const double klass = c.lease->lease_class == LeaseClass::kPreemptible ? 2.0 : 1.0;
  return static_cast<double>(can) * klass * 1024.0 / static_cast<double>(std::max<int64_t>(c.lease->shares, 1));
}

// need * weight / total, rounded up (0 when nothing weighs).
int64_t ShareOf(int64_t need, double weight, double total) {
  if (need <= 0 || total <= 0) return 0;
  return static_cast<int64_t>(std::ceil(static_cast<double>(need) * weight / total - 1e-9));
}

void Proportional(const std::vector<Candidate>& cs, const Resources& need, ReclaimPlan& plan) {
  double total_cpu = 0, total_mem = 0;
  for (const Candidate& c : cs) {
    total_cpu += Weight(c, c.can.vcpus);
    total_mem += Weight(c, c.can.memory_mib);
  }
  Resources left = need;
  for (const Candidate& c : cs) {
    // Each gives need * its weight's share, rounded up, but no more than is still needed or it
    // may give.
    Resources give{std::min({c.can.vcpus, ShareOf(need.vcpus, Weight(c, c.can.vcpus), total_cpu),
                             std::max<int64_t>(left.vcpus, 0)}),
                   std::min({c.can.memory_mib, ShareOf(need.memory_mib, Weight(c, c.can.memory_mib), total_mem),
                             std::max<int64_t>(left.memory_mib, 0)})};
    if (give.vcpus <= 0 && give.memory_mib <= 0) continue;
    give = {std::max<int64_t>(give.vcpus, 0), std::max<int64_t>(give.memory_mib, 0)};
    Take t = TakeFrom(c, give);
    const Resources gave = Gives(t, c);
    left.vcpus -= gave.vcpus;
    left.memory_mib -= gave.memory_mib;
    plan.takes.push_back(std::move(t));
  }
  plan.shortfall = {std::max<int64_t>(left.vcpus, 0), std::max<int64_t>(left.memory_mib, 0)};
}

bool TakenBefore(const Lease& other, const Lease& countering, BrokerPolicy policy) {
  switch (policy) {
    case BrokerPolicy::kStrictPriority:
      return other.lease_class == LeaseClass::kPreemptible && countering.lease_class != LeaseClass::kPreemptible;
    case BrokerPolicy::kProportional:
      return true;
    case BrokerPolicy::kMarket:
      return other.bid < countering.bid;
  }
  return false;
}

std::string Amount(const Resources& r) {
  return std::to_string(r.vcpus) + " vCPU(s) and " + std::to_string(r.memory_mib) + " MiB";
}

}  // namespace

std::string_view BrokerPolicyName(BrokerPolicy p) {
  static constexpr std::array<std::string_view, 3> kNames = {"strict-priority", "proportional", "market"};
  return kNames[static_cast<size_t>(p)];
}

Result<BrokerPolicy> ParseBrokerPolicy(std::string_view name) {
  for (BrokerPolicy p : {BrokerPolicy::kStrictPriority, BrokerPolicy::kProportional, BrokerPolicy::kMarket}) {
    if (BrokerPolicyName(p) == name) return p;
  }
  return InvalidArgumentError("broker policy '" + std::string(name) +
                              "': expected strict-priority | proportional | market");
}

ReclaimPlan PlanReclaim(const std::vector<Lease>& leases, const Resources& need, BrokerPolicy policy) {
  std::vector<Candidate> cs;
  for (const Lease& l : leases) {
    if (l.state != LeaseState::kActive) continue;
    Resources can = Reclaimable(l);
    if (can.vcpus > 0 || can.memory_mib > 0) cs.push_back({&l, can});
  }
  ReclaimPlan plan;
  switch (policy) {
    case BrokerPolicy::kStrictPriority:
      StrictPriority(std::move(cs), need, plan);
      break;
    case BrokerPolicy::kProportional:
      Proportional(cs, need, plan);
      break;
    case BrokerPolicy::kMarket:
      Market(std::move(cs), need, plan);
      break;
  }
  return plan;
}

CounterVerdict JudgeCounter(const Lease& countering, const Resources& keeps_more, const std::vector<Lease>& others,
                            BrokerPolicy policy) {
  CounterVerdict v;
  const Resources more{std::max<int64_t>(keeps_more.vcpus, 0), std::max<int64_t>(keeps_more.memory_mib, 0)};
  const std::string under = " under " + std::string(BrokerPolicyName(policy));
  if (more.vcpus == 0 && more.memory_mib == 0) {
    v.accept = true;
    v.why = "a later time within the deadline takes nothing from another lease";
    return v;
  }
  std::vector<Lease> below;
  for (const Lease& l : others) {
    if (l.id != countering.id && TakenBefore(l, countering, policy)) below.push_back(l);
  }
  ReclaimPlan plan = PlanReclaim(below, more, policy);
  if (plan.shortfall.vcpus > 0 || plan.shortfall.memory_mib > 0) {
    const Resources could{more.vcpus - plan.shortfall.vcpus, more.memory_mib - plan.shortfall.memory_mib};
    v.why = "the leases ranked below it" + under + " can give " + Amount(could) + " of the " + Amount(more) +
            " it would keep";
    return v;
  }
  v.accept = true;
  v.why = "covered by " + std::to_string(plan.takes.size()) + " lease(s) ranked below it" + under;
  v.cover = std::move(plan.takes);
  return v;
}

int64_t BidCost(const Lease& lease) { return lease.bid * CeilDiv(lease.granted.memory_mib, 1024); }

Status CheckBudget(const std::vector<Lease>& leases, int64_t budget_per_hour) {
  int64_t total = 0;
  for (const Lease& l : leases) {
    if (l.bid < 0) return InvalidArgumentError("lease " + l.id + ": a bid is at least 0 credits per GiB-hour");
    total += BidCost(l);
  }
  if (total > budget_per_hour) {
    return ResourceExhaustedError("the bids cost " + std::to_string(total) + " credits per hour; the budget is " +
                                  std::to_string(budget_per_hour));
  }
  return Status::Ok();
}

}  // namespace uw::lease
