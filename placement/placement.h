// Underware placement engine: the one public header of `uw::placement`.
//
// The engine is pure policy. It takes a cluster *snapshot* (hosts, pools, guests, rules, settings)
// and returns a *plan* (placements, live migrations, power actions), both in the JSON formats of
// docs/snapshot-format.md. It does no I/O, reads no clock and starts no threads, so the same code
// runs in the manager, in uw-sim, in benchmarks and in `uwctl drs plan --snapshot FILE`.
//
// Pipeline (see placement/README.md for the diagram, the vocabulary and the exact metrics):
//   ParseSnapshot -> ComputeEntitlements -> admission -> mandatory fixes (restarts, placements,
//   evacuations, overload, broken rules) -> policy (drs | consolidate | opportunity-cost)
//   -> DPM (power on / off) -> Plan, which CheckPlan replays step by step.
//
// Thread safety: every function here is a pure function of its arguments; values may be shared
// between threads as long as nobody mutates them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/guest_kind.h"
#include "common/json.h"
#include "common/status.h"
#include "common/units.h"

namespace uw::placement {

// ---------------------------------------------------------------------------------------------
// Snapshot model
// ---------------------------------------------------------------------------------------------

enum class HostState { kOn, kStandby, kMaintenance, kFailed };
using ::uw::GuestKind;  // common/guest_kind.h
using ::uw::GuestKindName;
enum class RuleType { kVmAffinity, kVmAntiAffinity, kVmHost };
enum class HostRuleMode { kMust, kShould, kMustNot, kShouldNot };

std::string_view HostStateName(HostState s);
std::string_view RuleTypeName(RuleType t);
std::string_view HostRuleModeName(HostRuleMode m);

// Extension: the order in which HA restarts the guests of a failed host (high first, then
// medium, then low; each largest first). kDisabled guests are not restarted after a failure.
enum class RestartPriority { kHigh, kMedium, kLow, kDisabled };
std::string_view RestartPriorityName(RestartPriority p);  // "high", "medium", "low", "disabled"
// kInvalidArgument "restart priority 'x' is not one of high, medium, low, disabled".
Result<RestartPriority> ParseRestartPriority(std::string_view name);

struct HostPower {
  double idle_watts = 150;
  double peak_watts = 400;

  friend bool operator==(const HostPower&, const HostPower&) = default;
};

struct Host {
  std::string name;
  double cpu_cores = 0;    // > 0
  int64_t memory_mib = 0;  // > 0
  HostState state = HostState::kOn;
  std::vector<std::string> groups;
  HostPower power;

  friend bool operator==(const Host&, const Host&) = default;
};

// One resource's settings of a pool. Units: cores for CPU, MiB for memory.
struct PoolResource {
  double reservation = 0;
  std::optional<double> limit;  // nullopt: unlimited
  int64_t shares = 4000;        // > 0

  friend bool operator==(const PoolResource&, const PoolResource&) = default;
};

struct Pool {
  std::string name;
  std::string parent;  // "" for a top-level pool (child of the cluster root)
  PoolResource cpu;
  PoolResource memory;
  bool expandable = true;  // may borrow reservation from its parent

  friend bool operator==(const Pool&, const Pool&) = default;
};

struct Vm {
  std::string name;
  std::string host;  // "" for a guest not yet placed
  int64_t vcpus = 1;
  int64_t memory_mib = 0;
  Resources demand;  // cores and MiB in use now; defaults to vcpus / memory_mib
  std::string pool;  // "" for the cluster root
  Resources reservation;
  std::optional<double> limit_cpu_cores;
  std::optional<int64_t> limit_memory_mib;
  int64_t cpu_shares = 1000;
  int64_t memory_shares = 1000;
  GuestKind kind = GuestKind::kKvm;
  bool migratable = true;
  // Extension (history): seconds since the guest last migrated; nullopt = never / long ago.
  std::optional<double> last_moved_ago_s;
  // Extension (HA): written to a snapshot only when not medium.
  RestartPriority restart_priority = RestartPriority::kMedium;

  // lxc guests and guests marked non-migratable never live-migrate.
  bool CanLiveMigrate() const { return migratable && kind != GuestKind::kLxc; }

