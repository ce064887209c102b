#include "manager/drs_tables.h"

#include <gtest/gtest.h>

#include "manager/test_dir.h"

namespace uw::manager::internal {
namespace {

class DrsTablesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::Open((dir_.path() / "state.db").string());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  static placement::Plan PlanOf(std::vector<placement::Move> moves) {
    placement::Plan p;
    p.moves = std::move(moves);
    p.before.imbalance = 0.5;
    p.after.imbalance = 0.1;
    return p;
  }
  TestDir dir_{"drs-tables-test"};
  std::unique_ptr<Store> store_;
};

TEST_F(DrsTablesTest, APassReplacesThePendingOnesWhichComeInTheOrderTheyAreApplied) {
  RecommendationTable recs(*store_);
  auto first = recs.ReplacePending(PlanOf({{"a", "h1", "h2", 3, "balance", 0.2}}), 1000);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_EQ(first->size(), 1u);
  auto second = recs.ReplacePending(
      PlanOf({{"b", "h1", "h2", 4, "balance", 0.1}, {"c", "h2", "h3", 1, "maintenance", 0.0}}), 2000);
  ASSERT_TRUE(second.ok());
  auto pending = recs.Pending();
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ((*pending)[0].guest, "c");  // priority 1 first
  EXPECT_EQ((*pending)[1].guest, "b");
  EXPECT_EQ((*pending)[1].id, (*second)[0]);
  EXPECT_DOUBLE_EQ((*pending)[1].imbalance_before, 0.5);
  auto old = recs.Get((*first)[0]);
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->state, "superseded");
  placement::Move m = MoveOf((*pending)[0]);
  EXPECT_EQ(m.vm, "c");
  EXPECT_EQ(m.from, "h2");
  EXPECT_EQ(m.to, "h3");
  EXPECT_EQ(m.priority, 1);
  auto page = recs.List(PageQuery{2, ""});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->total, 3);
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[0].created_ms, 2000);  // newest first
  EXPECT_EQ(recs.Get("rec-x").status().message(), "recommendation 'rec-x' not found");
}

TEST_F(DrsTablesTest, ARecommendationEndsAppliedSupersededOrFailedWithItsNote) {
  RecommendationTable recs(*store_);
  auto ids = recs.ReplacePending(
      PlanOf({{"a", "h1", "h2", 3, "", 0}, {"b", "h1", "h2", 3, "", 0}, {"c", "h1", "h2", 3, "", 0}}), 1000);
  ASSERT_TRUE(ids.ok());
  ASSERT_TRUE(recs.Close((*ids)[0], RecommendationTable::End::kApplied, "task t-1").ok());
  ASSERT_TRUE(recs.Close((*ids)[1], RecommendationTable::End::kSuperseded, "stale: no room").ok());
  ASSERT_TRUE(recs.Close((*ids)[2], RecommendationTable::End::kFailed, "destination down").ok());
  EXPECT_EQ(recs.Get((*ids)[0])->state, "applied");
  EXPECT_EQ(recs.Get((*ids)[0])->note, "task t-1");
  EXPECT_EQ(recs.Get((*ids)[1])->state, "superseded");
  EXPECT_EQ(recs.Get((*ids)[2])->state, "failed");
  EXPECT_EQ(recs.Get((*ids)[2])->note, "destination down");
  EXPECT_TRUE(recs.Pending()->empty());
}

TEST_F(DrsTablesTest, SettingsAreAbsentUntilPutAndThenReplaced) {
  SettingsTable settings(*store_);
  auto none = settings.Get("drs");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(settings.Put("drs", Json{{"threshold", 2}}).ok());
  ASSERT_TRUE(settings.Put("drs", Json{{"threshold", 4}}).ok());
  auto got = settings.Get("drs");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((**got)["threshold"], 4);
}

}  // namespace
}  // namespace uw::manager::internal
