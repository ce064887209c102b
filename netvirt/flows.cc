#include "netvirt/flows.h"

#include <chrono>
#include <sstream>

#include "common/command.h"
#include "netvirt/ipam.h"

namespace uw::netvirt {
namespace {

constexpr auto kOfctlTimeout = std::chrono::seconds(10);

Status Ofctl(std::vector<std::string> args, std::string* out = nullptr) {
  args.insert(args.begin(), "ovs-ofctl");
  auto r = RunCommand(args, {}, kOfctlTimeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    std::string err = r->err.empty() ? r->out : r->err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return UnavailableError("ovs-ofctl " + args[1] + " " + args[2] + ": " + err);
  }
  if (out) *out = r->out;
  return Status::Ok();
}

}  // namespace

Result<std::vector<std::string>> PortFlows(const PortFlowSpec& port) {
  if (port.ofport < 1) return InvalidArgumentError("ofport " + std::to_string(port.ofport) + ": expected 1 or more");
  auto mac = ParseMac(port.mac);
  if (!mac.ok()) return InvalidArgumentError("mac '" + port.mac + "': expected aa:bb:cc:dd:ee:ff");
  if (!ParseIpv4(port.address).ok()) return InvalidArgumentError("address '" + port.address + "': expected IPv4");
  const std::string in = "table=0,in_port=" + std::to_string(port.ofport) + ",";
  return std::vector<std::string>{
      in + "priority=100,dl_src=" + *mac + ",ip,nw_src=" + port.address + ",actions=NORMAL",
      in + "priority=100,dl_src=" + *mac + ",arp,arp_spa=" + port.address + ",arp_sha=" + *mac + ",actions=NORMAL",
      in + "priority=90,actions=drop",
  };
}

std::string BaseFlow() { return "table=0,priority=0,actions=NORMAL"; }

Status AddFlows(const std::string& bridge, const std::vector<std::string>& flows) {
  for (const auto& f : flows) UW_RETURN_IF_ERROR(Ofctl({"add-flow", bridge, f}));
  return Status::Ok();
}

Status DeletePortFlows(const std::string& bridge, int64_t ofport) {
  if (ofport < 1) return Status::Ok();
  return Ofctl({"del-flows", bridge, "in_port=" + std::to_string(ofport)});
}

Result<std::vector<std::string>> DumpFlows(const std::string& bridge) {
  std::string out;
  UW_RETURN_IF_ERROR(Ofctl({"dump-flows", bridge, "--no-stats", "--no-names"}, &out));
  std::vector<std::string> flows;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    const size_t start = line.find_first_not_of(' ');
    if (start == std::string::npos || line.rfind("NXST_FLOW", 0) == 0 || line.rfind("OFPST_FLOW", 0) == 0) continue;
    flows.push_back(line.substr(start));
  }
  return flows;
}

}  // namespace uw::netvirt
