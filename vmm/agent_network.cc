// The host's integration bridge (netvirt/bridge.h), kept by the agent: made at its start, repaired
// when an operator or a restarted ovs-vswitchd changed it, and reported in GET /api/v1/host.
#include <spdlog/spdlog.h>

#include "netvirt/bridge.h"
#include "vmm/agent_service.h"

namespace uw::vmm {
namespace {

constexpr auto kOvsdbTimeout = std::chrono::seconds(2);
constexpr auto kRecheck = std::chrono::seconds(30);
constexpr auto kRetry = std::chrono::seconds(5);

}  // namespace

void AgentService::KeepNetwork() {
  if (!config_.network) return;
  const AgentConfig::Network& net = *config_.network;
  {
    std::lock_guard l(network_mu_);
    if (clock_.Monotonic() < network_due_) return;
  }
  Status s = Status::Ok();
  if (!ovsdb_ || !ovsdb_->connected()) {
    auto c = netvirt::OvsdbClient::Connect(net.ovsdb, kOvsdbTimeout);
    if (c.ok()) {
      ovsdb_ = std::move(*c);
    } else {
      ovsdb_.reset();
      s = c.status();
    }
  }
  if (s.ok()) {
    s = netvirt::EnsureBridge(*ovsdb_, {.name = net.bridge, .datapath_type = net.datapath_type, .fail_mode = "secure"},
                              kOvsdbTimeout);
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

}  // namespace uw::vmm
