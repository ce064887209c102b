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
  r.Add("GET", "/api/v1/guests/_search", [](const Request&) { return Response::Json(200, {{"search", true}}); });
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
  // Issue 12: 405 answers carried the code invalid_argument.
  ExpectErrorShape(resp, 405, "method_not_allowed");
  EXPECT_EQ(StatusFromHttp(resp.status, resp.body).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(resp.headers.at("Allow"), "DELETE, GET, HEAD");
  // HEAD falls back to GET.
  EXPECT_EQ(r.Dispatch(Req("HEAD", "/x")).status, 200);
}

TEST(RouterTest, AuthenticatorAndPublicRoutes) {
  Router r;
  r.Add("GET", "/secret", Echo);
  r.AddPublic("GET", "/healthz", [](const Request&) { return Response::Json(200, {{"ok", true}}); });
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
  ExpectErrorShape(r.Dispatch(Req("POST", "/healthz")), 405, "method_not_allowed");
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
  EXPECT_EQ(StatusFromHttp(403, "{\"error\": {\"code\": \"brand_new\", \"message\": \"m\"}}").code(),
            StatusCode::kPermissionDenied);
}

TEST(SseEventTest, Format) {
  EXPECT_EQ(SseEvent("guest", "{\"a\":1}", "7"), "id: 7\nevent: guest\ndata: {\"a\":1}\n\n");
  EXPECT_EQ(SseEvent("", "a\nb"), "data: a\ndata: b\n\n");
  EXPECT_EQ(SseEvent("x\ny", ""), "event: xy\ndata: \n\n");
}

Request Post(std::string path, std::string body, std::string content_type) {
  Request r = Req("POST", std::move(path));
  r.body = std::move(body);
  if (!content_type.empty()) r.headers["content-type"] = std::move(content_type);
  r.headers["authorization"] = "Bearer good";
  return r;
}

// Issue 12: Content-Type was never checked.
TEST(RouterTest, BodyThatIsNotJsonIs415) {
  Router r;
  r.Add("POST", "/guests", Echo);
  r.Add("POST", "/upload", Echo, RouteOptions{.json_body = false});
  r.SetAuthenticator(
      [](Request& req) -> Status { return req.BearerToken() == "good" ? Status::Ok() : UnauthenticatedError("no"); });
  for (std::string ct : {"application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
                         " application/json "}) {
    EXPECT_EQ(r.Dispatch(Post("/guests", "{}", ct)).status, 200) << ct;
  }
  for (std::string ct : {"", "text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                         "multipart/form-data; boundary=x"}) {
    Response resp = r.Dispatch(Post("/guests", "{}", ct));
    ExpectErrorShape(resp, 415, "unsupported_media_type");
    EXPECT_EQ(StatusFromHttp(resp.status, resp.body).code(), StatusCode::kInvalidArgument);
  }
  // No body, no Content-Type needed; a route may opt out.
  EXPECT_EQ(r.Dispatch(Post("/guests", "", "")).status, 200);
  EXPECT_EQ(r.Dispatch(Post("/guests", "", "text/plain")).status, 200);
  EXPECT_EQ(r.Dispatch(Post("/upload", "raw bytes", "application/octet-stream")).status, 200);
  // Authentication first: an unauthenticated caller learns nothing about the route.
  Request anon = Post("/guests", "x", "text/plain");
  anon.headers.erase("authorization");
  ExpectErrorShape(r.Dispatch(anon), 401, "unauthenticated");
}

// Issue 12: a host with 592 guests sent a 459,106-byte heartbeat over the one server-wide limit.
TEST(RouterTest, RouteBodyLimitIsLookedUpFromTheHead) {
  Router r;
  r.Add("POST", "/api/v1/hosts/{name}/heartbeat", Echo, RouteOptions{.max_body_bytes = 2 << 20});
  r.Add("POST", "/api/v1/guests", Echo);
  Request head = Req("POST", "/api/v1/hosts/h1/heartbeat");
  EXPECT_EQ(r.MaxBodyBytes(head, 1000), 2u << 20);
  head.target = "/api/v1/hosts/h%201/heartbeat?x=1";
  EXPECT_EQ(r.MaxBodyBytes(head, 1000), 2u << 20);
  EXPECT_EQ(r.MaxBodyBytes(Req("POST", "/api/v1/guests"), 1000), 1000u);
  EXPECT_EQ(r.MaxBodyBytes(Req("GET", "/api/v1/hosts/h1/heartbeat"), 1000), 1000u);
  EXPECT_EQ(r.MaxBodyBytes(Req("POST", "/nowhere"), 1000), 1000u);
  Request bad = Req("POST", "/x");
  bad.target = "/api/v1/hosts/%zz/heartbeat";
  EXPECT_EQ(r.MaxBodyBytes(bad, 1000), 1000u);
}

// nlohmann's dump throws type_error 316 on invalid UTF-8: no answer built from request bytes may
// throw (a handler echoing a header, an error naming a path).
TEST(RouterTest, AnswersWithInvalidUtf8NeverThrow) {
  Router r;
  r.Add("GET", "/echo/{name}", [](const Request& req) {
    return Response::Json(200, {{"name", req.params.at("name")}});
  });
  Request req = Req("GET", "/echo/a\xff\xfe");
  Response ok = r.Dispatch(req);
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(Body(ok)["name"], "a\xef\xbf\xbd\xef\xbf\xbd");  // U+FFFD twice
  Response missing = r.Dispatch(Req("GET", "/nope/\xc3\x28"));
  ExpectErrorShape(missing, 404, "not_found");
  Response err = Response::Error(InvalidArgumentError(std::string("bad \xff\0 name", 11)));
  ExpectErrorShape(err, 400, "invalid_argument");
}

// A peer's error body is outside input: a hostile one must not crash the client.
TEST(StatusHttpTest, DeeplyNestedErrorBodyFallsBack) {
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  Status s = StatusFromHttp(500, deep);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_LT(s.message().size(), 300u);
}

}  // namespace
}  // namespace uw::api
