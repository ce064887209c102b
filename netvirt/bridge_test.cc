// The integration bridge and its ports (netvirt/bridge.h) in a real ovsdb-server's database; the
// ofport ovs-vswitchd would give is written by the test, as in ovsdb_test.cc.
#include "netvirt/bridge.h"

#include <gtest/gtest.h>

#include <future>

#include "netvirt/ovsdb_server_fixture.h"

namespace uw::netvirt {
namespace {

using namespace std::chrono_literals;

class BridgeTest : public testing::OvsdbServerTest {
 protected:
  // Column `column` of `table`'s row named `name` (null when there is none).
  Json Column(const std::string& table, const std::string& name, const std::string& column) {
    auto r = client_->Transact("Open_vSwitch",
                               Json::array({{{"op", "select"},
                                             {"table", table},
                                             {"where", Json::array({{"name", "==", name}})},
                                             {"columns", {column}}}}),
                               5s);
    if (!r.ok() || (*r)[0]["rows"].empty()) return nullptr;
    return (*r)[0]["rows"][0][column];
  }
  // Gives interface `name` OpenFlow port `ofport` once it exists, as ovs-vswitchd would.
  std::future<void> GivePort(const std::string& name, int ofport) {
    return std::async(std::launch::async, [this, name, ofport] {
      auto other = OvsdbClient::Connect(socket_, 5s);
      ASSERT_TRUE(other.ok());
      for (int i = 0; i < 500; ++i) {
        auto r = (*other)->Transact("Open_vSwitch",
                                    Json::array({{{"op", "update"},
                                                  {"table", "Interface"},
                                                  {"where", Json::array({{"name", "==", name}})},
                                                  {"row", {{"ofport", ofport}}}}}),
                                    5s);
        if (r.ok() && (*r)[0].value("count", 0) == 1) return;
        std::this_thread::sleep_for(10ms);
      }
      ADD_FAILURE() << "interface " << name << " never appeared";
    });
  }
};

TEST_F(BridgeTest, TheBridgeIsMadeOnceAndRepaired) {
  BridgeSpec spec;
  ASSERT_TRUE(EnsureBridge(*client_, spec, 5s).ok());
  ASSERT_TRUE(EnsureBridge(*client_, spec, 5s).ok());
  EXPECT_EQ(Names("Bridge"), std::set<std::string>({"uw-int"}));
  EXPECT_EQ(Names("Port"), std::set<std::string>({"uw-int"}));
  EXPECT_EQ(Column("Bridge", "uw-int", "datapath_type"), "netdev");
  EXPECT_EQ(Column("Bridge", "uw-int", "fail_mode"), "secure");
  EXPECT_EQ(Column("Interface", "uw-int", "type"), "internal");
  // Someone changed it: the next start sets it back.
  auto changed = client_->Transact("Open_vSwitch",
                                   Json::array({{{"op", "update"},
                                                 {"table", "Bridge"},
                                                 {"where", Json::array({{"name", "==", "uw-int"}})},
                                                 {"row", {{"fail_mode", "standalone"}, {"datapath_type", "system"}}}}}),
                                   5s);
  ASSERT_TRUE(changed.ok());
  ASSERT_TRUE(EnsureBridge(*client_, spec, 5s).ok());
  EXPECT_EQ(Column("Bridge", "uw-int", "datapath_type"), "netdev");
  EXPECT_EQ(Column("Bridge", "uw-int", "fail_mode"), "secure");
  EXPECT_EQ(EnsureBridge(*client_, {.name = "bad/name"}, 5s).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EnsureBridge(*client_, {.name = "b", .datapath_type = "dpdk"}, 5s).code(), StatusCode::kInvalidArgument);
}

TEST_F(BridgeTest, APortIsPluggedWithItsTagAndIdsThenUnplugged) {
  ASSERT_TRUE(EnsureBridge(*client_, {}, 5s).ok());
  PortPlug plug{.name = "uwt-1", .iface_id = "port-1", .mac = "02:00:00:00:00:01", .tag = 5};
  auto given = GivePort("uwt-1", 3);
  auto ofport = PlugPort(*client_, plug, 5s);
  given.get();
  ASSERT_TRUE(ofport.ok()) << ofport.status().ToString();
  EXPECT_EQ(*ofport, 3);
  EXPECT_EQ(Column("Port", "uwt-1", "tag"), 5);
  const Json ids = Column("Interface", "uwt-1", "external_ids");
  EXPECT_NE(ids.dump().find(R"(["iface-id","port-1"])"), std::string::npos) << ids.dump();
  EXPECT_NE(ids.dump().find(R"(["attached-mac","02:00:00:00:00:01"])"), std::string::npos) << ids.dump();
  // Plugged again (an agent restarted) with another tag: the same port, updated.
  plug.tag = 0;
  auto again = PlugPort(*client_, plug, 5s);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(Names("Port"), std::set<std::string>({"uw-int", "uwt-1"}));
  EXPECT_EQ(Column("Port", "uwt-1", "tag"), Json::array({"set", Json::array()}));
  // A port on another bridge is not taken over; a missing bridge is named.
  ASSERT_TRUE(EnsureBridge(*client_, {.name = "uw-other"}, 5s).ok());
  auto elsewhere = PlugPort(*client_, {.bridge = "uw-other", .name = "uwt-1"}, 5s);
  EXPECT_EQ(elsewhere.status().code(), StatusCode::kFailedPrecondition) << elsewhere.status().ToString();
  EXPECT_NE(elsewhere.status().message().find("on bridge 'uw-int'"), std::string::npos)
      << elsewhere.status().ToString();
  EXPECT_EQ(PlugPort(*client_, {.bridge = "uw-none", .name = "uwt-2"}, 5s).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(PlugPort(*client_, {.name = "uwt-2", .tag = 5000}, 5s).status().code(), StatusCode::kInvalidArgument);
  // A device ovs-vswitchd cannot open: its error, and the port stays for the operator to see.
  auto failing = std::async(std::launch::async, [&] {
    auto other = OvsdbClient::Connect(socket_, 5s);
    for (int i = 0; i < 500; ++i) {
      auto r = (*other)->Transact(
          "Open_vSwitch",
          Json::array({{{"op", "update"},
                        {"table", "Interface"},
                        {"where", Json::array({{"name", "==", "uwt-3"}})},
                        {"row", {{"ofport", -1}, {"error", "could not open network device uwt-3"}}}}}),
          5s);
      if (r.ok() && (*r)[0].value("count", 0) == 1) return;
      std::this_thread::sleep_for(10ms);
    }
  });
  auto bad = PlugPort(*client_, {.name = "uwt-3"}, 5s);
  failing.get();
  EXPECT_EQ(bad.status().code(), StatusCode::kFailedPrecondition) << bad.status().ToString();
  EXPECT_NE(bad.status().message().find("could not open network device uwt-3"), std::string::npos);
  // Unplugged: the Port and its Interface go; unplugging again is fine.
  ASSERT_TRUE(UnplugPort(*client_, "uw-int", "uwt-1", 5s).ok());
  ASSERT_TRUE(UnplugPort(*client_, "uw-int", "uwt-3", 5s).ok());
  EXPECT_EQ(Names("Port"), std::set<std::string>({"uw-int", "uw-other"}));
  EXPECT_EQ(Names("Interface"), std::set<std::string>({"uw-int", "uw-other"}));
  EXPECT_TRUE(UnplugPort(*client_, "uw-int", "uwt-1", 5s).ok());
}

TEST_F(BridgeTest, EachNetworkKeepsTheLocalTagItsPortsHaveAndAnInterfaceSaysWhosePortItIs) {
  ASSERT_TRUE(EnsureBridge(*client_, {}, 5s).ok());
  auto tags = NetworkTags(*client_, "uw-int", 5s);
  ASSERT_TRUE(tags.ok()) << tags.status().ToString();
  EXPECT_TRUE(tags->empty());
  struct P {
    const char* name;
    const char* network;
    int tag;
  };
  int ofport = 1;
  for (const P& p : {P{"uwt-a1", "acme:front", 1}, P{"uwt-a2", "acme:front", 1}, P{"uwt-b1", "beta:front", 2}}) {
    auto given = GivePort(p.name, ofport++);
    ASSERT_TRUE(
        PlugPort(*client_,
                 {.name = p.name, .iface_id = std::string("port-") + p.name, .tag = p.tag, .network = p.network}, 5s)
            .ok());
    given.get();
  }
  // A port on another bridge does not count.
  ASSERT_TRUE(EnsureBridge(*client_, {.name = "uw-other"}, 5s).ok());
  auto given = GivePort("uwt-x", 9);
  ASSERT_TRUE(PlugPort(*client_, {.bridge = "uw-other", .name = "uwt-x", .tag = 7, .network = "gamma:x"}, 5s).ok());
  given.get();
  tags = NetworkTags(*client_, "uw-int", 5s);
  ASSERT_TRUE(tags.ok()) << tags.status().ToString();
  EXPECT_EQ(*tags, (std::map<std::string, int>{{"acme:front", 1}, {"beta:front", 2}}));
  EXPECT_EQ(NetworkTags(*client_, "uw-none", 5s).status().code(), StatusCode::kNotFound);

  auto facts = FindInterface(*client_, "uwt-a2", 5s);
  ASSERT_TRUE(facts.ok()) << facts.status().ToString();
  EXPECT_TRUE(facts->exists);
  EXPECT_EQ(facts->ofport, 2);
  EXPECT_EQ(facts->iface_id, "port-uwt-a2");
  facts = FindInterface(*client_, "uwt-none", 5s);
  ASSERT_TRUE(facts.ok());
  EXPECT_FALSE(facts->exists);
  EXPECT_EQ(FindInterface(*client_, "a/b", 5s).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace uw::netvirt
