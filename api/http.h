// HTTP/JSON plumbing shared by uw-agent and uw-manager: a server on libuv + http-parser, a router
// with path parameters, one error body shape, and a blocking client on libcurl.
//
// Pipeline (server):  socket -> http-parser -> Request -> Router (auth, match) -> Handler (on a
// worker thread) -> Response -> socket. The HTTP layer parses and answers; it never drives libvirt
// itself: handlers turn requests into typed calls on the core and map Status to HTTP via
// ErrorResponse().
//
// Streaming (Server-Sent Events and other open-ended answers): a handler returns
// Response::Stream(...). The server sends the head with "Transfer-Encoding: chunked" and then calls
// the stream function on a worker thread with a StreamWriter; every Write() becomes one chunk, in
// order, and Close() ends the body (the connection then stays open for the next request). See
// StreamWriter for the threading and lifetime rules.
//
// Error body (every non-2xx answer, including those the server makes itself for malformed HTTP,
// oversized bodies, unknown routes and wrong methods):
//   {"error": {"code": "not_found", "message": "guest 'web1' is not defined", "status": 404}}
// `code` is a StatusCodeName ("invalid_argument", ...) except for answers about HTTP itself:
// "method_not_allowed" (405) and "unsupported_media_type" (415).
//
// Limits against hostile and heavy use (ServerOptions; all enforced while reading, before a
// handler runs or a body is buffered past them):
//   head larger than max_header_bytes                 431 resource_exhausted
//   body larger than the route's limit                413 resource_exhausted (RouteOptions)
//   head not in within header_timeout_ms              408 deadline_exceeded, then close
//   body not in within body_timeout_ms of its head    408 deadline_exceeded, then close
//   more than max_connections (per client address)    503 unavailable + Retry-After, then close
//   JSON body nested deeper than 64 (Request::JsonBody) 400 invalid_argument
//   body that is not application/json on a JSON route 415 unsupported_media_type
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
  std::map<std::string, std::string> params;  // path parameters filled by the router: {"name": "a"}
  std::string remote;                         // peer address "10.77.0.254:51234"
  std::string principal;                      // set by the authenticator (token owner), may be ""
  // The request-target as received ("/api/v1/guests/a%2Fb?x=1"), set by the server. The router
  // matches on its raw segments (so "%2F" stays inside one parameter); when empty (a Request built
  // by hand, in tests) it matches on `path` instead.
  std::string target;

  // Header value or "" (name is matched case-insensitively).
  std::string Header(std::string_view name) const;
  // Bearer token from "Authorization: Bearer X", or "".
  std::string BearerToken() const;
  // Parses the body as a JSON object within uw::JsonLimits (depth 64). kInvalidArgument naming
  // line/column ("request body: line 1, column 80: nesting deeper than 64") or "request body:
  // expected a JSON object" (an empty body is an error too).
  Result<Json> JsonBody() const;
  // JsonBody, but an empty (or all-whitespace) body is an empty object: for optional bodies.
  Result<Json> OptionalJsonBody() const;
};

class StreamWriter;
// Produces a streamed body; see Response::Stream.
using StreamFunction = std::function<void(std::shared_ptr<StreamWriter> writer)>;

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  // Extra headers. The server owns framing: Content-Length, Transfer-Encoding and Connection set
  // here are ignored (so is Content-Type: use content_type), and lines with CR/LF are dropped.
  std::map<std::string, std::string> headers;
  std::string body;
  // When set, `body` is ignored and the answer is streamed (see StreamWriter).
  StreamFunction stream;

  // `body` serialized; strings that are not valid UTF-8 (bytes from a request's path or headers)
  // have their bad bytes replaced by U+FFFD rather than failing.
  static Response Json(int status, const uw::Json& body);
  // The one error shape; HTTP status from HttpStatusFor(status.code()). Never throws, whatever
  // bytes the message holds.
  static Response Error(const Status& status);
  // The error shape with an explicit HTTP status (413, 429, 431, ...); `status` must not be OK.
  static Response Error(int http_status, const Status& status);
  // The error shape with an explicit code name for answers about HTTP itself
  // ("method_not_allowed", "unsupported_media_type"); the message is status.message().
  static Response Error(int http_status, std::string_view code, const Status& status);
  // A streamed 200 answer. `fn` runs on a worker thread once the head is on its way; it may write
  // and return at once, hand the writer to a producer (an event bus) and return, or block while
  // writing (which holds one worker thread for the stream's life). For SSE use content type
  // "text/event-stream" and SseEvent().
  static Response Stream(std::string content_type, StreamFunction fn);
};

