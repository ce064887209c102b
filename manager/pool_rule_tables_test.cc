#include "manager/pool_rule_tables.h"

#include <gtest/gtest.h>

#include "manager/guest_table.h"
#include "manager/host_table.h"
#include "manager/test_dir.h"

namespace uw::manager::internal {
namespace {

namespace pl = placement;

class PoolRuleTablesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::Open((dir_.path() / "state.db").string());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  static pl::Pool Pool(const std::string& name, const std::string& parent, std::optional<double> cpu_limit) {
    pl::Pool p;
    p.name = name;
    p.parent = parent;
    p.cpu.limit = cpu_limit;
    return p;
  }
  void AdmitInto(const std::string& guest, const std::string& pool) {
    ASSERT_TRUE(HostTable(*store_).Join(HostJoin{"h1", "h1", "", 4, 4096, Json::object()}, "x", 1).ok());
    GuestTable::Admitted g{.name = guest,
                           .tenant = "",
                           .host = "h1",
                           .pool = pool,
                           .kind = "qemu",
                           .vcpus = 2,
                           .memory_mib = 64,
                           .spec = Json::object(),
                           .automation = "automatic",
                           .placement_reason = "",
                           .on_crash = "restart",
                           .now_ms = 1};
    ASSERT_TRUE(GuestTable(*store_).Admit(g).ok());
  }
  TestDir dir_{"pool-rule-tables-test"};
  std::unique_ptr<Store> store_;
};

TEST_F(PoolRuleTablesTest, PoolsAreStoredAsTheEngineReadsThemWithTheirChainAndSubtree) {
  PoolTable pools(*store_);
  ASSERT_TRUE(pools.Insert(Pool("prod", "", 8.0)).ok());
  ASSERT_TRUE(pools.Insert(Pool("web", "prod", 4.0)).ok());
  ASSERT_TRUE(pools.Insert(Pool("api", "web", std::nullopt)).ok());
  ASSERT_TRUE(pools.Insert(Pool("dev", "", std::nullopt)).ok());
  EXPECT_EQ(pools.Insert(Pool("web", "", std::nullopt)).message(), "pool 'web' already exists");
  auto all = pools.List();
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[0].name, "api");  // by name
  auto web = pools.Get("web");
  ASSERT_TRUE(web.ok());
  EXPECT_EQ(*web, Pool("web", "prod", 4.0));
  auto chain = PoolChain(*all, "api");
  ASSERT_TRUE(chain.ok());
  ASSERT_EQ(chain->size(), 3u);
  EXPECT_EQ((*chain)[1].name, "web");
  EXPECT_EQ((*chain)[2].name, "prod");
  EXPECT_EQ(PoolChain(*all, "nope").status().message(), "pool 'nope' not found");
  EXPECT_EQ(PoolSubtree(*all, "prod"), (std::set<std::string>{"api", "prod", "web"}));
  EXPECT_EQ(pools.Get("nope").status().message(), "pool 'nope' not found");
}

TEST_F(PoolRuleTablesTest, APoolWithGuestsOrChildrenIsNotDeleted) {
  PoolTable pools(*store_);
  ASSERT_TRUE(pools.Insert(Pool("prod", "", std::nullopt)).ok());
  ASSERT_TRUE(pools.Insert(Pool("web", "prod", std::nullopt)).ok());
  AdmitInto("g1", "web");
  EXPECT_EQ(pools.Delete("prod").message(), "pool 'prod' still has guests or child pools");
  EXPECT_EQ(pools.Delete("web").message(), "pool 'web' still has guests or child pools");
  EXPECT_EQ(pools.Delete("nope").code(), StatusCode::kNotFound);
  auto pooled = GuestTable(*store_).PooledGrants();
  ASSERT_TRUE(pooled.ok());
  ASSERT_EQ(pooled->size(), 1u);
  EXPECT_EQ((*pooled)[0].pool, "web");
  EXPECT_EQ((*pooled)[0].vcpus, 2);
  EXPECT_EQ(*GuestTable(*store_).NamesInPool("web"), std::vector<std::string>{"g1"});
  ASSERT_TRUE(GuestTable(*store_).Remove("g1").ok());
  EXPECT_TRUE(pools.Delete("web").ok());
  EXPECT_TRUE(pools.Delete("prod").ok());
  EXPECT_TRUE(pools.List()->empty());
}

TEST_F(PoolRuleTablesTest, RulesAreKeptAsStoredEvenWhenDeletesLeftOneGuest) {
  RuleTable rules(*store_);
  pl::Rule r;
  r.name = "apart";
  r.type = pl::RuleType::kVmAntiAffinity;
  r.vms = {"a", "b"};
  ASSERT_TRUE(rules.Insert(r).ok());
  EXPECT_EQ(rules.Insert(r).message(), "rule 'apart' already exists");
  r.vms = {"a"};
  ASSERT_TRUE(rules.Save(r).ok());
  auto got = rules.Get("apart");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->vms, std::vector<std::string>{"a"});
  ASSERT_EQ(rules.List()->size(), 1u);
  EXPECT_TRUE(rules.Delete("apart").ok());
  EXPECT_EQ(rules.Delete("apart").message(), "rule 'apart' not found");
  EXPECT_EQ(rules.Get("apart").status().message(), "rule 'apart' not found");
}

}  // namespace
}  // namespace uw::manager::internal
