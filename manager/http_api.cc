#include "manager/http_api.h"

#include <spdlog/spdlog.h>

#include "manager/idempotency.h"
#include "manager/views.h"

namespace uw::manager {
namespace {

using internal::AnswerTask;

using api::Request;
using api::Response;

using internal::AnswerAs;

Result<int64_t> QueryInt(const Request& req, const std::string& key, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = req.query.find(key);
  if (it == req.query.end() || it->second.empty()) return fallback;
  try {
    size_t used = 0;
    int64_t v = std::stoll(it->second, &used);
    if (used != it->second.size() || v < lo || v > hi) throw std::out_of_range(key);
    return v;
  } catch (...) {
    return InvalidArgumentError("query parameter " + key + ": expected an integer in " + std::to_string(lo) + ".." +
                                std::to_string(hi) + ", got '" + it->second + "'");
  }
}

Result<PageQuery> QueryPage(const Request& req, int64_t default_limit) {
  PageQuery page;
  UW_ASSIGN_OR_RETURN(page.limit, QueryInt(req, "limit", default_limit, 1, kMaxPageLimit));
  if (auto it = req.query.find("after"); it != req.query.end()) {
    if (it->second.size() > 512) return InvalidArgumentError("query parameter after: at most 512 characters");
    page.after = it->second;
  }
  return page;
}

// GET /api/v1/drs/config's view of a DrsConfig.
Json DrsConfigJson(const DrsConfig& c) {
  return {{"automation", c.automation},
          {"threshold", c.threshold},
          {"max_moves", c.max_moves ? Json(*c.max_moves) : Json(nullptr)},
          {"policy", c.policy},
          {"allow_cold_moves", c.allow_cold_moves},
          {"min_move_interval_s", c.min_move_interval_s},
          {"interval_ms", c.interval_ms},
          {"dpm", DpmConfigJson(c.dpm)},
          {"ha", HaConfigJson(c.ha)}};
}

Response AnswerDrs(const Result<DrsConfig>& r) {
  return r.ok() ? Response::Json(200, DrsConfigJson(*r)) : Response::Error(r.status());
}

class Api {
 public:
  explicit Api(Manager& m) : m_(m), idempotency_(m.clock()) {}

  // Resolves the caller and checks the role; `need`: "billing" (usage, price plans and invoices:
  // any role; tenants see their own), "read" (any role but billing-reader; tenants see their own),
  // "cluster-read" (admin, operator, read-only), "write" (admin, operator, tenant), "operator"
  // (admin/operator), "admin". A billing-reader reads usage and invoices and nothing else.
  // manager/authz_test.cc's route table says exactly who may do what.
  Result<Principal> Who(const Request& req, std::string_view need) {
    UW_ASSIGN_OR_RETURN(Principal p, m_.Authenticate(req.BearerToken()));
    auto deny = [&](std::string_view what) {
      return PermissionDeniedError(std::string(req.method) + " " + req.path + " needs " + std::string(what) +
                                   " (this token's role is " + std::string(RoleName(p.role)) + ")");
    };
    if (need == "admin" && p.role != Role::kAdmin) return deny("an admin token");
    if (need == "operator" && !p.IsOperator()) return deny("an admin or operator token");
    if (need == "cluster-read" && (p.role == Role::kTenant || p.role == Role::kBillingReader)) {
      return deny("an admin, operator or read-only token");
    }
    if (need == "read" && p.role == Role::kBillingReader) {
      return deny("a token other than billing-reader (which reads usage, price plans and invoices only)");
    }
    if (need == "write" && !p.CanWrite()) return deny("a token that may change things");
    return p;
  }

