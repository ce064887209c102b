#include "manager/migration_table.h"

#include <gtest/gtest.h>

#include "manager/guest_table.h"
#include "manager/host_table.h"
#include "manager/test_dir.h"

namespace uw::manager::internal {
namespace {

namespace mg = migration;

class MigrationTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::Open((dir_.path() / "state.db").string());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    migrations_ = std::make_unique<MigrationTable>(*store_);
    for (const char* h : {"h1", "h2"}) {
      ASSERT_TRUE(HostTable(*store_).Join(HostJoin{h, h, "", 4, 4096, Json::object()}, "x", 1).ok());
    }
    GuestTable::Admitted g{.name = "g",
                           .tenant = "",
                           .host = "h1",
                           .pool = std::nullopt,
                           .kind = "qemu",
                           .vcpus = 1,
                           .memory_mib = 64,
                           .spec = Json::object(),
                           .automation = "automatic",
                           .placement_reason = "",
                           .on_crash = "restart",
                           .now_ms = 1};
    ASSERT_TRUE(GuestTable(*store_).Admit(g).ok());
    for (const char* t : {"task-1", "task-2", "task-3"}) {
      ASSERT_TRUE(store_
                      ->Exec("INSERT INTO tasks(id, kind, subject, tenant, state, request, created_ms, updated_ms) "
                             "VALUES (?, 'guest.migrate', 'g', '', 'running', '{}', 1, 1)",
                             {std::string(t)})
                      .ok());
    }
  }
  static mg::Record Record(const std::string& id, const std::string& from, const std::string& to) {
    mg::Record r;
    r.id = id;
    r.guest = "g";
    r.source = from;
    r.destination = to;
    r.mode = mg::Mode::kLive;
    return r;
  }
  TestDir dir_{"migration-table-test"};
  std::unique_ptr<Store> store_;
  std::unique_ptr<MigrationTable> migrations_;
};

TEST_F(MigrationTableTest, ARecordIsStoredAsItAdvancesAndFoundByItsTask) {
  EXPECT_FALSE(migrations_->OfTask("task-1")->has_value());
  mg::Record r = Record("mig-1", "h1", "h2");
  ASSERT_TRUE(migrations_->Insert(r, "task-1", 1000).ok());
  ASSERT_TRUE(mg::Advance(r, mg::Phase::kPrepare, "prepared").ok());
  ASSERT_TRUE(migrations_->Save(r, 2000).ok());
  auto found = migrations_->OfTask("task-1");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->phase, mg::Phase::kPrepare);
  auto got = migrations_->Get("mig-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->task, "task-1");
  EXPECT_EQ(got->created_ms, 1000);
  EXPECT_EQ(got->updated_ms, 2000);
  EXPECT_EQ(migrations_->Get("mig-x").status().message(), "migration 'mig-x' not found");
}

TEST_F(MigrationTableTest, MovesDoneAreFoundBySourceAndTimedByGuest) {
  mg::Record a = Record("mig-a", "h1", "h2"), b = Record("mig-b", "h2", "h1"), c = Record("mig-c", "h1", "h2");
  a.phase = mg::Phase::kDone;
  b.phase = mg::Phase::kDone;
  c.phase = mg::Phase::kRolledBack;
  ASSERT_TRUE(migrations_->Insert(a, "task-1", 1000).ok());
  ASSERT_TRUE(migrations_->Insert(b, "task-2", 3000).ok());
  ASSERT_TRUE(migrations_->Insert(c, "task-3", 5000).ok());
  EXPECT_EQ(migrations_->LastDoneFrom("g", "h1")->value_or(""), "mig-a");
  EXPECT_EQ(migrations_->LastDoneFrom("g", "h2")->value_or(""), "mig-b");
  EXPECT_FALSE(migrations_->LastDoneFrom("other", "h1")->has_value());
  auto at = migrations_->LastDoneAt();
  ASSERT_TRUE(at.ok());
  EXPECT_EQ(*at, (std::map<std::string, int64_t>{{"g", 3000}}));  // a rolled-back move is no move
  auto page = migrations_->List("g", PageQuery{2, ""});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[0].record.id, "mig-c");  // newest first
  EXPECT_EQ(page->total, 3);
}

}  // namespace
}  // namespace uw::manager::internal