  friend bool operator==(const Vm&, const Vm&) = default;
};

struct Rule {
  std::string name;
  RuleType type = RuleType::kVmAntiAffinity;
  std::vector<std::string> vms;
  std::vector<std::string> hosts;           // vm-host: host names; the rule covers these plus `groups`
  std::vector<std::string> groups;          // vm-host: host group names, as written in the snapshot
  HostRuleMode mode = HostRuleMode::kMust;  // vm-host only
  bool required = true;                     // vm-vm; for vm-host derived from mode

  // True for rules no plan may break: required vm-vm rules and vm-host must / must-not.
  bool IsHard() const;

  friend bool operator==(const Rule&, const Rule&) = default;
};

struct DrsSettings {
  std::string automation = "manual";  // manual | automatic
  int threshold = 3;                  // 1..5: keep moves of priority <= threshold
  std::optional<int64_t> max_moves;   // nullopt: no cap
  // Extensions (documented in placement/README.md):
  double min_move_interval_s = 3600;        // a guest moved more recently is not balanced
  double migration_bandwidth_mib_s = 1024;  // for migration time = memory / bandwidth
  bool allow_cold_moves = false;            // evacuation may stop, move and start guests that cannot live-migrate

  friend bool operator==(const DrsSettings&, const DrsSettings&) = default;
};

struct DpmSettings {
  bool enabled = false;
  double target_utilization = 0.63;
  double tolerance = 0.18;
  int64_t min_hosts_on = 1;
  // Extension: hosts DPM never powers off (written to a snapshot only when not empty).
  std::vector<std::string> keep_on;

  friend bool operator==(const DpmSettings&, const DpmSettings&) = default;
};

// Extension: HA admission. When enabled the cluster keeps enough powered-on capacity to restart
// every guest after `host_failures` hosts fail: DPM and consolidation never power off below it,
// and AdmitVm refuses a guest that would break it.
struct HaSettings {
  bool enabled = false;
  int64_t host_failures = 1;

  friend bool operator==(const HaSettings&, const HaSettings&) = default;
};

struct Settings {
  DrsSettings drs;
  DpmSettings dpm;
  HaSettings ha;

  friend bool operator==(const Settings&, const Settings&) = default;
};

struct Snapshot {
  int64_t version = 1;
  std::vector<Host> hosts;
  std::vector<Pool> pools;
  std::vector<Vm> vms;
  std::vector<Rule> rules;
  Settings settings;

  friend bool operator==(const Snapshot&, const Snapshot&) = default;
};

// Reads a snapshot. Unknown fields are ignored; missing optional fields take their defaults.
// Errors: kInvalidArgument naming the field path ("vms[12].memory_mib: expected a positive
// integer", "rules[3].vms[1]: unknown guest 'vm9'", "pools[2].parent: cycle through 'a'").
Result<Snapshot> ParseSnapshot(const Json& json);
Result<Snapshot> ParseSnapshotText(std::string_view text, std::string_view what = "snapshot");
// Writes every field (defaults included; the extensions last_moved_ago_s and restart_priority only
// when set, resp. not medium) so that ParseSnapshot(SnapshotToJson(s)) == s.
Json SnapshotToJson(const Snapshot& snapshot);
// Parts of a snapshot read on their own, for callers that build a Snapshot from their own records
// (the manager's store): the checks ParseSnapshot makes on one entry; `path` prefixes errors.
Result<Pool> ParsePoolJson(const Json& json, std::string_view path);
// `stored`: a rule as a store keeps it after guests it named were deleted: a vm-vm rule left with
// one guest is read (it constrains nothing; a snapshot must not hold it).
Result<Rule> ParseRuleJson(const Json& json, std::string_view path, bool stored = false);
// One entry of SnapshotToJson's "pools" / "rules" (every field written).
Json PoolToJson(const Pool& pool);
Json RuleToJson(const Rule& rule);
// The checks ParseSnapshot makes across a whole snapshot: unique names, hosts / pools / guests
// that exist, no pool cycles (kInvalidArgument naming the entry).
Status ValidateSnapshot(Snapshot& snapshot);

// ---------------------------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------------------------

struct PlacementStep {
  std::string vm;
  std::string host;
  std::string reason;

