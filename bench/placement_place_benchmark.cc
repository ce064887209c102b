// Initial placement of one guest among 1,000 hosts with 100 rules (target: p99 <= 2 ms).
// The guests placed are the ones named in rules, taken off their hosts, so every call runs the
// rule filters; the index is built once, as the manager does per snapshot version.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "placement/placement.h"
#include "sim/sim.h"

namespace {

namespace pl = uw::placement;

void BM_PlaceOneGuest(benchmark::State& state) {
  uw::sim::GenOptions o;
  o.hosts = state.range(0);
  o.vms = state.range(0) * 30;
  o.rules = state.range(1);
  o.seed = 7;
  pl::Snapshot s = uw::sim::Generate(o);
  std::set<std::string> ruled;
  for (const auto& r : s.rules) ruled.insert(r.vms.begin(), r.vms.end());
  std::vector<size_t> candidates;
  for (size_t i = 0; i < s.vms.size(); ++i) {
    if (ruled.count(s.vms[i].name)) {
      s.vms[i].host.clear();
      candidates.push_back(i);
    }
  }
  auto index = pl::PlacementIndex::Build(s);
  if (!index.ok()) {
    state.SkipWithError(index.status().ToString().c_str());
    return;
  }
  std::vector<double> us;
  size_t i = 0, placed = 0;
  for (auto _ : state) {
    const pl::Vm& vm = s.vms[candidates[i++ % candidates.size()]];
    auto t0 = std::chrono::steady_clock::now();
    pl::PlacementDecision d = (*index)->Place(vm);
    auto t1 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(d);
    placed += !d.host.empty();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(us.begin(), us.end());
  auto pct = [&](double q) { return us.empty() ? 0 : us[std::min(us.size() - 1, static_cast<size_t>(q * us.size()))]; };
  state.counters["p50_us"] = pct(0.50);
  state.counters["p99_us"] = pct(0.99);
  state.counters["max_us"] = us.empty() ? 0 : us.back();
  state.counters["placed_fraction"] = us.empty() ? 0 : static_cast<double>(placed) / static_cast<double>(us.size());
  state.counters["candidates"] = static_cast<double>(candidates.size());
}

BENCHMARK(BM_PlaceOneGuest)->Args({1000, 100})->Unit(benchmark::kMicrosecond);

}  // namespace
