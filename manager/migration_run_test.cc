// Migrations driven by the manager against in-memory agents on a FakeClock (issue 13): every
// outcome of a run (done, rolled back, failed after the switch-over, aborted for not converging,
// cancelled, a phase the store refuses) without HTTP, libvirt or sleeping.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <thread>

#include "manager/in_memory_agent.h"
#include "manager/manager.h"
#include "manager/views.h"

namespace uw::manager {
namespace {

constexpr const char* kJoin = "join-token-0123456789";

class MigrationRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("uw-migration-run-test-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    ManagerConfig c;
    c.db_path = (dir_ / "state.db").string();
    c.join_token = kJoin;
    c.admin_token = "admin-token-0123456789";
    c.drs_interval_ms = 0;
    c.heartbeat_timeout_ms = 24 * 3600 * 1000;  // the fake clock runs ahead; no host misses a beat
    c.migration_poll_ms = 1000;
    c.migration_verify_window_ms = 3000;
    c.migration_agent_grace_ms = 20000;
    manager_ = std::make_unique<Manager>(c, clock_);
    manager_->SetAgentFactory(cluster_.Factory());
    manager_->SetPollSleeper([this](Duration d) {
      while (hold_) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a test looks meanwhile
      clock_.Advance(d);
      std::this_thread::yield();
      return true;
    });
    ASSERT_TRUE(manager_->Start().ok());
    for (const char* h : {"h1", "h2"}) {
      cluster_.AddHost(h, 8192);
      HostJoin join;
      join.name = h;
      join.agent_url = std::string("inmem://") + h;
      join.agent_token = "agent-token";
      join.cpu_cores = 8;
      join.memory_mib = 8192;
      ASSERT_TRUE(manager_->JoinHost(kJoin, join).ok());
    }
  }
  void TearDown() override {
    manager_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Creates a running guest; returns the host placement chose ("" on failure).
  std::string MakeGuest(const std::string& name, int64_t memory_mib = 512) {
    auto req = ParseGuestCreate(
        {{"name", name}, {"kind", "qemu"}, {"image", "tiny"}, {"vcpus", 1}, {"memory_mib", memory_mib}});
    EXPECT_TRUE(req.ok()) << req.status().ToString();
    if (!req.ok()) return "";
    auto task = manager_->CreateGuest(admin_, *req);
    EXPECT_TRUE(task.ok()) << task.status().ToString();
    if (!task.ok()) return "";
    EXPECT_EQ(Wait(TaskJson(*task))["state"], "succeeded");
    const std::string host = Guest(name)["host"].get<std::string>();
    EXPECT_EQ(cluster_.StateOf(host, name), "running");
    return host;
  }
  static std::string Other(const std::string& host) { return host == "h1" ? "h2" : "h1"; }
  static bool Eventually(const std::function<bool()>& done) {
    for (int i = 0; i < 1000; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
  }
  Json Migrate(const std::string& name, const std::string& to, const Json& extra = Json::object()) {
    Json body = extra;
    body["host"] = to;
    auto move = ParseMigrateRequest(body);
    EXPECT_TRUE(move.ok()) << move.status().ToString();
    if (!move.ok()) return Json();
    auto task = manager_->MigrateGuest(admin_, name, *move);
    EXPECT_TRUE(task.ok()) << task.status().ToString();
    return task.ok() ? TaskJson(*task) : Json();
  }
  Json Wait(const Json& task) {
    auto r = manager_->WaitTask(task["id"].get<std::string>(), std::chrono::seconds(30));
    EXPECT_TRUE(r.ok());
    return r.ok() ? TaskJson(*r) : Json();
  }
  Json Guest(const std::string& name) {
    auto g = manager_->GetGuest(admin_, name);
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    return g.ok() ? GuestDetailJson(*g, admin_) : Json();
  }
  // The phase of the guest's last migration.
  std::string Phase(const std::string& guest) {
    auto m = manager_->ListMigrations(guest, PageQuery{1, ""});
    EXPECT_TRUE(m.ok() && m->items.size() == 1);
    return m.ok() && !m->items.empty() ? std::string(migration::PhaseName(m->items[0].record.phase)) : "";
  }
  bool HasEvent(const std::string& type) {
    auto events = manager_->EventsSince(admin_, 0, 10000);
    for (const auto& e : *events) {
      if (e.type == type) return true;
    }
    return false;
  }

  std::filesystem::path dir_;
  FakeClock clock_;
  InMemoryCluster cluster_;
  std::atomic<bool> hold_{false};  // migrations wait at their next poll while set
  Principal admin_{"admin", Role::kAdmin, "", {}};
  std::unique_ptr<Manager> manager_;
};

TEST_F(MigrationRunTest, ALiveMoveEndsWithTheGuestVerifiedOnTheDestination) {
  const std::string src = MakeGuest("g1"), dst = Other(src);
  ASSERT_FALSE(src.empty());
  Json done = Wait(Migrate("g1", dst));
  ASSERT_EQ(done["state"], "succeeded") << done.dump();
  EXPECT_EQ(done["result"]["phase"], "done");
  EXPECT_EQ(done["result"]["host"], dst);
  EXPECT_EQ(done["result"]["downtime_ms"], 5);
  EXPECT_EQ(Guest("g1")["host"], dst);
  EXPECT_EQ(cluster_.StateOf(dst, "g1"), "running");
  EXPECT_EQ(cluster_.StateOf(src, "g1"), "");
  EXPECT_TRUE(HasEvent("guest.migrated"));
}

TEST_F(MigrationRunTest, AFailedTransferRollsBackAndTheGuestStaysOnItsSource) {
  const std::string src = MakeGuest("g2"), dst = Other(src);
  ASSERT_FALSE(src.empty());
  cluster_.Script(src, "g2", MigrationScript{.polls_to_complete = 2, .fail = true});
  Json done = Wait(Migrate("g2", dst));
  EXPECT_EQ(done["state"], "failed") << done.dump();
  EXPECT_EQ(Phase("g2"), "rolled_back");
  EXPECT_NE(done["error"]["message"].get<std::string>().find("unexpectedly failed"), std::string::npos) << done.dump();
  EXPECT_EQ(Guest("g2")["host"], src);
  EXPECT_EQ(cluster_.StateOf(src, "g2"), "running");
  EXPECT_EQ(cluster_.StateOf(dst, "g2"), "");
  EXPECT_TRUE(HasEvent("migration.rolled_back"));
}

TEST_F(MigrationRunTest, AGuestThatDiesAfterTheSwitchOverIsReportedWithItsConsole) {
  const std::string src = MakeGuest("g3"), dst = Other(src);
  ASSERT_FALSE(src.empty());
  cluster_.Script(src, "g3", MigrationScript{.dies_on_destination = true});
  Json done = Wait(Migrate("g3", dst));
  EXPECT_EQ(done["state"], "failed") << done.dump();
  EXPECT_EQ(Phase("g3"), "failed_after_switchover");
  Json g = Guest("g3");
  EXPECT_EQ(g["host"], dst);
  EXPECT_EQ(g["state"], "crashed");
  EXPECT_TRUE(HasEvent("migration.failed_after_switchover"));
}

TEST_F(MigrationRunTest, ATransferThatNeverConvergesIsAbortedByThePolicy) {
  const std::string src = MakeGuest("g4"), dst = Other(src);
  ASSERT_FALSE(src.empty());
  cluster_.Script(src, "g4", MigrationScript{.never_converges = true});
  Json done = Wait(Migrate("g4", dst, {{"allow_postcopy", false}}));
  EXPECT_EQ(done["state"], "failed") << done.dump();
  EXPECT_EQ(done["error"]["code"], "deadline_exceeded") << done.dump();
  EXPECT_EQ(Guest("g4")["host"], src);
  EXPECT_EQ(cluster_.StateOf(src, "g4"), "running");
  EXPECT_TRUE(HasEvent("migration.escalated"));
}

TEST_F(MigrationRunTest, ASourceThatStaysDownEndsTheRunUnknownAfterTheGrace) {
  const std::string src = MakeGuest("g5"), dst = Other(src);
  ASSERT_FALSE(src.empty());
  // Down at the transfer's third poll: the monitor waits 5 s, then settle waits the 20 s grace.
  cluster_.Script(src, "g5", MigrationScript{.never_converges = true, .source_down_after_polls = 3});
  Json task = Migrate("g5", dst);
  Json done = Wait(task);
  EXPECT_EQ(done["state"], "failed") << done.dump();
  EXPECT_EQ(done["error"]["code"], "unavailable") << done.dump();
  EXPECT_EQ(Guest("g5")["state"], "unknown");
  EXPECT_TRUE(HasEvent("migration.failed"));
}

TEST_F(MigrationRunTest, APhaseTheStoreRefusesStopsTheRunAndSaysWhy) {
  const std::string src = MakeGuest("g6"), dst = Other(src);
  ASSERT_FALSE(src.empty());
  ASSERT_TRUE(manager_->store()
                  .Exec("CREATE TRIGGER refuse_switchover BEFORE UPDATE ON migrations WHEN NEW.phase = 'switch_over' "
                        "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END")
                  .ok());
  Json done = Wait(Migrate("g6", dst));
  EXPECT_EQ(done["state"], "failed") << done.dump();
  const std::string message = done["error"].value("message", "");
  EXPECT_NE(message.find("recording the switch_over phase"), std::string::npos) << message;
  EXPECT_NE(message.find("disk full (test)"), std::string::npos) << message;
  EXPECT_EQ(Guest("g6")["state"], "unknown");
}

TEST_F(MigrationRunTest, AColdMoveStopsDefinesAndStartsOnTheDestination) {
  const std::string src = MakeGuest("g7"), dst = Other(src);
  ASSERT_FALSE(src.empty());
  Json done = Wait(Migrate("g7", dst, {{"mode", "cold"}}));
  ASSERT_EQ(done["state"], "succeeded") << done.dump();
  EXPECT_EQ(done["result"]["mode"], "cold");
  EXPECT_EQ(Guest("g7")["host"], dst);
  EXPECT_EQ(cluster_.StateOf(dst, "g7"), "running");
  EXPECT_EQ(cluster_.StateOf(src, "g7"), "");
}

TEST_F(MigrationRunTest, AGuestInFlightHoldsItsMemoryOnBothHostsForAdmission) {
  const std::string src = MakeGuest("big", 6000), dst = Other(src);
  ASSERT_FALSE(src.empty());
  cluster_.Script(src, "big", MigrationScript{.never_converges = true});
  hold_ = true;  // in flight until the checks below are done
  Json task = Migrate("big", dst, {{"allow_postcopy", false}});
  ASSERT_TRUE(Eventually([&] { return Guest("big").value("migrating_to", Json()) == dst; }));
  // 8192 MiB hosts: 6000 are held on both while it moves, so 4000 fit on neither.
  auto req = ParseGuestCreate({{"name", "late"}, {"kind", "qemu"}, {"image", "tiny"}, {"memory_mib", 4000}});
  ASSERT_TRUE(req.ok());
  auto refused = manager_->CreateGuest(admin_, *req);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted) << refused.status().ToString();
  auto snapshot = manager_->ClusterSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status().ToString();
  bool incoming = false;
  for (const auto& vm : snapshot->vms) incoming |= vm.name == "big@incoming" && vm.host == dst;
  EXPECT_TRUE(incoming) << placement::SnapshotToJson(*snapshot).dump();
  hold_ = false;
  Json done = Wait(task);  // the policy gives up on it
  EXPECT_EQ(done["state"], "failed");
  auto fits = manager_->CreateGuest(admin_, *req);
  ASSERT_TRUE(fits.ok()) << fits.status().ToString();
  EXPECT_EQ(Wait(TaskJson(*fits))["state"], "succeeded");
  EXPECT_EQ(Guest("late")["host"], dst);
}

}  // namespace
}  // namespace uw::manager
