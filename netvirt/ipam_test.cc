#include "netvirt/ipam.h"

#include <gtest/gtest.h>

namespace uw::netvirt {
namespace {

TEST(IpamTest, AddressesParseStrictlyAndPrintBack) {
  auto a = ParseIpv4("10.1.255.0");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(*a, 0x0a01ff00u);
  EXPECT_EQ(FormatIpv4(*a), "10.1.255.0");
  for (const char* bad : {"", "10.1.2", "10.1.2.3.4", "10.1.2.256", "10.01.2.3", "10.1.2.3 ", "a.b.c.d", "10..2.3",
                          "-1.2.3.4", "1.2.3.4/24"}) {
    auto r = ParseIpv4(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(IpamTest, SubnetsAreCheckedForHostBitsPrefixAndReservedRanges) {
  auto s = ParseSubnet("192.168.10.0/24");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->ToString(), "192.168.10.0/24");
  EXPECT_EQ(FormatIpv4(s->FirstHost()), "192.168.10.1");
  EXPECT_EQ(FormatIpv4(s->LastHost()), "192.168.10.254");
  EXPECT_EQ(s->HostCount(), 254);
  auto host_bits = ParseSubnet("10.0.0.1/24");
  EXPECT_EQ(host_bits.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(host_bits.status().message().find("10.0.0.0/24"), std::string::npos) << host_bits.status().ToString();
  for (const char* bad : {"10.0.0.0", "10.0.0.0/", "10.0.0.0/7", "10.0.0.0/30", "10.0.0.0/024", "10.0.0.0/x",
                          "127.0.0.0/24", "169.254.1.0/24", "224.0.0.0/24", "240.0.0.0/8", "0.1.0.0/16"}) {
    EXPECT_EQ(ParseSubnet(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(IpamTest, OverlapsEitherWay) {
  auto wide = *ParseSubnet("10.0.0.0/16"), inner = *ParseSubnet("10.0.5.0/24"), other = *ParseSubnet("10.1.0.0/16");
  EXPECT_TRUE(Overlaps(wide, inner));
  EXPECT_TRUE(Overlaps(inner, wide));
  EXPECT_TRUE(Overlaps(wide, wide));
  EXPECT_FALSE(Overlaps(wide, other));
  EXPECT_FALSE(Overlaps(inner, other));
  auto a = *ParseSubnet("10.0.0.0/25"), b = *ParseSubnet("10.0.0.128/25");
  EXPECT_FALSE(Overlaps(a, b));
}

TEST(IpamTest, LowestFreeSkipsWhatIsTakenAndSaysWhenFull) {
  auto s = *ParseSubnet("10.9.0.0/29");    // hosts .1 to .6
  std::set<Ipv4> taken = {s.FirstHost()};  // the gateway
  for (int want = 2; want <= 6; ++want) {
    auto a = LowestFree(s, taken);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    EXPECT_EQ(FormatIpv4(*a), "10.9.0." + std::to_string(want));
    taken.insert(*a);
  }
  auto full = LowestFree(s, taken);
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("10.9.0.0/29"), std::string::npos);
  taken.erase(*ParseIpv4("10.9.0.4"));  // released: the next port gets it again
  EXPECT_EQ(FormatIpv4(*LowestFree(s, taken)), "10.9.0.4");
  // Addresses of other subnets do not count.
  EXPECT_EQ(FormatIpv4(*LowestFree(*ParseSubnet("10.8.0.0/24"), {*ParseIpv4("10.7.0.1")})), "10.8.0.1");
}

TEST(IpamTest, MacsAreLocalUnicastAndParsedStrictly) {
  EXPECT_EQ(MacFromBits(0x0123456789ull), "02:01:23:45:67:89");
  EXPECT_EQ(MacFromBits(~0ull), "02:ff:ff:ff:ff:ff");
  auto m = ParseMac("52:54:00:AB:cd:01");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(*m, "52:54:00:ab:cd:01");
  for (const char* bad : {"", "52:54:00:ab:cd", "52-54-00-ab-cd-01", "52:54:00:ab:cd:0g", "01:00:5e:00:00:01",
                          "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"}) {
    EXPECT_EQ(ParseMac(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace uw::netvirt
