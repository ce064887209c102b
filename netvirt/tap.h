// Tap devices for guests' NICs on Open vSwitch: the agent makes a persistent tap, puts it on the
// integration bridge as an ordinary port (netvirt/bridge.h), and QEMU opens it by name
// (<interface type='ethernet'> with <target managed='no'>). A tap that OVS made itself (type=tap)
// stays open in ovs-vswitchd and QEMU cannot open it (EBUSY), hence this.
#pragma once

#include <string>

#include "common/status.h"

namespace uw::netvirt {

// Makes persistent tap `name` (IFF_TAP | IFF_NO_PI, owned by root) and sets it up. OK when it
// exists already as a tap. kInvalidArgument for a bad name, kPermissionDenied without
// CAP_NET_ADMIN, kUnavailable when /dev/net/tun cannot be opened; errno's text otherwise.
Status CreateTap(const std::string& name);

// Removes tap `name`. OK when there is none.
Status DeleteTap(const std::string& name);

// True when a network device `name` exists in this network namespace.
bool DeviceExists(const std::string& name);

}  // namespace uw::netvirt
