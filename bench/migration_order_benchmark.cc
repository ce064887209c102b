// OrderMoves on 1,000 moves: hosts of a generated cluster go into maintenance until the DRS plan
// evacuating them has at least 1,000 moves; the first 1,000 (a valid serial plan) are ordered
// under the default caps and under tight ones. The time includes the checker's verification.
#include <benchmark/benchmark.h>

#include <map>
#include <tuple>

#include "migration/migration.h"
#include "placement/placement.h"
#include "sim/sim.h"

namespace {

namespace pl = uw::placement;
namespace mg = uw::migration;

struct Case {
  pl::Snapshot snapshot;
  std::vector<pl::Move> moves;
};

const Case& Moves(int64_t hosts, int64_t vms, size_t want) {
  static std::map<std::tuple<int64_t, int64_t, size_t>, Case> cache;
  auto key = std::make_tuple(hosts, vms, want);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  uw::sim::GenOptions o;
  o.hosts = hosts;
  o.vms = vms;
  o.seed = 7;
  o.rules = 50;
  o.memory_fill = 0.7;
  Case c{uw::sim::Generate(o), {}};
  c.snapshot.settings.drs.threshold = 5;
  for (auto& h : c.snapshot.hosts) {
    h.state = pl::HostState::kMaintenance;
    auto plan = pl::MakePlan(c.snapshot, "drs");
    if (plan.ok() && plan->moves.size() >= want) {
      c.moves.assign(plan->moves.begin(), plan->moves.begin() + static_cast<long>(want));
      break;
    }
  }
  return cache.emplace(key, std::move(c)).first->second;
}

void BM_OrderMoves(benchmark::State& state) {
  const Case& c = Moves(state.range(0), state.range(1), 1000);
  if (c.moves.size() < 1000) {
    state.SkipWithError("could not build 1,000 moves");
    return;
  }
  mg::Caps caps{state.range(2), state.range(3)};
  mg::Schedule sched;
  for (auto _ : state) {
    auto s = mg::OrderMoves(c.snapshot, c.moves, caps);
    if (!s.ok()) {
      state.SkipWithError(s.status().ToString().c_str());
      return;
    }
    sched = std::move(*s);
  }
  state.counters["moves"] = static_cast<double>(c.moves.size());
  state.counters["scheduled"] = static_cast<double>(sched.steps.size());
  state.counters["unschedulable"] = static_cast<double>(sched.unschedulable.size());
  state.counters["waves"] = sched.waves;
  size_t deps = 0;
  for (const auto& st : sched.steps) deps += st.depends_on.size();
  state.counters["dependencies"] = static_cast<double>(deps);
}
// hosts, guests, per-host cap, cluster cap
BENCHMARK(BM_OrderMoves)
    ->Args({200, 6000, 4, 16})
    ->Args({200, 6000, 2, 8})
    ->Args({200, 6000, 8, 64})
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
