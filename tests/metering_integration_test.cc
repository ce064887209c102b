// Metering on the test bed: real guests on real hosts, one burning a CPU and one reading its disk,
// under two lease classes. The manager is killed (-9) in the middle and started again. The minute
// records are checked against what libvirt itself counted (domstats cpu.time, block rd/wr bytes)
// over the same three minutes: none is missing, none is a gap, and the records reconcile.
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <sstream>
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
  // libvirt's counters of a guest (domstats --cpu-total --block): CPU time in ms, and the bytes
  // its disks read and wrote.
  struct Counted {
    int64_t cpu_ms = -1, disk_bytes = 0;
  };
  static Counted CountersOf(const std::string& g) {
    const std::string host = HostOf(g);
    Counted c;
    for (const auto& h : testbed_->hosts) {
      if (h.name != host) continue;
      auto r = ::uw::RunCommand({"virsh", "-c", h.libvirt_uri, "domstats", "--cpu-total", "--block", g}, {},
                                std::chrono::seconds(20));
      EXPECT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->out + r->err : r.status().ToString());
      if (!r.ok()) return c;
      std::istringstream lines(r->out);
      for (std::string line; std::getline(lines, line);) {
        const size_t eq = line.find('=');
        if (eq == std::string::npos) continue;
        std::string key = line.substr(0, eq);
        key.erase(0, key.find_first_not_of(' '));
        const std::string value = line.substr(eq + 1);
        if (key == "cpu.time") c.cpu_ms = std::stoll(value) / 1'000'000;
        if (key.rfind("block.", 0) == 0 && (key.size() > 9 && (key.substr(key.size() - 9) == ".rd.bytes" ||
                                                               key.substr(key.size() - 9) == ".wr.bytes"))) {
          c.disk_bytes += std::stoll(value);
        }
      }
    }
    return c;
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

TEST_F(MeteringIntegration, MinutesMatchLibvirtsCountersAndAKilledManagerLosesNoMinute) {
  WaitConnected();
  CreateBooted("met-busy", 256, false, {{"lease_class", "elastic"}});
  CreateBooted("met-disk", 256, true, {{"lease_class", "preemptible"}});
  Json body = {{"command", "burn 600"}};
  auto burn = AgentOf(HostOf("met-busy")).Call("POST", "/api/v1/guests/met-busy/exec", &body);
  ASSERT_TRUE(burn.ok()) << burn.status().ToString();
  // Three whole minutes, libvirt's counters read at their edges.
  const int64_t m = (WallMs() / kMinuteMs + 1) * kMinuteMs;
  SleepUntil(m);
  const Counted busy0 = CountersOf("met-busy"), disk0 = CountersOf("met-disk");
  ASSERT_GT(busy0.cpu_ms, 0);
  // The other guest reads 16 MiB of its disk in the first minute.
  SleepUntil(m + 15'000);
  body = {{"command",
           "dd if=/dev/vda of=/dev/null bs=65536 count=256 iflag=direct 2>&1 || "
           "dd if=/dev/vda of=/dev/null bs=65536 count=256 2>&1"}};
  auto dd = AgentOf(HostOf("met-disk")).Call("POST", "/api/v1/guests/met-disk/exec", &body);
  ASSERT_TRUE(dd.ok()) << dd.status().ToString();
  EXPECT_EQ((*dd)["exit_code"], 0) << dd->dump();
  // kill -9 of the manager in the second minute; it is down across that minute's end.
  SleepUntil(m + 100'000);
  ASSERT_EQ(kill(pid_, SIGKILL), 0);
  waitpid(pid_, nullptr, 0);
  std::printf("[ figures ] manager killed (-9) at m+100 s, started again at m+130 s\n");
  SleepUntil(m + 130'000);
  StartManagerProcess();
  SleepUntil(m + 3 * kMinuteMs);
  const Counted busy1 = CountersOf("met-busy"), disk1 = CountersOf("met-disk");
  // Each minute is recorded once its hosts delivered their samples (those they kept while the
  // manager was down come with their next heartbeat).
  Json busy, disk;
  ASSERT_TRUE(WaitFor(
      [&] {
        busy = Minutes("met-busy", m, m + 3 * kMinuteMs);
        disk = Minutes("met-disk", m, m + 3 * kMinuteMs);
        return busy.size() == 3 && disk.size() == 3;
      },
      std::chrono::seconds(60)))
      << busy.dump() << disk.dump();
  int64_t used = 0, disk_used = 0, disk_read = 0;
  for (const Json& r : busy) {
    EXPECT_EQ(r["lease_class"], "elastic");
    EXPECT_EQ(r["gap_ms"], 0) << "a minute lost to the manager's restart: " << r.dump();
    EXPECT_EQ(r["vcpu_granted_ms"], kMinuteMs);
    EXPECT_EQ(r["memory_granted_mib_s"], 256 * 60);
    used += r["vcpu_used_ms"].get<int64_t>();
  }
  for (const Json& r : disk) {
    EXPECT_EQ(r["lease_class"], "preemptible");
    EXPECT_EQ(r["gap_ms"], 0) << "a minute lost to the manager's restart: " << r.dump();
    disk_used += r["vcpu_used_ms"].get<int64_t>();
    disk_read += r["disk_bytes"].get<int64_t>();
  }
  // The agents number their samples and send what libvirt's counters counted between them; the
  // minute that took a sample from the guest's previous one holds it. Within 5% of libvirt's own
  // count over the three minutes (a sample taken near an edge counts on the other side of it).
  const int64_t counted = busy1.cpu_ms - busy0.cpu_ms, counted_bytes = disk1.disk_bytes - disk0.disk_bytes;
  std::printf(
      "[ figures ] busy guest over 3 min (manager killed in the middle): metered %lld ms of CPU, libvirt "
      "counted %lld ms; disk guest: metered %lld bytes read or written, libvirt counted %lld\n",
      static_cast<long long>(used), static_cast<long long>(counted), static_cast<long long>(disk_read),
      static_cast<long long>(counted_bytes));
  EXPECT_GT(counted, kMinuteMs) << "the guest did not burn a CPU";
  EXPECT_NEAR(static_cast<double>(used), static_cast<double>(counted), 0.05 * static_cast<double>(counted))
      << busy.dump();
  EXPECT_GE(counted_bytes, 16 << 20) << "the guest did not read its disk";
  EXPECT_NEAR(static_cast<double>(disk_read), static_cast<double>(counted_bytes),
              0.05 * static_cast<double>(counted_bytes))
      << disk.dump();
  EXPECT_LT(disk_used, used / 4);
  auto verify = Client().Call("GET", "/api/v1/usage/verify?from=" + std::to_string(m));
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ((*verify)["ok"], true) << verify->dump();
  DeleteGuest("met-busy");
  DeleteGuest("met-disk");
}

}  // namespace
}  // namespace uw
