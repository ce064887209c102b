// A full planning pass per policy on generated clusters (one core; the engine has no threads).
// Targets: DRS pass <= 100 ms for 64 hosts / 8,000 guests, <= 1 s for 1,000 hosts / 30,000.
#include <benchmark/benchmark.h>

#include <map>

#include "placement/placement.h"
#include "sim/sim.h"

namespace {

namespace pl = uw::placement;

const pl::Snapshot& Cluster(int64_t hosts, int64_t vms) {
  static std::map<std::pair<int64_t, int64_t>, pl::Snapshot> cache;
  auto key = std::make_pair(hosts, vms);
  auto it = cache.find(key);
  if (it == cache.end()) {
    uw::sim::GenOptions o;
    o.hosts = hosts;
    o.vms = vms;
    o.seed = 1;
    o.rules = 100;
    it = cache.emplace(key, uw::sim::Generate(o)).first;
  }
  return it->second;
}

void RunPass(benchmark::State& state, const std::string& policy) {
  const pl::Snapshot& s = Cluster(state.range(0), state.range(1));
  pl::Plan plan;
  for (auto _ : state) {
    auto p = pl::MakePlan(s, policy);
    benchmark::DoNotOptimize(p);
    plan = std::move(*p);
  }
  uw::Status st = pl::CheckPlan(s, plan);
  if (!st.ok()) state.SkipWithError(st.ToString().c_str());
  state.counters["moves"] = static_cast<double>(plan.moves.size());
  state.counters["imbalance_before"] = plan.before.imbalance;
  state.counters["imbalance_after"] = plan.after.imbalance;
  state.counters["hosts_used_after"] = static_cast<double>(plan.after.hosts_used);
}

void BM_DrsPass(benchmark::State& state) { RunPass(state, "drs"); }
void BM_OpportunityCostPass(benchmark::State& state) { RunPass(state, "opportunity-cost"); }
void BM_ConsolidatePass(benchmark::State& state) { RunPass(state, "consolidate"); }

BENCHMARK(BM_DrsPass)->Args({64, 8000})->Args({1000, 30000})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_OpportunityCostPass)->Args({64, 8000})->Args({1000, 30000})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConsolidatePass)->Args({64, 8000})->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
