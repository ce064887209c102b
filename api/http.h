// HTTP/JSON plumbing shared by uw-agent and uw-manager: a server on libuv + http-parser, a router
// with path parameters, one error body shape, and a blocking client on libcurl.
//
// Pipeline (server):  socket -> http-parser -> Request -> Router (auth, match) -> Handler (on a
// worker thread) -> Response -> socket. The HTTP layer parses and answers; it never drives libvirt
// itself: handlers turn requests into typed calls on the core and map Status to HTTP via
// ErrorResponse().
//
// Error body (every non-2xx answer, including those the server makes itself for malformed HTTP,
// oversized bodies, unknown routes and wrong methods):
//   {"error": {"code": "not_found", "message": "guest 'web1' is not defined", "status": 404}}
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace uw::api {

struct Request {
  std::string method;                          // "GET", "POST", ...
  std::string path;                            // decoded path without the query: "/api/v1/guests/a"
  std::map<std::string, std::string> query;    // decoded query parameters
  std::map<std::string, std::string> headers;  // keys lower-cased
  std::string body;
  std::map<std::string, std::string> params;   // path parameters filled by the router: {"name": "a"}
  std::string remote;                          // peer address "10.77.0.254:51234"
  std::string principal;                       // set by the authenticator (token owner), may be ""

  // Header value or "" (name is matched case-insensitively).
  std::string Header(std::string_view name) const;
  // Bearer token from "Authorization: Bearer X", or "".
  std::string BearerToken() const;
  // Parses the body as a JSON object. kInvalidArgument naming line/column or "request body:
  // expected a JSON object" (an empty body is an error too).
  Result<Json> JsonBody() const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::map<std::string, std::string> headers;
  std::string body;

  static Response Json(int status, const uw::Json& body);
  // The one error shape; HTTP status from HttpStatusFor(status.code()).
  static Response Error(const Status& status);
};

// Canonical mapping: invalid_argument 400, unauthenticated 401, permission_denied 403,
// not_found 404, already_exists / aborted / failed_precondition / resource_exhausted 409 (a
// conflict with the current state or capacity), internal 500, unimplemented 501, unavailable 503,
// deadline_exceeded 504. The server itself answers 413 (body too large, code resource_exhausted),
// 431 (head too large) and 405 (wrong method, code invalid_argument).
int HttpStatusFor(StatusCode code);
// Inverse for clients: an HTTP status and error body back into a Status.
Status StatusFromHttp(int http_status, std::string_view body);

using Handler = std::function<Response(const Request&)>;
// Returns OK (and may set req.principal) or an error (401/403) that is answered instead.
using Authenticator = std::function<Status(Request& req)>;

// Matches "METHOD /literal/{param}/literal" patterns. Unknown path -> 404, known path with another
// method -> 405 with an Allow header, both in the error shape. Thread-safe once built (Add is not).
class Router {
 public:
  void Add(std::string method, std::string pattern, Handler handler);
  // Paths exempt from authentication (for example "/healthz").
  void AddPublic(std::string method, std::string pattern, Handler handler);
  void SetAuthenticator(Authenticator auth) { auth_ = std::move(auth); }
  // Runs auth, matching and the handler; turns a handler's thrown std::exception into a 500.
  Response Dispatch(Request req) const;
  // Every "METHOD pattern" registered (for the spec check).
  std::vector<std::string> Routes() const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;  // "{x}" marks a parameter
    Handler handler;
    bool is_public = false;
  };
  std::vector<Route> routes_;
  Authenticator auth_;
};

struct ServerOptions {
  std::string address = "127.0.0.1";
  int port = 0;                          // 0 = pick a free port; see HttpServer::port()
  size_t max_body_bytes = 1 << 20;       // larger bodies get 413 and are not dispatched
  size_t max_header_bytes = 64 << 10;    // larger request heads get 431
  int worker_threads = 4;                // handlers run here, never on the loop thread
  int idle_timeout_ms = 60'000;          // keep-alive connections idle this long are closed
};

// An HTTP/1.1 server with keep-alive, on its own libuv loop thread. Malformed requests get 400 in
// the error shape and the connection is closed. Thread-safe: Start/Stop from any one thread.
class HttpServer {
 public:
  HttpServer(ServerOptions options, const Router* router);
  ~HttpServer();  // Stops.
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving. kUnavailable when the address cannot be bound (in use, no such
  // address), with the address in the message.
  Status Start();
  // Stops accepting, finishes in-flight handlers, closes connections, joins threads. Idempotent.
  void Stop();
  // The bound port (after Start).
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ClientResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // keys lower-cased
  std::string body;
};

// A blocking HTTP client (libcurl easy handle per call; safe to use from several threads).
struct ClientOptions {
  std::string base_url;       // "http://10.77.0.1:7700"
  std::string bearer_token;   // sent as Authorization: Bearer ... when non-empty
  int timeout_ms = 30'000;
  int connect_timeout_ms = 3'000;
};

class HttpClient {
 public:
  explicit HttpClient(ClientOptions options);
  // Transport failures (refused, timeout, DNS) are kUnavailable / kDeadlineExceeded naming the URL;
  // any HTTP status is returned as a ClientResponse (not an error).
  Result<ClientResponse> Do(std::string_view method, std::string_view path, std::string_view body = "",
                            const std::map<std::string, std::string>& headers = {}) const;
  // Do() plus: 2xx -> parsed JSON body (null for an empty body); non-2xx -> StatusFromHttp().
  Result<Json> Call(std::string_view method, std::string_view path, const Json* body = nullptr) const;

 private:
  ClientOptions options_;
};

}  // namespace uw::api
