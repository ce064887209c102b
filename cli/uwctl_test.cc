#include "cli/uwctl.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "api/http.h"
#include "cli/commands.h"
#include "common/clock.h"
#include "manager/fake_agent.h"
#include "manager/http_api.h"
#include "manager/manager.h"

namespace uw::cli {
namespace {

constexpr const char* kAdmin = "admin-token-0123456789";

class UwctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("uwctl-test-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    manager::ManagerConfig cfg;
    cfg.db_path = (dir_ / "state.db").string();
    cfg.join_token = "join-token-0123456789";
    cfg.admin_token = kAdmin;
    cfg.drs_interval_ms = 0;
    // The storage catalogue on local qcow2 files in the test's directory (images and volumes).
    cfg.storage_backend = "local";
    cfg.storage_local.dir = (dir_ / "storage").string();
    manager_ = std::make_unique<manager::Manager>(cfg);
    ASSERT_TRUE(manager_->Start().ok());
    manager::BuildRoutes(*manager_, router_);
    server_ = std::make_unique<api::HttpServer>(api::ServerOptions{}, &router_);
    ASSERT_TRUE(server_->Start().ok());
    url_ = "http://127.0.0.1:" + std::to_string(server_->port());
    agent_ = std::make_unique<manager::testing::FakeAgent>("h1");
    ASSERT_TRUE(agent_->Start().ok());
    manager::HostJoin join{"h1", agent_->url(), agent_->token(), 4, 4096, Json::object()};
    ASSERT_TRUE(manager_->JoinHost(cfg.join_token, join).ok());
  }
  void TearDown() override {
    server_->Stop();
    manager_->Stop();
    agent_->Stop();
    std::filesystem::remove_all(dir_);
  }
  int Uwctl(std::vector<std::string> args, std::string token = kAdmin) {
    out_.str("");
    err_.str("");
    args.insert(args.begin(), {"--url", url_, "--token", token});
    return uw::cli::Run(args, out_, err_);
  }
  std::filesystem::path dir_;
  std::unique_ptr<manager::Manager> manager_;
  api::Router router_;
  std::unique_ptr<api::HttpServer> server_;
  std::unique_ptr<manager::testing::FakeAgent> agent_;
  std::string url_;
  std::ostringstream out_, err_;
};

TEST(FormatTableTest, AlignsColumns) {
  EXPECT_EQ(FormatTable({"NAME", "STATE"}, {{"web-long", "running"}, {"db", "shutoff"}}),
            "NAME      STATE\nweb-long  running\ndb        shutoff\n");
}

TEST_F(UwctlTest, CreateWaitListShowAndDelete) {
  EXPECT_EQ(Uwctl({"guest", "create", "web1", "--image", "tiny", "--memory", "512", "--wait"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("succeeded"), std::string::npos) << out_.str();
  EXPECT_NE(err_.str().find("100%"), std::string::npos) << "progress line: " << err_.str();
  EXPECT_EQ(Uwctl({"guest", "list"}), 0);
  EXPECT_NE(out_.str().find("NAME"), std::string::npos);
  EXPECT_NE(out_.str().find("web1"), std::string::npos);
  EXPECT_EQ(Uwctl({"-o", "json", "guest", "show", "web1"}), 0);
  Json j = Json::parse(out_.str());
  EXPECT_EQ(j["host"], "h1");
  EXPECT_EQ(j["on_crash"], "restart");
  EXPECT_EQ(Uwctl({"guest", "create", "keeper", "--image", "tiny", "--on-crash", "keep", "--wait"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "guest", "show", "keeper"}), 0);
  EXPECT_EQ(Json::parse(out_.str())["on_crash"], "keep");
  EXPECT_NE(Uwctl({"guest", "create", "bad", "--image", "tiny", "--on-crash", "reboot"}), 0);
  EXPECT_EQ(Uwctl({"host", "list"}), 0);
  EXPECT_NE(out_.str().find("h1"), std::string::npos);
  // Lists follow their pages: both guests (in name order) with the total; --limit keeps the newest N.
  EXPECT_EQ(Uwctl({"-o", "json", "guest", "list"}), 0);
  Json listed = Json::parse(out_.str());
  EXPECT_EQ(listed["total"], 2);
  ASSERT_EQ(listed["guests"].size(), 2u);
  EXPECT_EQ(listed["guests"][0]["name"], "keeper");
  EXPECT_EQ(Uwctl({"-o", "json", "task", "list", "--limit", "1"}), 0);
  Json tasks = Json::parse(out_.str());
  EXPECT_EQ(tasks["tasks"].size(), 1u);
  EXPECT_EQ(tasks["tasks"][0]["subject"], "keeper");
  EXPECT_FALSE(tasks["next"].is_null());
  EXPECT_EQ(Uwctl({"-o", "json", "task", "list", "--limit", "0"}), 0);
  Json all_tasks = Json::parse(out_.str());
  EXPECT_EQ(all_tasks["tasks"].size(), 2u);  // the two creates ("bad" was refused before any task)
  EXPECT_EQ(all_tasks["total"], 2);
  EXPECT_TRUE(all_tasks["next"].is_null());
  // A running guest is deleted only with --force (a conflict, exit 5, otherwise).
  EXPECT_EQ(Uwctl({"guest", "delete", "web1", "--wait"}), 5) << err_.str();
  EXPECT_NE(err_.str().find("--force"), std::string::npos) << err_.str();
  EXPECT_TRUE(agent_->Has("web1"));
  EXPECT_EQ(Uwctl({"guest", "delete", "web1", "--force", "--wait"}), 0) << err_.str();
  EXPECT_FALSE(agent_->Has("web1"));
  EXPECT_EQ(Uwctl({"guest", "create", "first", "--image", "tiny", "--restart-priority", "high", "--wait"}), 0)
      << err_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "guest", "show", "first"}), 0);
  EXPECT_EQ(Json::parse(out_.str())["restart_priority"], "high");
  EXPECT_EQ(Uwctl({"guest", "delete", "first", "--force", "--wait"}), 0) << err_.str();
  EXPECT_NE(Uwctl({"guest", "create", "bad", "--image", "tiny", "--restart-priority", "urgent"}), 0);
}

