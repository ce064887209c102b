// The network catalogue (manager/network_service.h) over REST: networks per tenant, their ports'
// addresses and MACs, and bad input, through the manager's real HTTP server and SQLite store.
#include <gtest/gtest.h>

#include <mutex>
#include <set>
#include <thread>

#include "manager/manager_fixture.h"

namespace uw::manager::testing {
namespace {

class NetworkCatalogueTest : public ManagerTest {
 protected:
  Json Make(const std::string& token, const Json& body, int want = 201) {
    auto r = Client(token).Do("POST", "/api/v1/networks", body.dump());
    EXPECT_EQ(r->status, want) << body.dump() << " -> " << r->body;
    return Json::parse(r->body);
  }
  Json Port(const std::string& token, const Json& body, int want = 201) {
    auto r = Client(token).Do("POST", "/api/v1/ports", body.dump());
    EXPECT_EQ(r->status, want) << body.dump() << " -> " << r->body;
    return Json::parse(r->body);
  }
  int64_t Count(const std::string& table) {
    auto rows = manager_->store().Query("SELECT COUNT(*) AS n FROM " + table);
    return rows.ok() ? (*rows)[0].Int("n") : -1;
  }
};

TEST_F(NetworkCatalogueTest, NetworksAreEachTenantsOwnWithVnisAllocated) {
  StartManager();
  std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  Json a = Make(acme, {{"name", "front"}, {"subnet", "10.0.0.0/24"}});
  EXPECT_EQ(a["name"], "front");
  EXPECT_EQ(a["tenant"], "acme");
  EXPECT_EQ(a["kind"], "overlay");
  EXPECT_EQ(a["vni"], 1);
  EXPECT_EQ(a["gateway"], "10.0.0.1");
  EXPECT_EQ(a["free_addresses"], 253);
  // Another tenant may use the same name and subnet: its own network, its own VNI.
  Json b = Make(beta, {{"name", "front"}, {"subnet", "10.0.0.0/24"}, {"gateway", nullptr}});
  EXPECT_EQ(b["vni"], 2);
  EXPECT_TRUE(b["gateway"].is_null());
  EXPECT_EQ(b["free_addresses"], 254);
  Json back = Make(acme, {{"name", "back"}, {"subnet", "10.1.0.0/16"}, {"gateway", "10.1.255.254"}});
  EXPECT_EQ(back["vni"], 3);
  // Each sees its own, by short name; another tenant's is not found, however named.
  auto mine = Client(acme).Call("GET", "/api/v1/networks");
  ASSERT_TRUE(mine.ok());
  ASSERT_EQ((*mine)["networks"].size(), 2u);
  EXPECT_EQ((*mine)["networks"][0]["name"], "back");
  for (const char* name : {"beta:front", "beta%3Afront", "nothere"}) {
    EXPECT_EQ(Client(acme).Do("GET", std::string("/api/v1/networks/") + name)->status, 404) << name;
  }
  EXPECT_EQ(Client(acme).Do("DELETE", "/api/v1/networks/beta:front")->status, 404);
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/networks/front"))["vni"], 2);
  // Operators see all, by full name; a short name naming two tenants' networks asks for the full one.
  EXPECT_EQ((*Client().Call("GET", "/api/v1/networks"))["total"], 3);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/networks/acme:back"))["subnet"], "10.1.0.0/16");
  EXPECT_EQ(Client().Do("GET", "/api/v1/networks/front")->status, 409);
  // A tenant's subnets do not overlap; nothing is made.
  Json overlap = Make(acme, {{"name", "inner"}, {"subnet", "10.1.7.0/24"}}, 409);
  EXPECT_NE(overlap["error"]["message"].get<std::string>().find("network 'back'"), std::string::npos) << overlap;
  EXPECT_EQ(Make(acme, {{"name", "front"}, {"subnet", "10.2.0.0/24"}}, 409)["error"]["code"], "already_exists");
  // VLANs and chosen segments are operators'.
  Make(acme, {{"name", "v"}, {"kind", "vlan"}, {"segment", 100}, {"subnet", "10.3.0.0/24"}}, 403);
  Make(acme, {{"name", "v"}, {"segment", 77}, {"subnet", "10.3.0.0/24"}}, 403);
  Make(acme, {{"name", "v"}, {"tenant", "beta"}, {"subnet", "10.3.0.0/24"}}, 403);
  Json vlan = Make(kAdmin, {{"name", "storage"},
                            {"tenant", "acme"},
                            {"kind", "vlan"},
                            {"segment", 100},
                            {"physical", "br-ext"},
                            {"subnet", "192.168.50.0/24"}});
  EXPECT_EQ(vlan["vlan"], 100);
  EXPECT_EQ(vlan["physical"], "br-ext");
  EXPECT_FALSE((*Client(acme).Call("GET", "/api/v1/networks/storage")).contains("physical"));
  Make(kAdmin,
       {{"name", "storage2"}, {"kind", "vlan"}, {"segment", 100}, {"physical", "br-ext"}, {"subnet", "10.9.0.0/24"}},
       409);
  Make(kAdmin, {{"name", "vx"}, {"segment", 2}, {"subnet", "10.9.0.0/24"}}, 409);  // beta's VNI
  EXPECT_EQ(Make(kAdmin, {{"name", "vx"}, {"segment", 9000}, {"subnet", "10.9.0.0/24"}})["vni"], 9000);
  // A deleted network's VNI is not given again while higher ones are free.
  ASSERT_TRUE(Client(beta).Call("DELETE", "/api/v1/networks/front").ok());
  EXPECT_EQ(Make(beta, {{"name", "again"}, {"subnet", "10.0.0.0/24"}})["vni"], 9001);
  // At the top, the lowest free one.
  Make(kAdmin, {{"name", "top"}, {"segment", 16777215}, {"subnet", "10.10.0.0/24"}});
  EXPECT_EQ(Make(beta, {{"name", "wrapped"}, {"subnet", "10.11.0.0/24"}})["vni"], 2);
  EXPECT_EQ(Count("networks"), 7);
}

TEST_F(NetworkCatalogueTest, BadNetworksAreRefusedSayingWhereAndNothingIsMade) {
  StartManager();
  std::string acme = TenantToken("acme");
  struct Case {
    Json body;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {{{"name", "n"}}, "subnet"},
           {{{"name", "n"}, {"subnet", "10.0.0.1/24"}}, "host bits set: the subnet is 10.0.0.0/24"},
           {{{"name", "n"}, {"subnet", "10.0.0.0/31"}}, "/8 to /29"},
           {{{"name", "n"}, {"subnet", "127.0.0.0/8"}}, "loopback"},
           {{{"name", "n"}, {"subnet", "10.0.0.0/33"}}, "subnet"},
           {{{"name", "n"}, {"subnet", "300.0.0.0/8"}}, "0..255"},
           {{{"name", "n"}, {"subnet", 10}}, "subnet"},
           {{{"name", "n"}, {"subnet", "10.0.0.0/24"}, {"gateway", "10.0.1.1"}}, "gateway: 10.0.1.1 is not a host"},
           {{{"name", "n"}, {"subnet", "10.0.0.0/24"}, {"gateway", "10.0.0.255"}}, "not a host address"},
           {{{"name", "n"}, {"subnet", "10.0.0.0/24"}, {"gateway", ""}}, "gateway"},
           {{{"name", "n"}, {"subnet", "10.0.0.0/24"}, {"kind", "flat"}}, "kind"},
           {{{"name", "N!"}, {"subnet", "10.0.0.0/24"}}, "name"},
           {{{"name", "n"}, {"subnet", "10.0.0.0/24"}, {"physical", "br0"}}, "physical"},
           {{{"name", "n"}, {"subnet", "10.0.0.0/24"}, {"mtu", 9000}}, "mtu"},
       }) {
    Json err = Make(acme, c.body, 400);
    EXPECT_NE(err.dump().find(c.says), std::string::npos) << c.body.dump() << " -> " << err.dump();
  }
  for (const Json& body :
       {Json{{"name", "n"}, {"kind", "vlan"}, {"subnet", "10.0.0.0/24"}},
        Json{{"name", "n"}, {"kind", "vlan"}, {"segment", 4095}, {"subnet", "10.0.0.0/24"}},
        Json{{"name", "n"}, {"segment", 1 << 24}, {"subnet", "10.0.0.0/24"}},
        Json{{"name", "n"}, {"kind", "vlan"}, {"segment", 5}, {"physical", "Bad Name"}, {"subnet", "10.0.0.0/24"}}}) {
    Make(kAdmin, body, 400);
  }
  // Malformed and hostile bodies.
  EXPECT_EQ(Client(acme).Do("POST", "/api/v1/networks", "{\"name\": ")->status, 400);
  EXPECT_EQ(Client(acme).Do("POST", "/api/v1/networks", "[]")->status, 400);
  EXPECT_EQ(Client(acme).Do("POST", "/api/v1/networks", std::string(5000, '[') + std::string(5000, ']'))->status, 400);
  EXPECT_EQ(Client(acme).Do("POST", "/api/v1/networks", std::string(100 << 10, ' '))->status, 413);
  EXPECT_EQ(Count("networks"), 0);
  EXPECT_EQ(Client(acme).Do("GET", "/api/v1/networks/" + std::string(300, 'x'))->status, 404);
}

TEST_F(NetworkCatalogueTest, PortsGetAddressesAndMacsNeverTwice) {
  StartManager();
  std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  Make(acme, {{"name", "net"}, {"subnet", "10.0.0.0/29"}});  // hosts .1-.6, .1 the gateway
  Json p1 = Port(acme, {{"network", "net"}});
  EXPECT_EQ(p1["ip"], "10.0.0.2");
  EXPECT_EQ(p1["network"], "net");
  EXPECT_EQ(p1["tenant"], "acme");
  EXPECT_TRUE(p1["guest"].is_null());
  const std::string mac = p1["mac"];
  EXPECT_EQ(mac.substr(0, 3), "02:");
  Json p5 = Port(acme, {{"network", "net"}, {"ip", "10.0.0.5"}, {"mac", "52:54:00:AA:BB:CC"}});
  EXPECT_EQ(p5["mac"], "52:54:00:aa:bb:cc");
  // Refused, saying why: nothing is made.
  struct Case {
    Json body;
    int status;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {{{"network", "net"}, {"ip", "10.0.0.5"}}, 409, "another port's"},
           {{{"network", "net"}, {"ip", "10.0.1.5"}}, 400, "outside network 'net''s subnet 10.0.0.0/29"},
           {{{"network", "net"}, {"ip", "10.0.0.1"}}, 400, "gateway"},
           {{{"network", "net"}, {"ip", "10.0.0.0"}}, 400, "network address"},
           {{{"network", "net"}, {"ip", "10.0.0.7"}}, 400, "broadcast address"},
           {{{"network", "net"}, {"ip", "10.0.0.999"}}, 400, "ip: "},
           {{{"network", "net"}, {"mac", "52:54:00:aa:bb:cc"}}, 409, "another port's"},
           {{{"network", "net"}, {"mac", "01:00:5e:00:00:01"}}, 400, "multicast"},
           {{{"network", "net"}, {"mac", "zz"}}, 400, "mac: "},
           {{{"network", "beta:net"}}, 404, "not found"},
           {{{"network", "nope"}}, 404, "not found"},
           {{{"network", "net"}, {"guest", "web"}}, 400, "guest"},
           {{{"ip", "10.0.0.3"}}, 400, "network"},
       }) {
    Json err = Port(acme, c.body, c.status);
    EXPECT_NE(err.dump().find(c.says), std::string::npos) << c.body.dump() << " -> " << err.dump();
  }
  EXPECT_EQ(Count("ports"), 2);
  // The lowest free address, skipping the taken .5; then the subnet is full.
  EXPECT_EQ(Port(acme, {{"network", "net"}})["ip"], "10.0.0.3");
  EXPECT_EQ(Port(acme, {{"network", "net"}})["ip"], "10.0.0.4");
  Json p6 = Port(acme, {{"network", "net"}});
  EXPECT_EQ(p6["ip"], "10.0.0.6");
  Json full = Port(acme, {{"network", "net"}}, 409);
  EXPECT_NE(full.dump().find("no free address"), std::string::npos) << full;
  EXPECT_EQ((*Client(acme).Call("GET", "/api/v1/networks/net"))["free_addresses"], 0);
  // Another tenant neither sees nor deletes acme's ports.
  const std::string id = p6["id"];
  EXPECT_EQ(Client(beta).Do("GET", "/api/v1/ports/" + id)->status, 404);
  EXPECT_EQ(Client(beta).Do("DELETE", "/api/v1/ports/" + id)->status, 404);
  EXPECT_EQ((*Client(beta).Call("GET", "/api/v1/ports"))["ports"].size(), 0u);
  EXPECT_EQ(Client(beta).Do("GET", "/api/v1/ports?network=acme:net")->status, 404);
  EXPECT_EQ((*Client(acme).Call("GET", "/api/v1/ports?network=net"))["total"], 5);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/ports?network=acme:net&limit=2"))["ports"].size(), 2u);
  // In use: the network stays, naming a port.
  Json busy = Json::parse(Client(acme).Do("DELETE", "/api/v1/networks/net")->body);
  EXPECT_NE(busy.dump().find("has 5 port(s)"), std::string::npos) << busy;
  // A deleted port's address is given again.
  ASSERT_TRUE(Client(acme).Call("DELETE", "/api/v1/ports/" + id).ok());
  EXPECT_EQ(Client(acme).Do("GET", "/api/v1/ports/" + id)->status, 404);
  EXPECT_EQ(Port(acme, {{"network", "net"}})["ip"], "10.0.0.6");
  // Empty it, then it goes.
  const Json left = *Client(acme).Call("GET", "/api/v1/ports");
  ASSERT_EQ(left["ports"].size(), 5u);
  for (const Json& p : left["ports"]) {
    ASSERT_TRUE(Client(acme).Call("DELETE", "/api/v1/ports/" + p["id"].get<std::string>()).ok());
  }
  ASSERT_TRUE(Client(acme).Call("DELETE", "/api/v1/networks/net").ok());
  EXPECT_EQ(Count("networks"), 0);
}

