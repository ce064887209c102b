// OpenFlow rules on the integration bridge, through ovs-ofctl (the bridge is fail_mode=secure: a
// frame no rule lets through is dropped).
//
//   table 0, priority 0:    NORMAL (MAC learning within each local VLAN: a network's ports share
//                           their host-local tag, so networks never see each other's frames)
//   per guest port P (its MAC M and address A):
//     priority 100:         in_port=P, dl_src=M, ip, nw_src=A            -> NORMAL
//     priority 100:         in_port=P, dl_src=M, arp, arp_spa=A, arp_sha=M -> NORMAL
//     priority 90:          in_port=P                                    -> drop (anything else:
//                           another MAC or address, IPv6, a forged ARP)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace uw::netvirt {

struct PortFlowSpec {
  int64_t ofport = 0;
  std::string mac{};      // aa:bb:cc:dd:ee:ff
  std::string address{};  // the port's IPv4 address, no prefix
};

// The rules above for one port, as ovs-ofctl add-flow takes them. kInvalidArgument for an ofport
// below 1, a MAC or an address that is not one.
Result<std::vector<std::string>> PortFlows(const PortFlowSpec& port);
// The bridge's default rule.
std::string BaseFlow();

// ovs-ofctl add-flow for each rule, on `bridge` (its management socket in the default run
// directory). Errors carry ovs-ofctl's message.
Status AddFlows(const std::string& bridge, const std::vector<std::string>& flows);
// Removes every rule matching in_port=`ofport`.
Status DeletePortFlows(const std::string& bridge, int64_t ofport);
// The rules of `bridge` as ovs-ofctl dump-flows prints them (without its header).
Result<std::vector<std::string>> DumpFlows(const std::string& bridge);

}  // namespace uw::netvirt
