#include "manager/guest_table.h"

#include <gtest/gtest.h>

#include "manager/host_table.h"
#include "manager/test_dir.h"

namespace uw::manager::internal {
namespace {

class GuestTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::Open((dir_.path() / "state.db").string());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    guests_ = std::make_unique<GuestTable>(*store_);
    HostTable hosts(*store_);
    for (const char* h : {"h1", "h2"}) {
      ASSERT_TRUE(hosts.Join(HostJoin{h, std::string("http://") + h, "", 8, 8192, Json::object()}, "x", 1).ok());
    }
  }
  void TearDown() override {
    guests_.reset();
    store_.reset();
  }
  void Admit(const std::string& name, const std::string& tenant, const std::string& host) {
    GuestTable::Admitted a{.name = name,
                           .tenant = tenant,
                           .host = host,
                           .pool = std::nullopt,
                           .kind = "qemu",
                           .vcpus = 2,
                           .memory_mib = 256,
                           .spec = {{"name", name}, {"vcpus", 1}, {"memory_mib", 128}},
                           .automation = "automatic",
                           .placement_reason = "most room",
                           .on_crash = "restart",
                           .now_ms = 1000};
    Status s = guests_->Admit(a);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  TestDir dir_{"guest-table-test"};
  std::unique_ptr<Store> store_;
  std::unique_ptr<GuestTable> guests_;
};

TEST_F(GuestTableTest, AnAdmittedGuestIsCreatingWithItsReservation) {
  Admit("t1:web", "t1", "h1");
  auto g = guests_->Get("t1:web");
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->state, "creating");
  EXPECT_EQ(g->host, "h1");
  EXPECT_EQ(g->vcpus, 1);  // what runs (the spec)
  EXPECT_EQ(g->reserved_vcpus, 2);
  EXPECT_EQ(g->reserved_memory_mib, 256);
  EXPECT_EQ(g->placement_reason, "most room");
}

TEST_F(GuestTableTest, NamesResolvePerTenantAndTheClusterNameWins) {
  Admit("web", "t1", "h1");     // made before names were per tenant
  Admit("t1:web", "t1", "h1");  // its cluster name
  Admit("t2:web", "t2", "h2");
  auto mine = guests_->FindOfTenant("t1", "t1:web", "web");
  ASSERT_TRUE(mine.ok());
  ASSERT_TRUE(mine->has_value());
  EXPECT_EQ((*mine)->name, "t1:web");
  EXPECT_FALSE(guests_->FindOfTenant("t3", "t3:web", "web")->has_value());
  auto named = guests_->WithShortName("web");
  ASSERT_TRUE(named.ok());
  ASSERT_EQ(named->size(), 2u);
  EXPECT_EQ((*named)[0].name, "t1:web");
  EXPECT_EQ((*named)[1].name, "t2:web");
  EXPECT_TRUE(*guests_->NameTaken("t2:web", "t2", "web"));
  EXPECT_TRUE(*guests_->NameTaken("t1:db", "t1", "web"));  // the tenant's old short name
  EXPECT_FALSE(*guests_->NameTaken("t3:web", "t3", "web"));
  EXPECT_EQ(guests_->Get("nope").status().message(), "guest 'nope' not found");
  EXPECT_EQ(guests_->TenantOf("t2:web").value_or(""), "t2");
}