TEST_F(UwctlTest, PoolRuleAndHostGroupCommands) {
  // Pools: create, list, show, admission against the limit, delete.
  EXPECT_EQ(Uwctl({"pool", "create", "batch", "--cpu-limit", "2", "--cpu-shares", "8000", "--memory-limit", "1024"}), 0)
      << err_.str();
  EXPECT_EQ(Uwctl({"pool", "list"}), 0);
  EXPECT_NE(out_.str().find("CPU_LIMIT"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("batch"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "pool", "show", "batch"}), 0) << err_.str();
  Json pool = Json::parse(out_.str());
  EXPECT_EQ(pool["cpu"]["limit_cores"], 2);
  EXPECT_EQ(pool["cpu"]["shares"], 8000);
  EXPECT_EQ(pool["memory"]["limit_mib"], 1024);
  EXPECT_EQ(Uwctl({"guest", "create", "big", "--image", "tiny", "--pool", "batch", "--vcpus", "3"}), 5);
  EXPECT_NE(err_.str().find("pool 'batch' CPU limit"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"guest", "create", "in-batch", "--image", "tiny", "--pool", "batch", "--vcpus", "2", "--wait"}), 0)
      << err_.str();
  EXPECT_EQ(Uwctl({"pool", "delete", "batch"}), 5) << "a pool with guests stays";
  EXPECT_EQ(Uwctl({"guest", "delete", "in-batch", "--force", "--wait"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"pool", "delete", "batch"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"pool", "show", "batch"}), 4);

  // Host groups: set, show, and a vm-host rule naming a group and guests that do not exist yet.
  EXPECT_EQ(Uwctl({"host", "groups", "h1", "ssd", "rack-a"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"host", "groups", "h1"}), 0);
  EXPECT_EQ(out_.str(), "ssd\nrack-a\n");
  EXPECT_EQ(Uwctl({"rule", "create", "on-ssd", "--type", "vm-host", "--vms", "db1,db2", "--groups", "ssd"}), 0)
      << err_.str();
  EXPECT_EQ(Uwctl({"rule", "create", "apart", "--type", "vm-anti-affinity", "--vms", "db1,db2", "--soft"}), 0)
      << err_.str();
  EXPECT_EQ(Uwctl({"rule", "create", "bad", "--type", "vm-host", "--vms", "db1"}), 2) << "no hosts or groups";
  EXPECT_EQ(Uwctl({"rule", "create", "bad", "--type", "vm-affinity", "--vms", "a,b", "--hosts", "h1"}), 2);
  EXPECT_EQ(Uwctl({"rule", "list"}), 0);
  EXPECT_NE(out_.str().find("on-ssd"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("group:ssd"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("preferred"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "rule", "show", "on-ssd"}), 0) << err_.str();
  Json rule = Json::parse(out_.str());
  EXPECT_EQ(rule["mode"], "must");
  EXPECT_EQ(rule["pending_guests"], Json({"db1", "db2"}));
  EXPECT_EQ(Uwctl({"guest", "create", "db1", "--image", "tiny", "--wait"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "rule", "show", "on-ssd"}), 0);
  EXPECT_EQ(Json::parse(out_.str())["pending_guests"], Json({"db2"}));
  EXPECT_EQ(Uwctl({"rule", "delete", "on-ssd"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"rule", "show", "on-ssd"}), 4);
  EXPECT_EQ(Uwctl({"host", "groups", "h1", "--clear"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"host", "groups", "h1"}), 0);
  EXPECT_EQ(out_.str(), "");

  // The DRS cooldown is a setting.
  EXPECT_EQ(Uwctl({"-o", "json", "drs", "config", "--min-move-interval", "120"}), 0) << err_.str();
  EXPECT_EQ(Json::parse(out_.str())["min_move_interval_s"], 120);
  EXPECT_EQ(Uwctl({"drs", "config", "--min-move-interval", "-5"}), 2);
}