// The sending end of a streamed answer. Thread-safe: any thread may call any method, and the
// writer may outlive the server (it is then closed and every call is a cheap no-op).
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  // Queues `chunk` as one chunk of the body (an empty chunk is ignored). Returns false, and sends
  // nothing, once the stream is closed: by Close(), by the client going away, by a write error,
  // by HttpServer::Stop(), or because the client fell more than
  // ServerOptions::max_stream_buffered_bytes (default kMaxBufferedBytes) behind (a slow
  // consumer is cut off rather than buffered without bound).
  virtual bool Write(std::string_view chunk) = 0;
  // Ends the body normally. Idempotent.
  virtual void Close() = 0;
  virtual bool IsOpen() const = 0;
  // Registers `fn` to run exactly once when the stream closes for any reason (at once, on this
  // thread, if it is closed already). It may run on the server's loop thread: keep it short and
  // never block in it (unsubscribe from a producer, signal a condition variable). One callback;
  // a second call replaces the first if it has not run yet.
  virtual void OnClose(std::function<void()> fn) = 0;

  static constexpr size_t kMaxBufferedBytes = 4 << 20;
};

// One Server-Sent Events frame: "id: ...\nevent: ...\ndata: ...\n\n" (empty fields omitted; a
// multi-line `data` becomes several data lines).
std::string SseEvent(std::string_view event, std::string_view data, std::string_view id = "");

// Canonical mapping: invalid_argument 400, unauthenticated 401, permission_denied 403,
// not_found 404, already_exists / aborted / failed_precondition / resource_exhausted 409 (a
// conflict with the current state or capacity), internal 500, unimplemented 501, unavailable 503,
// deadline_exceeded 504. The server and router themselves also answer 405 (wrong method, code
// method_not_allowed), 408 (head or body too slow, deadline_exceeded), 413 (body too large,
// resource_exhausted), 415 (not JSON, unsupported_media_type), 431 (head too large,
// resource_exhausted) and 503 (too many connections, unavailable).
int HttpStatusFor(StatusCode code);
// Inverse for clients: an HTTP status and error body back into a Status. A code name that is not
// a StatusCodeName (method_not_allowed, unsupported_media_type, a newer server's) maps by HTTP
// status: 405 and 415 become kInvalidArgument.
Status StatusFromHttp(int http_status, std::string_view body);

using Handler = std::function<Response(const Request&)>;
// Returns OK (and may set req.principal) or an error (401/403) that is answered instead.
using Authenticator = std::function<Status(Request& req)>;

// What a route accepts besides its method and path (Router::Add).
struct RouteOptions {
  // The largest request body this route takes; 0 = ServerOptions::max_body_bytes. The server
  // looks it up when the head is complete and refuses with 413 before reading the body (from
  // Content-Length, or as soon as a chunked body crosses it), so raising it for one route (a
  // host's heartbeat with 1,024 guests, ~2 MiB) raises it for no other.
  size_t max_body_bytes = 0;
  // A request with a non-empty body must carry "Content-Type: application/json" (parameters
  // such as "; charset=utf-8" allowed, case-insensitive), else 415 unsupported_media_type before
  // the handler runs. A request without a body needs none. Turn off for routes that take other
  // media or ignore their body.
  bool json_body = true;
};

// Matches "METHOD /literal/{param}/literal" patterns. Unknown path -> 404, known path with another
// method -> 405 method_not_allowed with an Allow header, both in the error shape. Thread-safe once
// built (Add is not).
class Router {
 public:
  void Add(std::string method, std::string pattern, Handler handler, RouteOptions options = {});
  // Paths exempt from authentication (for example "/healthz").
  void AddPublic(std::string method, std::string pattern, Handler handler, RouteOptions options = {});
  void SetAuthenticator(Authenticator auth) { auth_ = std::move(auth); }
  // Runs auth, matching, the route's Content-Type check and the handler; turns a handler's thrown
  // exception into a 500.
  Response Dispatch(Request req) const;
  // The body limit for a request whose head is `head` (method, target or path): the matching
  // route's RouteOptions::max_body_bytes, or `fallback` when no route matches or it sets none.
  // Called by the server on its loop thread before the body is read; cheap (no allocation
  // beyond decoding the path).
  size_t MaxBodyBytes(const Request& head, size_t fallback) const;
  // Every "METHOD pattern" registered (for the spec check).
  std::vector<std::string> Routes() const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;  // "{x}" marks a parameter
    Handler handler;
    RouteOptions options;
    bool is_public = false;
  };
  // The route for `req` (HEAD falls back to GET), or nullptr; *segments gets the decoded path
  // segments. An undecodable path is an error.
  Result<const Route*> Match(const Request& req, std::vector<std::string>* segments) const;
  std::vector<Route> routes_;
  Authenticator auth_;
};

