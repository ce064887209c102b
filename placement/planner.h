// Private to placement/: the planning pipeline shared by the policies.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "placement/cluster.h"
#include "placement/placement.h"

namespace uw::placement::internal {

enum class PolicyKind { kDrs, kConsolidate, kOpportunityCost };

// Tunables of the balancer, in goodness units (imbalance reduction x powered-on hosts).
// Minimum goodness of a balancing move for threshold 1..5 (more aggressive thresholds accept
// smaller improvements), and the weight of the migration cost for each threshold.
inline constexpr double kMinGoodnessByThreshold[6] = {0, 0.002, 0.002, 0.002, 0.001, 0.0001};
inline constexpr double kCostWeightByThreshold[6] = {1, 1, 1, 1, 1, 0.25};
// Migration cost per second of transfer (memory / bandwidth).
inline constexpr double kCostPerMigrationSecond = 0.0005;
// Cost of one unit of soft-rule violation.
inline constexpr double kSoftRulePenalty = 0.5;

// Imbalance above which a balancing move gets priority 2, 3, 4; below the last one it is 5.
inline constexpr double kPriorityLevels[3] = {0.20, 0.10, 0.05};
int PriorityForImbalance(double imbalance);

std::unique_ptr<Objective> MakeObjective(PolicyKind kind, const Cluster& c);

struct PlanContext {
  PlanContext(const Snapshot& s, PolicyKind k);

  const Snapshot& snap;
  PolicyKind kind;
  Entitlements ents;
  Cluster cluster;
  std::unique_ptr<Objective> objective;
  Plan plan;
  double cost_weight = -1;  // >= 0: overrides kCostWeightByThreshold

  // Moves `set` (all on `from`) to `to`, appending one plan move per guest.
  void RecordMove(const std::vector<int>& set, int from, int to, int priority, const std::string& reason, double gain);
  // Best host for `set` (lowest score: -gain + soft-rule penalty), or -1. With `why`, a summary
  // of the rejections. `excluded[h]` hosts are skipped. `need_soft_fix`: only hosts that lower
  // the soft-rule measure.
  int FindDestination(const std::vector<int>& set, int from, bool cpu_cap, const std::vector<char>* excluded,
                      bool need_soft_fix, std::string* why) const;
  double MigrationCost(const UnitLoad& load) const;
  std::string HostLoadText(int h) const;
};

void PlaceAndRestart(PlanContext& ctx);
void FixMandatory(PlanContext& ctx);
void Balance(PlanContext& ctx);
void SwapRefine(PlanContext& ctx);
void CollapseChains(PlanContext& ctx);
void DpmPowerOn(PlanContext& ctx);
void DpmPowerOff(PlanContext& ctx);
void Consolidate(PlanContext& ctx);
// The HA reserve's figures: what the guests on hosts on or in maintenance need (entitled CPU,
// configured memory) and what is left after the `lost` largest powered-on hosts (by memory) fail.
struct HaReserve {
  int64_t hosts_on = 0;  // powered-on hosts counted (before the failures)
  int64_t lost = 0;      // hosts assumed to fail: min(host_failures, hosts_on)
  double need_cpu = 0;
  int64_t need_mem = 0;
  double left_cpu = 0;
  int64_t left_mem = 0;
  bool Holds() const { return left_mem >= need_mem && left_cpu + 1e-9 >= need_cpu; }
};
// Host `without` (-1: none) counts as off; `extra` is a load not yet on any host (a new guest).
HaReserve ComputeHaReserve(const std::vector<HostSlot>& hosts, int64_t host_failures, int without,
                           const UnitLoad& extra = {});
// Capacity left after the `ha.host_failures` largest powered-on hosts (other than `without`) fail
// covers the running guests.
bool HaReserveHolds(const Cluster& c, int64_t host_failures, int without);
// HA admission control of guest `vm` of `with` (the snapshot with the new guest): "" when the
// reserve holds with it, else the reason (figures included). Used by AdmitVm.
std::string HaAdmissionProblem(const Snapshot& with, size_t vm);

// Runs the pipeline. With threshold 5 on clusters of at most 64 powered-on hosts it balances with
// several migration-cost weights (a small portfolio: the greedy search is path dependent) and
// keeps the plan with the lowest final metric (ties: fewer moves), then adds swap refinement
// (SwapRefine) on the best weight.
Plan RunPlanner(const Snapshot& snapshot, PolicyKind kind);

}  // namespace uw::placement::internal
