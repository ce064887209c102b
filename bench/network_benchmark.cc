// The network catalogue (manager/network_service.h) at scale, in the manager's SQLite store:
//   BM_FillSubnet/N   N ports created one after another on one /16 network, each getting the
//                     lowest free address (the service reads the network's taken addresses each
//                     time): ports/s overall, and the ms a create takes when N are already there
//   BM_Networks/N     N networks of 100 tenants (the overlap check reads the tenant's subnets, the
//                     VNI allocation the taken VNIs): networks/s
//   BM_LowestFree/N   netvirt::LowestFree alone with N addresses taken on a /16
// Each runs once per N. CI's short mode runs the smaller N.
#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "common/clock.h"
#include "manager/event_log.h"
#include "manager/network_service.h"
#include "manager/store.h"
#include "netvirt/ipam.h"

namespace uw::manager {
namespace {

struct Bed {
  std::filesystem::path dir;
  std::unique_ptr<Store> store;
  FakeClock clock;
  std::unique_ptr<internal::EventLog> events;
  Principal admin;

  explicit Bed(const std::string& name) {
    dir = std::filesystem::temp_directory_path() / ("uw-network-bench-" + std::to_string(::getpid()) + "-" + name);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    auto s = Store::Open((dir / "state.db").string());
    if (!s.ok()) std::abort();
    store = std::move(*s);
    events = std::make_unique<internal::EventLog>(*store, clock);
    admin.token_id = "bench";
    admin.role = Role::kAdmin;
  }
  ~Bed() {
    events.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
  internal::NetworkService Service() { return internal::NetworkService(*store, clock, *events); }
};

void BM_FillSubnet(benchmark::State& state) {
  spdlog::set_level(spdlog::level::warn);
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) {
    Bed bed("fill");
    auto made = bed.Service().CreateNetwork(bed.admin, {.name = "big", .tenant = "acme", .subnet = "10.0.0.0/16"});
    if (!made.ok()) state.SkipWithError(made.status().ToString().c_str());
    const auto start = std::chrono::steady_clock::now();
    auto last = start;
    for (int i = 0; i < n; ++i) {
      last = std::chrono::steady_clock::now();
      auto p = bed.Service().CreatePort(bed.admin, {.network = "acme:big"});
      if (!p.ok()) {
        state.SkipWithError(p.status().ToString().c_str());
        break;
      }
    }
    const auto end = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(end - start).count();
    state.counters["ports_per_s"] = n / s;
    state.counters["last_create_ms"] = std::chrono::duration<double, std::milli>(end - last).count();
  }
}
BENCHMARK(BM_FillSubnet)->Arg(1000)->Arg(20000)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_Networks(benchmark::State& state) {
  spdlog::set_level(spdlog::level::warn);
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) {
    Bed bed("networks");
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      // Tenant t gets 10.T.K.0/24 networks: never overlapping within a tenant.
      const int tenant = i % 100, k = i / 100;
      const std::string subnet = "10." + std::to_string(tenant) + "." + std::to_string(k % 256) + ".0/24";
      auto made = bed.Service().CreateNetwork(
          bed.admin, {.name = "n" + std::to_string(k), .tenant = "t" + std::to_string(tenant), .subnet = subnet});
      if (!made.ok()) {
        state.SkipWithError(made.status().ToString().c_str());
        break;
      }
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state.counters["networks_per_s"] = n / s;
  }
}
BENCHMARK(BM_Networks)->Arg(1000)->Arg(20000)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_LowestFree(benchmark::State& state) {
  const auto subnet = *netvirt::ParseSubnet("10.0.0.0/16");
  std::set<netvirt::Ipv4> taken;
  for (int64_t i = 0; i < state.range(0); ++i) taken.insert(subnet.FirstHost() + static_cast<netvirt::Ipv4>(i));
  for (auto _ : state) benchmark::DoNotOptimize(netvirt::LowestFree(subnet, taken));
}
BENCHMARK(BM_LowestFree)->Arg(100)->Arg(60000);

}  // namespace
}  // namespace uw::manager

BENCHMARK_MAIN();