TEST_F(GuestTableTest, ReconcileStateHealthCrashAndAlertsRoundTrip) {
  Admit("t1:b", "t1", "h1");
  Admit("t1:a", "t1", "h1");
  Admit("t1:c", "t1", "h2");
  ASSERT_TRUE(guests_->SetState("t1:a", "running", 2000).ok());
  ASSERT_TRUE(guests_->SetHealth("t1:a", "ready").ok());
  ASSERT_TRUE(guests_->SetCrash("t1:b", Json{{"at", 5}}).ok());
  auto known = guests_->OnHost("h1");
  ASSERT_TRUE(known.ok());
  ASSERT_EQ(known->size(), 2u);
  EXPECT_EQ((*known)[0].name, "t1:a");
  EXPECT_EQ((*known)[0].state, "running");
  EXPECT_EQ((*known)[0].health, "ready");
  EXPECT_TRUE((*known)[0].crash.is_null());
  EXPECT_EQ((*known)[1].crash["at"], 5);
  EXPECT_EQ(guests_->NamesOn("h2").value_or(std::vector<std::string>{}), std::vector<std::string>{"t1:c"});
  ASSERT_TRUE(guests_->SetHealth("t1:a", "").ok());
  EXPECT_FALSE(guests_->Get("t1:a")->health.has_value());

  ASSERT_TRUE(guests_->SetAlert("t1:c", Json{{"type", "duplicate"}}).ok());
  auto alerted = guests_->WithAlerts();
  ASSERT_TRUE(alerted.ok());
  ASSERT_EQ(alerted->size(), 1u);
  EXPECT_EQ((*alerted)[0].name, "t1:c");
  EXPECT_EQ((*alerted)[0].alert["type"], "duplicate");
  ASSERT_TRUE(guests_->SetAlert("t1:c", Json()).ok());
  EXPECT_TRUE(guests_->WithAlerts()->empty());
  EXPECT_TRUE(guests_->AlertOf("t1:c")->alert.is_null());
}

TEST_F(GuestTableTest, OnlyAReservationStillCreatingIsReleased) {
  Admit("t1:a", "t1", "h1");
  Admit("t1:b", "t1", "h1");
  ASSERT_TRUE(guests_->SetState("t1:b", "running", 2000).ok());
  ASSERT_TRUE(guests_->ReleaseCreating("t1:a").ok());
  ASSERT_TRUE(guests_->ReleaseCreating("t1:b").ok());
  EXPECT_FALSE(guests_->Find("t1:a")->has_value());
  EXPECT_TRUE(guests_->Find("t1:b")->has_value());
  ASSERT_TRUE(guests_->SetStateAndSpec("t1:b", "running", Json{{"vcpus", 2}}, 3000).ok());
  EXPECT_EQ(guests_->SpecOf("t1:b")->value("vcpus", 0), 2);
  ASSERT_TRUE(guests_->Remove("t1:b").ok());
  EXPECT_EQ(guests_->SpecOf("t1:b").status().code(), StatusCode::kNotFound);
}

TEST_F(GuestTableTest, AMoveHoldsItsDestinationUntilItEndsWhereverItLanded) {
  Admit("t1:a", "t1", "h1");
  ASSERT_TRUE(guests_->SetState("t1:a", "running", 2000).ok());
  ASSERT_TRUE(guests_->HoldMove("t1:a", "h2").ok());
  EXPECT_EQ(guests_->Get("t1:a")->migrating_to, "h2");
  auto reserved = [&](const char* host) {
    auto r = store_->Query("SELECT memory_mib FROM host_reservations WHERE host = ?", {std::string(host)});
    return r.ok() && r->size() == 1 ? (*r)[0].Int("memory_mib") : int64_t{-1};
  };
  // A host holds what the guest's lease grants now (its spec: 128 MiB of its 256 MiB maximum);
  // the snapshot counts the hold on h2 from migrating_to.
  EXPECT_EQ(reserved("h1"), 128);
  EXPECT_EQ(reserved("h2"), 0);

  ASSERT_TRUE(guests_->EndMove("t1:a", std::nullopt, std::nullopt, 3000).ok());  // rolled back
  auto back = guests_->Get("t1:a");
  EXPECT_EQ(back->host, "h1");
  EXPECT_EQ(back->state, "running");
  EXPECT_FALSE(back->migrating_to.has_value());

  ASSERT_TRUE(guests_->HoldMove("t1:a", "h2").ok());
  ASSERT_TRUE(guests_->EndMove("t1:a", std::string("h2"), std::string("unknown"), 4000).ok());  // landed, unseen
  auto moved = guests_->Get("t1:a");
  EXPECT_EQ(moved->host, "h2");
  EXPECT_EQ(moved->state, "unknown");
  EXPECT_FALSE(moved->migrating_to.has_value());
  EXPECT_EQ(reserved("h1"), 0);  // the reservation moved with it
  EXPECT_EQ(reserved("h2"), 128);
}

}  // namespace
}  // namespace uw::manager::internal