  // Runs `fn` with Idempotency-Key handling for POSTs.
  Response Idempotent(const Request& req, const Principal& p, const std::function<Response()>& fn) {
    std::string key = req.Header("idempotency-key");
    if (key.empty()) return fn();
    if (key.size() > 255) return Response::Error(InvalidArgumentError("Idempotency-Key: at most 255 characters"));
    std::lock_guard l(idempotency_.mutex());
    std::string hash = Sha256Hex(req.body);
    auto prior = idempotency_.Find(m_.store(), p.token_id, key);
    if (!prior.ok()) return Response::Error(prior.status());
    if (*prior) {
      const auto& s = **prior;
      if (s.method != req.method || s.path != req.path || s.body_hash != hash) {
        return Response::Error(InvalidArgumentError("Idempotency-Key '" + key + "' was used for a different request (" +
                                                    s.method + " " + s.path + "); use a new key"));
      }
      Response r;
      r.status = s.status;
      r.body = s.body;
      r.headers["Idempotent-Replayed"] = "true";
      return r;
    }
    Response r = fn();
    if (r.status < 500 && r.status != 429 && !r.stream) {  // a rate-limited call may be tried again
      internal::IdempotencyLog::Entry s{r.status, r.body, hash, req.method, req.path};
      if (Status st = idempotency_.Save(m_.store(), p.token_id, key, s); !st.ok())
        spdlog::warn("idempotency record: {}", st.ToString());
    }
    return r;
  }

  // The heartbeat's own body limit (a host's guest list), larger than the server's.
  api::RouteOptions HeartbeatRoute() const {
    api::RouteOptions o;
    o.max_body_bytes = std::max(m_.config().heartbeat_max_body_bytes, m_.config().max_body_bytes);
    return o;
  }

  void Build(api::Router& router) {
    router.SetAuthenticator([this](Request& req) -> Status {
      UW_ASSIGN_OR_RETURN(Principal p, m_.Authenticate(req.BearerToken()));
      req.principal = p.token_id;
      return Status::Ok();
    });
    router.AddPublic("GET", "/healthz", [](const Request&) { return Response::Json(200, {{"status", "ok"}}); });

    BuildHostRoutes(router);
    BuildGuestRoutes(router);
    BuildTaskRoutes(router);
    BuildEventRoutes(router);
    BuildTokenRoutes(router);
    BuildPoolAndRuleRoutes(router);
    BuildDrsRoutes(router);
    BuildMigrationRoutes(router);
    BuildLeaseRoutes(router);
    BuildPowerRoutes(router);
    const internal::RouteContext ctx{
        .who = [this](const Request& req, std::string_view need) { return Who(req, need); },
        .idempotent = [this](const Request& req, const Principal& p,
                             const std::function<Response()>& fn) { return Idempotent(req, p, fn); }};
    internal::BuildStorageRoutes(m_, router, ctx);
    internal::BuildNetworkRoutes(m_, router, ctx);
    internal::BuildUsageRoutes(m_, router, ctx);
    internal::BuildBillingRoutes(m_, router, ctx);
  }

  void BuildHostRoutes(api::Router& router) {
    // Hosts: join and heartbeat authenticate with the join token / host token themselves.
    router.AddPublic("POST", "/api/v1/hosts/join", [this](const Request& req) {
      auto body = req.JsonBody();
      if (!body.ok()) return Response::Error(body.status());
      auto join = ParseHostJoin(*body);
      if (!join.ok()) return Response::Error(join.status());
      return AnswerAs(m_.JoinHost(req.BearerToken(), *join), HostJoinedJson, 201);
    });
    router.AddPublic(
        "POST", "/api/v1/hosts/{name}/heartbeat",
        [this](const Request& req) {
          auto body = req.JsonBody();
          if (!body.ok()) return Response::Error(body.status());
          return AnswerAs(m_.Heartbeat(req.params.at("name"), req.BearerToken(), *body), HeartbeatAckJson);
        },
        HeartbeatRoute());
    router.Add("GET", "/api/v1/hosts", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      auto page = QueryPage(req, 0);
      if (!page.ok()) return Response::Error(page.status());
      return AnswerAs(m_.ListHosts(*page), [](const Page<Host>& hosts) { return PageView("hosts", hosts, HostJson); });
    });
    router.Add("GET", "/api/v1/hosts/{name}", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      return AnswerAs(m_.GetHost(req.params.at("name")), HostDetailJson);
    });
    router.Add("PUT", "/api/v1/hosts/{name}/groups", [this](const Request& req) {
      if (auto p = Who(req, "operator"); !p.ok()) return Response::Error(p.status());
      auto body = req.JsonBody();
      if (!body.ok()) return Response::Error(body.status());
      auto groups = ParseHostGroups(*body);
      if (!groups.ok()) return Response::Error(groups.status());
      return AnswerAs(m_.SetHostGroups(req.params.at("name"), *groups), HostDetailJson);
    });
    for (bool on : {true, false}) {
      router.Add(on ? "POST" : "DELETE", "/api/v1/hosts/{name}/maintenance", [this, on](const Request& req) {
        auto p = Who(req, "operator");
        if (!p.ok()) return Response::Error(p.status());
        return Idempotent(req, *p,
                          [&] { return AnswerAs(m_.SetMaintenance(req.params.at("name"), on), HostDetailJson); });
      });
    }
  }

