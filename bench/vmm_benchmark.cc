// Cost of the agent's hot paths on libvirt's in-process test driver (no daemon, so the numbers are
// the agent's own work plus libvirt's client-side marshalling, not QEMU's):
//   BM_SampleAll/N      one usage sample of N guests (virConnectGetAllDomainStats + rates)
//   BM_AgentApi/...     one authenticated request through HTTP, router and handler
// Run: build/bench/vmm_benchmark --benchmark_format=json
#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>

#include "vmm/agent.h"
#include "vmm/libvirt_driver.h"
#include "vmm/usage.h"

namespace uw::vmm {
namespace {

// Defines and starts guests bench-0..bench-(n-1) on test:///default (idempotent).
void EnsureGuests(LibvirtHypervisor& h, int n) {
  for (int i = 0; i < n; ++i) {
    GuestSpec s;
    s.name = "bench-" + std::to_string(i);
    s.kernel = "/boot/vmlinuz";
    s.memory_mib = s.max_memory_mib = 128;
    if (h.Get(s.name).ok()) continue;
    (void)h.Define(s);
    (void)h.Start(s.name);
  }
}

void BM_SampleAll(benchmark::State& state) {
  auto h = LibvirtHypervisor::Open("test:///default");
  if (!h.ok()) {
    state.SkipWithError(h.status().ToString().c_str());
    return;
  }
  // test:///default is shared per process: a fresh connection sees earlier guests; keep exactly N.
  auto existing = (*h)->List();
  if (!existing.ok()) {
    state.SkipWithError(existing.status().ToString().c_str());
    return;
  }
  for (const auto& g : *existing) {
    if (g.name.rfind("bench-", 0) == 0 && std::stoi(g.name.substr(6)) >= state.range(0)) {
      (void)(*h)->Destroy(g.name);
      (void)(*h)->Undefine(g.name);
    }
  }
  EnsureGuests(**h, static_cast<int>(state.range(0)));
  UsageTracker tracker;
  size_t guests = 0;
  for (auto _ : state) {
    auto samples = (*h)->SampleAll();
    auto usage = tracker.Update(*samples);
    guests = usage.size();
    benchmark::DoNotOptimize(usage);
  }
  state.counters["guests"] = static_cast<double>(guests);
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(guests));
}
BENCHMARK(BM_SampleAll)->Arg(1)->Arg(10)->Arg(100)->Unit(benchmark::kMicrosecond);

class AgentFixture {
 public:
  AgentFixture() {
    dir_ = std::filesystem::temp_directory_path() / ("uw-agent-bench-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    AgentConfig c;
    c.host_name = "bench";
    c.listen_port = 0;
    c.token = "bench-token-0123456789";
    c.libvirt_uri = "test:///default";
    c.state_dir = dir_.string();
    c.sample_interval_ms = 3'600'000;
    auto h = LibvirtHypervisor::Open("test:///default");
    EnsureGuests(**h, 10);
    agent_ = std::make_unique<Agent>(c, std::move(*h), nullptr, KvmSupport{});
    status_ = agent_->Start();
    api::ClientOptions o;
    o.base_url = "http://127.0.0.1:" + std::to_string(agent_->port());
    o.bearer_token = c.token;
    client_ = std::make_unique<api::HttpClient>(o);
  }
  ~AgentFixture() {
    agent_.reset();
    std::filesystem::remove_all(dir_);
  }
  Status status_;
  std::filesystem::path dir_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<api::HttpClient> client_;
};

void AgentRequest(benchmark::State& state, const char* method, const char* path) {
  spdlog::set_level(spdlog::level::warn);
  static AgentFixture* fixture = new AgentFixture();  // one agent for all API benchmarks
  if (!fixture->status_.ok()) {
    state.SkipWithError(fixture->status_.ToString().c_str());
    return;
  }
  for (auto _ : state) {
    auto r = fixture->client_->Do(method, path);
    if (!r.ok() || r->status >= 500) {
      state.SkipWithError("request failed");
      return;
    }
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK_CAPTURE(AgentRequest, healthz, "GET", "/healthz")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_CAPTURE(AgentRequest, host, "GET", "/api/v1/host")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_CAPTURE(AgentRequest, list_10_guests, "GET", "/api/v1/guests")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_CAPTURE(AgentRequest, stats, "GET", "/api/v1/stats")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_CAPTURE(AgentRequest, guest_404, "GET", "/api/v1/guests/nope")->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace uw::vmm

BENCHMARK_MAIN();
