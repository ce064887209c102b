// Regression tests for "listing is slow": GET /api/v1/guests is written straight from the rows
// (ListGuestsBody) and must stay byte for byte what the JSON tree gave; GET /api/v1/hosts reads
// reservation totals kept by triggers instead of every guest, and they must stay exact.
#include <gtest/gtest.h>

#include <filesystem>
#include <tuple>

#include "manager/manager.h"
#include "manager/views.h"

namespace uw::manager {
namespace {

class ListingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("uw-listing-test-" + std::to_string(::getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    ManagerConfig config;
    config.db_path = (dir_ / "state.db").string();
    config.join_token = "join-token-0123456789";
    config.admin_token = "admin-token-0123456789";
    config.drs_interval_ms = 0;
    manager_ = std::make_unique<Manager>(config);
    ASSERT_TRUE(manager_->Start().ok());
    for (const char* h : {"h1", "h2"}) {
      HostJoin j{h, "http://127.0.0.1:1", "t", 16, 65536, Json::object()};
      ASSERT_TRUE(manager_->JoinHost(config.join_token, j).ok());
    }
  }
  void TearDown() override {
    manager_->Stop();
    std::filesystem::remove_all(dir_);
  }
  // The typed list through its JSON view: what ListGuestsBody must equal.
  Result<Json> Tree(const Principal& p, const PageQuery& page = {}) {
    auto r = manager_->ListGuests(p, page);
    if (!r.ok()) return r.status();
    return PageView("guests", *r, [&](const Guest& g) { return GuestJson(g, p); });
  }
  void Insert(const std::string& name, const std::string& tenant, const SqlValue& host, const std::string& kind,
              int64_t vcpus, int64_t mib, const Json& spec) {
    ASSERT_TRUE(manager_->store()
                    .Exec("INSERT INTO guests(name, tenant, host, kind, vcpus, memory_mib, spec, state, created_ms, "
                          "updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', 1700000000123, 0)",
                          {name, tenant, host, kind, vcpus, mib, spec.dump()})
                    .ok());
  }
  // host_reservations against the totals computed from every guest.
  void ExpectTotalsExact() {
    auto kept = manager_->store().Query("SELECT host, guests, vcpus, memory_mib FROM host_reservations ORDER BY host");
    auto counted = manager_->store().Query(
        "SELECT h.name AS host, COUNT(g.name) AS guests, COALESCE(SUM(g.vcpus), 0) AS vcpus, "
        "COALESCE(SUM(g.memory_mib), 0) AS memory_mib FROM hosts h LEFT JOIN guests g ON g.host = h.name "
        "GROUP BY h.name ORDER BY h.name");
    ASSERT_TRUE(kept.ok() && counted.ok());
    ASSERT_EQ(kept->size(), counted->size());
    for (size_t i = 0; i < kept->size(); ++i) {
      for (const char* c : {"host", "guests", "vcpus", "memory_mib"}) {
        EXPECT_EQ((*kept)[i].Str(c), (*counted)[i].Str(c)) << c << " of " << (*counted)[i].Str("host");
      }
    }
  }

  std::filesystem::path dir_;
  std::unique_ptr<Manager> manager_;
};

TEST_F(ListingTest, ListingIsSlowButTheFastBodyIsByteForByteTheJsonTree) {
  Insert("a-plain", "acme", std::string("h1"), "qemu", 2, 512,
         {{"name", "a-plain"}, {"vcpus", 1}, {"memory_mib", 256}});
  Insert("b-lxc", "", nullptr, "lxc", 1, 64, {{"name", "b-lxc"}});
  Insert("c-emul", "acme", std::string("h2"), "qemu", 4, 1024, {{"paravirt", false}, {"vcpus", 3}});
  Insert("d-\xc3\xa9t\xc3\xa9", "other", std::string("h2"), "qemu", 1, 128, {{"name", "x"}});
  Insert("acme:e-short", "acme", std::string("h1"), "qemu", 1, 128, {{"name", "e-short"}});  // shown as e-short
  ASSERT_TRUE(manager_->store()
                  .Exec("UPDATE guests SET alert = ?, crash = ?, health = 'ready', migrating_to = 'h1', pool = NULL, "
                        "placement_reason = ?, cpu_used = 0.3333333333333333, memory_used_mib = 77 WHERE name = "
                        "'c-emul'",
                        {Json({{"type", "duplicate"}, {"also_on", {"h1"}}}).dump(), std::string("{not json"),
                         std::string("quote \" back\\slash tab\t nl\n ctl\x01 end")})
                  .ok());
  ASSERT_TRUE(
      manager_->store().Exec("UPDATE guests SET cpu_used = 2.0, memory_used_mib = -1 WHERE name = 'a-plain'").ok());
  for (const Principal& p : {Principal{"admin", Role::kAdmin, "", {}}, Principal{"t", Role::kTenant, "acme", {}},
                             Principal{"t", Role::kTenant, "nobody", {}}}) {
    auto tree = Tree(p);
    auto body = manager_->ListGuestsBody(p);
    ASSERT_TRUE(tree.ok() && body.ok());
    EXPECT_EQ(*body, tree->dump()) << "as " << RoleName(p.role) << " " << p.tenant;
  }
  // A kept body is not served after a change of any guest row (usage from a heartbeat here).
  const Principal everyone{"admin", Role::kAdmin, "", {}};
  const std::string before = *manager_->ListGuestsBody(everyone);
  EXPECT_EQ(*manager_->ListGuestsBody(everyone), before);
  ASSERT_TRUE(manager_->store().Exec("UPDATE guests SET cpu_used = 1.5 WHERE name = 'b-lxc'").ok());
  EXPECT_NE(*manager_->ListGuestsBody(everyone), before);
  EXPECT_EQ(*manager_->ListGuestsBody(everyone), Tree(everyone)->dump());
  // Each guest's kept text follows its row: a deleted guest goes, a new one comes, a changed one
  // changes, the others are served as kept.
  ASSERT_TRUE(manager_->store().Exec("DELETE FROM guests WHERE name = 'a-plain'").ok());
  Insert("f-new", "acme", std::string("h2"), "qemu", 2, 256, {{"name", "f-new"}});
  ASSERT_TRUE(manager_->store().Exec("UPDATE guests SET state = 'stopped', health = NULL WHERE name = 'c-emul'").ok());
  EXPECT_EQ(*manager_->ListGuestsBody(everyone), Tree(everyone)->dump());
  // A rolled-back change only costs a rebuild.
  ASSERT_FALSE(manager_->store()
                   .Transact([&]() -> Status {
                     UW_RETURN_IF_ERROR(manager_->store().Exec("UPDATE guests SET state = 'x' WHERE name = 'b-lxc'"));
                     return AbortedError("roll back");
                   })
                   .ok());
  EXPECT_EQ(*manager_->ListGuestsBody(everyone), Tree(everyone)->dump());
  // A changed spec is read again (the facts are cached by spec text).
  ASSERT_TRUE(manager_->store()
                  .Exec("UPDATE guests SET spec = ? WHERE name = 'c-emul'",
                        {Json({{"paravirt", true}, {"vcpus", 4}, {"memory_mib", 999}}).dump()})
                  .ok());
  const Principal admin{"admin", Role::kAdmin, "", {}};
  EXPECT_EQ(*manager_->ListGuestsBody(admin), Tree(admin)->dump());
  EXPECT_NE(manager_->ListGuestsBody(admin)->find("\"memory_mib\":999"), std::string::npos);
}

// Every page of the fast body equals the tree's page; following `next` from the first page visits
// each guest the caller may see once, in order; `total` counts them all.
TEST_F(ListingTest, PagesFollowTheirCursorsAndMatchTheTree) {
  for (int i = 0; i < 7; ++i) Insert("g" + std::to_string(i), "", std::string("h1"), "qemu", 1, 64, Json::object());
  for (int i = 0; i < 5; ++i) {
    Insert("acme:t" + std::to_string(i), "acme", std::string("h2"), "qemu", 1, 64, Json::object());
  }
  Insert("zeta:z", "zeta", std::string("h2"), "qemu", 1, 64, Json::object());
  const Principal admin{"admin", Role::kAdmin, "", {}};
  const Principal acme{"t", Role::kTenant, "acme", {}};
  for (const auto& [who, expected] : std::vector<std::pair<Principal, std::vector<std::string>>>{
           {admin,
            {"acme:t0", "acme:t1", "acme:t2", "acme:t3", "acme:t4", "g0", "g1", "g2", "g3", "g4", "g5", "g6",
             "zeta:z"}},
           {acme, {"t0", "t1", "t2", "t3", "t4"}}}) {
    for (int64_t limit : {1, 2, 3, 5, 13, 100}) {
      std::vector<std::string> seen;
      PageQuery page{limit, ""};
      for (int pages = 0; pages < 20; ++pages) {
        auto tree = Tree(who, page);
        auto body = manager_->ListGuestsBody(who, page);
        ASSERT_TRUE(tree.ok() && body.ok()) << tree.status().ToString();
        EXPECT_EQ(*body, tree->dump()) << "limit " << limit << " after " << page.after;
        EXPECT_EQ((*tree)["total"], expected.size());
        EXPECT_LE((*tree)["guests"].size(), static_cast<size_t>(limit));
        for (const auto& g : (*tree)["guests"]) seen.push_back(g["name"]);
        if ((*tree)["next"].is_null()) break;
        page.after = (*tree)["next"];
        EXPECT_EQ(page.after, seen.back());
      }
      EXPECT_EQ(seen, expected) << "limit " << limit << " as " << RoleName(who.role);
    }
  }
  // A cursor past the end, or naming a guest deleted since, still pages by name.
  auto tail = Tree(admin, PageQuery{2, "g35"});
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ((*tail)["guests"][0]["name"], "g4");
  EXPECT_EQ((*tail)["next"], "g5");
  auto none = manager_->ListGuestsBody(acme, PageQuery{10, "t9"});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, R"({"guests":[],"next":null,"total":5})");
  // The whole list (no limit) says its total too, and is still the tree.
  EXPECT_EQ(*manager_->ListGuestsBody(acme), Tree(acme)->dump());
  EXPECT_EQ((*Tree(acme))["total"], 5);
}

TEST_F(ListingTest, EveryOtherListPagesToo) {
  for (int i = 3; i <= 9; ++i) {
    HostJoin j{"h" + std::to_string(i), "http://127.0.0.1:1", "t", 16, 65536, Json::object()};
    ASSERT_TRUE(manager_->JoinHost("join-token-0123456789", j).ok());
  }
  std::vector<std::string> hosts;
  PageQuery page{4, ""};
  for (;;) {
    auto r = manager_->ListHosts(page);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->total, 9);
    for (const auto& h : r->items) hosts.push_back(h.name);
    if (!r->next) break;
    page.after = *r->next;
  }
  EXPECT_EQ(hosts, (std::vector<std::string>{"h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"}));
  // Tokens page in their order (oldest first) by id; a cursor naming no token is refused.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(manager_->CreateToken("tok" + std::to_string(i), Role::kTenant, "acme").ok());
  auto all = manager_->ListTokens();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->items.size(), static_cast<size_t>(all->total));
  auto first = manager_->ListTokens(PageQuery{1, ""});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->next, all->items[0].id);
  auto second = manager_->ListTokens(PageQuery{1, *first->next});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->items[0].id, all->items[1].id);
  auto gone = manager_->ListTokens(PageQuery{1, "no-such-token"});
  EXPECT_EQ(gone.status().code(), StatusCode::kInvalidArgument);
  // Tasks and migrations are newest first (ties in the order they were written, newest first);
  // a cursor from another tenant's list is unknown here.
  for (const auto& [id, tenant, created] : std::vector<std::tuple<std::string, std::string, int64_t>>{
           {"t-a", "acme", 1000}, {"t-b", "acme", 1000}, {"t-x", "other", 1500}, {"t-c", "acme", 2000}}) {
    ASSERT_TRUE(manager_->store()
                    .Exec("INSERT INTO tasks(id, kind, subject, tenant, state, request, created_ms, updated_ms) "
                          "VALUES (?, 'guest.start', 'acme:g', ?, 'succeeded', '{}', ?, ?)",
                          {id, tenant, created, created})
                    .ok());
  }
  const Principal acme{"t", Role::kTenant, "acme", {}};
  std::vector<std::string> task_ids;
  PageQuery task_page{2, ""};
  for (;;) {
    auto r = manager_->ListTasks(acme, task_page);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->total, 3);
    for (const auto& t : r->items) task_ids.push_back(t.id);
    if (!r->next) break;
    task_page.after = *r->next;
  }
  EXPECT_EQ(task_ids, (std::vector<std::string>{"t-c", "t-b", "t-a"}));
  EXPECT_EQ(manager_->ListTasks(acme, PageQuery{10, "t-x"}).status().code(), StatusCode::kInvalidArgument);
  auto everyone = manager_->ListTasks(Principal{"admin", Role::kAdmin, "", {}}, PageQuery{1, "t-x"});
  ASSERT_TRUE(everyone.ok());
  EXPECT_EQ(everyone->items[0].id, "t-b");
  EXPECT_EQ(everyone->total, 4);
  auto migrations = manager_->ListMigrations("", PageQuery{10, ""});
  ASSERT_TRUE(migrations.ok());
  EXPECT_EQ(migrations->total, 0);
  EXPECT_FALSE(migrations->next.has_value());
}

