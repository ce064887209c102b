// The manager's REST API (/api/v1, described by api/openapi.yaml): handlers parse requests into
// typed commands on Manager and map every Status to HTTP in one place (api::Response::Error).
//
//   request -> Router (bearer token -> Principal, role check) -> handler -> Manager -> JSON answer
//
// Auth: every route needs a bearer API token except /healthz, POST /api/v1/hosts/join (the cluster
// join token travels in the body's Authorization header instead) and host heartbeats (host token).
// POSTs honour `Idempotency-Key`: a repeated key from the same token with the same method, path
// and body gets the first answer again (for 24 hours); with a different request it is refused (400).
#pragma once

#include <functional>
#include <string_view>

#include "api/http.h"
#include "manager/manager.h"

namespace uw::manager {

// Registers every route on `router` (and its authenticator). `manager` must outlive the router.
void BuildRoutes(Manager& manager, api::Router& router);

namespace internal {
// A typed result through its JSON view (views.h): `ok_status` with the view, or the error.
template <class T, class View>
api::Response AnswerAs(const Result<T>& r, View view, int ok_status = 200) {
  if (!r.ok()) return api::Response::Error(r.status());
  return api::Response::Json(ok_status, view(*r));
}

// What route groups built outside http_api.cc use of its Api: the caller and its role check
// (`need` as in Api::Who), and Idempotency-Key handling for a POST or PUT.
struct RouteContext {
  std::function<Result<Principal>(const api::Request& req, std::string_view need)> who;
  std::function<api::Response(const api::Request& req, const Principal& p, const std::function<api::Response()>& fn)>
      idempotent;
};
// A JSON body parsed by `parse`, then `fn` on it, under Idempotency-Key handling.
template <class Parsed>
api::Response WithBody(const RouteContext& ctx, const api::Request& req, const Principal& p,
                       Result<Parsed> (*parse)(const Json&), const std::function<api::Response(const Parsed&)>& fn) {
  return ctx.idempotent(req, p, [&] {
    auto body = req.JsonBody();
    if (!body.ok()) return api::Response::Error(body.status());
    auto parsed = parse(*body);
    if (!parsed.ok()) return api::Response::Error(parsed.status());
    return fn(*parsed);
  });
}
// CSV or JSON for a route that serves both: format=csv|json, else Accept: text/csv.
// CheckFormat is kInvalidArgument for another format=.
bool WantsCsv(const api::Request& req);
Status CheckFormat(const api::Request& req);
// The storage catalogue's routes (manager/storage_routes.cc).
void BuildStorageRoutes(Manager& m, api::Router& router, const RouteContext& ctx);
// Networks and their ports (manager/network_routes.cc).
void BuildNetworkRoutes(Manager& m, api::Router& router, const RouteContext& ctx);
// Metering's usage routes (manager/usage_routes.cc).
void BuildUsageRoutes(Manager& m, api::Router& router, const RouteContext& ctx);
// Billing's routes: price plans, tenants' plans, invoices (manager/billing_routes.cc).
void BuildBillingRoutes(Manager& m, api::Router& router, const RouteContext& ctx);
// A task the request started (202 with its Location) or read, as `p` sees it.
api::Response AnswerTask(const Result<Task>& r, const Principal& p, int ok_status);
// ?limit=N&after=KEY (see PageQuery); without limit, `default_limit` items (0: all of them).
Result<PageQuery> PageOf(const api::Request& req, int64_t default_limit);

}  // namespace internal

}  // namespace uw::manager
