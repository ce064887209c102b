// The lease loop's own cost, on in-memory agents (no HTTP, no libvirt): what the manager adds to
// taking memory back from a guest and to moving one. The real channel's figures (a guest's hook
// answering through virtio-serial, the balloon) are tests/lease_integration_test.cc's.
//   BM_NoticeAckApplied        reclaim (a shrink notice) -> lease loop delivers it -> the guest's
//                              daemon answers ack -> acted, record written -> resize task done
//   BM_MoveNoticeCost/0        an operator's move of a guest that holds no lease (no notice)
//   BM_MoveNoticeCost/1        the same guest with its lease: a migrate notice before (acked at
//                              once), a moved message after
//   BM_AdmissionByReclaim/N    a create no host has room for, on N full hosts of elastic guests:
//                              the plan of what to reclaim where, its notices, the admission
#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "manager/in_memory_agent.h"
#include "manager/manager.h"

namespace uw::manager {
namespace {

constexpr const char* kAdmin = "bench-admin-token-0123456789";

struct Bed {
  std::filesystem::path dir;
  InMemoryCluster agents;  // outlives manager
  std::unique_ptr<Manager> manager;
  Principal admin;

  explicit Bed(int hosts = 2, int64_t host_mib = 1 << 20) {
    dir = std::filesystem::temp_directory_path() / ("uw-lease-bench-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    ManagerConfig cfg;
    cfg.db_path = (dir / "state.db").string();
    cfg.join_token = "bench-join-token-0123456789";
    cfg.admin_token = kAdmin;
    cfg.drs_interval_ms = 0;
    cfg.heartbeat_timeout_ms = 3'600'000;
    cfg.migration_poll_ms = 50;
    cfg.migration_verify_window_ms = 0;
    cfg.lease_tick_ms = 60'000;  // the benchmark runs the loop itself
    manager = std::make_unique<Manager>(cfg);
    manager->SetAgentFactory(agents.Factory());
    manager->SetPollSleeper([](Duration d) {
      std::this_thread::sleep_for(std::min<Duration>(d, std::chrono::milliseconds(1)));
      return true;
    });
    if (!manager->Start().ok()) std::abort();
    for (int i = 0; i < hosts; ++i) {
      const std::string h = "b" + std::to_string(i);
      agents.AddHost(h, host_mib);
      HostJoin j{h, "inmem://" + h, "bench-agent-token-0123456789", 64, host_mib, Json::object()};
      if (!manager->JoinHost(cfg.join_token, j).ok()) std::abort();
    }
    admin = *manager->Authenticate(kAdmin);
  }
  ~Bed() {
    manager->Stop();
    std::filesystem::remove_all(dir);
  }
  void Wait(const Result<Task>& t) {
    if (!t.ok()) std::abort();
    auto done = manager->WaitTask(t->id, std::chrono::seconds(30));
    if (!done.ok() || done->state != "succeeded") std::abort();
  }
  // The newest task, once it ended.
  void WaitNewest() {
    for (int i = 0; i < 30000; ++i) {
      auto tasks = manager->ListTasks(admin, {1, ""});
      if (tasks.ok() && !tasks->items.empty() && tasks->items[0].final()) return;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    std::abort();
  }
  std::string Create(const std::string& name, bool acks = true) {
    GuestCreate g;
    g.name = name;
    g.lease_class = "elastic";
    g.grant = {1, 256};
    g.agent_spec = {{"name", name}, {"kind", "qemu"}, {"vcpus", 1}, {"memory_mib", 256}, {"max_memory_mib", 256}};
    Wait(manager->CreateGuest(admin, g));
    auto leases = manager->ListLeases(admin, name, {1, ""});
    if (!leases.ok() || leases->items.empty()) std::abort();
    if (acks) agents.SetExecOutput(name, "uw-notice", "ack\n");
    return leases->items[0].lease.id;
  }
};

void BM_NoticeAckApplied(benchmark::State& state) {
  Bed bed;
  const std::string lease = bed.Create("n1");
  for (auto _ : state) {
    LeaseReclaim r;
    r.memory_mib = 128;
    r.notice_s = 600;
    if (!bed.manager->ReclaimLease(bed.admin, lease, r).ok()) std::abort();
    if (!bed.manager->RunLeases().ok()) std::abort();
    bed.WaitNewest();  // the resize the act journalled
    state.PauseTiming();
    LeaseExtend grow;
    grow.memory_mib = 256;
    if (!bed.manager->ExtendLease(bed.admin, lease, grow).ok()) std::abort();
    bed.WaitNewest();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_NoticeAckApplied)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_MoveNoticeCost(benchmark::State& state) {
  Bed bed;
  bed.Create("m1");
  if (state.range(0) == 0) {
    // A guest without a lease (found on a host, or from before leases): nothing to tell.
    if (!bed.manager->store().Exec("UPDATE leases SET state = 'closed' WHERE guest = 'm1'").ok()) std::abort();
  }
  std::string host = bed.manager->GetGuest(bed.admin, "m1")->guest.host.value_or("b0");
  for (auto _ : state) {
    MigrateRequest m;
    m.host = host == "b0" ? "b1" : "b0";
    bed.Wait(bed.manager->MigrateGuest(bed.admin, "m1", m));
    host = m.host;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MoveNoticeCost)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// Admission by reclaim: a cluster of N hosts of 1 GiB, each full with four elastic 256 MiB guests;
// a new guaranteed guest of 256 MiB fits nowhere, so the manager plans which host's leases give
// it room, sends their notices and admits it, pending (the create call alone; the waiting task is
// cancelled between iterations, which withdraws the notices).
void BM_AdmissionByReclaim(benchmark::State& state) {
  const int hosts = static_cast<int>(state.range(0));
  Bed bed(hosts, 1024);
  for (int i = 0; i < hosts * 4; ++i) bed.Create("e" + std::to_string(i), false);  // silent: nothing acted
  GuestCreate g;
  g.name = "new";
  g.grant = {1, 256};
  g.agent_spec = {{"name", "new"}, {"kind", "qemu"}, {"vcpus", 1}, {"memory_mib", 256}, {"max_memory_mib", 256}};
  for (auto _ : state) {
    auto t = bed.manager->CreateGuest(bed.admin, g);
    if (!t.ok() || t->message.find("waiting for") == std::string::npos) std::abort();
    state.PauseTiming();
    if (!bed.manager->CancelTask(bed.admin, t->id).ok()) std::abort();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AdmissionByReclaim)->Arg(8)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace uw::manager

// The manager logs through spdlog to stdout; benchmarks print JSON there, so only warnings go out.
int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