  friend bool operator==(const PlacementStep&, const PlacementStep&) = default;
};

struct Move {
  std::string vm;
  std::string from;
  std::string to;
  int priority = 5;  // 1 mandatory .. 5 slight gain
  std::string reason;
  double gain = 0;  // reduction of the policy's metric (imbalance for drs)
  // Extension: stop the guest, move it, start it (containers and non-migratable guests, only
  // when settings.drs.allow_cold_moves). Written as "cold": true only when set.
  bool cold = false;

  friend bool operator==(const Move&, const Move&) = default;
};

enum class PowerActionType { kPowerOn, kPowerOff };
struct PowerAction {
  std::string host;
  PowerActionType action = PowerActionType::kPowerOn;
  std::string reason;

  friend bool operator==(const PowerAction&, const PowerAction&) = default;
};

struct Unplaced {
  std::string vm;
  std::string reason;

  friend bool operator==(const Unplaced&, const Unplaced&) = default;
};

// Extension: a mandatory problem the plan could not fix (a broken rule with no legal move, a
// non-migratable guest on a host in maintenance). Readers that do not know it ignore it.
struct Unresolved {
  std::string subject;  // guest, host or rule name
  std::string reason;

  friend bool operator==(const Unresolved&, const Unresolved&) = default;
};

struct PlanMetrics {
  double imbalance = 0;         // combined, see README
  int64_t hosts_on = 0;         // hosts in state on
  double cpu_imbalance = 0;     // std dev of normalized entitled CPU load
  double memory_imbalance = 0;  // std dev of normalized entitled memory load
  int64_t hosts_used = 0;       // powered-on hosts running at least one guest
  int64_t soft_violations = 0;  // sum of soft-rule violation measures
  double unmet_cpu_cores = 0;   // entitled CPU above host capacity, summed over hosts

  friend bool operator==(const PlanMetrics&, const PlanMetrics&) = default;
};

struct Plan {
  int64_t version = 1;
  std::string policy;
  std::vector<PlacementStep> placements;
  std::vector<Move> moves;
  std::vector<PowerAction> power;
  std::vector<Unplaced> unplaced;
  std::vector<Unresolved> unresolved;
  PlanMetrics before;
  PlanMetrics after;
  double elapsed_ms = 0;  // filled by callers that own a clock (uw-sim), 0 otherwise