TEST_F(UwctlTest, ImageVolumeAndStorageCommands) {
  const std::string source = (dir_ / "base.raw").string();
  std::ofstream(source, std::ios::binary) << std::string(1 << 20, '\0');
  EXPECT_EQ(Uwctl({"image", "import", "base", source, "--wait"}), 0) << err_.str();
  // A failed import fails its task: --wait says why and exits non-zero.
  EXPECT_NE(Uwctl({"image", "import", "gone", "http://127.0.0.1:9/gone.raw", "--wait"}), 0);
  EXPECT_NE(out_.str().find("127.0.0.1:9"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"image", "list"}), 0);
  EXPECT_NE(out_.str().find("base"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"volume", "create", "data", "--image", "base", "--size-gib", "2", "--tenant", "acme"}), 0)
      << err_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "volume", "show", "acme:data"}), 0) << err_.str();
  Json v = Json::parse(out_.str());
  EXPECT_EQ(v["size_gib"], 2);
  EXPECT_EQ(v["image"], "base");
  EXPECT_EQ(Uwctl({"volume", "resize", "acme:data", "--size-gib", "1"}), 2);  // a resize only grows
  EXPECT_NE(err_.str().find("only grows"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"volume", "resize", "acme:data", "--size-gib", "4"}), 0) << err_.str();
  // Local volumes are no guest's disks; a free volume has nothing to detach from.
  EXPECT_EQ(Uwctl({"volume", "attach", "acme:data", "acme:web"}), 5);
  EXPECT_NE(err_.str().find("only Ceph RBD volumes"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"volume", "detach", "acme:data"}), 5);
  EXPECT_NE(err_.str().find("is no guest's disk"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"storage", "quota", "set", "acme", "5"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"volume", "create", "more", "--size-gib", "2", "--tenant", "acme"}), 5);  // over the quota
  EXPECT_EQ(Uwctl({"-o", "json", "storage", "quota", "list"}), 0);
  Json q = Json::parse(out_.str());
  ASSERT_EQ(q["quotas"].size(), 1u) << q.dump();
  EXPECT_EQ(q["quotas"][0]["used_gib"], 4);
  EXPECT_EQ(Uwctl({"image", "delete", "base"}), 5);  // a volume is cloned from it
  EXPECT_EQ(Uwctl({"volume", "delete", "acme:data"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"image", "delete", "base"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"volume", "list"}), 0);
  EXPECT_EQ(out_.str().find("data"), std::string::npos) << out_.str();
}

TEST_F(UwctlTest, NetworkAndPortCommands) {
  EXPECT_EQ(Uwctl({"network", "create", "front", "--subnet", "10.0.0.0/29", "--tenant", "acme"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"network", "create", "inner", "--subnet", "10.0.0.0/30", "--tenant", "acme"}), 2);
  EXPECT_NE(err_.str().find("/8 to /29"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"network", "create", "inner", "--subnet", "10.0.0.0/24", "--tenant", "acme"}), 5);
  EXPECT_NE(err_.str().find("overlaps 10.0.0.0/29 of network 'front'"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"network", "create", "san", "--kind", "vlan", "--segment", "120", "--subnet", "10.5.0.0/24",
                   "--no-gateway"}),
            0)
      << err_.str();
  EXPECT_EQ(Uwctl({"network", "list"}), 0);
  EXPECT_NE(out_.str().find("acme:front  acme    overlay  1"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("vlan     120"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "port", "create", "acme:front", "--ip", "10.0.0.4"}), 0) << err_.str();
  const std::string id = Json::parse(out_.str())["id"];
  EXPECT_EQ(Uwctl({"port", "create", "acme:front", "--ip", "10.0.0.4"}), 5);
  EXPECT_EQ(Uwctl({"port", "create", "acme:front", "--ip", "10.0.1.4"}), 2);
  EXPECT_EQ(Uwctl({"port", "create", "acme:front"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"port", "list", "--network", "acme:front"}), 0);
  EXPECT_NE(out_.str().find("10.0.0.2"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("10.0.0.4"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"network", "delete", "acme:front"}), 5);
  EXPECT_NE(err_.str().find("has 2 port(s)"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"port", "delete", id}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"port", "show", id}), 4);
  EXPECT_EQ(Uwctl({"network", "show", "nope"}), 4);
}

