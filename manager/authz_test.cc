// The manager's unit tests (manager/manager_fixture.h: in-memory agents, a fake clock).
// Who may do what: tenants, spec rights and every route against every role.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "manager/manager_fixture.h"

namespace uw::manager {
namespace {

using testing::kAdmin;
using testing::ManagerTest;

namespace authz {

// Issue 12: every route with admin, operator, read-only, billing-reader and two tenant tokens,
// asserting exactly who may do what. Outcomes: Y passed the checks (any answer but 401/403/404),
// D refused (403), N not found for this caller (404), U unauthenticated (401). Requests that pass
// are built to change nothing (a body that fails validation, a name that does not exist).
struct RouteCase {
  std::string route;  // "METHOD pattern" as registered
  std::string method, path, body;
  std::string expect;  // one outcome per caller: admin, operator, read-only, billing-reader, tenant A, tenant B
};

char Outcome(int status) {
  if (status == 401) return 'U';
  if (status == 403) return 'D';
  if (status == 404) return 'N';
  return 'Y';
}

}  // namespace authz

TEST_F(ManagerTest, TenantsSeeAndTouchOnlyTheirOwnGuests) {
  StartManager();
  AddHost("h1");
  std::string alice = TenantToken("alice"), bob = TenantToken("bob");
  Json a = {{"name", "alice-vm"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto r = Client(alice).Call("POST", "/api/v1/guests", &a);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(WaitTask(*r)["state"], "succeeded");
  EXPECT_EQ((*Client(alice).Call("GET", "/api/v1/guests/alice-vm"))["tenant"], "alice");
  // Bob cannot see, stop or delete it, nor read its task; the answers do not reveal it exists.
  EXPECT_EQ(Client(bob).Do("GET", "/api/v1/guests/alice-vm")->status, 404);
  EXPECT_EQ(Client(bob).Do("POST", "/api/v1/guests/alice-vm/stop")->status, 404);
  EXPECT_EQ(Client(bob).Do("DELETE", "/api/v1/guests/alice-vm")->status, 404);
  EXPECT_EQ(Client(bob).Do("GET", "/api/v1/tasks/" + (*r)["id"].get<std::string>())->status, 404);
  EXPECT_EQ((*Client(bob).Call("GET", "/api/v1/guests"))["guests"].size(), 0u);
  Json impersonate = {{"name", "b2"}, {"image", "tiny"}, {"tenant", "alice"}};
  EXPECT_EQ(Client(bob).Do("POST", "/api/v1/guests", impersonate.dump())->status, 403);
  // Tenants cannot reach cluster-wide routes.
  EXPECT_EQ(Client(bob).Do("GET", "/api/v1/hosts")->status, 403);
  EXPECT_EQ(Client(bob).Do("POST", "/api/v1/tokens", R"({"name": "x", "role": "admin"})")->status, 403);
  EXPECT_EQ((*Client(alice).Call("GET", "/api/v1/guests/alice-vm"))["state"], "running");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), 1);
  // A billing reader reads usage, plans and invoices, and neither guests nor anything it could change.
  Json br = {{"name", "billing"}, {"role", "billing-reader"}};
  std::string reader = (*Client().Call("POST", "/api/v1/tokens", &br))["token"];
  EXPECT_EQ(Client(reader).Do("GET", "/api/v1/guests")->status, 403);
  EXPECT_EQ(Client(reader).Do("GET", "/api/v1/usage")->status, 200);
  EXPECT_EQ(Client(reader).Do("POST", "/api/v1/guests/alice-vm/stop")->status, 403);
}

// Issue 12: a tenant creating a guest named like another tenant's got 409 "already exists" while
// GET of it said 404, so names leaked. Names are unique per tenant now.
TEST_F(ManagerTest, TenantGuestNamesNeitherCollideNorLeak) {
  StartManager();
  AddHost("h1");
  std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  Json web = {{"name", "web1"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto a = Client(acme).Call("POST", "/api/v1/guests", &web);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ((*a)["subject"], "web1");
  EXPECT_EQ(WaitTask(*a)["state"], "succeeded");
  auto b = Client(beta).Call("POST", "/api/v1/guests", &web);
  ASSERT_TRUE(b.ok()) << "beta's web1 collided with acme's: " << b.status().ToString();
  EXPECT_EQ(WaitTask(*b)["state"], "succeeded");
  // Each tenant sees its own by the short name; the host runs both under their full names.
  auto mine = Client(acme).Call("GET", "/api/v1/guests/web1");
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ((*mine)["name"], "web1");
  EXPECT_EQ((*mine)["tenant"], "acme");
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/guests"))["guests"][0]["name"], "web1");
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/guests"))["guests"][0]["tenant"], "beta");
  EXPECT_EQ(cluster_.GuestsOn("h1").size(), 2u);
  // A second web1 of the same tenant is refused; another tenant's full name is simply not found.
  EXPECT_EQ(Client(acme).Call("POST", "/api/v1/guests", &web).status().code(), StatusCode::kAlreadyExists);
  auto probe = Client(acme).Do("GET", "/api/v1/guests/beta:web1");
  EXPECT_EQ(probe->status, 404);
  EXPECT_EQ(Client(acme).Do("GET", "/api/v1/guests/ghost")->body.find("beta"), std::string::npos);
  // Operators use the full name; the short one is ambiguous here and says so.
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/beta:web1"))["tenant"], "beta");
  auto ambiguous = Client().Call("GET", "/api/v1/guests/web1");
  EXPECT_EQ(ambiguous.status().code(), StatusCode::kFailedPrecondition) << ambiguous.status().ToString();
  EXPECT_NE(ambiguous.status().message().find("acme:web1"), std::string::npos);
  // Events and tasks show the tenant its own short names.
  const Principal who = *manager_->Authenticate(acme);
  auto events = manager_->EventsSince(who, 0, 100);
  ASSERT_TRUE(events.ok());
  bool placed = false;
  for (const auto& event : *events) {
    const Json e = EventJson(event, who);
    EXPECT_EQ(e.dump().find("beta"), std::string::npos) << e.dump();
    if (e["type"] == "guest.placed") placed = e["subject"] == "web1";
  }
  EXPECT_TRUE(placed);
  auto stop = Client(acme).Call("POST", "/api/v1/guests/web1/stop");
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  EXPECT_EQ(WaitTask(*stop)["state"], "succeeded");
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/guests/web1"))["state"], "running");
}

// Issue 12: a tenant's create body reached the agent unchecked (host paths, any bridge and VLAN,
// CPU tuning, any pool, automation: disabled to pin a guest against DRS). Those fields need rights
// an admin grants per token.
TEST_F(ManagerTest, SpecRightsAreGrantedByAnAdmin) {
  StartManager();
  AddHost("h1");
  Json pool = {{"name", "gold"}};
  ASSERT_TRUE(Client().Call("POST", "/api/v1/pools", &pool).ok());
  std::string plain = TenantToken("acme");
  struct Case {
    Json extra;
    std::string right, field;
  };
  const std::vector<Case> cases = {
      {{{"boot", {{"kernel", "/etc/shadow"}}}}, "host_paths", "boot.kernel"},
      {{{"nics", {{{"type", "bridge"}, {"source", "br-mgmt"}}}}}, "bridges", "nics[0].source"},
      {{{"nics", {{{"type", "user"}, {"vlan", 7}}}}}, "vlans", "nics[0].vlan"},
      {{{"cpu", {{"shares", 262144}}}}, "cpu_tuning", "cpu"},
      {{{"pool", "gold"}}, "pools", "pool"},
      {{{"automation", "disabled"}}, "automation", "automation"},
      {{{"disks", {{{"rbd", "rbd/uw-vol-other-tenant"}}}}}, "rbd_images", "disks.rbd"},
  };
  for (const auto& c : cases) {
    Json body = {{"name", "g-" + c.right}, {"image", "tiny"}, {"memory_mib", 64}};
    body.update(c.extra);
    auto r = Client(plain).Do("POST", "/api/v1/guests", body.dump());
    EXPECT_EQ(r->status, 403) << body.dump() << " -> " << r->body;
    EXPECT_NE(r->body.find(c.field), std::string::npos) << r->body;
    EXPECT_NE(r->body.find("'" + c.right + "'"), std::string::npos) << r->body;
    // The same request with the right granted is accepted (and an operator holds every right).
    Json grant = {{"name", "granted-" + c.right}, {"role", "tenant"}, {"tenant", "acme"}, {"rights", {c.right}}};
    auto granted = Client().Call("POST", "/api/v1/tokens", &grant);
    ASSERT_TRUE(granted.ok()) << granted.status().ToString();
    EXPECT_EQ((*granted)["rights"], Json::array({c.right}));
    auto ok = Client((*granted)["token"].get<std::string>()).Do("POST", "/api/v1/guests", body.dump());
    EXPECT_EQ(ok->status, 202) << body.dump() << " -> " << ok->body;
  }
  EXPECT_EQ(
      Client()
          .Do("POST", "/api/v1/tokens", R"({"name": "t", "role": "tenant", "tenant": "acme", "rights": ["root"]})")
          ->status,
      400);
  EXPECT_EQ(Client().Do("POST", "/api/v1/tokens", R"({"name": "t", "role": "operator", "rights": ["pools"]})")->status,
            400);
  // Rights survive a restart (they are stored with the token).
  Json grant = {{"name", "durable"}, {"role", "tenant"}, {"tenant", "acme"}, {"rights", {"vlans"}}};
  std::string durable = (*Client().Call("POST", "/api/v1/tokens", &grant))["token"];
  StopManager();
  StartManager();
  EXPECT_TRUE(manager_->Authenticate(durable)->Holds("vlans"));
  EXPECT_FALSE(manager_->Authenticate(durable)->Holds("pools"));
  auto listed = Client().Call("GET", "/api/v1/tokens");
  bool found = false;
  for (const auto& t : (*listed)["tokens"]) found |= t["name"] == "durable" && t["rights"] == Json::array({"vlans"});
  EXPECT_TRUE(found);
}

TEST_F(ManagerTest, EveryRouteAnswersExactlyTheRolesItShould) {
  StartManager();
  AddHost("h1");
  auto token = [&](const std::string& name, const std::string& role) {
    Json body = {{"name", name}, {"role", role}};
    return (*Client().Call("POST", "/api/v1/tokens", &body))["token"].get<std::string>();
  };
  const std::vector<std::string> callers = {kAdmin,
                                            token("op", "operator"),
                                            token("ro", "read-only"),
                                            token("bill", "billing-reader"),
                                            TenantToken("acme"),
                                            TenantToken("beta")};
  Json vm = {{"name", "acme-vm"}, {"image", "tiny"}, {"memory_mib", 64}};
  auto created = Client(callers[4]).Call("POST", "/api/v1/guests", &vm);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ(WaitTask(*created)["state"], "succeeded");
  const std::string task = "/api/v1/tasks/" + (*created)["id"].get<std::string>();
  using authz::RouteCase;
  const std::vector<RouteCase> table = {
      {"GET /healthz", "GET", "/healthz", "", "YYYYYY"},
      {"GET /api/v1/version", "GET", "/api/v1/version", "", "YYYYYY"},
      {"POST /api/v1/hosts/join", "POST", "/api/v1/hosts/join",
       R"({"name": "h9", "agent_url": "http://127.0.0.1:1", "agent_token": "t", "capacity": {"cpu_cores": 1, "memory_mib": 64}})",
       "UUUUUU"},
      {"POST /api/v1/hosts/{name}/heartbeat", "POST", "/api/v1/hosts/h1/heartbeat", "{}", "UUUUUU"},
      {"GET /api/v1/hosts", "GET", "/api/v1/hosts", "", "YYYDDD"},
      {"GET /api/v1/hosts/{name}", "GET", "/api/v1/hosts/h1", "", "YYYDDD"},
      {"PUT /api/v1/hosts/{name}/groups", "PUT", "/api/v1/hosts/h1/groups", R"({"groups": 5})", "YYDDDD"},
      {"POST /api/v1/hosts/{name}/maintenance", "POST", "/api/v1/hosts/h9/maintenance", "", "NNDDDD"},
      {"GET /api/v1/drs/power", "GET", "/api/v1/drs/power", "", "YYYDDD"},
      {"PUT /api/v1/hosts/{name}/power-driver", "PUT", "/api/v1/hosts/h9/power-driver", R"({"driver": "exec"})",
       "NDDDDD"},
      {"DELETE /api/v1/hosts/{name}/power-driver", "DELETE", "/api/v1/hosts/h9/power-driver", "", "NDDDDD"},
      {"GET /api/v1/hosts/{name}/power", "GET", "/api/v1/hosts/h1/power", "", "YYYDDD"},
      {"POST /api/v1/hosts/{name}/power", "POST", "/api/v1/hosts/h9/power", R"({"action": "off"})", "NNDDDD"},
      {"DELETE /api/v1/hosts/{name}/maintenance", "DELETE", "/api/v1/hosts/h9/maintenance", "", "NNDDDD"},
      {"GET /api/v1/guests", "GET", "/api/v1/guests", "", "YYYDYY"},
      {"POST /api/v1/guests", "POST", "/api/v1/guests", R"({"name": "x"})", "YYDDYY"},
      {"GET /api/v1/guests/{name}", "GET", "/api/v1/guests/acme-vm", "", "YYYDYN"},
      {"DELETE /api/v1/guests/{name}", "DELETE", "/api/v1/guests/acme-vm", "", "YYDDYN"},
      {"POST /api/v1/guests/{name}/start", "POST", "/api/v1/guests/ghost/start", "", "NNDDNN"},
      {"POST /api/v1/guests/{name}/stop", "POST", "/api/v1/guests/acme-vm/stop", R"({"bogus": 1})", "YYDDYN"},
      {"POST /api/v1/guests/{name}/resize", "POST", "/api/v1/guests/acme-vm/resize", "{}", "YYDDYN"},
      {"POST /api/v1/guests/{name}/migrate", "POST", "/api/v1/guests/acme-vm/migrate",
       R"({"host": "h1", "mode": "warp"})", "YYDDDD"},
      {"GET /api/v1/tasks", "GET", "/api/v1/tasks", "", "YYYDYY"},
      {"GET /api/v1/tasks/{id}", "GET", task, "", "YYYDYN"},
      {"POST /api/v1/tasks/{id}/cancel", "POST", "/api/v1/tasks/task-nope/cancel", "", "NNDDNN"},
      {"GET /api/v1/events", "GET", "/api/v1/events?follow=false", "", "YYYDYY"},
      {"GET /api/v1/tokens", "GET", "/api/v1/tokens", "", "YDDDDD"},
      {"POST /api/v1/tokens", "POST", "/api/v1/tokens", R"({"name": ""})", "YDDDDD"},
      {"DELETE /api/v1/tokens/{id}", "DELETE", "/api/v1/tokens/tok-nope", "", "NDDDDD"},
      {"GET /api/v1/pools", "GET", "/api/v1/pools", "", "YYYDDD"},
      {"POST /api/v1/pools", "POST", "/api/v1/pools", "{}", "YYDDDD"},
      {"GET /api/v1/pools/{name}", "GET", "/api/v1/pools/p9", "", "NNNDDD"},
      {"DELETE /api/v1/pools/{name}", "DELETE", "/api/v1/pools/p9", "", "NNDDDD"},
      {"GET /api/v1/rules", "GET", "/api/v1/rules", "", "YYYDDD"},
      {"POST /api/v1/rules", "POST", "/api/v1/rules", "{}", "YYDDDD"},
      {"GET /api/v1/rules/{name}", "GET", "/api/v1/rules/r9", "", "NNNDDD"},
      {"DELETE /api/v1/rules/{name}", "DELETE", "/api/v1/rules/r9", "", "NNDDDD"},
      {"GET /api/v1/drs/config", "GET", "/api/v1/drs/config", "", "YYYDDD"},
      {"PUT /api/v1/drs/config", "PUT", "/api/v1/drs/config", R"({"mode": 5})", "YYDDDD"},
      {"GET /api/v1/drs/recommendations", "GET", "/api/v1/drs/recommendations", "", "YYYDDD"},
      {"POST /api/v1/drs/recommendations/{id}/apply", "POST", "/api/v1/drs/recommendations/rec-nope/apply", "",
       "NNDDDD"},
      {"POST /api/v1/drs/apply", "POST", "/api/v1/drs/apply", "", "YYDDDD"},
      {"POST /api/v1/drs/run", "POST", "/api/v1/drs/run", "", "YYDDDD"},
      {"POST /api/v1/drs/plan", "POST", "/api/v1/drs/plan", "", "YYYDDD"},
      {"GET /api/v1/migrations", "GET", "/api/v1/migrations", "", "YYYDDD"},
      {"GET /api/v1/migrations/{id}", "GET", "/api/v1/migrations/mig-nope", "", "NNNDDD"},
      {"GET /api/v1/cluster/snapshot", "GET", "/api/v1/cluster/snapshot", "", "YYYDDD"},
      {"GET /api/v1/leases", "GET", "/api/v1/leases", "", "YYYDYY"},
      {"GET /api/v1/leases/{id}", "GET", "/api/v1/leases/lease-nope", "", "NNNDNN"},
      {"POST /api/v1/leases/{id}/extend", "POST", "/api/v1/leases/lease-nope/extend", "{}", "YYDDYY"},
      {"POST /api/v1/leases/{id}/release", "POST", "/api/v1/leases/lease-nope/release", "", "NNDDNN"},
      {"POST /api/v1/leases/{id}/reclaim", "POST", "/api/v1/leases/lease-nope/reclaim", "{}", "YYDDDD"},
      {"POST /api/v1/hosts/{name}/reclaim", "POST", "/api/v1/hosts/h9/reclaim", "{}", "YYDDDD"},
      {"GET /api/v1/notices", "GET", "/api/v1/notices", "", "YYYDYY"},
      {"GET /api/v1/notices/{id}", "GET", "/api/v1/notices/notice-nope", "", "NNNDNN"},
      {"POST /api/v1/notices/{id}/reply", "POST", "/api/v1/notices/notice-nope/reply", "{}", "YYDDYY"},
      {"GET /api/v1/repossessions", "GET", "/api/v1/repossessions", "", "YYYDYY"},
      {"GET /api/v1/budgets", "GET", "/api/v1/budgets", "", "YYYDYY"},
      {"PUT /api/v1/budgets/{tenant}", "PUT", "/api/v1/budgets/acme", R"({"per_hour": 5})", "YYDDDD"},
      {"GET /api/v1/images", "GET", "/api/v1/images", "", "YYYDYY"},
      {"POST /api/v1/images", "POST", "/api/v1/images", "{}", "YYDDDD"},
      {"GET /api/v1/images/{name}", "GET", "/api/v1/images/img-nope", "", "NNNDNN"},
      {"DELETE /api/v1/images/{name}", "DELETE", "/api/v1/images/img-nope", "", "NNDDDD"},
      {"GET /api/v1/volumes", "GET", "/api/v1/volumes", "", "YYYDYY"},
      {"POST /api/v1/volumes", "POST", "/api/v1/volumes", "{}", "YYDDYY"},
      {"GET /api/v1/volumes/{name}", "GET", "/api/v1/volumes/vol-nope", "", "NNNDNN"},
      {"POST /api/v1/volumes/{name}/resize", "POST", "/api/v1/volumes/vol-nope/resize", "{}", "YYDDYY"},
      {"POST /api/v1/volumes/{name}/attach", "POST", "/api/v1/volumes/vol-nope/attach", "{}", "YYDDYY"},
      {"POST /api/v1/volumes/{name}/detach", "POST", "/api/v1/volumes/vol-nope/detach", "", "YYDDYY"},
      {"DELETE /api/v1/volumes/{name}", "DELETE", "/api/v1/volumes/vol-nope", "", "NNDDNN"},
      {"GET /api/v1/networks", "GET", "/api/v1/networks", "", "YYYDYY"},
      {"POST /api/v1/networks", "POST", "/api/v1/networks", "{}", "YYDDYY"},
      {"GET /api/v1/networks/{name}", "GET", "/api/v1/networks/net-nope", "", "NNNDNN"},
      {"DELETE /api/v1/networks/{name}", "DELETE", "/api/v1/networks/net-nope", "", "NNDDNN"},
      {"GET /api/v1/ports", "GET", "/api/v1/ports", "", "YYYDYY"},
      {"POST /api/v1/ports", "POST", "/api/v1/ports", "{}", "YYDDYY"},
      {"GET /api/v1/ports/{id}", "GET", "/api/v1/ports/port-nope", "", "NNNDNN"},
      {"DELETE /api/v1/ports/{id}", "DELETE", "/api/v1/ports/port-nope", "", "NNDDNN"},
      {"GET /api/v1/storage", "GET", "/api/v1/storage", "", "YYYDDD"},
      {"GET /api/v1/storage/quotas", "GET", "/api/v1/storage/quotas", "", "YYYDYY"},
      {"PUT /api/v1/storage/quotas/{tenant}", "PUT", "/api/v1/storage/quotas/acme", R"({"gib": -1})", "YYDDDD"},
      {"GET /api/v1/usage", "GET", "/api/v1/usage", "", "YYYYYY"},
      {"GET /api/v1/usage/verify", "GET", "/api/v1/usage/verify", "", "YYYYDD"},
      {"GET /api/v1/price-plans", "GET", "/api/v1/price-plans", "", "YYYYYY"},
      {"GET /api/v1/price-plans/{name}", "GET", "/api/v1/price-plans/nope", "", "NNNNNN"},
      {"PUT /api/v1/price-plans/{name}", "PUT", "/api/v1/price-plans/p9", R"({"currency": 5})", "YYDDDD"},
      {"DELETE /api/v1/price-plans/{name}", "DELETE", "/api/v1/price-plans/nope", "", "NNDDDD"},
      {"GET /api/v1/tenant-plans", "GET", "/api/v1/tenant-plans", "", "YYYYYY"},
      {"PUT /api/v1/tenant-plans/{tenant}", "PUT", "/api/v1/tenant-plans/acme", R"({"plan": "nope"})", "YYDDDD"},
      {"GET /api/v1/invoices", "GET", "/api/v1/invoices", "", "YYYYYY"},
      {"POST /api/v1/invoices", "POST", "/api/v1/invoices", R"({"tenant": "acme"})", "YYDDDD"},
      {"GET /api/v1/invoices/{id}", "GET", "/api/v1/invoices/inv-nope", "", "NNNNNN"},
      {"POST /api/v1/invoices/{id}/adjustments", "POST", "/api/v1/invoices/inv-nope/adjustments",
       R"({"kind": "credit", "amount_minor": 1, "reason": "x"})", "NNDDDD"},
  };
  std::set<std::string> covered;
  for (const auto& c : table) {
    covered.insert(c.route);
    std::string got;
    for (const auto& caller : callers) {
      auto r = Client(caller).Do(c.method, c.path, c.body);
      ASSERT_TRUE(r.ok()) << c.route;
      got += authz::Outcome(r->status);
    }
    EXPECT_EQ(got, c.expect) << c.method << " " << c.path
                             << " (callers: admin, operator, read-only, billing-reader, tenant acme, tenant beta)";
  }
  for (const auto& route : router_->Routes()) EXPECT_TRUE(covered.count(route)) << route << " is not in the table";
  // Nothing the table did changed anything.
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 1);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/acme-vm"))["state"], "running");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), 1);
}

}  // namespace
}  // namespace uw::manager
