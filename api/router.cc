// Request/Response helpers, the Status <-> HTTP mapping and the Router.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <set>
#include <string>
#include <utility>

#include "api/http.h"
#include "api/request_parser.h"

namespace uw::api {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "/a/b/" -> {"a", "b"}; "/" -> {}. Empty inner segments are kept (and then match nothing).
std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  if (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (path.empty()) return out;
  while (true) {
    size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool IsParam(std::string_view segment) {
  return segment.size() >= 2 && segment.front() == '{' && segment.back() == '}';
}

// "application/json", "Application/JSON; charset=utf-8" -> true.
bool IsJsonMediaType(std::string_view content_type) {
  std::string_view type = Trim(content_type.substr(0, content_type.find(';')));
  return Lower(type) == "application/json";
}

std::string ErrorBody(int http_status, std::string_view code, const std::string& message) {
  uw::Json body = {{"error", {{"code", std::string(code)}, {"message", message}, {"status", http_status}}}};
  // Messages may carry bytes from requests; never let a bad UTF-8 sequence turn into a throw.
  return body.dump(-1, ' ', false, uw::Json::error_handler_t::replace);
}

}  // namespace

// ---- Request ------------------------------------------------------------------------------------

std::string Request::Header(std::string_view name) const {
  auto it = headers.find(Lower(name));
  return it == headers.end() ? std::string() : it->second;
}

std::string Request::BearerToken() const {
  const std::string header = Header("authorization");  // Trim() views into it: keep it alive
  std::string_view v = Trim(header);
  constexpr std::string_view kScheme = "bearer ";
  if (v.size() <= kScheme.size() || Lower(v.substr(0, kScheme.size())) != kScheme) return "";
  return std::string(Trim(v.substr(kScheme.size())));
}

Result<Json> Request::JsonBody() const {
  if (Trim(body).empty()) {
    return InvalidArgumentError("request body: expected a JSON object, got an empty body");
  }
  UW_ASSIGN_OR_RETURN(Json j, ParseJson(body, "request body"));
  if (!j.is_object()) {
    return InvalidArgumentError(std::string("request body: expected a JSON object, got ") + j.type_name());
  }
  return j;
}

Result<Json> Request::OptionalJsonBody() const {
  if (Trim(body).empty()) return uw::Json::object();
  return JsonBody();
}

// ---- Response -----------------------------------------------------------------------------------

Response Response::Json(int status, const uw::Json& body) {
  Response r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, uw::Json::error_handler_t::replace);
  return r;
}

Response Response::Error(const Status& status) { return Error(HttpStatusFor(status.code()), status); }

Response Response::Error(int http_status, const Status& status) {
  Status s = status.ok() ? InternalError("error response built from an OK status") : status;
  return Error(http_status, StatusCodeName(s.code()), s);
}

Response Response::Error(int http_status, std::string_view code, const Status& status) {
  Response r;
  r.status = http_status;
  r.body = ErrorBody(http_status, code, status.message());
  return r;
}

Response Response::Stream(std::string content_type, StreamFunction fn) {
  Response r;
  r.status = 200;
  r.content_type = std::move(content_type);
  r.stream = std::move(fn);
  return r;
}

std::string SseEvent(std::string_view event, std::string_view data, std::string_view id) {
  // Field values must not contain line breaks; the only multi-line field is data.
  auto one_line = [](std::string_view v) {
    std::string out;
    for (char c : v) {
      if (c != '\r' && c != '\n') out.push_back(c);
    }
    return out;
  };
  std::string out;
  if (!id.empty()) out += "id: " + one_line(id) + "\n";
  if (!event.empty()) out += "event: " + one_line(event) + "\n";
  size_t start = 0;
  while (true) {
    size_t nl = data.find('\n', start);
    std::string_view line = data.substr(start, nl == std::string_view::npos ? nl : nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out += "data: ";
    out += line;
    out += "\n";
    if (nl == std::string_view::npos) break;
    start = nl + 1;
  }
  out += "\n";
  return out;
}

// ---- Status <-> HTTP ----------------------------------------------------------------------------

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kAborted:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kResourceExhausted:
      return 409;
    case StatusCode::kInternal:
      return 500;
    case StatusCode::kUnimplemented:
      return 501;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
  }
  return 500;
}

