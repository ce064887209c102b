// Metering on the test bed: real guests on real hosts, one burning a CPU and one idle, under two
// lease classes. The manager's minute records are checked against what libvirt itself counted
// for the busy guest (domstats cpu.time) over the same two minutes, and the records reconcile.
#include <chrono>
#include <cstdio>
#include <thread>

#include "common/command.h"
#include "tests/manager_it_fixture.h"

namespace uw {
namespace {

using it::ManagerIntegrationTest;
using testing::WaitFor;

constexpr int64_t kMinuteMs = 60'000;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class MeteringIntegration : public ManagerIntegrationTest {
 protected:
  // libvirt's count of the CPU time the guest's vCPUs and emulator used, in ms.
  static int64_t CpuTimeMs(const std::string& g) {
    const std::string host = HostOf(g);
    for (const auto& h : testbed_->hosts) {
      if (h.name != host) continue;
      auto r =
          ::uw::RunCommand({"virsh", "-c", h.libvirt_uri, "domstats", "--cpu-total", g}, {}, std::chrono::seconds(20));
      EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->out + r->err : r.status().ToString());
      if (!r.ok()) return -1;
      const size_t at = r->out.find("cpu.time=");
      if (at == std::string::npos) return -1;
      return std::stoll(r->out.substr(at + 9)) / 1'000'000;
    }
    return -1;
  }
  static void SleepUntil(int64_t wall_ms) {
    const int64_t now = WallMs();
    if (wall_ms > now) std::this_thread::sleep_for(std::chrono::milliseconds(wall_ms - now));
  }
  static Json Minutes(const std::string& g, int64_t from, int64_t to) {
    auto r = Client().Call(
        "GET", "/api/v1/usage?span=minute&guest=" + g + "&from=" + std::to_string(from) + "&to=" + std::to_string(to));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? (*r)["usage"] : Json::array();
  }
};

TEST_F(MeteringIntegration, MinuteRecordsMatchWhatLibvirtCountedForABusyGuest) {
  WaitConnected();
  CreateBooted("met-busy", 256, false, {{"lease_class", "elastic"}});
  CreateBooted("met-idle", 256, false, {{"lease_class", "preemptible"}});
  Json body = {{"command", "burn 400"}};
  auto burn = AgentOf(HostOf("met-busy")).Call("POST", "/api/v1/guests/met-busy/exec", &body);
  ASSERT_TRUE(burn.ok()) << burn.status().ToString();
  // Two whole minutes, libvirt's counter read at their edges.
  const int64_t m = (WallMs() / kMinuteMs + 1) * kMinuteMs;
  SleepUntil(m);
  const int64_t cpu0 = CpuTimeMs("met-busy");
  SleepUntil(m + 2 * kMinuteMs);
  const int64_t cpu1 = CpuTimeMs("met-busy");
  ASSERT_GT(cpu0, 0);
  // The manager records a minute 5 s after it ends (a pass a second).
  Json busy, idle;
  ASSERT_TRUE(WaitFor(
      [&] {
        busy = Minutes("met-busy", m, m + 2 * kMinuteMs);
        idle = Minutes("met-idle", m, m + 2 * kMinuteMs);
        return busy.size() == 2 && idle.size() == 2;
      },
      std::chrono::seconds(30)))
      << busy.dump() << idle.dump();
  int64_t used = 0;
  for (const Json& r : busy) {
    EXPECT_EQ(r["lease_class"], "elastic");
    EXPECT_EQ(r["gap_ms"], 0) << r.dump();
    EXPECT_EQ(r["vcpu_granted_ms"], kMinuteMs);
    EXPECT_EQ(r["memory_granted_mib_s"], 256 * 60);
    used += r["vcpu_used_ms"].get<int64_t>();
  }
  // The records come from the agents' rates sampled every heartbeat; libvirt counted the time
  // itself. Within 15% of each other.
  const int64_t counted = cpu1 - cpu0;
  std::printf("[ figures ] busy guest over 2 min: metered %lld ms of CPU, libvirt counted %lld ms\n",
              static_cast<long long>(used), static_cast<long long>(counted));
  EXPECT_GT(counted, kMinuteMs / 2) << "the guest did not burn a CPU";
  EXPECT_NEAR(static_cast<double>(used), static_cast<double>(counted), 0.15 * static_cast<double>(counted))
      << busy.dump();
  for (const Json& r : idle) {
    EXPECT_EQ(r["lease_class"], "preemptible");
    EXPECT_EQ(r["gap_ms"], 0) << r.dump();
    EXPECT_LT(r["vcpu_used_ms"].get<int64_t>(), used / 4) << r.dump();
  }
  auto verify = Client().Call("GET", "/api/v1/usage/verify?from=" + std::to_string(m));
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ((*verify)["ok"], true) << verify->dump();
  DeleteGuest("met-busy");
  DeleteGuest("met-idle");
}

}  // namespace
}  // namespace uw