// A guest's NICs on networks: a port made for each (its tenant's network; the address asked for or
// the lowest free), handed to the agent as a port NIC; deleted with the guest. A refused NIC
// leaves neither a port nor a guest; a port NIC named directly is the manager's to make.
TEST_F(NetworkCatalogueTest, AGuestsNicsOnNetworksGetPortsThatGoWithIt) {
  StartManager();
  AddHost("h1");
  const std::string acme = TenantToken("acme"), beta = TenantToken("beta");
  Make(acme, {{"name", "front"}, {"subnet", "10.0.0.0/24"}});
  Make(acme, {{"name", "back"}, {"subnet", "10.9.0.0/29"}, {"gateway", nullptr}});
  Make(beta, {{"name", "other"}, {"subnet", "10.5.0.0/24"}});
  Json web = {{"name", "web"},
              {"image", "tiny"},
              {"memory_mib", 128},
              {"nics", {{{"network", "front"}}, {{"network", "back"}, {"ip", "10.9.0.5"}}}}};
  auto created = Client(acme).Call("POST", "/api/v1/guests", &web);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ(WaitTask(*created)["state"], "succeeded");
  const Json spec = cluster_.CreateSpec("h1", "acme:web");
  ASSERT_EQ(spec["nics"].size(), 2u) << spec.dump();
  const Json eth0 = spec["nics"][0], eth1 = spec["nics"][1];
  EXPECT_EQ(eth0["type"], "port");
  EXPECT_EQ(eth0["network"], "acme:front");
  EXPECT_EQ(eth0["address"], "10.0.0.2/24");
  EXPECT_EQ(eth0["gateway"], "10.0.0.1");
  EXPECT_EQ(eth1["address"], "10.9.0.5/29");
  EXPECT_EQ(eth1["gateway"], "");
  auto ports = Client(acme).Call("GET", "/api/v1/ports");
  ASSERT_TRUE(ports.ok());
  ASSERT_EQ((*ports)["ports"].size(), 2u);
  for (const Json& p : (*ports)["ports"]) {
    EXPECT_EQ(p["guest"], "web") << p.dump();
    EXPECT_TRUE(p["id"] == eth0["port"] || p["id"] == eth1["port"]) << p.dump();
    // In use: not deleted on its own.
    EXPECT_EQ(Client(acme).Do("DELETE", "/api/v1/ports/" + p["id"].get<std::string>())->status, 409);
  }
  // Refused NICs: another tenant's network, an address taken, a port NIC named directly. Nothing
  // is left of the refused guest (no port, no guest).
  auto refused = [&](const Json& nics, int status, const std::string& says) {
    Json g = {{"name", "bad"}, {"image", "tiny"}, {"memory_mib", 128}, {"nics", nics}};
    auto r = Client(acme).Do("POST", "/api/v1/guests", g.dump());
    EXPECT_EQ(r->status, status) << nics.dump() << " -> " << r->body;
    EXPECT_NE(r->body.find(says), std::string::npos) << r->body;
  };
  refused({{{"network", "other"}}}, 404, "nics[0]: ");
  refused({{{"network", "beta:other"}}}, 404, "nics[0]: ");
  refused({{{"network", "front"}}, {{"network", "back"}, {"ip", "10.9.0.5"}}}, 409, "nics[1]: ip: 10.9.0.5");
  refused({{{"type", "port"}, {"port", "port-0123456789abcdef"}}}, 400, "a port NIC is made by the manager");
  refused({{{"network", "front"}, {"vlan", 5}}}, 400, "nics[0].vlan");
  {
    Json ct = {{"name", "ct"}, {"kind", "lxc"}, {"image", "tiny"}, {"nics", {{{"network", "front"}}}}};
    auto r = Client(acme).Do("POST", "/api/v1/guests", ct.dump());
    EXPECT_EQ(r->status, 400) << r->body;
    EXPECT_NE(r->body.find("nics[0].network: NICs on networks are for virtual machines"), std::string::npos) << r->body;
  }
  EXPECT_EQ(Count("ports"), 2);
  EXPECT_EQ(Client(acme).Do("GET", "/api/v1/guests/bad")->status, 404);
  // A live move takes the ports along: the destination's prepare carries the guest's port NICs
  // (its agent plugs them before the switchover), MAC and address unchanged.
  AddHost("h2");
  Json to = {{"host", "h2"}, {"mode", "live"}};
  auto live = Client().Call("POST", "/api/v1/guests/acme:web/migrate", &to);
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ(WaitTask(*live)["state"], "succeeded");
  const Json carried = cluster_.PreparedNics("h2", "acme:web");
  ASSERT_TRUE(carried.is_array()) << carried.dump();
  ASSERT_EQ(carried.size(), 2u) << carried.dump();
  EXPECT_EQ(carried[0]["port"], eth0["port"]);
  EXPECT_EQ(carried[0]["mac"], eth0["mac"]);
  EXPECT_EQ(carried[1]["address"], "10.9.0.5/29");
  EXPECT_EQ(Count("ports"), 2);
  // Deleted with the guest: the addresses are free again.
  auto del = Client(acme).Call("DELETE", "/api/v1/guests/web?force=true");
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  EXPECT_EQ(WaitTask(*del)["state"], "succeeded");
  EXPECT_EQ(Count("ports"), 0);
  EXPECT_NE(AllEvents().find("port.deleted acme:front"), std::string::npos) << AllEvents();
}