struct ServerOptions {
  std::string address = "127.0.0.1";
  int port = 0;  // 0 = pick a free port; see HttpServer::port()
  // Larger bodies get 413 and are not dispatched; a route may set its own (RouteOptions).
  size_t max_body_bytes = 1 << 20;
  size_t max_header_bytes = 64 << 10;  // larger request heads get 431
  int worker_threads = 4;              // handlers run here, never on the loop thread
  int idle_timeout_ms = 60'000;        // keep-alive connections idle this long are closed
  // A request head must be complete this long after its first byte (a new connection's first
  // head: after the connection is accepted). Else 408 and close (a connection that sent nothing
  // is closed without an answer). Bounds slow-header ("slowloris") clients.
  int header_timeout_ms = 10'000;
  // A request body must be complete this long after its head; else 408 and close. At 30 s a
  // 2 MiB heartbeat needs 70 KB/s.
  int body_timeout_ms = 30'000;
  // Open connections, in total and per client IP address (streams included). One over either
  // cap is answered 503 unavailable with "Retry-After: 1" and closed, without reading its
  // request; others are not held up. 4096 leaves room for 1,000 hosts heartbeating plus
  // operators; 256 per address lets one host or proxy multiplex but not take the server.
  int max_connections = 4096;
  int max_connections_per_client = 256;
  // A stream whose client falls this far behind (bytes written, not yet taken by the kernel) is
  // cut off (StreamWriter::Write). Bounds a stream's memory: with thousands of event streams,
  // keep it near the largest burst a healthy consumer must absorb.
  size_t max_stream_buffered_bytes = StreamWriter::kMaxBufferedBytes;
};

// An HTTP/1.1 server with keep-alive and pipelining, on its own libuv loop thread; handlers run on
// `worker_threads` threads of its own. Requests on one connection are answered in order, one at a
// time; different connections are served concurrently. Malformed requests get 400 in the error
// shape and the connection is closed. An answer for a connection that closed meanwhile is dropped.
// Thread-safe: Start/Stop from any one thread, never from a handler or a StreamWriter::OnClose
// callback (Stop waits for those). The router must outlive the server. Start() sets SIGPIPE to
// ignored when it still has its default action, and raises the soft RLIMIT_NOFILE (up to the
// hard limit) when it is below max_connections + 256, so that the caps, not the descriptor
// table, decide.
//
// Streams cost no thread: a StreamFunction that hands the writer to a producer and returns frees
// its worker at once; an open stream then costs its connection (~2 KB in user space, plus the
// kernel's socket buffers) and what its client has not read yet (at most
// max_stream_buffered_bytes).
class HttpServer {
 public:
  HttpServer(ServerOptions options, const Router* router);
  ~HttpServer();  // Stops.
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving. kUnavailable when the address cannot be bound (in use, no such
  // address), with the address in the message; kFailedPrecondition when called a second time.
  Status Start();
  // Stops accepting, finishes in-flight handlers (their answers are still sent, with
  // "Connection: close"), closes open streams and connections, joins threads. Idempotent.
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
  std::string base_url;      // "http://10.77.0.1:7700"
  std::string bearer_token;  // sent as Authorization: Bearer ... when non-empty
  int timeout_ms = 30'000;
  int connect_timeout_ms = 3'000;
  // A peer's answer is outside input: a body larger than this (an agent gone wrong) fails the
  // call with kResourceExhausted instead of being buffered. Stream() bodies passed to on_data
  // are not counted (they are open-ended); its error bodies are.
  size_t max_response_bytes = 64 << 20;
  // HTTP Basic credentials, sent when basic_user is non-empty (a BMC's Redfish service).
  std::string basic_user{}, basic_password{};
  // PEM certificates an https:// peer must chain to, instead of the system's store (a BMC's own
  // self-signed certificate). Empty: the system's store.
  std::string ca_cert_pem{};
};

class HttpClient {
 public:
  explicit HttpClient(ClientOptions options);
  // Transport failures (refused, timeout, DNS) are kUnavailable / kDeadlineExceeded naming the URL;
  // an answer over max_response_bytes is kResourceExhausted; any HTTP status is returned as a
  // ClientResponse (not an error).
  Result<ClientResponse> Do(std::string_view method, std::string_view path, std::string_view body = "",
                            const std::map<std::string, std::string>& headers = {}) const;
  // Do() plus: 2xx -> parsed JSON body (null for an empty body); non-2xx -> StatusFromHttp().
  // A 2xx answer whose body is not JSON is kInternal.
  Result<Json> Call(std::string_view method, std::string_view path, const Json* body = nullptr) const;
  // Reads a streamed answer (SSE) as it arrives: `on_data` gets the body in pieces of any size
  // (not aligned to chunks or events) and returns false to stop reading. OK when the server ends
  // the body or `on_data` stops; non-2xx -> StatusFromHttp(); transport failures as for Do().
  // timeout_ms does not apply (streams are open-ended); connect_timeout_ms does, and a stream
  // that sends nothing for `idle_timeout_ms` (0 = never) fails with kDeadlineExceeded.
  Status Stream(std::string_view method, std::string_view path,
                const std::function<bool(std::string_view data)>& on_data,
                const std::map<std::string, std::string>& headers = {}, int idle_timeout_ms = 0) const;

 private:
  struct HandlePool;
  ClientOptions options_;
  // Idle libcurl handles kept with their open connections (keep-alive across calls). Shared by
  // copies of this client.
  std::shared_ptr<HandlePool> handles_;
};

}  // namespace uw::api
