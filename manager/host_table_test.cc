#include "manager/host_table.h"

#include <gtest/gtest.h>

#include "manager/test_dir.h"

namespace uw::manager::internal {
namespace {

class HostTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::Open((dir_.path() / "state.db").string());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    hosts_ = std::make_unique<HostTable>(*store_);
  }
  void TearDown() override {
    hosts_.reset();
    store_.reset();
  }
  static HostJoin Join(const std::string& name) {
    return HostJoin{name, "http://" + name + ":7700", "agent-secret", 8, 16384, Json{{"hostname", name}}};
  }
  TestDir dir_{"host-table-test"};
  std::unique_ptr<Store> store_;
  std::unique_ptr<HostTable> hosts_;
};

TEST_F(HostTableTest, AJoinAddsTheHostAndASecondJoinUpdatesIt) {
  auto first = hosts_->Join(Join("h1"), "hash-1", 1000);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_FALSE(*first);
  HostJoin again = Join("h1");
  again.agent_url = "http://10.0.0.9:7700";
  again.cpu_cores = 16;
  auto second = hosts_->Join(again, "hash-2", 2000);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(*second);

  auto session = hosts_->SessionOf("h1");
  ASSERT_TRUE(session.ok());
  EXPECT_EQ(session->state, "connected");
  EXPECT_EQ(session->host_token_hash, "hash-2");
  auto address = hosts_->AddressOf("h1");
  ASSERT_TRUE(address.ok());
  EXPECT_EQ(*address, (AgentAddress{"http://10.0.0.9:7700", "agent-secret"}));
  auto detail = hosts_->Get("h1");
  ASSERT_TRUE(detail.ok());
  EXPECT_EQ(detail->host.cpu_cores, 16);
  EXPECT_EQ(detail->host.last_heartbeat_ms, 2000);
  EXPECT_EQ(detail->info["hostname"], "h1");
}

TEST_F(HostTableTest, UnknownHostsAreNotFoundByName) {
  EXPECT_EQ(hosts_->Require("nope").code(), StatusCode::kNotFound);
  EXPECT_EQ(hosts_->SessionOf("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(hosts_->Get("nope").status().message(), "host 'nope' not found");
  EXPECT_EQ(hosts_->SetMaintenance("nope", true).code(), StatusCode::kNotFound);
  EXPECT_EQ(hosts_->SetGroups("nope", {"a"}).code(), StatusCode::kNotFound);
  auto address = hosts_->AddressOf("gone");
  EXPECT_EQ(address.status().code(), StatusCode::kNotFound);
  EXPECT_NE(address.status().message().find("gone"), std::string::npos);
}

TEST_F(HostTableTest, OverdueHostsDisconnectOnceAndAHeartbeatReconnectsThem) {
  ASSERT_TRUE(hosts_->Join(Join("h1"), "x", 1000).ok());
  ASSERT_TRUE(hosts_->Join(Join("h2"), "x", 5000).ok());
  auto overdue = hosts_->OverdueSince(3000);
  ASSERT_TRUE(overdue.ok());
  ASSERT_EQ(overdue->size(), 1u);
  EXPECT_EQ((*overdue)[0].name, "h1");
  EXPECT_EQ((*overdue)[0].last_heartbeat_ms, 1000);

  bool first = false, second = true;
  ASSERT_TRUE(store_
                  ->Transact([&]() -> Status {
                    UW_ASSIGN_OR_RETURN(first, hosts_->Disconnect("h1"));
                    UW_ASSIGN_OR_RETURN(second, hosts_->Disconnect("h1"));
                    return Status::Ok();
                  })
                  .ok());
  EXPECT_TRUE(first);
  EXPECT_FALSE(second);  // already disconnected: no second event
  EXPECT_TRUE(hosts_->OverdueSince(3000)->empty());

  HostTable::Usage usage{1.5, 512, {}, {}};
  ASSERT_TRUE(hosts_->RecordHeartbeat("h1", 6000, usage).ok());
  auto h1 = hosts_->Get("h1");
  ASSERT_TRUE(h1.ok());
  EXPECT_EQ(h1->host.state, "connected");
  EXPECT_EQ(h1->host.used_cpu_cores, 1.5);
  EXPECT_EQ(h1->host.used_memory_mib, 512);
  auto samples = store_->Query("SELECT at_ms, cpu_cores FROM usage_samples WHERE host = 'h1' AND guest IS NULL");
  ASSERT_TRUE(samples.ok());
  ASSERT_EQ(samples->size(), 1u);
  EXPECT_EQ((*samples)[0].Int("at_ms"), 6000);
  ASSERT_TRUE(hosts_->PruneUsage(6001).ok());
  EXPECT_TRUE(store_->Query("SELECT at_ms FROM usage_samples")->empty());
}

TEST_F(HostTableTest, ARestartGivesEveryHostAFullTimeoutFromNow) {
  ASSERT_TRUE(hosts_->Join(Join("h1"), "x", 1000).ok());
  ASSERT_TRUE(hosts_->Join(Join("h2"), "x", 9000).ok());
  ASSERT_TRUE(hosts_->ExtendDeadlines(5000).ok());
  EXPECT_EQ(hosts_->Get("h1")->host.last_heartbeat_ms, 5000);
  EXPECT_EQ(hosts_->Get("h2")->host.last_heartbeat_ms, 9000);  // never moved back
}

TEST_F(HostTableTest, MaintenanceAndGroupsShowInTheListing) {
  ASSERT_TRUE(hosts_->Join(Join("h2"), "x", 1000).ok());
  ASSERT_TRUE(hosts_->Join(Join("h1"), "x", 1000).ok());
  ASSERT_TRUE(hosts_->SetMaintenance("h1", true).ok());
  ASSERT_TRUE(hosts_->SetGroups("h2", {"rack-a", "ssd"}).ok());
  auto page = hosts_->List(PageQuery{1, ""});
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].name, "h1");
  EXPECT_TRUE(page->items[0].maintenance);
  EXPECT_EQ(page->total, 2);
  ASSERT_TRUE(page->next.has_value());
  auto rest = hosts_->List(PageQuery{10, *page->next});
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->items.size(), 1u);
  EXPECT_EQ(rest->items[0].groups, (std::vector<std::string>{"rack-a", "ssd"}));
  EXPECT_FALSE(rest->items[0].maintenance);
}

}  // namespace
}  // namespace uw::manager::internal
