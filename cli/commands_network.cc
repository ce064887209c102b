// uwctl network (create, list, show, delete) and uwctl port (create, list, show, delete): tenants'
// networks and the ports that hold their addresses.
#include <CLI/CLI.hpp>

#include "api/request_parser.h"
#include "cli/commands.h"

namespace uw::cli {
namespace {

struct NetworkArgs {
  std::string name, tenant, kind = "overlay", subnet, gateway, physical;
  bool no_gateway = false;
  int64_t segment = 0;  // 0: not given
  // port create
  std::string network, ip, mac;
};

void AddNetworkCreate(CLI::App* network, Invocation& inv, NetworkArgs& a) {
  auto* create = network->add_subcommand("create", "create a network with an IPv4 subnet");
  create->add_option("name", a.name, "network name (lowercase letters, digits, '.', '_', '-')")->required();
  create->add_option("--subnet", a.subnet, "the subnet, a.b.c.d/N (/8 to /29)")->required();
  create->add_option("--gateway", a.gateway, "the gateway's address (default: the subnet's first)");
  create->add_flag("--no-gateway", a.no_gateway, "no gateway (an isolated network)")->excludes("--gateway");
  create->add_option("--kind", a.kind, "overlay (a VNI) or vlan (operators: a tag on a physical bridge)")
      ->check(CLI::IsMember({"overlay", "vlan"}));
  create->add_option("--segment", a.segment, "operators: the VNI, or the VLAN tag (required for vlan)")
      ->check(CLI::PositiveNumber);
  create->add_option("--physical", a.physical, "vlan: the hosts' physical bridge (default br-phys)");
  create->add_option("--tenant", a.tenant, "owner tenant (operators)");
  create->callback([&inv, &a] {
    Json body = {{"name", a.name}, {"subnet", a.subnet}, {"kind", a.kind}};
    if (!a.gateway.empty()) body["gateway"] = a.gateway;
    if (a.no_gateway) body["gateway"] = nullptr;
    if (a.segment > 0) body["segment"] = a.segment;
    if (!a.physical.empty()) body["physical"] = a.physical;
    if (!a.tenant.empty()) body["tenant"] = a.tenant;
    Answer(inv, inv.c.Call("POST", "/api/v1/networks", &body));
  });
}

// VNI or VLAN tag as one column.
std::string Segment(const Json& n) { return n.contains("vni") ? Str(n["vni"]) : Str(n.value("vlan", Json(nullptr))); }

void AddPortCommands(CLI::App& app, Invocation& inv, NetworkArgs& a) {
  auto* port = app.add_subcommand("port", "ports: an address and a MAC on a network");
  port->require_subcommand(1);
  auto* create = port->add_subcommand("create", "create a port (the lowest free address unless --ip)");
  create->add_option("network", a.network, "network name")->required();
  create->add_option("--ip", a.ip, "this address of the subnet");
  create->add_option("--mac", a.mac, "this MAC (default: a random locally administered one)");
  create->callback([&inv, &a] {
    Json body = {{"network", a.network}};
    if (!a.ip.empty()) body["ip"] = a.ip;
    if (!a.mac.empty()) body["mac"] = a.mac;
    Answer(inv, inv.c.Call("POST", "/api/v1/ports", &body));
  });
  auto* list = port->add_subcommand("list", "list ports (tenants: their own)");
  list->add_option("--network", a.network, "only this network's");
  list->callback([&inv, &a] {
    const std::string path =
        a.network.empty() ? "/api/v1/ports" : "/api/v1/ports?network=" + api::PercentEncode(a.network);
    AnswerList(inv, inv.c.List(path, "ports"), "ports", {"ID", "NETWORK", "IP", "MAC", "GUEST"}, [](const Json& p) {
      return std::vector<std::string>{Str(p["id"]), Str(p["network"]), Str(p["ip"]), Str(p["mac"]), Str(p["guest"])};
    });
  });
  AddObjectCall(port, inv, {"show", "show a port", "id", "port id", "GET", "/api/v1/ports/"}, a.name);
  AddObjectCall(
      port, inv,
      {"delete", "delete a port (its address and MAC are free again)", "id", "port id", "DELETE", "/api/v1/ports/"},
      a.name);
}

}  // namespace

void AddNetworkCommands(CLI::App& app, Invocation& inv) {
  NetworkArgs& a = inv.Own<NetworkArgs>();
  auto* network = app.add_subcommand("network", "tenants' networks (overlay or VLAN) and their subnets");
  network->require_subcommand(1);
  AddNetworkCreate(network, inv, a);
  network->add_subcommand("list", "list networks (tenants: their own)")->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/networks", "networks"), "networks",
               {"NAME", "TENANT", "KIND", "SEGMENT", "SUBNET", "GATEWAY", "PORTS", "FREE"}, [](const Json& n) {
                 return std::vector<std::string>{Str(n["name"]),  Str(n["tenant"]),        Str(n["kind"]),
                                                 Segment(n),      Str(n["subnet"]),        Str(n["gateway"]),
                                                 Str(n["ports"]), Str(n["free_addresses"])};
               });
  });
  AddObjectCall(network, inv, {"show", "show a network", "name", "network name", "GET", "/api/v1/networks/"}, a.name);
  AddObjectCall(network, inv,
                {"delete", "delete a network that has no ports", "name", "network name", "DELETE", "/api/v1/networks/"},
                a.name);
  AddPortCommands(app, inv, a);
}

}  // namespace uw::cli