TEST_F(NetworkCatalogueTest, ConcurrentPortsGetDistinctAddressesAndSurviveARestart) {
  StartManager();
  std::string acme = TenantToken("acme");
  Make(acme, {{"name", "net"}, {"subnet", "10.4.0.0/24"}});
  std::vector<std::thread> writers;
  std::mutex mu;
  std::set<std::string> ips, macs;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&] {
      for (int i = 0; i < 15; ++i) {
        const Json body = {{"network", "net"}};
        auto r = Client(acme).Call("POST", "/api/v1/ports", &body);
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        std::lock_guard l(mu);
        ips.insert((*r)["ip"].get<std::string>());
        macs.insert((*r)["mac"].get<std::string>());
      }
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(ips.size(), 60u);
  EXPECT_EQ(macs.size(), 60u);
  EXPECT_TRUE(ips.count("10.4.0.2") && ips.count("10.4.0.61") && !ips.count("10.4.0.62"));
  // What was allocated is in the store: a restarted manager goes on from it.
  StopManager();
  StartManager();
  EXPECT_EQ((*Client(acme).Call("GET", "/api/v1/networks/net"))["ports"], 60);
  EXPECT_EQ(Port(acme, {{"network", "net"}})["ip"], "10.4.0.62");
}

}  // namespace
}  // namespace uw::manager::testing
