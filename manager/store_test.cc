#include "manager/store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>

namespace uw::manager {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("uw-store-test-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Db() const { return (dir_ / "state.db").string(); }
  std::filesystem::path dir_;
};

TEST_F(StoreTest, NewFileIsMigratedToTheCurrentSchemaInWalMode) {
  auto s = Store::Open(Db());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->schema_version(), kSchemaVersion);
  auto v = (*s)->Query("PRAGMA user_version");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)[0].Int("user_version"), kSchemaVersion);
  auto mode = (*s)->Query("PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok());
  EXPECT_EQ((*mode)[0].Str("journal_mode"), "wal");
  auto fk = (*s)->Query("PRAGMA foreign_keys");
  EXPECT_EQ((*fk)[0].Int("foreign_keys"), 1);
  for (const char* t : {"hosts",       "guests",       "pools",           "rules",         "leases",
                        "tasks",       "events",       "recommendations", "usage_samples", "api_tokens",
                        "settings",    "idempotency",  "notices",         "repossessions", "budgets",
                        "images",      "volumes",      "storage_quotas",  "usage_records", "metering_state",
                        "price_plans", "tenant_plans", "invoices",        "invoice_lines", "invoice_adjustments",
                        "networks",    "ports"}) {
    auto r = (*s)->Query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", {std::string(t)});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->size(), 1u) << "missing table " << t;
  }
}

TEST_F(StoreTest, VersionOneFileIsMigratedForwardKeepingData) {
  {
    // Build a version-1 file by hand: run the store's first migration only, through a raw handle.
    auto s = Store::Open(Db());
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Exec("INSERT INTO settings(key, value) VALUES ('drs', '{}')").ok());
    ASSERT_TRUE((*s)->Exec("DROP TABLE idempotency").ok());
    ASSERT_TRUE((*s)->Exec("DROP INDEX usage_by_time").ok());
    ASSERT_TRUE((*s)->Exec("DROP TABLE migrations").ok());
    for (const char* trigger : {"host_reservations_new_host", "host_reservations_guest_added",
                                "host_reservations_guest_removed", "host_reservations_guest_changed"}) {
      ASSERT_TRUE((*s)->Exec(std::string("DROP TRIGGER ") + trigger).ok()) << trigger;
    }
    ASSERT_TRUE((*s)->Exec("DROP TABLE host_reservations").ok());
    ASSERT_TRUE((*s)->Exec("DROP TABLE host_power").ok());
    ASSERT_TRUE((*s)->Exec("DROP TABLE budgets").ok());  // schema 8
    for (const char* t : {"ports", "networks"}) {        // schema 16
      ASSERT_TRUE((*s)->Exec(std::string("DROP TABLE ") + t).ok()) << t;
    }
    for (const char* t : {"volumes", "images", "storage_quotas"}) {  // schema 12
      ASSERT_TRUE((*s)->Exec(std::string("DROP TABLE ") + t).ok()) << t;
    }
    for (const char* t : {"invoice_lines", "invoice_adjustments", "invoices", "tenant_plans", "price_plans"}) {
      ASSERT_TRUE((*s)->Exec(std::string("DROP TABLE ") + t).ok()) << t;  // schema 14
    }
    ASSERT_TRUE((*s)->Exec("DROP INDEX usage_samples_once").ok());  // schema 14
    for (const char* t : {"usage_records", "metering_state"}) {     // schema 13
      ASSERT_TRUE((*s)->Exec(std::string("DROP TABLE ") + t).ok()) << t;
    }
    ASSERT_TRUE((*s)->Exec("DROP INDEX usage_samples_by_guest").ok());
    ASSERT_TRUE((*s)->Exec("DROP INDEX guests_with_alert").ok());
    ASSERT_TRUE((*s)->Exec("DROP INDEX tasks_by_updated").ok());
    // Version 1's leases: one row per granted resource, no term, no state.
    for (const char* t : {"notices", "repossessions", "leases"}) {
      ASSERT_TRUE((*s)->Exec(std::string("DROP TABLE ") + t).ok()) << t;
    }
    ASSERT_TRUE((*s)->Exec("CREATE TABLE leases (id TEXT PRIMARY KEY, guest TEXT NOT NULL REFERENCES guests(name) ON "
                           "DELETE CASCADE, resource TEXT NOT NULL, floor REAL NOT NULL, grant_amount REAL NOT NULL, "
                           "term_end_ms INTEGER, class TEXT NOT NULL, created_ms INTEGER NOT NULL)")
                    .ok());
    // Columns added after version 1 (the last column of version 1 is hosts.info, guests.updated_ms).
    for (auto [table, last_v1] : {std::pair<std::string, std::string>{"guests", "updated_ms"},
                                  {"hosts", "info"},
                                  {"usage_samples", "memory_mib"},
                                  {"api_tokens", "created_ms"}}) {
      // table_xinfo lists generated columns too; they go first (they read the later columns).
      auto cols = (*s)->Query("SELECT name FROM pragma_table_xinfo('" + table + "') ORDER BY cid");
      ASSERT_TRUE(cols.ok());
      std::vector<std::string> later;
      bool past = false;
      for (const auto& c : *cols) {
        if (past) later.push_back(c.Str("name"));
        past = past || c.Str("name") == last_v1;
      }
      for (auto c = later.rbegin(); c != later.rend(); ++c) {
        ASSERT_TRUE((*s)->Exec("ALTER TABLE " + table + " DROP COLUMN " + *c).ok()) << *c;
      }
    }
    // A guest with its two lease rows, as version 1 wrote them.
    ASSERT_TRUE((*s)->Exec("INSERT INTO hosts(name, agent_url, agent_token, host_token_hash, cpu_cores, memory_mib, "
                           "state, last_heartbeat_ms, joined_at_ms) VALUES ('h1', 'http://h1', 't', 'x', 4, 4096, "
                           "'connected', 0, 0)")
                    .ok());
    ASSERT_TRUE((*s)->Exec("INSERT INTO guests(name, tenant, host, kind, vcpus, memory_mib, spec, state, created_ms, "
                           "updated_ms) VALUES ('acme:web', 'acme', 'h1', 'qemu', 2, 512, '{\"vcpus\": 1, "
                           "\"memory_mib\": 384}', 'running', 5, 6)")
                    .ok());
    for (const char* r : {"vcpu", "memory_mib"}) {
      ASSERT_TRUE((*s)->Exec("INSERT INTO leases VALUES ('lease-" + std::string(r) + "', 'acme:web', '" + r +
                             "', 0, 1, NULL, 'elastic', 5)")
                      .ok());
    }
    ASSERT_TRUE((*s)->Exec("PRAGMA user_version = 1").ok());
  }
  auto s = Store::Open(Db());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->schema_version(), kSchemaVersion);
  EXPECT_TRUE((*s)->Query("SELECT migrating_to FROM guests").ok());
  EXPECT_TRUE((*s)->Query("SELECT * FROM migrations").ok());
  EXPECT_TRUE((*s)->Query("SELECT alert FROM guests").ok());
  EXPECT_TRUE((*s)->Query("SELECT groups FROM hosts").ok());
  EXPECT_TRUE((*s)->Query("SELECT rights FROM api_tokens").ok());
  EXPECT_TRUE((*s)->Query("SELECT * FROM host_reservations").ok());
  EXPECT_TRUE((*s)->Query("SELECT * FROM networks JOIN ports ON ports.network = networks.key").ok());
  auto rows = (*s)->Query("SELECT value FROM settings WHERE key = 'drs'");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 1u);
  EXPECT_TRUE((*s)->Query("SELECT * FROM idempotency").ok());
  // One lease per guest, at what the guest runs with, its class kept, active, open-ended.
  auto leases = (*s)->Query("SELECT * FROM leases");
  ASSERT_TRUE(leases.ok());
  ASSERT_EQ(leases->size(), 1u);
  const SqlRow& l = (*leases)[0];
  EXPECT_EQ(l.Str("guest"), "acme:web");
  EXPECT_EQ(l.Str("tenant"), "acme");
  EXPECT_EQ(l.Str("class"), "elastic");
  EXPECT_EQ(l.Int("vcpus"), 1);
  EXPECT_EQ(l.Int("memory_mib"), 384);
  EXPECT_EQ(l.Int("floor_memory_mib"), 128);
  EXPECT_EQ(l.Str("state"), "active");
  EXPECT_TRUE(l.IsNull("term_end_ms"));
  EXPECT_TRUE((*s)->Query("SELECT * FROM notices").ok());
  EXPECT_TRUE((*s)->Query("SELECT * FROM repossessions").ok());
}

