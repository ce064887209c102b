// Live migration of a busy guest on the namespace test bed: one emulated 256 MiB guest that burns
// a CPU, rewrites 64 MiB of its memory in a loop and ticks on its console is moved back and forth
// between two hosts (tests/testbed_client.h, RunPingPong). Each iteration is one move, timed by
// libvirt's own figure (manual time); counters: downtime_ms (QEMU's), guest_pause_ms (the longest
// gap in the guest's console ticks), and failed (moves after which the guest did not answer or
// panicked: must be 0).
//   UW_TESTBED_DIR=/var/tmp/uw-testbed build/bench/migration_stress_benchmark --benchmark_format=json
// Without a test bed the benchmark is skipped with the reason.
#include <benchmark/benchmark.h>

#include <fstream>

#include "tests/testbed_client.h"

namespace uw::testing {
namespace {

constexpr const char* kGuest = "bench-stress1";

void BM_LiveMoveOfABusyGuest(benchmark::State& state) {
  auto bed = Testbed::Load();
  if (!bed.ok() || bed->hosts.size() < 2 || bed->hosts[0].agent_url.empty()) {
    state.SkipWithError(
        ("no test bed with two agents: " + (bed.ok() ? std::string("too few hosts") : bed.status().ToString()))
            .c_str());
    return;
  }
  for (size_t h = 0; h < 2; ++h)
    (void)bed->Agent(h).Do("DELETE", std::string("/api/v1/guests/") + kGuest + "?force=true");
  Json spec = {{"name", kGuest}, {"kind", "qemu"}, {"image", "tiny"}, {"vcpus", 1}, {"memory_mib", 256}};
  if (auto made = bed->Agent(0).Call("POST", "/api/v1/guests", &spec); !made.ok()) {
    state.SkipWithError(made.status().ToString().c_str());
    return;
  }
  const bool booted = WaitFor(
      [&] {
        std::ifstream in(ConsoleLogOf(*bed, 0, kGuest));
        std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        return all.find("UW-GUEST-READY") != std::string::npos;
      },
      std::chrono::seconds(180));
  if (!booted) {
    state.SkipWithError("the guest did not boot");
    return;
  }
  const int moves = static_cast<int>(state.max_iterations);
  std::vector<PingPongMove> done;
  auto run = RunPingPong(*bed, kGuest, moves, 64, [&](const PingPongMove& m) { done.push_back(m); });
  double downtime = 0, pause = 0, worst_pause = 0, failed = 0;
  size_t i = 0;
  for (auto _ : state) {
    if (i >= done.size()) {
      state.SkipWithError(run.ok() ? "the run stopped at a failed move" : run.status().ToString().c_str());
      break;
    }
    const PingPongMove& m = done[i++];
    state.SetIterationTime(m.total_ms / 1000.0);
    downtime += m.downtime_ms;
    pause += m.guest_pause_ms;
    worst_pause = std::max(worst_pause, m.guest_pause_ms);
    failed += (!m.answered || m.panicked) ? 1 : 0;
  }
  if (i > 0) {
    state.counters["downtime_ms"] = downtime / static_cast<double>(i);
    state.counters["guest_pause_ms"] = pause / static_cast<double>(i);
    state.counters["worst_guest_pause_ms"] = worst_pause;
    state.counters["failed"] = failed;
  }
  for (size_t h = 0; h < 2; ++h)
    (void)bed->Agent(h).Do("DELETE", std::string("/api/v1/guests/") + kGuest + "?force=true");
}
BENCHMARK(BM_LiveMoveOfABusyGuest)->Iterations(20)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace uw::testing

BENCHMARK_MAIN();
