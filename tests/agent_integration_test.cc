// uw-agent against real libvirtd, QEMU (TCG) and LXC on the namespace test bed (scripts/testbed).
// One emulated guest is booted once for the suite and exercised in order; containers and the
// error cases use their own guests. At most two guests run at once.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/testbed_client.h"

namespace uw::testing {
namespace {

constexpr const char* kVm = "it-vm1";

class AgentOnTestbed : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto t = Testbed::Load();
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    bed_ = new Testbed(std::move(*t));
    ASSERT_GE(bed_->hosts.size(), 2u) << "the agent tests need two test-bed hosts";
    ASSERT_FALSE(bed_->hosts[0].agent_url.empty()) << "the test bed runs no agents";
    // Leftovers from an interrupted run would make creation fail.
    for (size_t h = 0; h < 2; ++h) {
      for (const char* g : {kVm, "it-ct1", "it-kvm1", "it-bad"}) (void)Call(h, "DELETE", std::string("/api/v1/guests/") + g + "?force=true");
    }
  }
  static void TearDownTestSuite() {
    if (bed_) {
      for (size_t h = 0; h < 2; ++h) {
        for (const char* g : {kVm, "it-ct1", "it-kvm1", "it-bad"}) (void)Call(h, "DELETE", std::string("/api/v1/guests/") + g + "?force=true");
      }
    }
    delete bed_;
    bed_ = nullptr;
  }

  static api::ClientResponse Call(size_t host, const std::string& method, const std::string& path,
                                  const std::string& body = "") {
    auto r = bed_->Agent(host).Do(method, path, body, {{"Content-Type", "application/json"}});
    if (!r.ok()) return api::ClientResponse{0, {}, r.status().ToString()};
    return *r;
  }
  static Json CallJson(size_t host, const std::string& method, const std::string& path, const std::string& body = "") {
    auto r = Call(host, method, path, body);
    EXPECT_GE(r.status, 200) << method << " " << path << ": " << r.body;
    EXPECT_LT(r.status, 300) << method << " " << path << ": " << r.body;
    return Json::parse(r.body, nullptr, false);
  }
  // Runs a command in a guest through the agent; "" with a test failure when it cannot.
  static std::string Exec(size_t host, const std::string& guest, const std::string& command) {
    auto r = Call(host, "POST", "/api/v1/guests/" + guest + "/exec", Json({{"command", command}}).dump());
    if (r.status != 200) return "<exec failed: " + std::to_string(r.status) + " " + r.body + ">";
    return Json::parse(r.body)["output"].get<std::string>();
  }
  static int64_t GuestMemTotalKiB() {
    std::string out = Exec(0, kVm, "memtotal");
    try {
      return std::stoll(out);
    } catch (...) {
      return -1;
    }
  }
  static std::string Console(size_t host, const std::string& guest) {
    return Call(host, "GET", "/api/v1/guests/" + guest + "/console").body;
  }

  static Testbed* bed_;
};
Testbed* AgentOnTestbed::bed_ = nullptr;

TEST_F(AgentOnTestbed, EmulatedGuestBootsToItsMarker) {
  auto r = Call(0, "POST", "/api/v1/guests",
                Json({{"name", kVm}, {"kind", "qemu"}, {"image", "tiny"}, {"vcpus", 1}, {"max_vcpus", 2},
                      {"memory_mib", 256}, {"max_memory_mib", 256}})
                    .dump());
  ASSERT_EQ(r.status, 201) << r.body;
  auto info = Json::parse(r.body);
  EXPECT_EQ(info["state"], "running");
  EXPECT_EQ(info["kind"], "qemu");
  ASSERT_TRUE(WaitFor([] { return Console(0, kVm).find("UW-GUEST-READY") != std::string::npos; },
                      std::chrono::seconds(180)))
      << "no ready marker; console:\n" << Console(0, kVm);
  EXPECT_EQ(Exec(0, kVm, "ping"), "pong\n");
  // Commands that fail report their exit code and output.
  auto bad = Call(0, "POST", std::string("/api/v1/guests/") + kVm + "/exec", R"({"command": "echo oops >&2; exit 3"})");
  ASSERT_EQ(bad.status, 200) << bad.body;
  EXPECT_EQ(Json::parse(bad.body)["exit_code"], 3);
  EXPECT_EQ(Json::parse(bad.body)["output"], "oops\n");
}

