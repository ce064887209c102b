// libFuzzer target for cluster snapshot and plan files (issue 12; format: docs/snapshot-format.md),
// as uw-sim, uwctl and the manager read them. Build with -DUW_FUZZ=ON and clang; docs/fuzzing.md.
//
// The input is JSON text. It is read as a snapshot, as a plan, and, when it is an object with
// "snapshot" and "plan", as a plan to check against a snapshot. Invariants checked (a failure
// aborts, which libFuzzer reports with the input):
//   - nothing throws; every error is kInvalidArgument (a malformed file names its field);
//   - a snapshot that parses round-trips: ParseSnapshot(SnapshotToJson(s)) == s, and the JSON
//     written for the copy is the JSON written for s (likewise for plans);
//   - for small snapshots, the engine's own plans (drs, consolidate, opportunity-cost) pass
//     CheckPlan and apply, and a host PlacementIndex::Place picks for an unplaced guest is a
//     placement CheckPlan accepts; admission and metrics run without crashing;
//   - a plan that CheckPlan accepts also applies (ApplyPlan), and one it refuses does not.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "common/json.h"
#include "placement/placement.h"

namespace {

using uw::Json;
using uw::StatusCode;
namespace pl = uw::placement;

#define FUZZ_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      __builtin_fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

// Planning is polynomial in hosts x guests: keep each input fast.
constexpr size_t kMaxPlannedPairs = 400;

void Explain(const uw::Status& s) {
  if (!s.ok()) __builtin_fprintf(stderr, "%s\n", s.ToString().c_str());
}

void CheckEngine(const pl::Snapshot& s) {
  (void)pl::CheckAdmission(s);
  (void)pl::ComputeMetrics(s);
  if (s.hosts.size() * (s.vms.size() + 1) > kMaxPlannedPairs) return;
  // Initial placement and the checker agree: a host Place picks for an unplaced guest (without
  // powering anything on) is a placement CheckPlan accepts.
  auto index = pl::PlacementIndex::Build(s);
  FUZZ_CHECK(index.ok());
  for (const pl::Vm& vm : s.vms) {
    if (!vm.host.empty()) continue;
    const pl::PlacementDecision d = (*index)->Place(vm);
    if (d.host.empty() || d.needs_power_on) continue;
    pl::Plan plan;
    plan.placements.push_back({vm.name, d.host, d.reason});
    const uw::Status checked = pl::CheckPlan(s, plan);
    if (!checked.ok())
      __builtin_fprintf(stderr, "%s on %s: %s\n", vm.name.c_str(), d.host.c_str(), checked.ToString().c_str());
    FUZZ_CHECK(checked.ok());
  }
  for (std::string_view policy : {"drs", "consolidate", "opportunity-cost"}) {
    auto plan = pl::MakePlan(s, policy);
    if (!plan.ok()) {
      Explain(plan.status());
      FUZZ_CHECK(plan.status().code() == StatusCode::kInvalidArgument);
      continue;
    }
    const uw::Status checked = pl::CheckPlan(s, *plan);
    Explain(checked);
    FUZZ_CHECK(checked.ok());
    FUZZ_CHECK(pl::ApplyPlan(s, *plan).ok());
  }
}

std::optional<pl::Snapshot> CheckSnapshot(const Json& j) {
  auto s = pl::ParseSnapshot(j);
  if (!s.ok()) {
    FUZZ_CHECK(s.status().code() == StatusCode::kInvalidArgument);
    return std::nullopt;
  }
  const Json written = pl::SnapshotToJson(*s);
  auto again = pl::ParseSnapshot(written);
  Explain(again.status());
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == *s);
  FUZZ_CHECK(pl::SnapshotToJson(*again) == written);
  return *s;
}

std::optional<pl::Plan> CheckPlanFile(const Json& j) {
  auto p = pl::ParsePlan(j);
  if (!p.ok()) {
    FUZZ_CHECK(p.status().code() == StatusCode::kInvalidArgument);
    return std::nullopt;
  }
  const Json written = pl::PlanToJson(*p);
  auto again = pl::ParsePlan(written);
  Explain(again.status());
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == *p);
  FUZZ_CHECK(pl::PlanToJson(*again) == written);
  return *p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto json = uw::ParseJson(text, "snapshot");
  if (!json.ok()) {
    FUZZ_CHECK(json.status().code() == StatusCode::kInvalidArgument);
    return 0;
  }
  if (auto s = CheckSnapshot(*json)) CheckEngine(*s);
  (void)CheckPlanFile(*json);
  if (json->is_object() && json->contains("snapshot") && json->contains("plan")) {
    auto s = CheckSnapshot((*json)["snapshot"]);
    auto p = CheckPlanFile((*json)["plan"]);
    if (s && p) {
      const uw::Status checked = pl::CheckPlan(*s, *p);
      FUZZ_CHECK(checked.ok() || checked.code() == StatusCode::kInvalidArgument ||
                 checked.code() == StatusCode::kFailedPrecondition);
      FUZZ_CHECK(pl::ApplyPlan(*s, *p).ok() == checked.ok());
    }
  }
  return 0;
}
