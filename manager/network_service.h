// The network catalogue: tenants' networks (an overlay VNI or a VLAN tag, an IPv4 subnet and its
// gateway) and their ports (a MAC and an address each, allocated here, never twice). Private to
// manager/; the routes (network_routes.cc) make one per request over the manager's store, as
// billing does: everything it knows is in the store, and each change is one transaction.
//
//   POST /networks {name, subnet, kind}  --> checked (no overlap with the tenant's other subnets,
//        segment free) --> networks row, a VNI allocated (above the highest) unless an operator gave one
//   POST /ports {network, ip?, mac?}     --> address: the one asked for (in the subnet, not the
//        gateway, free) or the lowest free; MAC: the one asked for (free) or random 02:xx:.. --> row
//   DELETE /ports/{id}                   --> its address and MAC are free again
//   DELETE /networks/{name}              --> refused while it has ports
//
// Names are unique per tenant ("<tenant>:<name>", as guests' and volumes'); a tenant sees and
// names only its own networks and ports: another tenant's is not found, whatever the name.
// Overlay networks are anyone's to make; VLAN networks (a tag on a host's physical bridge) and
// chosen segments are operators'. A guest create's NICs {"network"} get ports here
// (AttachForCreate), which the agents plug in (vmm/agent_network.cc). Not built yet: tunnels.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"
#include "netvirt/ipam.h"

namespace uw::manager::internal {

class EventLog;

struct NetworkRecord {
  std::string key{};  // "<tenant>:<name>" ("<name>" without a tenant)
  std::string tenant{}, name{};
  std::string kind = "overlay";  // overlay | vlan
  int64_t segment = 0;           // overlay: VNI (1..16777215); vlan: tag (1..4094)
  std::string physical{};        // vlan: the hosts' physical bridge the tag is on; "" for overlay
  std::string subnet{};          // "a.b.c.d/N"
  std::string gateway{};         // "" for none
  int64_t created_ms = 0;
  int64_t ports = 0;  // how many it has
  int64_t free_addresses = 0;
};
struct PortRecord {
  std::string id{};       // "port-..." (common/id.h NewId)
  std::string network{};  // the network's key
  std::string tenant{}, mac{}, ip{};
  std::string guest{};  // the guest whose NIC it is, or ""
  int64_t created_ms = 0;
};

// POST /api/v1/networks.
struct NetworkCreate {
  std::string name{}, tenant{};
  std::string kind = "overlay";
  std::string subnet{};
  std::optional<std::string> gateway{};  // nullopt: the subnet's first address; "" : none
  std::optional<int64_t> segment{};      // nullopt: allocated (overlay) / required (vlan)
  std::string physical = "br-phys";      // vlan only
};
// POST /api/v1/ports.
struct PortCreate {
  std::string network{}, tenant{}, ip{}, mac{};  // ip, mac: "" to allocate
  std::string guest{};                           // the guest whose NIC it is (AttachForCreate)
};
Result<NetworkCreate> ParseNetworkCreate(const Json& body);
Result<PortCreate> ParsePortCreate(const Json& body);
// A guest create's NICs on networks ({"network": NAME, "ip", "mac"}) into g.network_nics, each a
// placeholder in `spec` the agent's parser takes; a port NIC named directly is refused.
Status ParseNetworkNics(const JsonView& v, GuestCreate& g, Json& spec);

inline constexpr int64_t kMaxVni = (int64_t{1} << 24) - 1;
inline constexpr int64_t kMaxVlan = 4094;

class NetworkService {
 public:
  NetworkService(Store& store, Clock& clock, EventLog& events) : store_(store), clock_(clock), events_(events) {}

  Result<Page<NetworkRecord>> ListNetworks(const Principal& p, const PageQuery& page);
  Result<NetworkRecord> GetNetwork(const Principal& p, std::string_view name);
  // kInvalidArgument for a bad subnet or gateway; kAlreadyExists for a taken name or segment;
  // kFailedPrecondition naming the tenant's network whose subnet overlaps; kPermissionDenied for a
  // tenant's VLAN network, chosen segment or other tenant.
  Result<NetworkRecord> CreateNetwork(const Principal& p, const NetworkCreate& req);
  // kFailedPrecondition while the network has ports (some named).
  Status DeleteNetwork(const Principal& p, std::string_view name);

  // A tenant's own ports; everyone else's all. `network` ("" for all) narrows it to one network.
  Result<Page<PortRecord>> ListPorts(const Principal& p, std::string_view network, const PageQuery& page);
  Result<PortRecord> GetPort(const Principal& p, std::string_view id);
  // The port's tenant is its network's. kInvalidArgument for an address outside the subnet, the
  // subnet's network or broadcast address, or the gateway; kAlreadyExists for an address or MAC
  // taken; kResourceExhausted when the subnet is full.
  Result<PortRecord> CreatePort(const Principal& p, const PortCreate& req);
  Status DeletePort(const Principal& p, std::string_view id);

  // A guest being created: a port for each of req.network_nics on its tenant's network (the
  // address and MAC asked for, or allocated), each NIC in req.agent_spec made a port NIC. All or
  // nothing; errors name the NIC ("nics[1]: ...").
  Status AttachForCreate(GuestCreate& req);
  // The ports of `guest` (deleted, or its create failed): deleted, their addresses free again.
  // Logs what it cannot do.
  void ReleaseGuest(const std::string& guest);

 private:
  Result<NetworkRecord> Visible(const Principal& p, std::string_view name);  // inside or outside a transaction
  Result<int64_t> FreeVni();                                                 // inside a transaction
  // The lowest address of `subnet` that is neither a port's on `network` nor the gateway;
  // kResourceExhausted when there is none. Inside a transaction.
  Result<netvirt::Ipv4> FreeAddress(const std::string& network, const netvirt::Subnet& subnet,
                                    std::optional<netvirt::Ipv4> gateway);
  int64_t NowMs() const;

  Store& store_;
  Clock& clock_;
  EventLog& events_;
};

}  // namespace uw::manager::internal