TEST_F(AgentOnTestbed, BalloonTargetChangesTheGuestsOwnMemTotal) {
  const int64_t before = GuestMemTotalKiB();
  ASSERT_GT(before, 150 * 1024) << "memtotal answer: " << Exec(0, kVm, "memtotal");
  auto info = CallJson(0, "POST", std::string("/api/v1/guests/") + kVm + "/resize", R"({"memory_mib": 160})");
  EXPECT_EQ(info["memory_mib"], 160);
  int64_t now = before;
  EXPECT_TRUE(WaitFor([&] { return (now = GuestMemTotalKiB()) > 0 && now < before - 64 * 1024; }, std::chrono::seconds(30)))
      << "MemTotal stayed at " << now << " kB (was " << before << " kB)";
  CallJson(0, "POST", std::string("/api/v1/guests/") + kVm + "/resize", R"({"memory_mib": 256})");
  EXPECT_TRUE(WaitFor([&] { return (now = GuestMemTotalKiB()) >= before - 1024; }, std::chrono::seconds(30)))
      << "MemTotal did not grow back: " << now << " kB";
}

TEST_F(AgentOnTestbed, HotPluggedVcpuComesOnline) {
  auto info = CallJson(0, "POST", std::string("/api/v1/guests/") + kVm + "/resize", R"({"vcpus": 2})");
  EXPECT_EQ(info["vcpus"], 2);
  std::string cpus;
  EXPECT_TRUE(WaitFor([&] { return (cpus = Exec(0, kVm, "cpus")) == "2\n"; }, std::chrono::seconds(30)))
      << "guest sees cpus=" << cpus;
}

// The cgroup directory of QEMU's process for `guest`, as seen from this (the root) namespace.
std::string CpuCgroupFileOf(const std::string& guest, std::string* why) {
  auto pid = RunCommand("pgrep -f -- '-name guest=" + guest + ",' | head -1");
  std::string p = pid.output.substr(0, pid.output.find('\n'));
  if (p.empty()) {
    *why = "no QEMU process for " + guest;
    return "";
  }
  std::ifstream in("/proc/" + p + "/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    // "4:cpu:/path" (v1, alone or with cpuacct) or "0::/path" (v2).
    auto a = line.find(':'), b = line.find(':', a + 1);
    std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    std::vector<std::string> bases;
    std::string file;
    if (controllers == "") {
      bases = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
      file = "cpu.weight";
    } else if (("," + controllers + ",").find(",cpu,") != std::string::npos) {
      bases = {"/sys/fs/cgroup/" + controllers, "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"};
      file = "cpu.shares";
    } else {
      continue;
    }
    // QEMU's threads sit in sub-groups (emulator, vcpuN); the guest's shares are on an ancestor.
    for (const auto& base : bases) {
      for (std::filesystem::path d = base + path; d.string().size() > base.size(); d = d.parent_path()) {
        if (std::filesystem::exists(d / file) && d.filename().string().find("libvirt-qemu") != std::string::npos) {
          return (d / file).string();
        }
      }
    }
  }
  *why = "no cpu cgroup of pid " + p + " found";
  return "";
}

TEST_F(AgentOnTestbed, CpuSharesShowUpInTheGuestsCgroup) {
  auto info = CallJson(0, "POST", std::string("/api/v1/guests/") + kVm + "/resize", R"({"cpu": {"shares": 2048}})");
  ASSERT_EQ(info["name"], kVm);
  std::string why;
  std::string file = CpuCgroupFileOf(kVm, &why);
  ASSERT_FALSE(file.empty()) << why;
  std::ifstream in(file);
  std::string value;
  in >> value;
  EXPECT_EQ(value, "2048") << file;
  auto spec = CallJson(0, "GET", std::string("/api/v1/guests/") + kVm)["spec"];
  EXPECT_EQ(spec["cpu"]["shares"], 2048);  // persisted in the definition as well
}

TEST_F(AgentOnTestbed, UsageSamplesMoveWhenTheGuestBurnsCpu) {
  auto cpu = [] {
    auto s = CallJson(0, "GET", std::string("/api/v1/guests/") + kVm + "/stats");
    return s.is_object() && s.contains("cpu_cores") ? s["cpu_cores"].get<double>() : -1.0;
  };
  EXPECT_EQ(Exec(0, kVm, "burn 8").rfind("burning", 0), 0u);
  double seen = 0;
  EXPECT_TRUE(WaitFor([&] { return (seen = cpu()) > 0.4; }, std::chrono::seconds(20), std::chrono::milliseconds(500)))
      << "guest CPU usage stayed at " << seen << " cores while burning";
  auto all = CallJson(0, "GET", "/api/v1/stats");
  EXPECT_GT(all["host"]["cpu_cores"].get<int>(), 0);
  EXPECT_GT(all["host"]["memory_mib"].get<int64_t>(), 0);
}

