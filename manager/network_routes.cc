// The network catalogue's routes (manager/network_service.h): networks and their ports. Part of the
// REST API that manager/http_api.cc builds. Everyone with a token reads (a tenant its own);
// writers create and delete (a tenant its own, overlay networks only).
#include "manager/event_log.h"
#include "manager/http_api.h"
#include "manager/internal.h"
#include "manager/network_service.h"
#include "manager/views.h"

namespace uw::manager::internal {
namespace {

using api::Request;
using api::Response;

std::string Created(int64_t ms) { return FormatRfc3339(TimePoint(std::chrono::milliseconds(ms))); }

// A tenant sees its networks by their short names, and not the physical bridge a VLAN is on.
Json NetworkView(const NetworkRecord& n, const Principal& p) {
  Json j = {{"name", std::string(ShownGuestName(p, n.key))},
            {"tenant", n.tenant},
            {"kind", n.kind},
            {n.kind == "vlan" ? "vlan" : "vni", n.segment},
            {"subnet", n.subnet},
            {"gateway", n.gateway.empty() ? Json(nullptr) : Json(n.gateway)},
            {"ports", n.ports},
            {"free_addresses", n.free_addresses},
            {"created", Created(n.created_ms)}};
  if (p.role != Role::kTenant && n.kind == "vlan") j["physical"] = n.physical;
  return j;
}

Json PortView(const PortRecord& port, const Principal& p) {
  return {{"id", port.id},
          {"network", std::string(ShownGuestName(p, port.network))},
          {"tenant", port.tenant},
          {"mac", port.mac},
          {"ip", port.ip},
          {"guest", port.guest.empty() ? Json(nullptr) : Json(std::string(ShownGuestName(p, port.guest)))},
          {"created", Created(port.created_ms)}};
}

}  // namespace

void BuildNetworkRoutes(Manager& m, api::Router& router, const RouteContext& ctx) {
  auto service = [&m] { return NetworkService(m.store(), m.clock(), m.event_log()); };
  router.Add("GET", "/api/v1/networks", [service, ctx](const Request& req) {
    auto p = ctx.who(req, "read");
    if (!p.ok()) return Response::Error(p.status());
    auto page = PageOf(req, 0);
    if (!page.ok()) return Response::Error(page.status());
    auto networks = service().ListNetworks(*p, *page);
    if (!networks.ok()) return Response::Error(networks.status());
    return Response::Json(200,
                          PageView("networks", *networks, [&](const NetworkRecord& n) { return NetworkView(n, *p); }));
  });
  router.Add("GET", "/api/v1/networks/{name}", [service, ctx](const Request& req) {
    auto p = ctx.who(req, "read");
    if (!p.ok()) return Response::Error(p.status());
    auto n = service().GetNetwork(*p, req.params.at("name"));
    return n.ok() ? Response::Json(200, NetworkView(*n, *p)) : Response::Error(n.status());
  });
  router.Add("POST", "/api/v1/networks", [service, ctx](const Request& req) {
    auto p = ctx.who(req, "write");
    if (!p.ok()) return Response::Error(p.status());
    return WithBody<NetworkCreate>(ctx, req, *p, ParseNetworkCreate, [&](const NetworkCreate& r) {
      auto n = service().CreateNetwork(*p, r);
      return n.ok() ? Response::Json(201, NetworkView(*n, *p)) : Response::Error(n.status());
    });
  });
  router.Add("DELETE", "/api/v1/networks/{name}", [service, ctx](const Request& req) {
    auto p = ctx.who(req, "write");
    if (!p.ok()) return Response::Error(p.status());
    Status s = service().DeleteNetwork(*p, req.params.at("name"));
    return s.ok() ? Response::Json(200, {{"deleted", req.params.at("name")}}) : Response::Error(s);
  });
  router.Add("GET", "/api/v1/ports", [service, ctx](const Request& req) {
    auto p = ctx.who(req, "read");
    if (!p.ok()) return Response::Error(p.status());
    auto page = PageOf(req, 0);
    if (!page.ok()) return Response::Error(page.status());
    std::string network;
    if (auto it = req.query.find("network"); it != req.query.end()) network = it->second;
    auto ports = service().ListPorts(*p, network, *page);
    if (!ports.ok()) return Response::Error(ports.status());
    return Response::Json(200, PageView("ports", *ports, [&](const PortRecord& port) { return PortView(port, *p); }));
  });
  router.Add("GET", "/api/v1/ports/{id}", [service, ctx](const Request& req) {
    auto p = ctx.who(req, "read");
    if (!p.ok()) return Response::Error(p.status());
    auto port = service().GetPort(*p, req.params.at("id"));
    return port.ok() ? Response::Json(200, PortView(*port, *p)) : Response::Error(port.status());
  });
  router.Add("POST", "/api/v1/ports", [service, ctx](const Request& req) {
    auto p = ctx.who(req, "write");
    if (!p.ok()) return Response::Error(p.status());
    return WithBody<PortCreate>(ctx, req, *p, ParsePortCreate, [&](const PortCreate& r) {
      auto port = service().CreatePort(*p, r);
      return port.ok() ? Response::Json(201, PortView(*port, *p)) : Response::Error(port.status());
    });
  });
  router.Add("DELETE", "/api/v1/ports/{id}", [service, ctx](const Request& req) {
    auto p = ctx.who(req, "write");
    if (!p.ok()) return Response::Error(p.status());
    Status s = service().DeletePort(*p, req.params.at("id"));
    return s.ok() ? Response::Json(200, {{"deleted", req.params.at("id")}}) : Response::Error(s);
  });
}

}  // namespace uw::manager::internal
