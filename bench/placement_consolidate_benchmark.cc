// Consolidation on generated instances: hosts used by the `consolidate` policy against the lower
// bound (max over CPU and memory of the fewest hosts whose capacity covers the demand) and against
// plain first-fit decreasing. Targets: used <= lower bound + 1, never more than FFD.
#include <benchmark/benchmark.h>

#include "placement/placement.h"
#include "sim/sim.h"

namespace {

namespace pl = uw::placement;

void BM_Consolidate(benchmark::State& state) {
  uw::sim::GenOptions o;
  o.hosts = state.range(0);
  o.vms = state.range(1);
  o.seed = static_cast<uint64_t>(state.range(2));
  o.memory_fill = 0.35;  // room to consolidate
  pl::Snapshot s = uw::sim::Generate(o);
  pl::Plan plan;
  for (auto _ : state) {
    auto p = pl::MakePlan(s, "consolidate");
    benchmark::DoNotOptimize(p);
    plan = std::move(*p);
  }
  uw::Status st = pl::CheckPlan(s, plan);
  if (!st.ok()) state.SkipWithError(st.ToString().c_str());
  const int64_t lb = pl::ConsolidationLowerBound(s), ffd = pl::FirstFitDecreasingHosts(s);
  state.counters["hosts"] = static_cast<double>(s.hosts.size());
  state.counters["hosts_used"] = static_cast<double>(plan.after.hosts_used);
  state.counters["lower_bound"] = static_cast<double>(lb);
  state.counters["ffd"] = static_cast<double>(ffd);
  state.counters["over_lower_bound"] = static_cast<double>(plan.after.hosts_used - lb);
  state.counters["moves"] = static_cast<double>(plan.moves.size());
  if (plan.after.hosts_used > lb + 1 || (ffd > 0 && plan.after.hosts_used > ffd)) {
    state.SkipWithError("consolidation target missed");
  }
}

BENCHMARK(BM_Consolidate)
    ->Args({32, 400, 1})
    ->Args({32, 400, 2})
    ->Args({64, 1500, 3})
    ->Args({64, 1500, 4})
    ->Args({200, 5000, 5})
    ->Unit(benchmark::kMillisecond);

}  // namespace