namespace {
StatusCode CodeForHttpStatus(int http_status) {
  switch (http_status) {
    case 400:
      return StatusCode::kInvalidArgument;
    case 401:
      return StatusCode::kUnauthenticated;
    case 403:
      return StatusCode::kPermissionDenied;
    case 404:
      return StatusCode::kNotFound;
    case 405:
      return StatusCode::kInvalidArgument;
    case 408:
      return StatusCode::kDeadlineExceeded;
    case 409:
      return StatusCode::kFailedPrecondition;
    case 413:
    case 431:
      return StatusCode::kResourceExhausted;
    case 429:
      return StatusCode::kUnavailable;
    case 501:
      return StatusCode::kUnimplemented;
    case 502:
    case 503:
      return StatusCode::kUnavailable;
    case 504:
      return StatusCode::kDeadlineExceeded;
    default:
      break;
  }
  if (http_status >= 400 && http_status < 500) return StatusCode::kInvalidArgument;
  return StatusCode::kInternal;
}
}  // namespace

Status StatusFromHttp(int http_status, std::string_view body) {
  if (http_status >= 200 && http_status < 300) return Status::Ok();
  try {
    // A peer's answer is outside input too: parsed within the JSON limits.
    auto parsed = ParseJson(body, "error body");
    const uw::Json j = parsed.ok() ? std::move(parsed).value() : uw::Json();
    if (j.is_object() && j.contains("error") && j["error"].is_object()) {
      const uw::Json& e = j["error"];
      if (e.contains("code") && e["code"].is_string()) {
        std::string name = e["code"].get<std::string>();
        StatusCode code = StatusCodeFromName(name);
        // An unknown code name (a newer server) falls back to the HTTP status.
        if (StatusCodeName(code) != name || code == StatusCode::kOk) {
          code = CodeForHttpStatus(http_status);
        }
        std::string message = e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>()
                                                                                : "HTTP " + std::to_string(http_status);
        return Status(code, std::move(message));
      }
    }
  } catch (const std::exception&) {
    // Not our error shape (a proxy's HTML page, an empty body): fall through.
  }
  std::string message = "HTTP " + std::to_string(http_status);
  std::string_view snippet = Trim(body.substr(0, 200));
  if (!snippet.empty()) {
    message += ": ";
    message += snippet;
  }
  return Status(CodeForHttpStatus(http_status), std::move(message));
}

// ---- Router -------------------------------------------------------------------------------------

void Router::Add(std::string method, std::string pattern, Handler handler, RouteOptions options) {
  Route route;
  route.method = std::move(method);
  for (std::string_view s : SplitPath(pattern)) route.segments.emplace_back(s);
  route.handler = std::move(handler);
  route.options = options;
  // Registering the same "METHOD pattern" twice replaces the first handler.
  for (Route& r : routes_) {
    if (r.method == route.method && r.segments == route.segments) {
      r = std::move(route);
      return;
    }
  }
  routes_.push_back(std::move(route));
}

void Router::AddPublic(std::string method, std::string pattern, Handler handler, RouteOptions options) {
  Add(method, pattern, std::move(handler), options);
  std::vector<std::string> segments;
  for (std::string_view s : SplitPath(pattern)) segments.emplace_back(s);
  for (Route& r : routes_) {
    if (r.method == method && r.segments == segments) r.is_public = true;
  }
}

std::vector<std::string> Router::Routes() const {
  std::vector<std::string> out;
  out.reserve(routes_.size());
  for (const Route& r : routes_) {
    std::string s = r.method + " ";
    if (r.segments.empty()) s += "/";
    for (const std::string& seg : r.segments) s += "/" + seg;
    out.push_back(std::move(s));
  }
  return out;
}

namespace {

bool PatternMatches(const std::vector<std::string>& pattern, const std::vector<std::string>& segments) {
  if (pattern.size() != segments.size()) return false;
  for (size_t i = 0; i < segments.size(); ++i) {
    if (IsParam(pattern[i])) {
      if (segments[i].empty()) return false;
    } else if (pattern[i] != segments[i]) {
      return false;
    }
  }
  return true;
}

// Literal segments beat parameters, leftmost first ("/guests/_search" beats "/guests/{name}").
bool MoreSpecific(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    bool pa = IsParam(a[i]), pb = IsParam(b[i]);
    if (pa != pb) return !pa;
  }
  return false;
}

}  // namespace