TEST_F(UwctlTest, HostPowerCommands) {
  // An exec driver whose BMC is a file; the password comes from a file and is never printed.
  const std::string bmc = (dir_ / "bmc").string();
  std::ofstream(bmc) << "on\n";
  std::ofstream(dir_ / "pw") << "pw-0123456789\n";
  EXPECT_EQ(
      Uwctl({"host", "power-driver", "set", "h1", "--driver", "exec", "--status-command", "cat", "--status-command",
             bmc, "--on-command", "true", "--off-command", "true", "--password-file", (dir_ / "pw").string()}),
      0)
      << err_.str();
  EXPECT_EQ(out_.str().find("pw-0123456789"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("password_set"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "host", "power", "status", "h1"}), 0) << err_.str();
  Json status = Json::parse(out_.str());
  EXPECT_EQ(status["bmc"]["state"], "on");
  EXPECT_EQ(status["phase"], "on");
  EXPECT_EQ(status["driver"]["status_command"], Json({"cat", bmc}));
  // The only host is the last one on: refused, exit code of a failed precondition.
  EXPECT_EQ(Uwctl({"host", "power", "off", "h1"}), 5);
  EXPECT_NE(err_.str().find("last host on"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"host", "power", "sleep", "h1"}), 2);
  EXPECT_EQ(Uwctl({"host", "power-driver", "set", "h1", "--driver", "ipmi", "--password-file", "/nonexistent/pw"}), 2);
  EXPECT_NE(err_.str().find("/nonexistent/pw"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"host", "power-driver", "delete", "h1"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "host", "power", "status", "h1"}), 0) << err_.str();
  EXPECT_TRUE(Json::parse(out_.str())["driver"].is_null());
  // Redfish (its CA certificate from a file) and Wake-on-LAN drivers.
  std::ofstream(dir_ / "bmc.pem") << "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n";
  ASSERT_EQ(Uwctl({"-o", "json", "host", "power-driver", "set", "h1", "--driver", "redfish", "--url",
                   "https://10.77.0.1", "--username", "admin", "--password-file", (dir_ / "pw").string(),
                   "--ca-cert-file", (dir_ / "bmc.pem").string()}),
            0)
      << err_.str();
  Json redfish = Json::parse(out_.str())["driver"];
  EXPECT_EQ(redfish["url"], "https://10.77.0.1");
  EXPECT_EQ(redfish["ca_cert"].get<std::string>().rfind("-----BEGIN CERTIFICATE-----", 0), 0u);
  EXPECT_EQ(out_.str().find("pw-0123456789"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"host", "power-driver", "set", "h1", "--driver", "redfish", "--url", "https://10.77.0.1",
                   "--username", "admin", "--ca-cert-file", "/nonexistent/ca.pem"}),
            2);
  EXPECT_NE(err_.str().find("/nonexistent/ca.pem"), std::string::npos) << err_.str();
  ASSERT_EQ(Uwctl({"-o", "json", "host", "power-driver", "set", "h1", "--driver", "wol", "--mac", "52:54:00:00:00:01",
                   "--broadcast", "10.77.0.255"}),
            0)
      << err_.str();
  Json wol = Json::parse(out_.str())["driver"];
  EXPECT_EQ(wol["mac"], "52:54:00:00:00:01");
  EXPECT_EQ(wol["port"], 9);
  EXPECT_EQ(Uwctl({"host", "power-driver", "delete", "h1"}), 0) << err_.str();
  // DPM settings and its power actions.
  EXPECT_EQ(Uwctl({"-o", "json", "drs", "config", "--dpm", "manual", "--dpm-band", "40", "80", "--dpm-hysteresis", "0",
                   "--dpm-keep-on", "h1"}),
            0)
      << err_.str();
  Json dpm = Json::parse(out_.str())["dpm"];
  EXPECT_EQ(dpm["mode"], "manual");
  EXPECT_EQ(dpm["band"], Json({40.0, 80.0}));
  EXPECT_EQ(dpm["keep_on"], Json({"h1"}));
  EXPECT_EQ(Uwctl({"drs", "config", "--dpm", "sometimes"}), 2);
  EXPECT_EQ(Uwctl({"drs", "power"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("ACTION"), std::string::npos) << out_.str();
  // HA settings.
  EXPECT_EQ(Uwctl({"-o", "json", "drs", "config", "--ha", "on", "--ha-host-failures", "2", "--ha-isolation", "10"}), 0)
      << err_.str();
  Json ha = Json::parse(out_.str())["ha"];
  EXPECT_EQ(ha, Json({{"enabled", true}, {"host_failures", 2}, {"isolation_s", 10}}));
  EXPECT_EQ(Uwctl({"drs", "config", "--ha", "maybe"}), 2);
  EXPECT_EQ(Uwctl({"drs", "config", "--ha-host-failures", "-1"}), 2);
}

TEST_F(UwctlTest, ExitCodesAndHintsForScripts) {
  EXPECT_EQ(Uwctl({"guest", "show", "nope"}), 4);
  EXPECT_NE(err_.str().find("not_found"), std::string::npos);
  EXPECT_NE(err_.str().find("hint:"), std::string::npos);
  EXPECT_EQ(Uwctl({"guest", "list"}, "wrong-token-0123456789"), 3);
  EXPECT_NE(err_.str().find("--token"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"guest", "create", "big", "--image", "tiny", "--memory", "999999"}), 5);
  EXPECT_EQ(Uwctl({"guest", "frobnicate"}), 2);
  EXPECT_EQ(Uwctl({"task", "show", "task-missing"}), 4);
  std::ostringstream o, e;
  EXPECT_EQ(uw::cli::Run({"--url", "http://127.0.0.1:1", "--token", "x", "host", "list"}, o, e), 6);
  EXPECT_NE(e.str().find("UW_URL"), std::string::npos) << e.str();
  agent_->FailCreates("disk full");
  EXPECT_EQ(Uwctl({"guest", "create", "fails", "--image", "tiny", "--wait"}), 6);  // the task failed as unavailable
  EXPECT_NE(out_.str().find("disk full"), std::string::npos) << out_.str();
}

