// Metering's routes (manager/metering_service.h): usage records as JSON or CSV, and the check that
// they reconcile. Part of the REST API that manager/http_api.cc builds.
#include "common/utc_time.h"
#include "manager/http_api.h"
#include "manager/metering_service.h"
#include "manager/views.h"

namespace uw::manager::internal {
namespace {

using api::Request;
using api::Response;

// A query parameter that is a time: epoch milliseconds or RFC 3339 in UTC (2026-12-06T18:00:00Z).
Result<int64_t> TimeParam(const Request& req, const char* key, int64_t fallback) {
  auto it = req.query.find(key);
  if (it == req.query.end() || it->second.empty()) return fallback;
  return ParseUtcMillis(it->second, std::string("query parameter ") + key);
}

Result<UsageQuery> UsageQueryOf(const Request& req, int64_t now_ms) {
  UsageQuery q;
  std::string span = "hour";
  if (auto it = req.query.find("span"); it != req.query.end()) span = it->second;
  if (span == "minute") {
    q.span_ms = metering::kMinuteMs;
  } else if (span == "hour") {
    q.span_ms = metering::kHourMs;
  } else if (span == "day") {
    q.span_ms = metering::kDayMs;
  } else {
    return InvalidArgumentError("query parameter span: expected minute, hour or day");
  }
  UW_ASSIGN_OR_RETURN(q.to_ms, TimeParam(req, "to", now_ms + q.span_ms));
  // Without `from`: the last hour of minutes, day of hours or 30 days of days.
  const int64_t window = q.span_ms == metering::kMinuteMs ? metering::kHourMs
                         : q.span_ms == metering::kHourMs ? metering::kDayMs
                                                          : 30 * metering::kDayMs;
  UW_ASSIGN_OR_RETURN(q.from_ms, TimeParam(req, "from", q.to_ms - window));
  for (const char* key : {"tenant", "guest"}) {
    auto it = req.query.find(key);
    if (it == req.query.end()) continue;
    if (it->second.size() > 256) return InvalidArgumentError(std::string("query parameter ") + key + ": too long");
    (std::string_view(key) == "tenant" ? q.tenant : q.guest) = it->second;
  }
  UW_ASSIGN_OR_RETURN(q.page, PageOf(req, 1000));
  return q;
}

}  // namespace

bool WantsCsv(const Request& req) {
  auto it = req.query.find("format");
  if (it != req.query.end()) return it->second == "csv";
  return req.Header("accept").find("text/csv") != std::string::npos;
}

Status CheckFormat(const Request& req) {
  if (auto f = req.query.find("format"); f != req.query.end() && f->second != "csv" && f->second != "json") {
    return InvalidArgumentError("query parameter format: expected json or csv");
  }
  return Status::Ok();
}

void BuildUsageRoutes(Manager& m, api::Router& router, const RouteContext& ctx) {
  // Usage records: billing readers, operators and read-only tokens read every tenant's, a tenant
  // its own. JSON pages ({"usage": [...], "next", "total"}) or CSV (format=csv or Accept: text/csv;
  // the next page's `after` in the X-Next-After header).
  router.Add("GET", "/api/v1/usage", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "billing");
    if (!p.ok()) return Response::Error(p.status());
    if (Status s = CheckFormat(req); !s.ok()) return Response::Error(s);
    auto q = UsageQueryOf(req, ToUnixMillis(m.clock().Now()));
    if (!q.ok()) return Response::Error(q.status());
    auto page = m.metering().List(*p, *q);
    if (!page.ok()) return Response::Error(page.status());
    if (WantsCsv(req)) {
      Response out;
      out.content_type = "text/csv; charset=utf-8";
      out.body = UsageCsv(page->items, *p);
      if (page->next) out.headers["X-Next-After"] = *page->next;
      if (page->total >= 0) out.headers["X-Total-Count"] = std::to_string(page->total);
      return out;
    }
    Json j = PageView("usage", *page, [&](const metering::Record& r) { return UsageRecordJson(r, *p); });
    if (page->total < 0) j["total"] = nullptr;  // counted on the first page only
    return Response::Json(200, j);
  });
  // The reconciliation check over a period (default: the last day).
  router.Add("GET", "/api/v1/usage/verify", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "billing");
    if (!p.ok()) return Response::Error(p.status());
    const int64_t now = ToUnixMillis(m.clock().Now());
    auto to = TimeParam(req, "to", now);
    if (!to.ok()) return Response::Error(to.status());
    auto from = TimeParam(req, "from", *to - metering::kDayMs);
    if (!from.ok()) return Response::Error(from.status());
    auto r = m.metering().Verify(*p, *from, *to);
    return r.ok() ? Response::Json(200, *r) : Response::Error(r.status());
  });
}

}  // namespace uw::manager::internal
