// The lease tests' fixture (lease_service_test.cc, lease_admission_test.cc): the manager on
// in-memory agents and a FakeClock, with guests created through the API and the lease loop
// ticked by hand.
#pragma once

#include <string>
#include <vector>

#include "common/base64.h"
#include "manager/manager_fixture.h"

namespace uw::manager::testing {

class LeaseTest : public ManagerTest {
 protected:
  // Creates a running guest and returns its lease id.
  std::string Create(const std::string& name, Json extra = Json::object(), const std::string& token = kAdmin) {
    Json body = {{"name", name}, {"image", "tiny"}, {"memory_mib", 256}};
    body.update(extra);
    auto r = Client(token).Call("POST", "/api/v1/guests", &body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(WaitTask(*r)["state"], "succeeded");
    auto g = Client(token).Call("GET", "/api/v1/guests/" + name);
    EXPECT_TRUE(g.ok());
    return (*g)["leases"][0]["id"];
  }
  Json Lease(const std::string& id) { return *Client().Call("GET", "/api/v1/leases/" + id); }
  Json Notice(const std::string& id) { return *Client().Call("GET", "/api/v1/notices/" + id); }
  Json Reclaim(const std::string& lease, Json body) {
    auto r = Client().Call("POST", "/api/v1/leases/" + lease + "/reclaim", &body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : Json();
  }
  void Tick() { ASSERT_TRUE(manager_->RunLeases().ok()); }
  // The memory the in-memory agent gives the guest now.
  int64_t MemoryOf(const std::string& guest) {
    auto g = cluster_.Client("h1")->Get(guest);
    return g.ok() ? g->memory_mib : -1;
  }
  // The commands of one kind ("uw-notice", "uw-holdings") the guest's daemon was given.
  std::vector<std::string> ExecsOf(const std::string& guest, const std::string& command) {
    std::vector<std::string> out;
    for (const auto& c : cluster_.ExecsOf(guest)) {
      if (c.rfind(command + " ", 0) == 0) out.push_back(c);
    }
    return out;
  }
  // The holdings the guest was given last (null when none).
  Json LastHoldings(const std::string& guest) {
    auto sent = ExecsOf(guest, "uw-holdings");
    if (sent.empty()) return Json();
    auto decoded = Base64Decode(sent.back().substr(std::string("uw-holdings ").size()));
    EXPECT_TRUE(decoded.ok());
    return decoded.ok() ? Json::parse(*decoded) : Json();
  }
  // Waits for the lease's task (a resize or stop) to end.
  void SettleTasks() {
    EXPECT_TRUE(Eventually(
        [&] { return Count("SELECT COUNT(*) AS n FROM tasks WHERE state IN ('pending', 'running')") == 0; }));
  }
};

}  // namespace uw::manager::testing
