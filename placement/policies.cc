// Policy plug-ins (the registry behind MakePolicy / MakePlan) and ComputeMetrics.
#include "placement/planner.h"

namespace uw::placement {

namespace {

class PlannerPolicy : public Policy {
 public:
  PlannerPolicy(std::string name, internal::PolicyKind kind) : name_(std::move(name)), kind_(kind) {}
  std::string_view name() const override { return name_; }
  Result<Plan> MakePlan(const Snapshot& snapshot) const override { return internal::RunPlanner(snapshot, kind_); }

 private:
  std::string name_;
  internal::PolicyKind kind_;
};

}  // namespace

std::vector<std::string> PolicyNames() { return {"drs", "consolidate", "opportunity-cost"}; }

Result<std::unique_ptr<Policy>> MakePolicy(std::string_view name) {
  using internal::PolicyKind;
  std::unique_ptr<Policy> p;
  if (name == "drs") {
    p = std::make_unique<PlannerPolicy>("drs", PolicyKind::kDrs);
  } else if (name == "consolidate") {
    p = std::make_unique<PlannerPolicy>("consolidate", PolicyKind::kConsolidate);
  } else if (name == "opportunity-cost") {
    p = std::make_unique<PlannerPolicy>("opportunity-cost", PolicyKind::kOpportunityCost);
  } else {
    return InvalidArgumentError("unknown policy '" + std::string(name) +
                                "' (expected drs | consolidate | opportunity-cost)");
  }
  return p;
}

Result<Plan> MakePlan(const Snapshot& snapshot, std::string_view policy) {
  UW_ASSIGN_OR_RETURN(std::unique_ptr<Policy> p, MakePolicy(policy));
  return p->MakePlan(snapshot);
}

PlanMetrics ComputeMetrics(const Snapshot& snapshot, const Entitlements& entitlements) {
  internal::Cluster c(snapshot, entitlements);
  return c.Metrics();
}

PlanMetrics ComputeMetrics(const Snapshot& snapshot) { return ComputeMetrics(snapshot, ComputeEntitlements(snapshot)); }

}  // namespace uw::placement
