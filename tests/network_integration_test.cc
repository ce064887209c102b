// Tenant networks through the manager on the real test bed: a tenant's network, two guests with
// NICs on it (ports made for them, port NICs handed to their host's agent, which plugs them into
// its Open vSwitch), kept on one host by an affinity rule (the tunnel mesh between hosts is not
// built yet). They ping each other at the addresses the manager gave, then are moved live to the
// other host with their ports and ping each other there; deleting them frees the ports.
#include "tests/manager_it_fixture.h"

namespace uw {
namespace {

using it::ManagerIntegrationTest;

TEST_F(ManagerIntegrationTest, GuestsWithNicsOnATenantsNetworkReachEachOtherAtTheirPortsAddresses) {
  WaitConnected();
  Json net = {{"name", "mit-net"}, {"tenant", "acme"}, {"subnet", "10.201.0.0/24"}};
  auto made = Client().Call("POST", "/api/v1/networks", &net);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  Json rule = {{"name", "mit-net-together"}, {"type", "vm-affinity"}, {"vms", {"acme:mit-n1", "acme:mit-n2"}}};
  ASSERT_EQ(Client().Do("POST", "/api/v1/rules", rule.dump())->status, 201);
  const Json nic = Json::array({{{"network", "mit-net"}}});
  ASSERT_NO_FATAL_FAILURE(CreateBooted("mit-n1", 128, false, {{"tenant", "acme"}, {"nics", nic}}));
  ASSERT_NO_FATAL_FAILURE(CreateBooted("mit-n2", 128, false, {{"tenant", "acme"}, {"nics", nic}}));
  const std::string host = HostOf("acme:mit-n1");
  ASSERT_EQ(HostOf("acme:mit-n2"), host);
  auto ports = Client().Call("GET", "/api/v1/ports?network=acme:mit-net");
  ASSERT_TRUE(ports.ok()) << ports.status().ToString();
  ASSERT_EQ((*ports)["ports"].size(), 2u) << ports->dump();
  std::map<std::string, std::string> ip_of;
  std::map<std::string, std::string> port_of;
  for (const Json& p : (*ports)["ports"]) {
    ip_of[p["guest"].get<std::string>()] = p["ip"].get<std::string>();
    port_of[p["guest"].get<std::string>()] = p["id"].get<std::string>();
  }
  ASSERT_EQ(ip_of.size(), 2u) << ports->dump();
  const std::string n1 = ip_of["acme:mit-n1"], n2 = ip_of["acme:mit-n2"];
  EXPECT_NE(Console(host, "acme:mit-n1").find(n1 + "/24 via 10.201.0.1"), std::string::npos)
      << Console(host, "acme:mit-n1");
  EXPECT_EQ(GuestExec(AgentOf(host), "acme:mit-n1", "ping -c 3 -W 2 " + n2 + " >/dev/null 2>&1; echo $?"), "0\n");
  EXPECT_EQ(GuestExec(AgentOf(host), "acme:mit-n2", "ping -c 3 -W 2 " + n1 + " >/dev/null 2>&1; echo $?"), "0\n");

  // Live moves take the ports along: both guests to the other host, one after the other (the rule
  // goes first: between the two moves they are apart). The destination plugs each port before the
  // switchover, the source removes its own after; the guests, untouched, reach each other there.
  (void)Client().Do("DELETE", "/api/v1/rules/mit-net-together");
  const std::string there = Other(host);
  for (const std::string g : {"acme:mit-n2", "acme:mit-n1"}) {
    Json move = {{"host", there}, {"mode", "live"}};
    auto t = Client().Call("POST", "/api/v1/guests/" + g + "/migrate", &move);
    ASSERT_TRUE(t.ok()) << g << ": " << t.status().ToString();
    const Json task = WaitTask(*t);
    ASSERT_EQ(task["state"], "succeeded") << task.dump();
    ASSERT_EQ(HostOf(g), there);
    const std::string device = "uwp" + port_of[g].substr(5, 12);  // "port-" and 12 hex digits
    for (const auto& [h, present] : {std::pair{host, false}, std::pair{there, true}}) {
      // The test bed's host hN lives in network namespace uw-hN.
      const auto shown =
          testing::RunCommand("ip -n uw-" + h + " link show dev " + device + " >/dev/null 2>&1; echo $?");
      EXPECT_EQ(shown.output, present ? "0\n" : "1\n") << g << "'s tap " << device << " on " << h;
    }
  }
  EXPECT_EQ(GuestExec(AgentOf(there), "acme:mit-n1", "ping -c 3 -W 2 " + n2 + " >/dev/null 2>&1; echo $?"), "0\n");
  EXPECT_EQ(GuestExec(AgentOf(there), "acme:mit-n2", "ping -c 3 -W 2 " + n1 + " >/dev/null 2>&1; echo $?"), "0\n");
  DeleteGuest("acme:mit-n1");
  DeleteGuest("acme:mit-n2");
  auto left = Client().Call("GET", "/api/v1/ports?network=acme:mit-net");
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE((*left)["ports"].empty()) << left->dump();
  EXPECT_EQ(Client().Do("DELETE", "/api/v1/networks/acme:mit-net")->status, 200);
  (void)Client().Do("DELETE", "/api/v1/rules/mit-net-together");
}

}  // namespace
}  // namespace uw