// Stops h1's agent with `signal`, checks the guest kept running, and starts the agent again
// through the test bed (which writes a fresh config and token).
void RestartAgentWith(Testbed* bed, int signal) {
  Status stopped = StopAgent(*bed, 0, signal);
  ASSERT_TRUE(stopped.ok()) << stopped.ToString();
  auto qemu = RunCommand(std::string("pgrep -f -- '-name guest=") + kVm + ",'");
  EXPECT_EQ(qemu.exit_code, 0) << "the guest died with its agent";
  Status up = RestartAgents(*bed);
  ASSERT_TRUE(up.ok()) << up.ToString();
}

TEST_F(AgentOnTestbed, SigtermStopsTheAgentAndLeavesGuestsRunning) {
  const std::string uuid = CallJson(0, "GET", std::string("/api/v1/guests/") + kVm)["uuid"];
  RestartAgentWith(bed_, SIGTERM);
  auto info = CallJson(0, "GET", std::string("/api/v1/guests/") + kVm);
  EXPECT_EQ(info["state"], "running");
  EXPECT_EQ(info["uuid"], uuid);
}

TEST_F(AgentOnTestbed, KilledAgentAdoptsRunningGuestsOnRestart) {
  const std::string uuid = CallJson(0, "GET", std::string("/api/v1/guests/") + kVm)["uuid"];
  RestartAgentWith(bed_, SIGKILL);
  auto info = CallJson(0, "GET", std::string("/api/v1/guests/") + kVm);
  EXPECT_EQ(info["state"], "running");
  EXPECT_EQ(info["uuid"], uuid);
  auto host = CallJson(0, "GET", "/api/v1/host");
  EXPECT_NE(host["adopted"].dump().find(kVm), std::string::npos) << host.dump();
  EXPECT_EQ(Exec(0, kVm, "ping"), "pong\n");  // the control channel reconnects
  auto events = CallJson(0, "GET", "/api/v1/events?since=0");
  EXPECT_NE(events.dump().find("adopted"), std::string::npos) << events.dump();
}

TEST_F(AgentOnTestbed, GracefulStopUsesAcpi) {
  auto r = Call(0, "POST", std::string("/api/v1/guests/") + kVm + "/stop", R"({"timeout_s": 90})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto info = Json::parse(r.body);
  EXPECT_EQ(info["state"], "shutoff");
  EXPECT_EQ(info["forced"], false) << "the guest ignored the ACPI power button";
  EXPECT_EQ(Call(0, "DELETE", std::string("/api/v1/guests/") + kVm).status, 200);
  EXPECT_EQ(Call(0, "GET", std::string("/api/v1/guests/") + kVm).status, 404);
}

TEST_F(AgentOnTestbed, ContainerStartsAndRunsACommand) {
  auto r = Call(1, "POST", "/api/v1/guests",
                Json({{"name", "it-ct1"}, {"kind", "lxc"}, {"image", "tiny"}, {"memory_mib", 128}}).dump());
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Json::parse(r.body)["state"], "running");
  auto e = Call(1, "POST", "/api/v1/guests/it-ct1/exec", R"J({"command": "echo hello from $(cat /proc/1/cmdline | tr '\\0' ' ')"})J");
  ASSERT_EQ(e.status, 200) << e.body;
  auto out = Json::parse(e.body);
  EXPECT_EQ(out["exit_code"], 0);
  EXPECT_NE(out["output"].get<std::string>().find("hello from"), std::string::npos) << out.dump();
  EXPECT_NE(out["output"].get<std::string>().find("uw-container-init"), std::string::npos)
      << "the command did not run inside the container: " << out.dump();
  auto stats = CallJson(1, "GET", "/api/v1/stats?fresh=1");
  EXPECT_NE(stats["guests"].dump().find("it-ct1"), std::string::npos);
  // A command run in the container is in its cgroups: limited and accounted with it.
  auto cg = [](const std::string& proc) {
    return R"J({"command": "grep -E ':(cpu|cpuacct|memory):' /proc/)J" + proc + R"J(/cgroup | sort"})J";
  };
  auto mine = Call(1, "POST", "/api/v1/guests/it-ct1/exec", cg("self"));
  auto init = Call(1, "POST", "/api/v1/guests/it-ct1/exec", cg("1"));
  ASSERT_EQ(mine.status, 200) << mine.body;
  EXPECT_FALSE(Json::parse(init.body)["output"].get<std::string>().empty()) << init.body;
  EXPECT_EQ(Json::parse(mine.body)["output"], Json::parse(init.body)["output"]);
  auto burn = Call(1, "POST", "/api/v1/guests/it-ct1/exec",
                   R"J({"command": "(end=$(($(date +%s) + 10)); while [ $(date +%s) -lt $end ]; do :; done) >/dev/null 2>&1 &"})J");
  ASSERT_EQ(burn.status, 200) << burn.body;
  double seen = -1;
  EXPECT_TRUE(WaitFor(
      [&] {
        auto st = CallJson(1, "GET", "/api/v1/guests/it-ct1/stats");
        seen = st.is_object() && st.contains("cpu_cores") ? st["cpu_cores"].get<double>() : -1.0;
        return seen > 0.2;
      },
      std::chrono::seconds(20), std::chrono::milliseconds(500)))
      << "the container's CPU usage stayed at " << seen << " cores while a command in it burned CPU";
  auto stop = Call(1, "POST", "/api/v1/guests/it-ct1/stop", R"({"timeout_s": 20})");
  ASSERT_EQ(stop.status, 200) << stop.body;
  EXPECT_EQ(Json::parse(stop.body)["state"], "shutoff");
  EXPECT_EQ(Json::parse(stop.body)["forced"], false) << "the container's init ignored SIGTERM";
  EXPECT_EQ(Call(1, "DELETE", "/api/v1/guests/it-ct1?force=true").status, 200);
}