TEST_F(UwctlTest, SnapshotThenOfflinePlan) {
  EXPECT_EQ(Uwctl({"guest", "create", "a", "--image", "tiny", "--wait"}), 0);
  EXPECT_EQ(Uwctl({"cluster", "snapshot"}), 0);
  std::string file = (dir_ / "snap.json").string();
  std::ofstream(file) << out_.str();
  std::ostringstream o, e;
  EXPECT_EQ(uw::cli::Run({"drs", "plan", "--snapshot", file}, o, e), 0) << e.str();
  EXPECT_NE(o.str().find("imbalance"), std::string::npos) << o.str();
  std::ofstream(file) << R"({"version": 1, "hosts": [{"name": "h", "cpu_cores": -1, "memory_mib": 1}]})";
  std::ostringstream o2, e2;
  EXPECT_EQ(uw::cli::Run({"drs", "plan", "--snapshot", file}, o2, e2), 2);
  EXPECT_NE(e2.str().find("cpu_cores"), std::string::npos) << e2.str();
}

TEST_F(UwctlTest, LeaseAndNoticeCommandsOnTheManager) {
  EXPECT_EQ(Uwctl({"guest", "create", "web1", "--image", "tiny", "--vcpus", "2", "--memory", "512", "--wait"}), 0)
      << err_.str();
  EXPECT_EQ(Uwctl({"lease", "list", "--guest", "web1"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("ID"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("web1"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("active"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "lease", "list", "--guest", "web1"}), 0) << err_.str();
  Json leases = Json::parse(out_.str());
  ASSERT_EQ(leases["leases"].size(), 1u) << leases.dump();
  const std::string id = leases["leases"][0]["id"];
  EXPECT_EQ(Uwctl({"-o", "json", "lease", "show", id}), 0) << err_.str();
  EXPECT_EQ(Json::parse(out_.str())["guest"], "web1");
  EXPECT_EQ(Uwctl({"lease", "show", "lease-missing"}), 4);
  EXPECT_EQ(Uwctl({"lease", "list", "--guest", "nobody"}), 4);
  // A guaranteed lease is stopped only urgently (the manager's 400 is a usage error); the notice is
  // in the notice list.
  EXPECT_EQ(Uwctl({"lease", "reclaim", id, "--action", "stop"}), 2);
  EXPECT_NE(err_.str().find("guaranteed"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "lease", "reclaim", id, "--action", "stop", "--reason", "maintenance", "--urgent"}), 0)
      << err_.str();
  Json notice = Json::parse(out_.str());
  EXPECT_EQ(notice["action"], "stop");
  EXPECT_EQ(notice["reason"], "maintenance");
  const std::string nid = notice["id"];
  EXPECT_EQ(Uwctl({"notice", "list", "--guest", "web1"}), 0) << err_.str();
  EXPECT_NE(out_.str().find(nid), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "notice", "show", nid}), 0) << err_.str();
  EXPECT_EQ(Json::parse(out_.str())["lease"], id);
  EXPECT_EQ(Uwctl({"lease", "repossessions"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("NOTICE"), std::string::npos) << out_.str();
}

TEST_F(UwctlTest, UsageAsATableAsCsvAndItsVerification) {
  // Two minute records of the last closed hour and that hour's rollup, as metering writes them.
  const int64_t hour = (ToUnixMillis(Clock::Real().Now()) / 3'600'000 - 1) * 3'600'000;
  auto insert = [&](int64_t span, int64_t start, int64_t granted, int64_t sources) {
    return manager_->store().Exec(
        "INSERT INTO usage_records(guest, tenant, lease_class, span_ms, start_ms, gap_ms, gap_cause, sources, "
        "vcpu_granted_ms, vcpu_used_ms, memory_granted_mib_s, memory_used_mib_s, disk_mib_s, net_bytes, disk_bytes) "
        "VALUES ('acme:web', 'acme', 'elastic', ?, ?, 0, '', ?, ?, 0, 0, 0, 0, 0, 0)",
        {span, start, sources, granted});
  };
  ASSERT_TRUE(insert(60'000, hour, 60'000, 1).ok());
  ASSERT_TRUE(insert(60'000, hour + 60'000, 60'000, 1).ok());
  ASSERT_TRUE(insert(3'600'000, hour, 120'000, 2).ok());
  const std::string from = std::to_string(hour);
  EXPECT_EQ(Uwctl({"usage", "--span", "minute", "--from", from}), 0) << err_.str();
  EXPECT_EQ(out_.str().rfind("START", 0), 0u) << out_.str();
  EXPECT_NE(out_.str().find("acme:web  acme    elastic  0.017"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"usage", "--span", "minute", "--from", from, "--csv", "--limit", "1"}), 0) << err_.str();
  const std::string one = out_.str();
  EXPECT_EQ(std::count(one.begin(), one.end(), '\n'), 2) << one;
  EXPECT_EQ(Uwctl({"usage", "--span", "minute", "--from", from, "--csv"}), 0) << err_.str();
  const std::string all = out_.str();
  EXPECT_EQ(std::count(all.begin(), all.end(), '\n'), 3) << all;
  EXPECT_EQ(Uwctl({"usage", "verify", "--from", from}), 0) << out_.str() << err_.str();
  EXPECT_EQ(out_.str().rfind("ok: ", 0), 0u) << out_.str();
  // An hour that is not the sum of its minutes fails the check (exit 1) and says where.
  ASSERT_TRUE(manager_->store().Exec("UPDATE usage_records SET vcpu_granted_ms = 1 WHERE span_ms = 3600000").ok());
  EXPECT_EQ(Uwctl({"usage", "verify", "--from", from}), 1);
  EXPECT_NE(out_.str().find("NOT RECONCILED"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("vcpu_granted 1 against 120000"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"usage", "--span", "week"}), 2);
  EXPECT_EQ(Uwctl({"usage", "--from", "soon"}), 2);  // the manager's 400
}

TEST_F(UwctlTest, PricePlansAndInvoices) {
  // An hour of a tenant's usage, rolled up: two vCPUs granted for the whole hour.
  const int64_t hour = (ToUnixMillis(Clock::Real().Now()) / 3'600'000 - 2) * 3'600'000;
  ASSERT_TRUE(manager_->store()
                  .Exec("INSERT INTO usage_records(guest, tenant, lease_class, span_ms, start_ms, gap_ms, gap_cause, "
                        "sources, vcpu_granted_ms, vcpu_used_ms, memory_granted_mib_s, memory_used_mib_s, disk_mib_s, "
                        "net_bytes, disk_bytes) VALUES ('acme:web', 'acme', 'elastic', 3600000, ?, 0, '', 60, "
                        "7200000, 0, 0, 0, 0, 0, 0)",
                        {hour})
                  .ok());
  ASSERT_TRUE(
      manager_->store()
          .Exec("INSERT OR REPLACE INTO metering_state(key, value) VALUES ('hours_through', ?)", {hour + 3'600'000})
          .ok());
  const std::string plan_file = (dir_ / "plan.json").string();
  std::ofstream(plan_file) << R"({"currency": "EUR", "prices": [{"meter": "vcpu_granted", "lease_class": "elastic",
      "tiers": [{"up_to": 1, "price_micros": 50000000}, {"price_micros": 25000000}]}]})";
  EXPECT_EQ(Uwctl({"price-plan", "set", "std", "--file", plan_file}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"price-plan", "assign", "acme", "std"}), 0) << err_.str();
  EXPECT_EQ(Uwctl({"price-plan", "list"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("std   EUR       1        1       acme"), std::string::npos) << out_.str();
  const std::string from = std::to_string(hour), to = std::to_string(hour + 3'600'000);
  // Two vCPU-hours: the first at 0.50 EUR, the second at 0.25.
  EXPECT_EQ(Uwctl({"invoice", "create", "--tenant", "acme", "--from", from, "--to", to}), 0) << err_.str();
  EXPECT_NE(out_.str().find("invoice inv-00000001 for acme"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("vcpu_granted elastic tier 0: 1.000 vCPU-hour  0.50 EUR"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("vcpu_granted elastic tier 1: 1.000 vCPU-hour  0.25 EUR"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("total 0.75 EUR"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"invoice", "create", "--tenant", "acme", "--from", from, "--to", to}), 5);  // overlaps: 409
  EXPECT_NE(err_.str().find("overlaps invoice inv-00000001"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"invoice", "credit", "inv-00000001", "--amount", "10", "--reason", "goodwill"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("credit -0.10 EUR (goodwill)"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("balance 0.65 EUR"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"invoice", "list"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("inv-00000001  acme"), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("0.75   0.65     EUR"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"invoice", "show", "inv-00000001", "--csv"}), 0) << err_.str();
  EXPECT_EQ(out_.str().rfind("invoice,tenant,from,to,currency,kind,", 0), 0u) << out_.str();
  EXPECT_NE(out_.str().find(",credit,,,,,,,-10,,\"goodwill\"\n"), std::string::npos) << out_.str();
  EXPECT_EQ(Uwctl({"invoice", "show", "inv-404"}), 4);
  EXPECT_EQ(Uwctl({"invoice", "credit", "inv-00000001", "--amount", "-1", "--reason", "x"}), 2);  // the API's 400
  EXPECT_EQ(Uwctl({"price-plan", "set", "bad", "--file", (dir_ / "missing.json").string()}), 2);
}

// The lease and notice commands against a recording fake of their routes: the bodies they send,
// the rows they print and their usage errors (exit 2, before any request).
class LeaseCommandsTest : public ::testing::Test {
 protected:
  struct Seen {
    std::string method, target, token;
    Json body;
  };
  void SetUp() override {
    const Json lease = {{"id", "lease-1"},
                        {"guest", "web1"},
                        {"tenant", "alice"},
                        {"class", "elastic"},
                        {"state", "active"},
                        {"granted", {{"vcpus", 4}, {"memory_mib", 2048}}},
                        {"floor", {{"vcpus", 1}, {"memory_mib", 512}}},
                        {"reclaimable", {{"vcpus", 3}, {"memory_mib", 1536}}},
                        {"start_ms", 1000},
                        {"term_ms", 3600000},
                        {"term_end_ms", 3601000},
                        {"renewal", nullptr},
                        {"history", Json::array()}};
    const Json notice = {{"id", "notice-1"},
                         {"lease", "lease-1"},
                         {"guest", "web1"},
                         {"tenant", "alice"},
                         {"action", "shrink"},
                         {"before", {{"vcpus", 4}, {"memory_mib", 2048}}},
                         {"after", {{"vcpus", 2}, {"memory_mib", 2048}}},
                         {"reason", "busy host"},
                         {"sent_ms", 5000},
                         {"not_before_ms", 5000},
                         {"deadline_ms", 35000},
                         {"urgent", false},
                         {"state", "pending"},
                         {"reply", nullptr},
                         {"counter", nullptr},
                         {"act_at_ms", 35000},
                         {"delivery", {{"state", "delivered"}, {"answer", ""}, {"detail", ""}, {"at_ms", 5001}}}};
    auto record = [this](const api::Request& req) {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back({req.method, req.target, req.BearerToken(), req.body.empty() ? Json() : Json::parse(req.body)});
    };
    router_.AddPublic("GET", "/api/v1/leases", [=](const api::Request& req) {
      record(req);
      return api::Response::Json(200, {{"leases", Json::array({lease})}, {"next", nullptr}, {"total", 1}});
    });
    router_.AddPublic("GET", "/api/v1/notices", [=](const api::Request& req) {
      record(req);
      return api::Response::Json(200, {{"notices", Json::array({notice})}, {"next", nullptr}, {"total", 1}});
    });
    for (const char* op : {"extend", "release"}) {
      router_.AddPublic("POST", std::string("/api/v1/leases/{id}/") + op, [=](const api::Request& req) {
        record(req);
        return api::Response::Json(200, lease);
      });
    }
    const Json budget = {{"tenant", "acme"}, {"per_hour", 20}, {"committed", 17}};
    router_.AddPublic("GET", "/api/v1/budgets", [=](const api::Request& req) {
      record(req);
      return api::Response::Json(200, {{"budgets", Json::array({budget})}});
    });
    router_.AddPublic("PUT", "/api/v1/budgets/{tenant}", [=](const api::Request& req) {
      record(req);
      return api::Response::Json(200, budget);
    });
    for (const char* route : {"/api/v1/leases/{id}/reclaim", "/api/v1/notices/{id}/reply"}) {
      router_.AddPublic("POST", route, [=](const api::Request& req) {
        record(req);
        return api::Response::Json(200, notice);
      });
    }
    server_ = std::make_unique<api::HttpServer>(api::ServerOptions{}, &router_);
    ASSERT_TRUE(server_->Start().ok());
    url_ = "http://127.0.0.1:" + std::to_string(server_->port());
  }
  void TearDown() override { server_->Stop(); }
  int Uwctl(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.clear();
    }
    args.insert(args.begin(), {"--url", url_, "--token", kAdmin});
    return uw::cli::Run(args, out_, err_);
  }
  std::vector<Seen> Requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }
  api::Router router_;
  std::unique_ptr<api::HttpServer> server_;
  std::string url_;
  std::ostringstream out_, err_;
  std::mutex mu_;
  std::vector<Seen> seen_;
};

TEST_F(LeaseCommandsTest, ListsRenderRows) {
  EXPECT_EQ(Uwctl({"lease", "list", "--guest", "web 1"}), 0) << err_.str();
  EXPECT_EQ(out_.str(),
            "ID       GUEST  TENANT  CLASS    STATE   VCPUS  MEM_MIB  FLOOR  TERM_END_MS\n"
            "lease-1  web1   alice   elastic  active  4      2048     1/512  3601000\n");
  auto seen = Requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].target, "/api/v1/leases?guest=web%201&limit=100");
  EXPECT_EQ(seen[0].token, kAdmin);
  EXPECT_EQ(Uwctl({"notice", "list"}), 0) << err_.str();
  EXPECT_NE(
      out_.str().find("ID        LEASE    GUEST  ACTION  VCPUS   MEM_MIB  STATE    URGENT  DEADLINE_MS  DELIVERY"),
      std::string::npos)
      << out_.str();
  EXPECT_NE(
      out_.str().find("notice-1  lease-1  web1   shrink  4 -> 2  2048     pending  no      35000        delivered"),
      std::string::npos)
      << out_.str();
  EXPECT_EQ(Uwctl({"-o", "json", "lease", "list"}), 0) << err_.str();
  EXPECT_EQ(Json::parse(out_.str())["leases"][0]["id"], "lease-1");
}

TEST_F(LeaseCommandsTest, ExtendReclaimAndReplySendTheirBodies) {
  EXPECT_EQ(Uwctl({"lease", "extend", "lease-1", "--term-s", "3600", "--memory-mib", "4096"}), 0) << err_.str();
  auto seen = Requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].target, "/api/v1/leases/lease-1/extend");
  EXPECT_EQ(seen[0].body, Json({{"term_s", 3600}, {"memory_mib", 4096}}));
  EXPECT_NE(out_.str().find("FIELD"), std::string::npos) << out_.str();

  EXPECT_EQ(Uwctl({"lease", "release", "lease-1"}), 0) << err_.str();
  seen = Requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].target, "/api/v1/leases/lease-1/release");
  EXPECT_TRUE(seen[0].body.is_null()) << seen[0].body.dump();

  EXPECT_EQ(
      Uwctl({"lease", "reclaim", "lease-1", "--vcpus", "2", "--notice-s", "60", "--reason", "busy host", "--urgent"}),
      0)
      << err_.str();
  seen = Requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].target, "/api/v1/leases/lease-1/reclaim");
  EXPECT_EQ(seen[0].body,
            Json({{"action", "shrink"}, {"vcpus", 2}, {"notice_s", 60}, {"reason", "busy host"}, {"urgent", true}}));

  EXPECT_EQ(Uwctl({"-o", "json", "notice", "reply", "notice-1", "counter", "--vcpus", "3", "--delay-s", "20"}), 0)
      << err_.str();
  seen = Requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].target, "/api/v1/notices/notice-1/reply");
  EXPECT_EQ(seen[0].body, Json({{"reply", "counter"}, {"vcpus", 3}, {"delay_s", 20}}));
  EXPECT_EQ(Json::parse(out_.str())["id"], "notice-1");

  EXPECT_EQ(Uwctl({"notice", "reply", "notice-1", "ack"}), 0) << err_.str();
  seen = Requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].body, Json({{"reply", "ack"}}));
}

