#include <gtest/gtest.h>

#include <stdexcept>

#include "api/http.h"

namespace uw::api {
namespace {

Json Body(const Response& r) { return Json::parse(r.body); }

Request Req(std::string method, std::string path) {
  Request r;
  r.method = std::move(method);
  r.path = std::move(path);
  return r;
}

void ExpectErrorShape(const Response& r, int status, std::string_view code) {
  EXPECT_EQ(r.status, status);
  Json j = Body(r);
  ASSERT_TRUE(j.contains("error")) << r.body;
  EXPECT_EQ(j["error"]["code"], code);
  EXPECT_EQ(j["error"]["status"], status);
  EXPECT_TRUE(j["error"]["message"].is_string());
}

Response Echo(const Request& req) {
  Json params = Json::object();
  for (const auto& [k, v] : req.params) params[k] = v;
  return Response::Json(200, {{"params", params}, {"principal", req.principal}});
}

TEST(RouterTest, MatchesParamsAndPrefersLiterals) {
  Router r;
  r.Add("GET", "/api/v1/guests/{name}/stats", Echo);
  r.Add("GET", "/api/v1/guests/{name}", Echo);
  r.Add("GET", "/api/v1/guests/_search", [](const Request&) {
    return Response::Json(200, {{"search", true}});
  });
  EXPECT_EQ(Body(r.Dispatch(Req("GET", "/api/v1/guests/web1/stats")))["params"]["name"], "web1");
  EXPECT_EQ(Body(r.Dispatch(Req("GET", "/api/v1/guests/web1/")))["params"]["name"], "web1");
  EXPECT_EQ(Body(r.Dispatch(Req("GET", "/api/v1/guests/_search")))["search"], true);
  ExpectErrorShape(r.Dispatch(Req("GET", "/api/v1/guests")), 404, "not_found");
  ExpectErrorShape(r.Dispatch(Req("GET", "/api/v1/guests/a/b/c")), 404, "not_found");
}

TEST(RouterTest, RawTargetKeepsEncodedSlashInsideParam) {
  Router r;
  r.Add("GET", "/v/{name}", Echo);
  Request req = Req("GET", "/v/a/b");
  req.target = "/v/a%2Fb?x=1";
  EXPECT_EQ(Body(r.Dispatch(req))["params"]["name"], "a/b");
}

TEST(RouterTest, WrongMethodIs405WithAllow) {
  Router r;
  r.Add("GET", "/x", Echo);
  r.Add("DELETE", "/x", Echo);
  Response resp = r.Dispatch(Req("POST", "/x"));
  ExpectErrorShape(resp, 405, "invalid_argument");
  EXPECT_EQ(resp.headers.at("Allow"), "DELETE, GET, HEAD");
  // HEAD falls back to GET.
  EXPECT_EQ(r.Dispatch(Req("HEAD", "/x")).status, 200);
}

TEST(RouterTest, AuthenticatorAndPublicRoutes) {
  Router r;
  r.Add("GET", "/secret", Echo);
  r.AddPublic("GET", "/healthz", [](const Request&) {
    return Response::Json(200, {{"ok", true}});
  });
  r.SetAuthenticator([](Request& req) -> Status {
    if (req.BearerToken().empty()) return UnauthenticatedError("missing bearer token");
    if (req.BearerToken() != "good") return UnauthenticatedError("unknown token");
    req.principal = "alice";
    return Status::Ok();
  });
  ExpectErrorShape(r.Dispatch(Req("GET", "/secret")), 401, "unauthenticated");
  Request bad = Req("GET", "/secret");
  bad.headers["authorization"] = "Bearer nope";
  ExpectErrorShape(r.Dispatch(bad), 401, "unauthenticated");
  Request good = Req("GET", "/secret");
  good.headers["authorization"] = "bearer  good ";
  EXPECT_EQ(Body(r.Dispatch(good))["principal"], "alice");
  EXPECT_EQ(r.Dispatch(Req("GET", "/healthz")).status, 200);
  // Unknown routes do not leak to unauthenticated callers.
  ExpectErrorShape(r.Dispatch(Req("GET", "/nope")), 401, "unauthenticated");
  // A public path answers its 405 without a token.
  ExpectErrorShape(r.Dispatch(Req("POST", "/healthz")), 405, "invalid_argument");
}

TEST(RouterTest, ExceptionsBecome500) {
  Router r;
  r.Add("GET", "/boom", [](const Request&) -> Response { throw std::runtime_error("kaput"); });
  r.Add("GET", "/int", [](const Request&) -> Response { throw 42; });
  Response resp = r.Dispatch(Req("GET", "/boom"));
  ExpectErrorShape(resp, 500, "internal");
  EXPECT_NE(Body(resp)["error"]["message"].get<std::string>().find("kaput"), std::string::npos);
  ExpectErrorShape(r.Dispatch(Req("GET", "/int")), 500, "internal");
}

TEST(RouterTest, RoutesListsPatterns) {
  Router r;
  r.Add("GET", "/", Echo);
  r.Add("PUT", "/a/{b}", Echo);
  r.Add("PUT", "/a/{b}", Echo);  // replaces
  EXPECT_EQ(r.Routes(), (std::vector<std::string>{"GET /", "PUT /a/{b}"}));
}

TEST(RequestTest, HeaderBearerAndJsonBody) {
  Request r;
  r.headers["authorization"] = "Bearer abc";
  EXPECT_EQ(r.Header("Authorization"), "Bearer abc");
  EXPECT_EQ(r.BearerToken(), "abc");
  EXPECT_EQ(r.Header("X-Missing"), "");
  EXPECT_EQ(r.JsonBody().status().code(), StatusCode::kInvalidArgument);
  r.body = "[1]";
  EXPECT_NE(r.JsonBody().status().message().find("expected a JSON object"), std::string::npos);
  r.body = "{\"a\":";
  EXPECT_NE(r.JsonBody().status().message().find("line 1"), std::string::npos);
  r.body = "{\"a\": 2}";
  ASSERT_TRUE(r.JsonBody().ok());
  EXPECT_EQ((*r.JsonBody())["a"], 2);
}

TEST(StatusHttpTest, EveryCodeRoundTrips) {
  for (int i = 1; i <= static_cast<int>(StatusCode::kInternal); ++i) {
    Status s(static_cast<StatusCode>(i), "message " + std::to_string(i));
    Response resp = Response::Error(s);
    EXPECT_EQ(resp.status, HttpStatusFor(s.code()));
    EXPECT_EQ(StatusFromHttp(resp.status, resp.body), s) << s.ToString();
  }
  EXPECT_EQ(HttpStatusFor(StatusCode::kResourceExhausted), 409);
  EXPECT_EQ(HttpStatusFor(StatusCode::kDeadlineExceeded), 504);
}

TEST(StatusHttpTest, FallsBackToHttpStatus) {
  EXPECT_TRUE(StatusFromHttp(204, "").ok());
  Status s = StatusFromHttp(502, "<html>Bad Gateway</html>");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("502"), std::string::npos);
  EXPECT_EQ(StatusFromHttp(404, "").code(), StatusCode::kNotFound);
  EXPECT_EQ(StatusFromHttp(418, "{}").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(StatusFromHttp(500, "{\"error\": {\"code\": \"brand_new\", \"message\": \"m\"}}"),
            Status(StatusCode::kInternal, "m"));
  EXPECT_EQ(
      StatusFromHttp(403, "{\"error\": {\"code\": \"brand_new\", \"message\": \"m\"}}").code(),
      StatusCode::kPermissionDenied);
}

TEST(SseEventTest, Format) {
  EXPECT_EQ(SseEvent("guest", "{\"a\":1}", "7"), "id: 7\nevent: guest\ndata: {\"a\":1}\n\n");
  EXPECT_EQ(SseEvent("", "a\nb"), "data: a\ndata: b\n\n");
  EXPECT_EQ(SseEvent("x\ny", ""), "event: xy\ndata: \n\n");
}

}  // namespace
}  // namespace uw::api