TEST_F(AgentOnTestbed, KvmGuestRunsEmulatedWhereKvmIsUnusable) {
  auto host = CallJson(0, "GET", "/api/v1/host");
  auto r = Call(0, "POST", "/api/v1/guests",
                Json({{"name", "it-kvm1"}, {"kind", "kvm"}, {"image", "tiny"}, {"start", false}}).dump());
  if (host["kvm"]["usable"].get<bool>()) {
    ASSERT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(Json::parse(r.body)["emulated"], false);
  } else {
    // The test bed's agents allow emulation (allow_emulated_kvm); the guest says so.
    ASSERT_EQ(r.status, 201) << r.body;
    EXPECT_EQ(Json::parse(r.body)["kind"], "kvm");
    EXPECT_EQ(Json::parse(r.body)["emulated"], true);
    EXPECT_FALSE(host["kvm"]["reason"].get<std::string>().empty());
  }
  EXPECT_EQ(Call(0, "DELETE", "/api/v1/guests/it-kvm1").status, 200);
}

TEST_F(AgentOnTestbed, BadRequestsGetJsonErrorsAndChangeNothing) {
  auto names = [] {
    std::vector<std::string> out;
    for (const auto& g : CallJson(0, "GET", "/api/v1/guests")["guests"]) out.push_back(g["name"]);
    return out;
  };
  const auto before = names();
  struct Case {
    std::string method, path, body;
    int status;
  } cases[] = {
      {"POST", "/api/v1/guests", R"({"name": "it-bad", )", 400},
      {"POST", "/api/v1/guests", R"({"name": "it-bad", "vcpus": -1, "image": "tiny"})", 400},
      {"POST", "/api/v1/guests", R"({"name": "it-bad", "image": "tiny", "memory_mib": 100000000})", 409},
      {"POST", "/api/v1/guests", R"({"name": "it-bad", "kind": "lxc"})", 400},
      {"POST", "/api/v1/guests", std::string(400000, '{'), 413},
      {"POST", "/api/v1/guests/it-nobody/start", "", 404},
      {"POST", "/api/v1/guests/it-nobody/exec", R"({"command": "true"})", 404},
      {"DELETE", "/api/v1/guests/it-nobody", "", 404},
      {"POST", "/api/v1/guests/it-nobody/resize", R"({"vcpus": "many"})", 400},
  };
  for (const auto& c : cases) {
    auto r = Call(0, c.method, c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.method << " " << c.path << " " << c.body.substr(0, 60) << " -> " << r.body;
    auto j = Json::parse(r.body, nullptr, false);
    EXPECT_TRUE(j.is_object() && j.contains("error") && j["error"].contains("message")) << r.body;
  }
  api::ClientOptions anonymous;
  anonymous.base_url = bed_->hosts[0].agent_url;
  EXPECT_EQ(api::HttpClient(anonymous).Do("GET", "/api/v1/guests")->status, 401);
  EXPECT_EQ(names(), before);
}

}  // namespace
}  // namespace uw::testing