TEST_F(LeaseCommandsTest, BudgetsAndBids) {
  EXPECT_EQ(Uwctl({"budget", "list"}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "TENANT  PER_HOUR  COMMITTED\nacme    20        17\n");
  EXPECT_EQ(Uwctl({"budget", "set", "acme", "20"}), 0) << err_.str();
  auto seen = Requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "PUT");
  EXPECT_EQ(seen[0].target, "/api/v1/budgets/acme");
  EXPECT_EQ(seen[0].body, Json({{"per_hour", 20}}));
  EXPECT_EQ(Uwctl({"lease", "extend", "lease-1", "--bid", "7"}), 0) << err_.str();
  seen = Requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].body, Json({{"bid", 7}}));
  EXPECT_EQ(Uwctl({"budget", "set", "acme", "-5"}), 2);
  EXPECT_TRUE(Requests().empty());
}

TEST_F(LeaseCommandsTest, MissingOrBadArgumentsAreUsageErrors) {
  EXPECT_EQ(Uwctl({"lease", "show"}), 2);
  EXPECT_NE(err_.str().find("id"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"notice", "reply", "notice-1"}), 2);
  EXPECT_NE(err_.str().find("reply"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"notice", "reply", "notice-1", "maybe"}), 2);
  EXPECT_EQ(Uwctl({"lease", "reclaim", "lease-1", "--action", "migrate"}), 2);
  EXPECT_EQ(Uwctl({"lease", "extend", "lease-1"}), 2);  // nothing to extend
  EXPECT_NE(err_.str().find("--term-s"), std::string::npos) << err_.str();
  EXPECT_EQ(Uwctl({"lease"}), 2);
  EXPECT_TRUE(Requests().empty());
}

