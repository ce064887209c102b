// uw-agent: the per-host daemon. Mechanism only: it runs what it is told through libvirt, reports
// usage and lifecycle events, and keeps no state of its own beyond what libvirt holds (crash-only:
// a restarted agent adopts the guests that kept running).
//
//   HTTP (api::HttpServer) -> Agent handlers (parse, render) -> AgentService (vmm/agent_service.h)
//     -> Hypervisor (qemu:// for vm kinds, lxc:// for containers)
//   sampler thread: SampleAll every interval -> UsageTracker -> latest usage (served by /stats)
//   libvirt event thread -> event log (served by /events, long-poll with a cursor)
#pragma once

#include <memory>

#include "api/http.h"
#include "common/clock.h"
#include "vmm/agent_config.h"
#include "vmm/agent_service.h"
#include "vmm/hypervisor.h"

namespace uw::vmm {

class Agent {
 public:
  // `vm` serves kvm/qemu guests; `ct` containers (may be null). Both must outlive nothing: the
  // agent owns them.
  Agent(AgentConfig config, std::unique_ptr<Hypervisor> vm, std::unique_ptr<Hypervisor> ct, KvmSupport kvm,
        Clock& clock = Clock::Real());
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Adopts existing guests, starts sampling and (when `serve_http`) the HTTP server.
  Status Start(bool serve_http = true);
  // Stops serving and sampling. Guests keep running.
  void Stop();
  int port() const;
  const api::Router& router() const { return router_; }

  // Records a lifecycle event (called from libvirt's event thread, and by the agent itself).
  // A "crashed" event also records the crash (see the guest JSON's `crash`).
  void RecordEvent(LifecycleEvent e) { service_.RecordEvent(std::move(e)); }
  // Takes one sample of every guest now (the sampler thread calls this).
  Status SampleNow() { return service_.SampleNow(); }
  AgentService& service() { return service_; }

 private:
  void BuildRoutes();
  // Route handlers: each parses its request, calls the service and renders the answer.
  api::Response HostInfoResponse();
  // POST /api/v1/host/shutdown: refuses while a guest is not shut off; else runs shutdown_command.
  api::Response ShutdownHost();
  api::Response ListGuests();
  api::Response CreateGuest(const api::Request& req);
  api::Response GetGuest(const api::Request& req);
  api::Response StartGuest(const api::Request& req);
  api::Response StopGuest(const api::Request& req);
  api::Response PauseGuest(const api::Request& req, bool pause);
  api::Response ResizeGuest(const api::Request& req);
  api::Response DeleteGuest(const api::Request& req);
  api::Response AttachDisk(const api::Request& req);
  api::Response ResizeDisk(const api::Request& req);
  api::Response ImageState(const api::Request& req);
  api::Response PutImagePart(const api::Request& req);
  api::Response ReadLocalDisk(const api::Request& req);
  api::Response PutIncomingDisk(const api::Request& req);
  api::Response DetachDisk(const api::Request& req);
  api::Response ExecInGuest(const api::Request& req);
  api::Response GuestConsole(const api::Request& req);
  api::Response Stats(const api::Request& req);
  api::Response Events(const api::Request& req);
  api::Response PrepareIncoming(const api::Request& req);
  api::Response AbandonIncoming(const api::Request& req);
  api::Response MigrateGuest(const api::Request& req);
  api::Response MigrationStatus(const api::Request& req);
  api::Response ControlMigration(const api::Request& req);

  const AgentConfig config_;
  AgentService service_;
  api::Router router_;
  std::unique_ptr<api::HttpServer> server_;
};

}  // namespace uw::vmm