Result<const Router::Route*> Router::Match(const Request& req, std::vector<std::string>* segments) const {
  // Segments of the path: from the raw target when there is one (so that an encoded '/' stays
  // inside its segment), each decoded on its own.
  segments->clear();
  if (!req.target.empty()) {
    std::string_view raw = req.target;
    raw = raw.substr(0, raw.find('?'));
    for (std::string_view s : SplitPath(raw)) {
      auto decoded = PercentDecode(s, false);
      if (!decoded.ok()) return decoded.status().WithContext("path");
      segments->push_back(std::move(decoded).value());
    }
  } else {
    for (std::string_view s : SplitPath(req.path)) segments->emplace_back(s);
  }
  auto pick = [&](std::string_view method) -> const Route* {
    const Route* best = nullptr;
    for (const Route& r : routes_) {
      if (r.method != method || !PatternMatches(r.segments, *segments)) continue;
      if (best == nullptr || MoreSpecific(r.segments, best->segments)) best = &r;
    }
    return best;
  };
  const Route* route = pick(req.method);
  if (route == nullptr && req.method == "HEAD") route = pick("GET");  // the server drops the body
  return route;
}

size_t Router::MaxBodyBytes(const Request& head, size_t fallback) const {
  std::vector<std::string> segments;
  auto route = Match(head, &segments);
  if (!route.ok() || *route == nullptr || (*route)->options.max_body_bytes == 0) return fallback;
  return (*route)->options.max_body_bytes;
}

Response Router::Dispatch(Request req) const {
  std::vector<std::string> segments;
  auto matched = Match(req, &segments);
  if (!matched.ok()) return Response::Error(matched.status());
  const Route* route = *matched;

  // Authentication comes before 404/405/415 so that callers without a token learn nothing about
  // the route table; a public route skips it.
  bool is_public = route != nullptr && route->is_public;
  if (route == nullptr) {
    for (const Route& r : routes_) {
      if (r.is_public && PatternMatches(r.segments, segments)) is_public = true;
    }
  }
  const std::string what = req.method + " " + req.path;
  if (!is_public && auth_) {
    Status st;
    try {
      st = auth_(req);
    } catch (const std::exception& e) {
      spdlog::error("api: authenticator threw on {}: {}", what, e.what());
      return Response::Error(InternalError("authentication failed unexpectedly"));
    } catch (...) {
      return Response::Error(InternalError("authentication failed unexpectedly"));
    }
    if (!st.ok()) return Response::Error(st);
  }

  if (route == nullptr) {
    std::set<std::string> allowed;
    for (const Route& r : routes_) {
      if (PatternMatches(r.segments, segments)) allowed.insert(r.method);
    }
    if (allowed.empty()) return Response::Error(NotFoundError("no route for " + what));
    if (allowed.count("GET") != 0) allowed.insert("HEAD");
    std::string allow;
    for (const std::string& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
    Response r = Response::Error(
        405, "method_not_allowed",
        InvalidArgumentError("method " + req.method + " not allowed on " + req.path + " (allowed: " + allow + ")"));
    r.headers["Allow"] = allow;
    return r;
  }

  if (route->options.json_body && !req.body.empty()) {
    const std::string content_type = req.Header("content-type");
    if (!IsJsonMediaType(content_type)) {
      return Response::Error(
          415, "unsupported_media_type",
          InvalidArgumentError("request body must be application/json" +
                               (content_type.empty() ? std::string(" (no Content-Type given)")
                                                     : " (Content-Type: " + content_type.substr(0, 100) + ")")));
    }
  }

  for (size_t i = 0; i < segments.size(); ++i) {
    const std::string& seg = route->segments[i];
    if (IsParam(seg)) req.params[seg.substr(1, seg.size() - 2)] = std::move(segments[i]);
  }
  try {
    return route->handler(req);
  } catch (const std::exception& e) {
    spdlog::error("api: handler for {} threw: {}", what, e.what());
    return Response::Error(InternalError("handler for " + what + " failed: " + e.what()));
  } catch (...) {
    spdlog::error("api: handler for {} threw a non-std exception", what);
    return Response::Error(InternalError("handler for " + what + " failed"));
  }
}

}  // namespace uw::api
