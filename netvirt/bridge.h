// A host's integration bridge and the guests' ports on it, kept in Open vSwitch's database through
// the OVSDB client (netvirt/ovsdb.h). Each call is one transaction, so a failure leaves nothing half
// made, and each is idempotent: the agent calls them again at every start to repair what a
// restarted ovs-vswitchd or an operator changed.
//
//   EnsureBridge: Bridge NAME (datapath_type, fail_mode) with its internal port, in the root row
//   PlugPort:     Interface + Port (access tag, external_ids iface-id/attached-mac) on the bridge,
//                 then WaitForOfport (ovs-vswitchd opens the device: a tap the agent made)
//   UnplugPort:   the Port off the bridge (OVSDB collects the unreferenced Port and Interface)
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "common/status.h"
#include "netvirt/ovsdb.h"

namespace uw::netvirt {

struct BridgeSpec {
  std::string name = "uw-int";
  // netdev: the userspace datapath (no kernel module needed); system: the kernel's.
  std::string datapath_type = "netdev";
  // secure: no flows but the ones given (a guest reaches nothing until flows let it).
  std::string fail_mode = "secure";
};

// Makes the bridge, or sets its datapath_type and fail_mode when it exists with others. Inserts the
// database's root row when the database is new (as `ovs-vsctl init`). kInvalidArgument for a bad
// spec.
Status EnsureBridge(OvsdbClient& client, const BridgeSpec& spec, OvsdbClient::Millis timeout);

struct PortPlug {
  std::string bridge = "uw-int";
  std::string name{};      // the device (a tap), also the Port's and Interface's name
  std::string iface_id{};  // external_ids:iface-id (the manager's port id)
  std::string mac{};       // external_ids:attached-mac
  int tag = 0;             // the access VLAN on the bridge; 0 for none
  std::string network{};   // external_ids:uw-network (the network whose local VLAN `tag` is)
};

// Puts the port on the bridge (or updates its tag and external_ids when it is there already, on
// this bridge), then waits for its OpenFlow port number and returns it. kNotFound for a missing
// bridge; kFailedPrecondition for a port on another bridge, or when ovs-vswitchd cannot open the
// device (its error); kDeadlineExceeded when no ofport comes within `timeout`.
Result<int64_t> PlugPort(OvsdbClient& client, const PortPlug& plug, OvsdbClient::Millis timeout);

// The local VLAN tag of each network with a port on `bridge` (from its ports' uw-network and tag):
// how a host keeps one tag per network across agent restarts without a file of its own.
Result<std::map<std::string, int>> NetworkTags(OvsdbClient& client, const std::string& bridge,
                                               OvsdbClient::Millis timeout);

// What the database holds of interface `name`.
struct InterfaceFacts {
  bool exists = false;
  int64_t ofport = 0;      // its OpenFlow port number; -1 when ovs-vswitchd could not open it
  std::string iface_id{};  // external_ids:iface-id (whose port it is)
};
Result<InterfaceFacts> FindInterface(OvsdbClient& client, const std::string& name, OvsdbClient::Millis timeout);

// Takes port `name` off `bridge`. OK when it is not there.
Status UnplugPort(OvsdbClient& client, const std::string& bridge, const std::string& name, OvsdbClient::Millis timeout);

}  // namespace uw::netvirt
