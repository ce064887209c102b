// Billing's routes (manager/billing_service.h): price plans, the plan each tenant is billed by,
// invoices with their credits and adjustments. Part of the REST API that manager/http_api.cc builds.
// Operators change plans and issue invoices; billing readers, read-only tokens and operators read
// them all; a tenant reads its own plan and invoices (another tenant's invoice is not found).
#include "manager/billing_service.h"
#include "manager/http_api.h"
#include "manager/views.h"

namespace uw::manager::internal {
namespace {

using api::Request;
using api::Response;

Response Csv(std::string body) {
  Response out;
  out.content_type = "text/csv; charset=utf-8";
  out.body = std::move(body);
  return out;
}

void BuildPlanRoutes(Manager& m, api::Router& router, const RouteContext& ctx) {
  router.Add("GET", "/api/v1/price-plans", [&m, ctx](const Request& req) {
    BillingService billing(m.store(), m.clock(), m.config());
    auto p = ctx.who(req, "billing");
    if (!p.ok()) return Response::Error(p.status());
    auto plans = billing.ListPlans(*p);
    if (!plans.ok()) return Response::Error(plans.status());
    Json items = Json::array();
    for (const PlanRecord& r : *plans) items.push_back(PlanRecordJson(r));
    return Response::Json(200, {{"price_plans", items}});
  });
  router.Add("GET", "/api/v1/price-plans/{name}", [&m, ctx](const Request& req) {
    BillingService billing(m.store(), m.clock(), m.config());
    auto p = ctx.who(req, "billing");
    if (!p.ok()) return Response::Error(p.status());
    return AnswerAs(billing.GetPlan(*p, req.params.at("name")), PlanRecordJson);
  });
  // Creates the plan or replaces its prices; invoices already issued keep the prices they had.
  router.Add("PUT", "/api/v1/price-plans/{name}", [&m, ctx](const Request& req) {
    BillingService billing(m.store(), m.clock(), m.config());
    auto p = ctx.who(req, "operator");
    if (!p.ok()) return Response::Error(p.status());
    return ctx.idempotent(req, *p, [&] {
      auto body = req.JsonBody();
      if (!body.ok()) return Response::Error(body.status());
      auto plan = ParsePricePlan(*body, req.params.at("name"));
      if (!plan.ok()) return Response::Error(plan.status());
      return AnswerAs(billing.PutPlan(*p, *plan), PlanRecordJson);
    });
  });
  router.Add("DELETE", "/api/v1/price-plans/{name}", [&m, ctx](const Request& req) {
    BillingService billing(m.store(), m.clock(), m.config());
    auto p = ctx.who(req, "operator");
    if (!p.ok()) return Response::Error(p.status());
    Status s = billing.DeletePlan(*p, req.params.at("name"));
    return s.ok() ? Response::Json(200, {{"deleted", req.params.at("name")}}) : Response::Error(s);
  });

  router.Add("GET", "/api/v1/tenant-plans", [&m, ctx](const Request& req) {
    BillingService billing(m.store(), m.clock(), m.config());
    auto p = ctx.who(req, "billing");
    if (!p.ok()) return Response::Error(p.status());
    auto pairs = billing.ListTenantPlans(*p);
    if (!pairs.ok()) return Response::Error(pairs.status());
    Json items = Json::array();
    for (const auto& [tenant, plan] : *pairs) items.push_back({{"tenant", tenant}, {"plan", plan}});
    return Response::Json(200, {{"tenant_plans", items}});
  });
  // {"plan": NAME} bills the tenant by that plan from now on; {"plan": null} stops billing it.
  router.Add("PUT", "/api/v1/tenant-plans/{tenant}", [&m, ctx](const Request& req) {
    BillingService billing(m.store(), m.clock(), m.config());
    auto p = ctx.who(req, "operator");
    if (!p.ok()) return Response::Error(p.status());
    auto body = req.JsonBody();
    if (!body.ok()) return Response::Error(body.status());
    auto v = JsonView::Of(*body, "");
    if (!v.ok()) return Response::Error(v.status());
    if (Status s = v->RejectUnknown({"plan"}); !s.ok()) return Response::Error(s);
    if (!body->contains("plan")) return Response::Error(v->FieldError("plan", "required (a plan's name, or null)"));
    std::string plan;
    if (!(*body)["plan"].is_null()) {
      auto named = v->String("plan");
      if (!named.ok()) return Response::Error(named.status());
      plan = *named;
      if (plan.empty()) return Response::Error(v->FieldError("plan", "a plan's name, or null"));
    }
    const std::string& tenant = req.params.at("tenant");
    Status s = billing.SetTenantPlan(*p, tenant, plan);
    if (!s.ok()) return Response::Error(s);
    return Response::Json(200, {{"tenant", tenant}, {"plan", plan.empty() ? Json(nullptr) : Json(plan)}});
  });
}

void BuildInvoiceRoutes(Manager& m, api::Router& router, const RouteContext& ctx) {
  // Issues an invoice for {"tenant", "from", "to"} (whole hours rolled up, or whole minutes
  // recorded; overlapping none).
  router.Add("POST", "/api/v1/invoices", [&m, ctx](const Request& req) {
    BillingService billing(m.store(), m.clock(), m.config());
    auto p = ctx.who(req, "operator");
    if (!p.ok()) return Response::Error(p.status());
    return WithBody<InvoiceRequest>(ctx, req, *p, ParseInvoiceRequest, [&](const InvoiceRequest& r) {
      auto inv = billing.CreateInvoice(*p, r);
      if (!inv.ok()) return Response::Error(inv.status());
      Response out = Response::Json(201, InvoiceJson(*inv));
      out.headers["Location"] = "/api/v1/invoices/" + inv->id;
      return out;
    });
  });
  // Invoices by id (the order they were issued in), ?tenant=, paged; CSV: their lines, one after another.
  router.Add("GET", "/api/v1/invoices", [&m, ctx](const Request& req) {
    BillingService billing(m.store(), m.clock(), m.config());
    auto p = ctx.who(req, "billing");
    if (!p.ok()) return Response::Error(p.status());
    if (Status s = CheckFormat(req); !s.ok()) return Response::Error(s);
    std::string tenant;
    if (auto it = req.query.find("tenant"); it != req.query.end()) tenant = it->second;
    if (tenant.size() > 256) return Response::Error(InvalidArgumentError("query parameter tenant: too long"));
    auto page = PageOf(req, 100);
    if (!page.ok()) return Response::Error(page.status());
    auto invoices = billing.ListInvoices(*p, tenant, *page);
    if (!invoices.ok()) return Response::Error(invoices.status());
    if (WantsCsv(req)) {
      Response out = Csv(InvoiceCsv(invoices->items));
      if (invoices->next) out.headers["X-Next-After"] = *invoices->next;
      out.headers["X-Total-Count"] = std::to_string(invoices->total);
      return out;
    }
    return Response::Json(200, PageView("invoices", *invoices, InvoiceJson));
  });
  router.Add("GET", "/api/v1/invoices/{id}", [&m, ctx](const Request& req) {
    BillingService billing(m.store(), m.clock(), m.config());
    auto p = ctx.who(req, "billing");
    if (!p.ok()) return Response::Error(p.status());
    if (Status s = CheckFormat(req); !s.ok()) return Response::Error(s);
    auto inv = billing.GetInvoice(*p, req.params.at("id"));
    if (!inv.ok()) return Response::Error(inv.status());
    return WantsCsv(req) ? Csv(InvoiceCsv({*inv})) : Response::Json(200, InvoiceJson(*inv));
  });
  // A credit or an adjustment: a record of its own; the invoice's lines and total stay as issued.
  router.Add("POST", "/api/v1/invoices/{id}/adjustments", [&m, ctx](const Request& req) {
    BillingService billing(m.store(), m.clock(), m.config());
    auto p = ctx.who(req, "operator");
    if (!p.ok()) return Response::Error(p.status());
    return WithBody<AdjustmentRequest>(ctx, req, *p, ParseAdjustment, [&](const AdjustmentRequest& a) {
      return AnswerAs(billing.Adjust(*p, req.params.at("id"), a), InvoiceJson, 201);
    });
  });
}

}  // namespace

void BuildBillingRoutes(Manager& m, api::Router& router, const RouteContext& ctx) {
  // Each request makes its BillingService (it keeps no state of its own: the store holds it all);
  // routes are built before the manager has started and opened its store.
  BuildPlanRoutes(m, router, ctx);
  BuildInvoiceRoutes(m, router, ctx);
}

}  // namespace uw::manager::internal