// --wait on a fake clock: a task that stays running ends the wait after its timeout without real
// sleeping, and one that ends is returned as it ended.
TEST(WaitTaskTest, FollowsATaskToItsEndOrToTheTimeoutOnTheGivenClock) {
  std::atomic<int> polls{0};
  api::Router router;
  router.AddPublic("GET", "/api/v1/tasks/{id}", [&](const api::Request& req) {
    const int n = ++polls;
    const bool done = req.params.at("id") == "task-ends" && n >= 3;
    return api::Response::Json(200, {{"id", req.params.at("id")},
                                     {"state", done ? "succeeded" : "running"},
                                     {"progress", done ? 1.0 : 0.5},
                                     {"message", "working"}});
  });
  api::HttpServer server(api::ServerOptions{}, &router);
  ASSERT_TRUE(server.Start().ok());
  FakeClock clock;
  std::ostringstream out, err;
  Context c;
  c.url = "http://127.0.0.1:" + std::to_string(server.port());
  c.out = &out;
  c.err = &err;
  c.clock = &clock;
  c.sleep = [&](Duration d) { clock.Advance(d); };
  auto stuck = c.WaitTask("task-stuck", 2);
  EXPECT_EQ(stuck.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(stuck.status().message().find("still running after 2 s"), std::string::npos) << stuck.status().message();
  EXPECT_EQ(polls.load(), 11);  // at 0, 0.2, ..., 2.0 s
  polls = 0;
  auto ended = c.WaitTask("task-ends", 2);
  ASSERT_TRUE(ended.ok()) << ended.status().ToString();
  EXPECT_EQ((*ended)["state"], "succeeded");
  EXPECT_EQ(polls.load(), 3);
  EXPECT_NE(err.str().find("task-ends [####################] 100% succeeded"), std::string::npos) << err.str();
  server.Stop();
}

}  // namespace
}  // namespace uw::cli
