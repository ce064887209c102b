// The storage catalogue's routes (manager/storage_service.h): images, volumes, quotas. Part of the
// REST API that manager/http_api.cc builds.
#include <functional>
#include <optional>

#include "common/id.h"
#include "manager/http_api.h"
#include "manager/internal.h"
#include "manager/views.h"

namespace uw::manager::internal {
namespace {

using api::Request;
using api::Response;

// The storage catalogue's views: a volume's backend name only for operators; a tenant sees its
// volumes and guests by their short names.
Json VolumeView(const VolumeRecord& v, const Principal& p) {
  Json j = {{"name", p.role == Role::kTenant ? v.name : v.key},
            {"tenant", v.tenant},
            {"backend", v.backend},
            {"image", v.image.empty() ? Json(nullptr) : Json(v.image)},
            {"size_gib", v.size_gib},
            {"size_bytes", v.size_gib << 30},
            {"guest", v.guest.empty() ? Json(nullptr) : Json(std::string(internal::ShownGuestName(p, v.guest)))},
            {"delete_with_guest", v.delete_with_guest},
            {"state", v.state},
            {"created", FormatRfc3339(TimePoint(std::chrono::milliseconds(v.created_ms)))}};
  if (p.role != Role::kTenant) j["backend_name"] = v.backend_name;
  return j;
}

Json StorageQuotaView(const StorageQuota& q) {
  return {{"tenant", q.tenant}, {"gib", q.gib ? Json(*q.gib) : Json(nullptr)}, {"used_gib", q.used_gib}};
}

// POST /api/v1/volumes/{name}/attach: {"guest": NAME}.
Result<std::string> ParseVolumeAttach(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"guest"}));
  UW_ASSIGN_OR_RETURN(std::string guest, v.String("guest"));
  UW_RETURN_IF_ERROR(ValidateGuestName(guest, "guest"));
  return guest;
}

}  // namespace

void BuildStorageRoutes(Manager& m, api::Router& router, const RouteContext& ctx) {
  // Images (the cluster's), volumes (tenants': their own) and quotas.
  router.Add("GET", "/api/v1/images", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "read");
    if (!p.ok()) return Response::Error(p.status());
    auto page = PageOf(req, 0);
    if (!page.ok()) return Response::Error(page.status());
    auto images = m.ListImages(*p, *page);
    if (!images.ok()) return Response::Error(images.status());
    return Response::Json(200, PageView("images", *images, ImageView));
  });
  router.Add("GET", "/api/v1/images/{name}", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "read");
    if (!p.ok()) return Response::Error(p.status());
    return AnswerAs(m.GetImage(*p, req.params.at("name")), ImageView);
  });
  router.Add("POST", "/api/v1/images", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "operator");
    if (!p.ok()) return Response::Error(p.status());
    return WithBody<ImageImport>(ctx, req, *p, ParseImageImport,
                                 [&](const ImageImport& r) { return AnswerTask(m.ImportImage(*p, r), *p, 202); });
  });
  router.Add("DELETE", "/api/v1/images/{name}", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "operator");
    if (!p.ok()) return Response::Error(p.status());
    Status s = m.DeleteImage(*p, req.params.at("name"));
    return s.ok() ? Response::Json(200, {{"deleted", req.params.at("name")}}) : Response::Error(s);
  });
  router.Add("GET", "/api/v1/volumes", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "read");
    if (!p.ok()) return Response::Error(p.status());
    auto page = PageOf(req, 0);
    if (!page.ok()) return Response::Error(page.status());
    auto volumes = m.ListVolumes(*p, *page);
    if (!volumes.ok()) return Response::Error(volumes.status());
    return Response::Json(200, PageView("volumes", *volumes, [&](const VolumeRecord& v) { return VolumeView(v, *p); }));
  });
  router.Add("GET", "/api/v1/volumes/{name}", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "read");
    if (!p.ok()) return Response::Error(p.status());
    auto v = m.GetVolume(*p, req.params.at("name"));
    return v.ok() ? Response::Json(200, VolumeView(*v, *p)) : Response::Error(v.status());
  });
  router.Add("POST", "/api/v1/volumes", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "write");
    if (!p.ok()) return Response::Error(p.status());
    return WithBody<VolumeCreate>(ctx, req, *p, ParseVolumeCreate, [&](const VolumeCreate& r) {
      auto v = m.CreateVolume(*p, r);
      return v.ok() ? Response::Json(201, VolumeView(*v, *p)) : Response::Error(v.status());
    });
  });
  router.Add("POST", "/api/v1/volumes/{name}/resize", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "write");
    if (!p.ok()) return Response::Error(p.status());
    return WithBody<int64_t>(ctx, req, *p, ParseVolumeResize, [&](const int64_t& gib) {
      auto v = m.ResizeVolume(*p, req.params.at("name"), gib);
      return v.ok() ? Response::Json(200, VolumeView(*v, *p)) : Response::Error(v.status());
    });
  });
  router.Add("POST", "/api/v1/volumes/{name}/attach", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "write");
    if (!p.ok()) return Response::Error(p.status());
    return WithBody<std::string>(ctx, req, *p, ParseVolumeAttach, [&](const std::string& guest) {
      auto v = m.AttachVolume(*p, req.params.at("name"), guest);
      return v.ok() ? Response::Json(200, VolumeView(*v, *p)) : Response::Error(v.status());
    });
  });
  router.Add("POST", "/api/v1/volumes/{name}/detach", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "write");
    if (!p.ok()) return Response::Error(p.status());
    return ctx.idempotent(req, *p, [&] {
      auto v = m.DetachVolume(*p, req.params.at("name"));
      return v.ok() ? Response::Json(200, VolumeView(*v, *p)) : Response::Error(v.status());
    });
  });
  router.Add("DELETE", "/api/v1/volumes/{name}", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "write");
    if (!p.ok()) return Response::Error(p.status());
    Status s = m.DeleteVolume(*p, req.params.at("name"));
    return s.ok() ? Response::Json(200, {{"deleted", req.params.at("name")}}) : Response::Error(s);
  });
  router.Add("GET", "/api/v1/storage", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "cluster-read");
    if (!p.ok()) return Response::Error(p.status());
    auto info = m.GetStorageInfo(*p);
    if (!info.ok()) return Response::Error(info.status());
    return Response::Json(200, {{"backend", info->backend.empty() ? Json(nullptr) : Json(info->backend)},
                                {"describe", info->describe},
                                {"capacity",
                                 {{"total_bytes", info->capacity.total_bytes},
                                  {"used_bytes", info->capacity.used_bytes},
                                  {"available_bytes", info->capacity.available_bytes}}}});
  });
  router.Add("GET", "/api/v1/storage/quotas", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "read");
    if (!p.ok()) return Response::Error(p.status());
    auto quotas = m.ListStorageQuotas(*p);
    if (!quotas.ok()) return Response::Error(quotas.status());
    Json items = Json::array();
    for (const StorageQuota& q : *quotas) items.push_back(StorageQuotaView(q));
    return Response::Json(200, {{"quotas", items}});
  });
  router.Add("PUT", "/api/v1/storage/quotas/{tenant}", [&m, ctx](const Request& req) {
    auto p = ctx.who(req, "operator");
    if (!p.ok()) return Response::Error(p.status());
    return WithBody<std::optional<int64_t>>(ctx, req, *p, ParseStorageQuota, [&](const std::optional<int64_t>& gib) {
      return AnswerAs(m.SetStorageQuota(*p, req.params.at("tenant"), gib), StorageQuotaView);
    });
  });
}

}  // namespace uw::manager::internal