  friend bool operator==(const Plan&, const Plan&) = default;
};

Json PlanToJson(const Plan& plan);
// Errors: kInvalidArgument naming the field path.
Result<Plan> ParsePlan(const Json& json);

// ---------------------------------------------------------------------------------------------
// Entitlements and admission control
// ---------------------------------------------------------------------------------------------

// What a guest or pool is entitled to: demand capped by limits, raised to reservations, and
// under contention the cluster's capacity divided by shares down the pool tree (max-min fair).
struct Entitlement {
  double cpu_cores = 0;
  double memory_mib = 0;
};

struct Entitlements {
  std::vector<Entitlement> vms;    // index = snapshot.vms index
  std::vector<Entitlement> pools;  // index = snapshot.pools index
  Entitlement capacity;            // what was divided: powered-on hosts' capacity
};

// Divides the capacity of hosts in state `on` (or `capacity` when given).
Entitlements ComputeEntitlements(const Snapshot& snapshot, std::optional<Entitlement> capacity = std::nullopt);

struct AdmissionIssue {
  std::string subject;  // pool or guest name
  std::string reason;
};

// Checks every reservation against its pool and the cluster: a non-expandable pool whose
// children reserve more than it, reservations above the powered-on capacity, a guest whose
// reservation exceeds its size. Empty when everything is admitted.
std::vector<AdmissionIssue> CheckAdmission(const Snapshot& snapshot);

// Admission of one new guest (not yet in `snapshot`): kResourceExhausted naming the pool or the
// cluster whose reservations cannot be met, kInvalidArgument for a malformed guest.
// With settings.ha.enabled and host_failures > 0 also kResourceExhausted "HA admission control:
// ..." (naming the memory and cores needed and those left) when, with the guest, the powered-on
// hosts left after the `host_failures` largest fail could not hold every running guest (the HA
// reserve of DPM; refused also when the reserve was already short without the guest).
Status AdmitVm(const Snapshot& snapshot, const Vm& vm);

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

// Imbalance of the snapshot's current placement (see README for the formula).
PlanMetrics ComputeMetrics(const Snapshot& snapshot);
PlanMetrics ComputeMetrics(const Snapshot& snapshot, const Entitlements& entitlements);

// ---------------------------------------------------------------------------------------------
// The plan checker
// ---------------------------------------------------------------------------------------------

// Replays `plan` on `snapshot` in its execution order: power-on actions, placements, moves (in
// list order; consecutive moves of a required-affinity group between the same two hosts form one
// step), power-off actions. At every step it verifies that no host's memory is over-committed
// by the step, that no required rule gets worse (a rule already broken in the snapshot may stay
// broken or improve, a kept rule must stay kept), that guests move only between powered-on
// hosts, live-migrate only when they can, that `from` is where the guest is, that powered-off
// hosts are empty, and that min_hosts_on holds. Independent of the planning code on purpose.
// Errors: kFailedPrecondition "moves[3] (vm0001 h01 -> h07): host h07 memory over-committed
// (263168 > 262144 MiB)" for the first broken step; kInvalidArgument for unknown names.
Status CheckPlan(const Snapshot& snapshot, const Plan& plan);

// Returns the snapshot after executing `plan` (CheckPlan must pass first; errors as CheckPlan).
// Moved guests get last_moved_ago_s = 0.
Result<Snapshot> ApplyPlan(const Snapshot& snapshot, const Plan& plan);

// ---------------------------------------------------------------------------------------------
// Initial placement: filter, score, select
// ---------------------------------------------------------------------------------------------

struct HostVerdict {
  std::string host;
  std::string reason;  // why the host was rejected
};

struct PlacementDecision {
  std::string host;                   // "" when no host passes the filters
  double score = 0;                   // lower is better (policy metric after + soft-rule cost)
  bool needs_power_on = false;        // host is in standby and must be powered on first
  std::vector<HostVerdict> rejected;  // one entry per rejected host
  std::string reason;                 // why this host (or why none)
};

// A snapshot indexed for repeated what-if placement (the manager keeps one per snapshot
// version). Thread safety: Place is const and keeps no scratch state; concurrent calls are safe.
class PlacementIndex {
 public:
  // `policy` chooses the scoring: "drs" and "consolidate" score by imbalance, "opportunity-cost"
  // by marginal cost; kInvalidArgument for another name.
  static Result<std::unique_ptr<PlacementIndex>> Build(const Snapshot& snapshot, std::string_view policy = "drs");
  virtual ~PlacementIndex() = default;
  // Chooses a host for `vm` (which must not be in the snapshot yet, or be unplaced in it) among
  // hosts in state on; falls back to standby hosts (needs_power_on). Rules naming `vm` in the
  // snapshot apply. Does not change the index.
  virtual PlacementDecision Place(const Vm& vm) const = 0;
};

// ---------------------------------------------------------------------------------------------
// Policies and planning
// ---------------------------------------------------------------------------------------------

// A balancing / packing policy plug-in. The core runs admission and mandatory fixes before it and
// DPM after it; the policy only decides the optional moves.
class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string_view name() const = 0;
  // Builds the complete plan, in a safe execution order (the manager's applier and every test
  // still verify it with CheckPlan). Errors: kInvalidArgument for settings the policy rejects.
  virtual Result<Plan> MakePlan(const Snapshot& snapshot) const = 0;
};

// "drs" (imbalance), "consolidate" (vector bin packing), "opportunity-cost" (Amir et al.).
// kInvalidArgument for another name.
Result<std::unique_ptr<Policy>> MakePolicy(std::string_view name);
std::vector<std::string> PolicyNames();

// Shorthand for MakePolicy(policy)->MakePlan(snapshot).
Result<Plan> MakePlan(const Snapshot& snapshot, std::string_view policy = "drs");

// ---------------------------------------------------------------------------------------------
// Consolidation reference figures (used by benchmarks and tests)
// ---------------------------------------------------------------------------------------------

// max over CPU (entitled demand) and memory (configured size) of the fewest hosts, largest first,
// whose capacity covers the total. Counts hosts that are on or standby.
int64_t ConsolidationLowerBound(const Snapshot& snapshot);
// Hosts used by plain first-fit decreasing (guests by decreasing max(cpu, memory) share of the
// largest host, hosts in snapshot order, on and standby hosts), ignoring rules and pins.
// -1 when some guest fits nowhere.
int64_t FirstFitDecreasingHosts(const Snapshot& snapshot);

}  // namespace uw::placement
