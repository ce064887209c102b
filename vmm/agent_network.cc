// The host's integration bridge (netvirt/bridge.h), kept by the agent: made at its start, repaired
// when an operator or a restarted ovs-vswitchd changed it, and reported in GET /api/v1/host; and
// guests' port NICs on it (taps, ports, flows).
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <set>

#include "netvirt/bridge.h"
#include "netvirt/flows.h"
#include "netvirt/tap.h"
#include "vmm/agent_service.h"

namespace uw::vmm {
namespace {

constexpr auto kOvsdbTimeout = std::chrono::seconds(2);
constexpr auto kRecheck = std::chrono::seconds(10);
constexpr auto kRetry = std::chrono::seconds(5);
constexpr std::string_view kCmdlineKey = "uw.nic=";

// `cmdline` without its uw.nic= words, then one per port NIC.
std::string WithPortAddresses(const std::string& cmdline, const std::vector<NicSpec>& nics) {
  std::string out;
  size_t i = 0;
  while (i < cmdline.size()) {
    const size_t end = std::min(cmdline.find(' ', i), cmdline.size());
    const std::string word = cmdline.substr(i, end - i);
    if (!word.empty() && word.rfind(kCmdlineKey, 0) != 0) out += (out.empty() ? "" : " ") + word;
    i = end + 1;
  }
  for (const NicSpec& n : nics) {
    if (n.type != "port") continue;
    out += (out.empty() ? "" : " ") + std::string(kCmdlineKey) + n.mac + "," + n.address;
    if (!n.gateway.empty()) out += "," + n.gateway;
  }
  return out;
}

// The port's flows for the address of its "A.B.C.D/N".
Result<std::vector<std::string>> FlowsOf(const NicSpec& n, int64_t ofport) {
  return netvirt::PortFlows({.ofport = ofport, .mac = n.mac, .address = n.address.substr(0, n.address.find('/'))});
}

}  // namespace

Result<netvirt::OvsdbClient*> AgentService::OvsdbLocked() {
  if (!config_.network) {
    return FailedPreconditionError("host " + config_.host_name +
                                   " has no network (agent.json `network`): it cannot plug guests' port NICs");
  }
  if (!ovsdb_ || !ovsdb_->connected()) {
    auto c = netvirt::OvsdbClient::Connect(config_.network->ovsdb, kOvsdbTimeout);
    if (!c.ok()) {
      ovsdb_.reset();
      return c.status().WithContext("host " + config_.host_name + ": Open vSwitch");
    }
    ovsdb_ = std::move(*c);
  }
  return ovsdb_.get();
}

void AgentService::KeepNetwork() {
  if (!config_.network) return;
  const AgentConfig::Network& net = *config_.network;
  {
    std::lock_guard l(network_mu_);
    if (clock_.Monotonic() < network_due_) return;
  }
  Status s = Status::Ok();
  {
    std::lock_guard o(ovsdb_mu_);
    auto client = OvsdbLocked();
    s = client.status();
    if (s.ok()) {
      s = netvirt::EnsureBridge(
          **client, {.name = net.bridge, .datapath_type = net.datapath_type, .fail_mode = "secure"}, kOvsdbTimeout);
    }
    // Flows live in ovs-vswitchd only: a restarted one has none. The guests' rules first, then the
    // default one, so that nothing passes unchecked meanwhile (secure: no rule, no traffic).
    if (s.ok()) s = RestorePortFlowsLocked(**client);
    if (s.ok()) s = netvirt::AddFlows(net.bridge, {netvirt::BaseFlow()});
  }
  std::lock_guard l(network_mu_);
  if (s.ok() != network_.ready) {
    if (s.ok()) {
      spdlog::info("network: bridge {} ({}) is ready in {}", net.bridge, net.datapath_type, net.ovsdb);
    } else {
      spdlog::warn("network: bridge {}: {}", net.bridge, s.ToString());
    }
  }
  network_ = {.bridge = net.bridge, .ready = s.ok(), .error = s.ok() ? "" : s.ToString()};
  network_due_ = clock_.Monotonic() + (s.ok() ? Duration(kRecheck) : Duration(kRetry));
}

Status AgentService::RestorePortFlowsLocked(netvirt::OvsdbClient& client) {
  const std::string& bridge = config_.network->bridge;
  UW_ASSIGN_OR_RETURN(std::vector<std::string> flows, netvirt::DumpFlows(bridge));
  std::set<int64_t> ruled;  // ofports that have rules
  for (const std::string& f : flows) {
    const size_t at = f.find("in_port=");
    if (at != std::string::npos) ruled.insert(std::atoll(f.c_str() + at + 8));
  }
  UW_ASSIGN_OR_RETURN(std::vector<GuestInfo> guests, vm_->List());
  for (const GuestInfo& g : guests) {
    auto spec = vm_->GetSpec(g.name);
    if (!spec.ok()) continue;  // gone meanwhile
    for (const NicSpec& n : spec->nics) {
      if (n.type != "port") continue;
      UW_ASSIGN_OR_RETURN(netvirt::InterfaceFacts there, netvirt::FindInterface(client, n.device, kOvsdbTimeout));
      if (!there.exists || there.iface_id != n.port || there.ofport < 1 || ruled.count(there.ofport)) continue;
      UW_ASSIGN_OR_RETURN(auto port_flows, FlowsOf(n, there.ofport));
      UW_RETURN_IF_ERROR(netvirt::AddFlows(bridge, port_flows).WithContext("guest " + g.name));
      spdlog::info("network: the rules of guest {}'s port {} ({}, ofport {}) put back", g.name, n.port, n.device,
                   there.ofport);
    }
  }
  return Status::Ok();
}

Status AgentService::PlugPorts(const std::string& guest, const std::vector<NicSpec*>& ports,
                               std::vector<NicSpec>& made) {
  std::lock_guard o(ovsdb_mu_);
  UW_ASSIGN_OR_RETURN(netvirt::OvsdbClient * client, OvsdbLocked());
  const std::string& bridge = config_.network->bridge;
  UW_ASSIGN_OR_RETURN(auto tags, netvirt::NetworkTags(*client, bridge, kOvsdbTimeout));
  std::set<int> taken;
  for (const auto& [network, tag] : tags) taken.insert(tag);
  for (NicSpec* n : ports) {
    n->source = bridge;  // (its device, PortDevice(port), is set by the spec's parser)
    int tag = 0;
    if (auto t = tags.find(n->network); t != tags.end()) {
      tag = t->second;
    } else {
      for (tag = 1; tag <= 4094 && taken.count(tag); ++tag) {
      }
      if (tag > 4094)
        return ResourceExhaustedError("host " + config_.host_name + " has a local VLAN for each of 4094 networks");
      tags.emplace(n->network, tag);
      taken.insert(tag);
    }
    const std::string what = "NIC of port " + n->port + " (" + n->device + ")";
    // The tap's name is the port id's first 12 hex digits: another port's is refused, and nothing
    // of it is undone (it is not this guest's).
    UW_ASSIGN_OR_RETURN(netvirt::InterfaceFacts there, netvirt::FindInterface(*client, n->device, kOvsdbTimeout));
    if (there.exists && there.iface_id != n->port) {
      return AlreadyExistsError(what + ": the device is port " + there.iface_id + "'s on host " + config_.host_name);
    }
    UW_RETURN_IF_ERROR(netvirt::CreateTap(n->device).WithContext(what));
    made.push_back(*n);
    auto ofport = netvirt::PlugPort(
        *client,
        {.bridge = bridge, .name = n->device, .iface_id = n->port, .mac = n->mac, .tag = tag, .network = n->network},
        kOvsdbTimeout);
    if (!ofport.ok()) return ofport.status().WithContext(what);
    auto flows = FlowsOf(*n, *ofport);
    if (!flows.ok()) return flows.status().WithContext(what);
    UW_RETURN_IF_ERROR(netvirt::AddFlows(bridge, *flows).WithContext(what));
    spdlog::info("guest {}: port {} plugged as {} (ofport {}, local VLAN {} of network {}, {})", guest, n->port,
                 n->device, *ofport, tag, n->network, n->address);
  }
  return Status::Ok();
}

Status AgentService::AttachPorts(GuestSpec& spec) {
  std::vector<NicSpec*> ports;
  for (NicSpec& n : spec.nics) {
    if (n.type == "port") ports.push_back(&n);
  }
  if (ports.empty()) return Status::Ok();
  if (spec.kind == GuestKind::kLxc) {
    return InvalidArgumentError("spec.nics: port NICs are for virtual machines (kvm, qemu), not containers");
  }
  GuestSpec made = spec;  // the NICs plugged so far, for the undo
  made.nics.clear();
  Status failed = PlugPorts(spec.name, ports, made.nics);
  if (!failed.ok()) {
    DetachPorts(made);
    return failed;
  }
  if (!spec.kernel.empty()) spec.cmdline = WithPortAddresses(spec.cmdline, spec.nics);
  return Status::Ok();
}

void AgentService::DetachPorts(const GuestSpec& spec) {
  if (!config_.network) return;
  const std::string& bridge = config_.network->bridge;
  std::lock_guard o(ovsdb_mu_);
  auto client = OvsdbLocked();
  for (const NicSpec& n : spec.nics) {
    if (n.type != "port" || n.device.empty()) continue;
    Status s = client.status();
    if (s.ok()) {
      auto there = netvirt::FindInterface(**client, n.device, kOvsdbTimeout);
      if (there.ok() && there->exists && there->iface_id != n.port) continue;  // another port's: not ours
      s = there.ok() ? netvirt::DeletePortFlows(bridge, there->ofport) : there.status();
      if (s.ok()) s = netvirt::UnplugPort(**client, bridge, n.device, kOvsdbTimeout);
    }
    if (Status t = netvirt::DeleteTap(n.device); s.ok()) s = t;
    if (!s.ok()) spdlog::warn("guest {}: removing port {} ({}): {}", spec.name, n.port, n.device, s.ToString());
  }
}

}  // namespace uw::vmm