TEST_F(ListingTest, HostReservationTotalsStayExactThroughEveryGuestWrite) {
  Insert("g1", "", std::string("h1"), "qemu", 2, 512, Json::object());
  Insert("g2", "", std::string("h1"), "qemu", 1, 256, Json::object());
  Insert("g3", "", nullptr, "qemu", 8, 8192, Json::object());
  ExpectTotalsExact();
  ASSERT_TRUE(manager_->store().Exec("UPDATE guests SET host = 'h2' WHERE name = 'g1'").ok());  // a move
  ASSERT_TRUE(manager_->store().Exec("UPDATE guests SET vcpus = 4, memory_mib = 1024 WHERE name = 'g2'").ok());
  ASSERT_TRUE(manager_->store().Exec("UPDATE guests SET host = 'h1' WHERE name = 'g3'").ok());  // placed
  ExpectTotalsExact();
  ASSERT_TRUE(manager_->store().Exec("UPDATE guests SET state = 'stopped', cpu_used = 1 WHERE name = 'g3'").ok());
  ASSERT_TRUE(manager_->store().Exec("DELETE FROM guests WHERE name = 'g2'").ok());
  ExpectTotalsExact();
  auto hosts = manager_->ListHosts();
  ASSERT_TRUE(hosts.ok());
  const Host& h1 = hosts->items[0];
  EXPECT_EQ(h1.guests, 1);
  EXPECT_EQ(h1.reserved_vcpus, 8.0);
  EXPECT_EQ(h1.reserved_memory_mib, 8192);
  auto one = manager_->GetHost("h2");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->host.guests, 1);
  EXPECT_EQ(one->host.reserved_memory_mib, 512);
}

}  // namespace
}  // namespace uw::manager
