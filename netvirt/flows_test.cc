#include "netvirt/flows.h"

#include <gtest/gtest.h>

namespace uw::netvirt {
namespace {

TEST(FlowsTest, APortsRulesLetOnlyItsOwnMacAndAddressThrough) {
  auto flows = PortFlows({.ofport = 7, .mac = "02:AA:00:00:00:01", .address = "10.0.0.5"});
  ASSERT_TRUE(flows.ok()) << flows.status().ToString();
  ASSERT_EQ(flows->size(), 3u);
  EXPECT_EQ((*flows)[0], "table=0,in_port=7,priority=100,dl_src=02:aa:00:00:00:01,ip,nw_src=10.0.0.5,actions=NORMAL");
  EXPECT_EQ((*flows)[1],
            "table=0,in_port=7,priority=100,dl_src=02:aa:00:00:00:01,arp,arp_spa=10.0.0.5,arp_sha=02:aa:00:00:00:01,"
            "actions=NORMAL");
  EXPECT_EQ((*flows)[2], "table=0,in_port=7,priority=90,actions=drop");
  EXPECT_EQ(BaseFlow(), "table=0,priority=0,actions=NORMAL");
}

TEST(FlowsTest, NothingThatIsNotAPortMacOrAddressReachesOvsOfctl) {
  EXPECT_EQ(PortFlows({.ofport = 0, .mac = "02:00:00:00:00:01", .address = "10.0.0.5"}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(PortFlows({.ofport = 1, .mac = "02:00:00:00:00:01,actions=flood", .address = "10.0.0.5"}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(PortFlows({.ofport = 1, .mac = "02:00:00:00:00:01", .address = "10.0.0.5,actions=flood"}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(PortFlows({.ofport = 1, .mac = "02:00:00:00:00:01", .address = "10.0.0.5/24"}).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace uw::netvirt
