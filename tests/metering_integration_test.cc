// Metering and billing on the test bed: real guests on real hosts, of two tenants under two lease
// classes, one burning a CPU and one reading its disk. The manager is killed (-9) in the middle and
// started again. The minute records, and each tenant's invoice for those minutes, are checked
// against what libvirt itself counted (domstats cpu.time, block rd/wr bytes) over the same three
// minutes: none is missing, none is a gap, and the records reconcile. An agent killed (-9) and
// started again: what it had counted and not delivered is a gap with its cause, never filled in.
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <sstream>
#include <thread>

#include "common/command.h"
#include "tests/manager_it_fixture.h"
#include "tests/testbed_client.h"

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
  // The price plan both tenants are billed by: used vCPU-hours (elastic 60.00 EUR, preemptible
  // 20.00 EUR) and disk bytes (preemptible, 1,000.00 EUR a GiB), so that three minutes cost cents.
  static Json Plan() {
    auto tier = [](int64_t micros) { return Json::array({{{"price_micros", micros}}}); };
    return {{"currency", "EUR"},
            {"prices",
             {{{"meter", "vcpu_used"}, {"lease_class", "elastic"}, {"tiers", tier(6'000'000'000)}},
              {{"meter", "vcpu_used"}, {"lease_class", "preemptible"}, {"tiers", tier(2'000'000'000)}},
              {{"meter", "disk_bytes"}, {"lease_class", "preemptible"}, {"tiers", tier(100'000'000'000)}}}}};
  }
  static std::string TenantToken(const std::string& tenant) {
    Json body = {{"name", tenant + "-met-key"}, {"role", "tenant"}, {"tenant", tenant}};
    auto r = Client().Call("POST", "/api/v1/tokens", &body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? (*r)["token"].get<std::string>() : "";
  }
  // The invoice line of `meter` (and lease class) in `inv`, or null.
  static Json LineOf(const Json& inv, const std::string& meter, const std::string& lease_class) {
    for (const Json& l : inv["lines"]) {
      if (l["meter"] == meter && l["lease_class"] == lease_class) return l;
    }
    return Json();
  }
  static Json Minutes(const std::string& g, int64_t from, int64_t to) {
    auto r = Client().Call(
        "GET", "/api/v1/usage?span=minute&guest=" + g + "&from=" + std::to_string(from) + "&to=" + std::to_string(to));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? (*r)["usage"] : Json::array();
  }
};

TEST_F(MeteringIntegration, TwoTenantsMinutesAndInvoicesMatchLibvirtsCountersAndAKilledManagerLosesNoMinute) {
  WaitConnected();
  CreateBooted("met-busy", 256, false, {{"lease_class", "elastic"}, {"tenant", "red"}});
  CreateBooted("met-disk", 256, true, {{"lease_class", "preemptible"}, {"tenant", "blue"}});
  const std::string busy_g = "red:met-busy", disk_g = "blue:met-disk";
  Json body = {{"command", "burn 600"}};
  auto burn = AgentOf(HostOf(busy_g)).Call("POST", "/api/v1/guests/" + busy_g + "/exec", &body);
  ASSERT_TRUE(burn.ok()) << burn.status().ToString();
  // Three whole minutes, libvirt's counters read at their edges.
  const int64_t m = (WallMs() / kMinuteMs + 1) * kMinuteMs;
  SleepUntil(m);
  const Counted busy0 = CountersOf(busy_g), disk0 = CountersOf(disk_g);
  ASSERT_GT(busy0.cpu_ms, 0);
  // The other guest reads 16 MiB of its disk in the first minute.
  SleepUntil(m + 15'000);
  body = {{"command",
           "dd if=/dev/vda of=/dev/null bs=65536 count=256 iflag=direct 2>&1 || "
           "dd if=/dev/vda of=/dev/null bs=65536 count=256 2>&1"}};
  auto dd = AgentOf(HostOf(disk_g)).Call("POST", "/api/v1/guests/" + disk_g + "/exec", &body);
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
  const Counted busy1 = CountersOf(busy_g), disk1 = CountersOf(disk_g);
  // Each minute is recorded once its hosts delivered their samples (those they kept while the
  // manager was down come with their next heartbeat).
  Json busy, disk;
  ASSERT_TRUE(WaitFor(
      [&] {
        busy = Minutes(busy_g, m, m + 3 * kMinuteMs);
        disk = Minutes(disk_g, m, m + 3 * kMinuteMs);
        return busy.size() == 3 && disk.size() == 3;
      },
      std::chrono::seconds(60)))
      << busy.dump() << disk.dump();
  int64_t used = 0, disk_used = 0, disk_read = 0;
  for (const Json& r : busy) {
    EXPECT_EQ(r["tenant"], "red");
    EXPECT_EQ(r["lease_class"], "elastic");
    EXPECT_EQ(r["gap_ms"], 0) << "a minute lost to the manager's restart: " << r.dump();
    EXPECT_EQ(r["vcpu_granted_ms"], kMinuteMs);
    EXPECT_EQ(r["memory_granted_mib_s"], 256 * 60);
    used += r["vcpu_used_ms"].get<int64_t>();
  }
  for (const Json& r : disk) {
    EXPECT_EQ(r["tenant"], "blue");
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

  // Each tenant's invoice for the three minutes: its lines are its minutes at the plan's prices.
  Json err;
  auto plan = Client().Call("PUT", "/api/v1/price-plans/met-plan", &(err = Plan()));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  for (const char* t : {"red", "blue"}) {
    Json assign = {{"plan", "met-plan"}};
    auto a = Client().Call("PUT", std::string("/api/v1/tenant-plans/") + t, &assign);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
  }
  auto invoice = [&](const std::string& tenant) {
    Json period = {{"tenant", tenant}, {"from", m}, {"to", m + 3 * kMinuteMs}};
    auto r = Client().Call("POST", "/api/v1/invoices", &period);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : Json();
  };
  const Json red = invoice("red"), blue = invoice("blue");
  ASSERT_TRUE(red.is_object() && blue.is_object());
  // An amount is its quantity at its price, in cents, rounded half up.
  auto cents = [](int64_t quantity, int64_t price_micros, int64_t unit) {
    return static_cast<int64_t>((static_cast<__int128>(quantity) * price_micros + unit * 500'000) / (unit * 1'000'000));
  };
  const Json red_cpu = LineOf(red, "vcpu_used", "elastic");
  ASSERT_TRUE(red_cpu.is_object()) << red.dump();
  EXPECT_EQ(red["records"], 3);
  EXPECT_EQ(red_cpu["quantity"], used);
  EXPECT_EQ(red_cpu["records"], 3);
  EXPECT_EQ(red_cpu["amount_minor"], cents(used, 6'000'000'000, 3'600'000));
  EXPECT_EQ(red["total_minor"], red_cpu["amount_minor"]) << red.dump();  // red has no other priced meter
  const Json blue_cpu = LineOf(blue, "vcpu_used", "preemptible"), blue_disk = LineOf(blue, "disk_bytes", "preemptible");
  ASSERT_TRUE(blue_disk.is_object()) << blue.dump();
  EXPECT_EQ(blue_disk["quantity"], disk_read);
  EXPECT_EQ(blue_disk["amount_minor"], cents(disk_read, 100'000'000'000, int64_t{1} << 30));
  const int64_t blue_cpu_cents = blue_cpu.is_object() ? blue_cpu["amount_minor"].get<int64_t>() : 0;
  EXPECT_EQ(blue["total_minor"], blue_disk["amount_minor"].get<int64_t>() + blue_cpu_cents) << blue.dump();
  // Against libvirt's own counters: the invoices within 5% of the same prices on what it counted.
  EXPECT_NEAR(red["total_minor"].get<double>(), static_cast<double>(cents(counted, 6'000'000'000, 3'600'000)),
              0.05 * static_cast<double>(cents(counted, 6'000'000'000, 3'600'000)) + 1);
  EXPECT_NEAR(blue_disk["amount_minor"].get<double>(),
              static_cast<double>(cents(counted_bytes, 100'000'000'000, int64_t{1} << 30)),
              0.05 * static_cast<double>(cents(counted_bytes, 100'000'000'000, int64_t{1} << 30)) + 1);
  std::printf(
      "[ figures ] invoices for the 3 minutes: red %lld cents (%lld ms of vCPU), blue %lld cents (%lld bytes "
      "of disk, %lld ms of vCPU)\n",
      static_cast<long long>(red["total_minor"].get<int64_t>()), static_cast<long long>(used),
      static_cast<long long>(blue["total_minor"].get<int64_t>()), static_cast<long long>(disk_read),
      static_cast<long long>(disk_used));
  // Each tenant reads its own invoice, and the other's is as unknown as none.
  const std::string red_token = TenantToken("red");
  auto mine = Client(red_token).Call("GET", "/api/v1/invoices");
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  ASSERT_EQ((*mine)["invoices"].size(), 1u) << mine->dump();
  EXPECT_EQ((*mine)["invoices"][0]["id"], red["id"]);
  auto theirs = Client(red_token).Do("GET", "/api/v1/invoices/" + blue["id"].get<std::string>());
  ASSERT_TRUE(theirs.ok());
  EXPECT_EQ(theirs->status, 404) << theirs->body;

  auto verify = Client().Call("GET", "/api/v1/usage/verify?from=" + std::to_string(m));
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ((*verify)["ok"], true) << verify->dump();
  EXPECT_EQ((*verify)["checked"]["invoices"], 2) << verify->dump();
  DeleteGuest("met-busy");
  DeleteGuest("met-disk");
}

// An agent killed (-9) loses the samples it had not delivered and its counters' baseline: its
// guest's minutes hold what was counted, and the rest of each minute is a gap with its cause.
// Counted and gap together are what libvirt counted over the same minutes.
TEST_F(MeteringIntegration, AKilledAgentsUncountedTimeIsAGapWithItsCause) {
  WaitConnected();
  CreateBooted("met-kill", 256, false, {{"lease_class", "elastic"}, {"tenant", "red"}});
  const std::string g = "red:met-kill";
  const std::string host = HostOf(g);
  Json body = {{"command", "burn 600"}};
  auto burn = AgentOf(host).Call("POST", "/api/v1/guests/" + g + "/exec", &body);
  ASSERT_TRUE(burn.ok()) << burn.status().ToString();
  const int64_t m = (WallMs() / kMinuteMs + 1) * kMinuteMs;
  SleepUntil(m);
  const Counted c0 = CountersOf(g);
  // Down from m+40 s to m+70 s: across the first minute's end.
  SleepUntil(m + 40'000);
  ASSERT_TRUE(testing::StopAgent(*testbed_, IndexOf(host), SIGKILL).ok());
  const int64_t killed = WallMs();
  SleepUntil(m + 70'000);
  Status up = testing::RestartAgents(*testbed_);
  ASSERT_TRUE(up.ok()) << up.ToString();
  RestartLink(IndexOf(host));  // the agent's link starts again with it, and its samples from nothing
  std::printf("[ figures ] agent of %s killed (-9) at m+%.1f s, started again at m+%.1f s\n", host.c_str(),
              static_cast<double>(killed - m) / 1000, static_cast<double>(WallMs() - m) / 1000);
  SleepUntil(m + 2 * kMinuteMs);
  const Counted c1 = CountersOf(g);
  Json minutes;
  ASSERT_TRUE(WaitFor(
      [&] {
        minutes = Minutes(g, m, m + 2 * kMinuteMs);
        return minutes.size() == 2;
      },
      std::chrono::seconds(60)))
      << minutes.dump();
  int64_t used = 0, gaps = 0;
  for (const Json& r : minutes) {
    used += r["vcpu_used_ms"].get<int64_t>();
    gaps += r["gap_ms"].get<int64_t>();
    // Some of each minute was counted, some was not, and the record says why.
    EXPECT_GT(r["vcpu_used_ms"], 0) << r.dump();
    EXPECT_GT(r["gap_ms"], 0) << r.dump();
    EXPECT_LT(r["gap_ms"], kMinuteMs) << r.dump();
    EXPECT_NE(r["gap_cause"].get<std::string>().find(host), std::string::npos) << r.dump();
  }
  EXPECT_NE(minutes[0]["gap_cause"].get<std::string>().find("no samples from host"), std::string::npos)
      << minutes[0].dump();
  EXPECT_NE(minutes[1]["gap_cause"].get<std::string>().find("started counting again"), std::string::npos)
      << minutes[1].dump();
  // The guest burns a CPU throughout: what was not counted is what it burnt in the gaps' time, at
  // its mean rate over the two minutes (libvirt's count), within 5% of libvirt's count. The gaps are
  // at least the agent's 30 s down.
  const int64_t counted = c1.cpu_ms - c0.cpu_ms;
  const double rate = static_cast<double>(counted) / static_cast<double>(2 * kMinuteMs);
  std::printf(
      "[ figures ] killed agent over 2 min: metered %lld ms of CPU with %lld ms of gaps (%.0f ms of CPU at "
      "the guest's rate); libvirt counted %lld ms\n",
      static_cast<long long>(used), static_cast<long long>(gaps), rate * static_cast<double>(gaps),
      static_cast<long long>(counted));
  EXPECT_GE(gaps, 30'000);
  EXPECT_GT(rate, 0.5) << "the guest did not burn a CPU";
  EXPECT_NEAR(static_cast<double>(used) + rate * static_cast<double>(gaps), static_cast<double>(counted),
              0.05 * static_cast<double>(counted))
      << minutes.dump();
  auto verify = Client().Call("GET", "/api/v1/usage/verify?from=" + std::to_string(m));
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ((*verify)["ok"], true) << verify->dump();
  DeleteGuest("met-kill");
}

}  // namespace
}  // namespace uw
