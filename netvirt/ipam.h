// Address management for tenant networks: IPv4 subnets in CIDR form, their overlaps, and the
// lowest free host address of a subnet; MAC addresses for ports. Pure logic: the manager keeps
// what is allocated (manager/network_service.h) and asks here what is free.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "common/status.h"

namespace uw::netvirt {

// An IPv4 address in host byte order.
using Ipv4 = uint32_t;

// "a.b.c.d", each part a decimal 0..255 without leading zeros (so "010.0.0.1" is refused rather
// than read as octal by one tool and decimal by another). kInvalidArgument saying what was wrong.
Result<Ipv4> ParseIpv4(std::string_view text);
std::string FormatIpv4(Ipv4 a);

struct Subnet {
  Ipv4 network = 0;
  int prefix = 0;

  Ipv4 Mask() const { return prefix == 0 ? 0 : ~Ipv4{0} << (32 - prefix); }
  Ipv4 Broadcast() const { return network | ~Mask(); }
  bool Contains(Ipv4 a) const { return (a & Mask()) == network; }
  // The addresses a port may have: all but the network and broadcast addresses.
  Ipv4 FirstHost() const { return network + 1; }
  Ipv4 LastHost() const { return Broadcast() - 1; }
  int64_t HostCount() const { return (int64_t{1} << (32 - prefix)) - 2; }
  std::string ToString() const { return FormatIpv4(network) + "/" + std::to_string(prefix); }
};

// The shortest and longest prefixes a tenant network may have: /8 (16M addresses) to /29 (6).
inline constexpr int kMinPrefix = 8;
inline constexpr int kMaxPrefix = 29;

// "a.b.c.d/N" with kMinPrefix <= N <= kMaxPrefix and no host bits set ("10.0.0.1/24" is refused,
// naming 10.0.0.0/24). Loopback, link-local, multicast and reserved ranges are refused.
Result<Subnet> ParseSubnet(std::string_view text);
bool Overlaps(const Subnet& a, const Subnet& b);

// The lowest host address of `s` that is not in `taken` (which holds the gateway too).
// kResourceExhausted naming the subnet when every host address is taken.
Result<Ipv4> LowestFree(const Subnet& s, const std::set<Ipv4>& taken);

// A port's MAC address: locally administered, unicast (02:xx:...), from 40 random bits given.
std::string MacFromBits(uint64_t bits);
// "xx:xx:xx:xx:xx:xx", lowercase hex; a unicast address (the multicast bit clear) that is not
// all zeros. Returns it lowercased.
Result<std::string> ParseMac(std::string_view text);

}  // namespace uw::netvirt