  void BuildPowerRoutes(api::Router& router) {
    // Power drivers hold BMC credentials: only admins set, read or remove them; the views never
    // carry the secrets.
    router.Add("PUT", "/api/v1/hosts/{name}/power-driver", [this](const Request& req) {
      if (auto p = Who(req, "admin"); !p.ok()) return Response::Error(p.status());
      auto body = req.JsonBody();
      if (!body.ok()) return Response::Error(body.status());
      return AnswerAs(m_.SetPowerDriver(req.params.at("name"), *body),
                      [](const HostPower& hp) { return HostPowerJson(hp, false); });
    });
    router.Add("DELETE", "/api/v1/hosts/{name}/power-driver", [this](const Request& req) {
      if (auto p = Who(req, "admin"); !p.ok()) return Response::Error(p.status());
      Status s = m_.DeletePowerDriver(req.params.at("name"));
      return s.ok() ? Response::Json(200, {{"deleted", req.params.at("name")}}) : Response::Error(s);
    });
    router.Add("GET", "/api/v1/hosts/{name}/power", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      return AnswerAs(m_.GetHostPower(req.params.at("name"), true),
                      [](const HostPower& hp) { return HostPowerJson(hp, true); });
    });
    router.Add("POST", "/api/v1/hosts/{name}/power", [this](const Request& req) {
      auto p = Who(req, "operator");
      if (!p.ok()) return Response::Error(p.status());
      auto body = req.JsonBody();
      if (!body.ok()) return Response::Error(body.status());
      auto action = ParsePowerAction(*body);
      if (!action.ok()) return Response::Error(action.status());
      return Idempotent(req, *p, [&] {
        return AnswerAs(m_.PowerHost(req.params.at("name"), *action),
                        [](const HostPower& hp) { return HostPowerJson(hp, false); });
      });
    });
  }

  // A guest route's arguments are checked after the guest is found: a caller who may not see the
  // guest gets its 404, and learns nothing from the arguments' errors.
  Response GuestThenError(const Principal& p, const std::string& name, const Status& invalid) {
    if (auto g = m_.GetGuest(p, name); !g.ok()) return Response::Error(g.status());
    return Response::Error(invalid);
  }

  void BuildGuestRoutes(api::Router& router) {
    // Guests.
    router.Add("GET", "/api/v1/guests", [this](const Request& req) {
      auto p = Who(req, "read");
      if (!p.ok()) return Response::Error(p.status());
      auto page = QueryPage(req, 0);
      if (!page.ok()) return Response::Error(page.status());
      auto body = m_.ListGuestsBody(*p, *page);
      if (!body.ok()) return Response::Error(body.status());
      Response r;
      r.body = std::move(body).value();
      return r;
    });
    router.Add("POST", "/api/v1/guests", [this](const Request& req) {
      auto p = Who(req, "write");
      if (!p.ok()) return Response::Error(p.status());
      return Idempotent(req, *p, [&] {
        auto body = req.JsonBody();
        if (!body.ok()) return Response::Error(body.status());
        auto create = ParseGuestCreate(*body);
        if (!create.ok()) return Response::Error(create.status());
        return AnswerTask(m_.CreateGuest(*p, std::move(create).value()), *p, 202);
      });
    });
    router.Add("GET", "/api/v1/guests/{name}", [this](const Request& req) {
      auto p = Who(req, "read");
      if (!p.ok()) return Response::Error(p.status());
      auto guest = m_.GetGuest(*p, req.params.at("name"));
      return guest.ok() ? Response::Json(200, GuestDetailJson(*guest, *p)) : Response::Error(guest.status());
    });
    router.Add("DELETE", "/api/v1/guests/{name}", [this](const Request& req) {
      auto p = Who(req, "write");
      if (!p.ok()) return Response::Error(p.status());
      // ?force=true: power a running guest off first; without it a guest that is not stopped is 409.
      Json args = Json::object();
      if (auto it = req.query.find("force"); it != req.query.end()) {
        if (it->second != "true" && it->second != "false" && it->second != "1" && it->second != "0") {
          return Response::Error(
              InvalidArgumentError("query parameter force: expected true or false, got '" + it->second + "'"));
        }
        args["force"] = it->second == "true" || it->second == "1";
      }
      auto op = ParseGuestOp("delete", args);
      if (!op.ok()) return GuestThenError(*p, req.params.at("name"), op.status());
      return AnswerTask(m_.GuestOperation(*p, req.params.at("name"), *op), *p, 202);
    });
    for (const char* op : {"start", "stop", "resize"}) {
      router.Add("POST", std::string("/api/v1/guests/{name}/") + op, [this, op](const Request& req) {
        auto p = Who(req, "write");
        if (!p.ok()) return Response::Error(p.status());
        return Idempotent(req, *p, [&] {
          auto body = req.OptionalJsonBody();
          if (!body.ok()) return Response::Error(body.status());
          auto parsed = ParseGuestOp(op, *body);
          if (!parsed.ok()) return GuestThenError(*p, req.params.at("name"), parsed.status());
          return AnswerTask(m_.GuestOperation(*p, req.params.at("name"), *parsed), *p, 202);
        });
      });
    }
  }

  void BuildTaskRoutes(api::Router& router) {
    // Tasks.
    router.Add("GET", "/api/v1/tasks", [this](const Request& req) {
      auto p = Who(req, "read");
      if (!p.ok()) return Response::Error(p.status());
      auto page = QueryPage(req, 100);
      if (!page.ok()) return Response::Error(page.status());
      auto tasks = m_.ListTasks(*p, *page);
      if (!tasks.ok()) return Response::Error(tasks.status());
      const Principal& who = *p;
      return Response::Json(200, PageView("tasks", *tasks, [&](const Task& t) { return TaskJson(t, who); }));
    });
    router.Add("GET", "/api/v1/tasks/{id}", [this](const Request& req) {
      auto p = Who(req, "read");
      if (!p.ok()) return Response::Error(p.status());
      return AnswerTask(m_.GetTask(*p, req.params.at("id")), *p, 200);
    });
    router.Add("POST", "/api/v1/tasks/{id}/cancel", [this](const Request& req) {
      auto p = Who(req, "write");
      if (!p.ok()) return Response::Error(p.status());
      return Idempotent(req, *p, [&] { return AnswerTask(m_.CancelTask(*p, req.params.at("id")), *p, 200); });
    });
  }

  void BuildEventRoutes(api::Router& router) {
    // Events: SSE, resumable with Last-Event-ID or ?since=; ?follow=false ends after the backlog.
    router.Add("GET", "/api/v1/events", [this](const Request& req) {
      auto p = Who(req, "read");
      if (!p.ok()) return Response::Error(p.status());
      auto since = QueryInt(req, "since", 0, 0, INT64_MAX);
      if (!since.ok()) return Response::Error(since.status());
      int64_t cursor = *since;
      if (std::string last = req.Header("last-event-id"); !last.empty()) {
        try {
          cursor = std::stoll(last);
        } catch (...) {
          return Response::Error(
              InvalidArgumentError("Last-Event-ID: expected an event sequence number, got '" + last + "'"));
        }
      }
      bool follow =
          !(req.query.count("follow") && (req.query.at("follow") == "false" || req.query.at("follow") == "0"));
      Principal who = *p;
      // No thread per stream: the manager's event bus feeds the writer (Manager::SubscribeEvents).
      return Response::Stream("text/event-stream", [this, who, cursor, follow](std::shared_ptr<api::StreamWriter> w) {
        m_.SubscribeEvents(who, cursor, follow, std::move(w));
      });
    });
  }

  void BuildTokenRoutes(api::Router& router) {
    // Tokens (admin only).
    router.Add("GET", "/api/v1/tokens", [this](const Request& req) {
      if (auto p = Who(req, "admin"); !p.ok()) return Response::Error(p.status());
      auto page = QueryPage(req, 0);
      if (!page.ok()) return Response::Error(page.status());
      auto tokens = m_.ListTokens(*page);
      if (!tokens.ok()) return Response::Error(tokens.status());
      return Response::Json(200, PageView("tokens", *tokens, TokenJson));
    });
    router.Add("POST", "/api/v1/tokens", [this](const Request& req) {
      auto p = Who(req, "admin");
      if (!p.ok()) return Response::Error(p.status());
      return Idempotent(req, *p, [&] {
        auto body = req.JsonBody();
        if (!body.ok()) return Response::Error(body.status());
        auto v = JsonView::Of(*body, "");
        if (Status s = v->RejectUnknown({"name", "role", "tenant", "rights"}); !s.ok()) return Response::Error(s);
        auto name = v->String("name");
        if (!name.ok()) return Response::Error(name.status());
        auto role_name = v->String("role");
        if (!role_name.ok()) return Response::Error(role_name.status());
        auto role = ParseRole(*role_name);
        if (!role.ok()) return Response::Error(role.status());
        auto tenant = v->String("tenant", "");
        if (!tenant.ok()) return Response::Error(tenant.status());
        auto rights = v->Strings("rights", {});
        if (!rights.ok()) return Response::Error(rights.status());
        auto made = m_.CreateToken(*name, *role, *tenant, *rights);
        return made.ok() ? Response::Json(201, NewTokenJson(*made)) : Response::Error(made.status());
      });
    });
    router.Add("DELETE", "/api/v1/tokens/{id}", [this](const Request& req) {
      if (auto p = Who(req, "admin"); !p.ok()) return Response::Error(p.status());
      Status s = m_.DeleteToken(req.params.at("id"));
      return s.ok() ? Response::Json(200, {{"deleted", req.params.at("id")}}) : Response::Error(s);
    });
  }

  void BuildPoolAndRuleRoutes(api::Router& router) {
    // Pools and rules.
    router.Add("GET", "/api/v1/pools", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      auto page = QueryPage(req, 0);
      if (!page.ok()) return Response::Error(page.status());
      return AnswerAs(m_.ListPools(*page),
                      [](const Page<placement::Pool>& p) { return PageView("pools", p, placement::PoolToJson); });
    });
    router.Add("POST", "/api/v1/pools", [this](const Request& req) {
      auto p = Who(req, "operator");
      if (!p.ok()) return Response::Error(p.status());
      return Idempotent(req, *p, [&] {
        auto body = req.JsonBody();
        if (!body.ok()) return Response::Error(body.status());
        auto pool = ParsePoolCreate(*body);
        if (!pool.ok()) return Response::Error(pool.status());
        return AnswerAs(m_.CreatePool(*pool), placement::PoolToJson, 201);
      });
    });
    router.Add("GET", "/api/v1/pools/{name}", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      return AnswerAs(m_.GetPool(req.params.at("name")), PoolDetailJson);
    });
    router.Add("DELETE", "/api/v1/pools/{name}", [this](const Request& req) {
      if (auto p = Who(req, "operator"); !p.ok()) return Response::Error(p.status());
      Status s = m_.DeletePool(req.params.at("name"));
      return s.ok() ? Response::Json(200, {{"deleted", req.params.at("name")}}) : Response::Error(s);
    });
    router.Add("GET", "/api/v1/rules", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      auto page = QueryPage(req, 0);
      if (!page.ok()) return Response::Error(page.status());
      return AnswerAs(m_.ListRules(*page),
                      [](const Page<placement::Rule>& r) { return PageView("rules", r, placement::RuleToJson); });
    });
    router.Add("POST", "/api/v1/rules", [this](const Request& req) {
      auto p = Who(req, "operator");
      if (!p.ok()) return Response::Error(p.status());
      return Idempotent(req, *p, [&] {
        auto body = req.JsonBody();
        if (!body.ok()) return Response::Error(body.status());
        auto rule = ParseRuleCreate(*body);
        if (!rule.ok()) return Response::Error(rule.status());
        return AnswerAs(m_.CreateRule(*rule), placement::RuleToJson, 201);
      });
    });
    router.Add("GET", "/api/v1/rules/{name}", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      return AnswerAs(m_.GetRule(req.params.at("name")), RuleDetailJson);
    });
    router.Add("DELETE", "/api/v1/rules/{name}", [this](const Request& req) {
      if (auto p = Who(req, "operator"); !p.ok()) return Response::Error(p.status());
      Status s = m_.DeleteRule(req.params.at("name"));
      return s.ok() ? Response::Json(200, {{"deleted", req.params.at("name")}}) : Response::Error(s);
    });
  }

  void BuildDrsRoutes(api::Router& router) {
    // DRS and the cluster snapshot.
    router.Add("GET", "/api/v1/drs/config", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      return AnswerDrs(m_.GetDrsConfig());
    });
    router.Add("PUT", "/api/v1/drs/config", [this](const Request& req) {
      if (auto p = Who(req, "operator"); !p.ok()) return Response::Error(p.status());
      auto body = req.JsonBody();
      if (!body.ok()) return Response::Error(body.status());
      auto current = m_.GetDrsConfig();
      if (!current.ok()) return Response::Error(current.status());
      auto changed = ParseDrsConfigChange(*body, *current);
      return changed.ok() ? AnswerDrs(m_.SetDrsConfig(*changed)) : Response::Error(changed.status());
    });
    router.Add("GET", "/api/v1/drs/recommendations", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      bool all = req.query.count("all") && req.query.at("all") != "0" && req.query.at("all") != "false";
      auto page = QueryPage(req, all ? 500 : 0);
      if (!page.ok()) return Response::Error(page.status());
      return AnswerAs(m_.ListRecommendations(!all, *page),
                      [](const Page<Recommendation>& r) { return PageView("recommendations", r, RecommendationJson); });
    });
    router.Add("GET", "/api/v1/drs/power", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      return AnswerAs(m_.PowerRecommendations(), [](const Json& power) { return Json{{"power", power}}; });
    });
    router.Add("POST", "/api/v1/drs/recommendations/{id}/apply", [this](const Request& req) {
      auto p = Who(req, "operator");
      if (!p.ok()) return Response::Error(p.status());
      return Idempotent(req, *p, [&] { return AnswerTask(m_.ApplyRecommendation(req.params.at("id")), *p, 202); });
    });
    router.Add("POST", "/api/v1/drs/apply", [this](const Request& req) {
      auto p = Who(req, "operator");
      if (!p.ok()) return Response::Error(p.status());
      return Idempotent(req, *p, [&] { return AnswerAs(m_.ApplyAllRecommendations(), StartedMovesJson, 202); });
    });
  }

  void BuildMigrationRoutes(api::Router& router) {
    // Migrations.
    router.Add("POST", "/api/v1/guests/{name}/migrate", [this](const Request& req) {
      auto p = Who(req, "operator");
      if (!p.ok()) return Response::Error(p.status());
      return Idempotent(req, *p, [&] {
        auto body = req.JsonBody();
        if (!body.ok()) return Response::Error(body.status());
        auto move = ParseMigrateRequest(*body);
        if (!move.ok()) return Response::Error(move.status());
        return AnswerTask(m_.MigrateGuest(*p, req.params.at("name"), *move), *p, 202);
      });
    });
    router.Add("GET", "/api/v1/migrations", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      auto page = QueryPage(req, 100);
      if (!page.ok()) return Response::Error(page.status());
      std::string guest = req.query.count("guest") ? req.query.at("guest") : "";
      auto migrations = m_.ListMigrations(guest, *page);
      if (!migrations.ok()) return Response::Error(migrations.status());
      Json j = PageView("migrations", *migrations, MigrationJson);
      j["config"] = MigrationConfigJson(m_.config());
      return Response::Json(200, j);
    });
    router.Add("GET", "/api/v1/migrations/{id}", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      return AnswerAs(m_.GetMigration(req.params.at("id")), MigrationJson);
    });
    router.Add("POST", "/api/v1/drs/run", [this](const Request& req) {
      if (auto p = Who(req, "operator"); !p.ok()) return Response::Error(p.status());
      return AnswerAs(m_.RunDrs(), DrsPassJson);
    });
    router.Add("POST", "/api/v1/drs/plan", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      auto body = req.OptionalJsonBody();
      if (!body.ok()) return Response::Error(body.status());
      if (body->contains("snapshot")) {
        if (!(*body)["snapshot"].is_object())
          return Response::Error(InvalidArgumentError("snapshot: expected an object"));
        auto snapshot = placement::ParseSnapshot((*body)["snapshot"]);
        if (!snapshot.ok()) return Response::Error(snapshot.status());
        return AnswerAs(m_.DryRunPlan(&*snapshot), placement::PlanToJson);
      }
      if (!body->empty()) return Response::Error(InvalidArgumentError("body: expected {} or {\"snapshot\": {...}}"));
      return AnswerAs(m_.DryRunPlan(nullptr), placement::PlanToJson);
    });
    router.Add("GET", "/api/v1/cluster/snapshot", [this](const Request& req) {
      if (auto p = Who(req, "cluster-read"); !p.ok()) return Response::Error(p.status());
      return AnswerAs(m_.ClusterSnapshot(), placement::SnapshotToJson);
    });
  }

  // A list of leases, notices or repossessions: ?guest=NAME narrows, newest first, paged.
  template <class T, class List, class View>
  Response LeaseList(const Request& req, const char* key, List list, View view) {
    auto p = Who(req, "read");
    if (!p.ok()) return Response::Error(p.status());
    auto page = QueryPage(req, 100);
    if (!page.ok()) return Response::Error(page.status());
    std::string guest;
    if (auto it = req.query.find("guest"); it != req.query.end()) guest = it->second;
    Result<Page<T>> items = list(*p, guest, *page);
    if (!items.ok()) return Response::Error(items.status());
    const Principal& who = *p;
    return Response::Json(200, PageView(key, *items, [&](const T& t) { return view(t, who); }));
  }

  // A POST on one lease or notice with a JSON body parsed by `parse`, answered through `view`. On a
  // `rate_limited` route (notice replies) kResourceExhausted is the rate limit: 429.
  template <class Parsed, class Parse, class Call, class View>
  Response LeasePost(const Request& req, std::string_view need, Parse parse, Call call, View view,
                     bool rate_limited = false) {
    auto p = Who(req, need);
    if (!p.ok()) return Response::Error(p.status());
    return Idempotent(req, *p, [&] {
      auto body = req.OptionalJsonBody();
      if (!body.ok()) return Response::Error(body.status());
      Result<Parsed> parsed = parse(*body);
      if (!parsed.ok()) return Response::Error(parsed.status());
      auto out = call(*p, req.params.at("id"), *parsed);
      if (!out.ok() && rate_limited && out.status().code() == StatusCode::kResourceExhausted) {
        return Response::Error(429, out.status());
      }
      if (!out.ok()) return Response::Error(out.status());
      return Response::Json(200, view(*out, *p));
    });
  }

  void BuildLeaseRoutes(api::Router& router) {
    // Leases, notices and repossession records (tenants: their own).
    router.Add("GET", "/api/v1/leases", [this](const Request& req) {
      return LeaseList<LeaseRecord>(
          req, "leases", [this](auto&... a) { return m_.ListLeases(a...); }, LeaseJson);
    });
    router.Add("GET", "/api/v1/leases/{id}", [this](const Request& req) {
      auto p = Who(req, "read");
      if (!p.ok()) return Response::Error(p.status());
      auto l = m_.GetLease(*p, req.params.at("id"));
      return l.ok() ? Response::Json(200, LeaseJson(*l, *p)) : Response::Error(l.status());
    });
    router.Add("POST", "/api/v1/leases/{id}/extend", [this](const Request& req) {
      return LeasePost<LeaseExtend>(
          req, "write", ParseLeaseExtend, [this](auto&... a) { return m_.ExtendLease(a...); }, LeaseJson);
    });
    router.Add("POST", "/api/v1/leases/{id}/release", [this](const Request& req) {
      return LeasePost<bool>(
          req, "write", [](const Json&) -> Result<bool> { return true; },
          [this](const Principal& p, const std::string& id, bool) { return m_.ReleaseLease(p, id); }, LeaseJson);
    });
    router.Add("POST", "/api/v1/leases/{id}/reclaim", [this](const Request& req) {
      return LeasePost<LeaseReclaim>(
          req, "operator", ParseLeaseReclaim, [this](auto&... a) { return m_.ReclaimLease(a...); }, NoticeRecordJson);
    });
    router.Add("POST", "/api/v1/hosts/{name}/reclaim", [this](const Request& req) {
      auto p = Who(req, "operator");
      if (!p.ok()) return Response::Error(p.status());
      return Idempotent(req, *p, [&] {
        auto body = req.JsonBody();
        if (!body.ok()) return Response::Error(body.status());
        auto parsed = ParseHostReclaim(*body);
        if (!parsed.ok()) return Response::Error(parsed.status());
        auto out = m_.ReclaimFromHost(*p, req.params.at("name"), *parsed);
        return out.ok() ? Response::Json(200, HostReclaimJson(*out, *p)) : Response::Error(out.status());
      });
    });
    router.Add("GET", "/api/v1/notices", [this](const Request& req) {
      return LeaseList<NoticeRecord>(
          req, "notices", [this](auto&... a) { return m_.ListNotices(a...); }, NoticeRecordJson);
    });
    router.Add("GET", "/api/v1/notices/{id}", [this](const Request& req) {
      auto p = Who(req, "read");
      if (!p.ok()) return Response::Error(p.status());
      auto n = m_.GetNotice(*p, req.params.at("id"));
      return n.ok() ? Response::Json(200, NoticeRecordJson(*n, *p)) : Response::Error(n.status());
    });
    router.Add("POST", "/api/v1/notices/{id}/reply", [this](const Request& req) {
      return LeasePost<NoticeAnswer>(
          req, "write", ParseNoticeAnswer, [this](auto&... a) { return m_.AnswerNotice(a...); }, NoticeRecordJson,
          true);
    });
    router.Add("GET", "/api/v1/budgets", [this](const Request& req) {
      auto p = Who(req, "read");
      if (!p.ok()) return Response::Error(p.status());
      auto budgets = m_.ListBudgets(*p);
      if (!budgets.ok()) return Response::Error(budgets.status());
      Json items = Json::array();
      for (const Budget& b : *budgets) items.push_back(BudgetJson(b));
      return Response::Json(200, {{"budgets", items}});
    });
    router.Add("PUT", "/api/v1/budgets/{tenant}", [this](const Request& req) {
      auto p = Who(req, "operator");
      if (!p.ok()) return Response::Error(p.status());
      return Idempotent(req, *p, [&] {
        auto body = req.JsonBody();
        if (!body.ok()) return Response::Error(body.status());
        auto per_hour = ParseBudget(*body);
        if (!per_hour.ok()) return Response::Error(per_hour.status());
        auto b = m_.SetBudget(*p, req.params.at("tenant"), *per_hour);
        return b.ok() ? Response::Json(200, BudgetJson(*b)) : Response::Error(b.status());
      });
    });
    router.Add("GET", "/api/v1/repossessions", [this](const Request& req) {
      return LeaseList<lease::Repossession>(
          req, "repossessions", [this](auto&... a) { return m_.ListRepossessions(a...); }, RepossessionView);
    });
  }

 private:
  Manager& m_;
  internal::IdempotencyLog idempotency_;
};

}  // namespace

void BuildRoutes(Manager& manager, api::Router& router) {
  // The Api object lives as long as the handlers that capture it.
  auto api = std::make_shared<Api>(manager);
  api->Build(router);
  router.AddPublic("GET", "/api/v1/version", [api](const Request&) {
    return Response::Json(200, {{"api", "v1"}, {"schema_version", kSchemaVersion}});
  });
}

namespace internal {
Result<PageQuery> PageOf(const api::Request& req, int64_t default_limit) { return QueryPage(req, default_limit); }

Response AnswerTask(const Result<Task>& r, const Principal& p, int ok_status) {
  if (!r.ok()) return Response::Error(r.status());
  Response out = Response::Json(ok_status, TaskJson(*r, p));
  if (ok_status == 202) out.headers["Location"] = "/api/v1/tasks/" + r->id;
  return out;
}
}  // namespace internal

}  // namespace uw::manager