TEST_F(StoreTest, NewerSchemaIsRefusedWithAClearError) {
  {
    auto s = Store::Open(Db());
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Exec("PRAGMA user_version = 99").ok());
  }
  auto s = Store::Open(Db());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("newer"), std::string::npos) << s.status().message();
}

TEST_F(StoreTest, ForeignKeysAndUniqueConstraintsMapToStatusCodes) {
  auto s = Store::Open(Db());
  ASSERT_TRUE(s.ok());
  Store& st = **s;
  Status fk = st.Exec(
      "INSERT INTO guests(name, host, kind, vcpus, memory_mib, spec, state, created_ms, updated_ms) "
      "VALUES ('g', 'no-such-host', 'qemu', 1, 256, '{}', 'creating', 0, 0)");
  EXPECT_EQ(fk.code(), StatusCode::kFailedPrecondition) << fk.ToString();
  ASSERT_TRUE(st.Exec("INSERT INTO settings(key, value) VALUES ('a', '1')").ok());
  Status dup = st.Exec("INSERT INTO settings(key, value) VALUES ('a', '2')");
  EXPECT_EQ(dup.code(), StatusCode::kAlreadyExists) << dup.ToString();
}

TEST_F(StoreTest, TransactionRollsBackOnError) {
  auto s = Store::Open(Db());
  ASSERT_TRUE(s.ok());
  Store& st = **s;
  Status t = st.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(st.Exec("INSERT INTO settings(key, value) VALUES ('x', '1')"));
    return AbortedError("changed my mind");
  });
  EXPECT_EQ(t.code(), StatusCode::kAborted);
  auto rows = st.Query("SELECT * FROM settings WHERE key = 'x'");
  ASSERT_TRUE(rows.ok());
  EXPECT_TRUE(rows->empty());
  ASSERT_TRUE(st.Transact([&] { return st.Exec("INSERT INTO settings(key, value) VALUES ('y', '1')"); }).ok());
  EXPECT_EQ(st.Query("SELECT * FROM settings WHERE key = 'y'")->size(), 1u);
}

TEST_F(StoreTest, UnopenablePathIsUnavailable) {
  auto s = Store::Open((dir_ / "no" / "such" / "dir" / "x.db").string());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace uw::manager
