// HttpClient on libcurl easy handles. Idle handles are kept (with their open connections) so that
// calls reuse keep-alive connections; each call takes a handle for itself, so calls from several
// threads never share one.
#include <curl/curl.h>

#include <cctype>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "api/http.h"

namespace uw::api {
namespace {

constexpr size_t kMaxIdleHandles = 8;

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

struct Exchange {
  ClientResponse* response = nullptr;
  // Streaming: body pieces of a 2xx answer go here; returning false stops the transfer.
  const std::function<bool(std::string_view)>* on_data = nullptr;
  CURL* handle = nullptr;
  bool stopped_by_caller = false;
  size_t max_body_bytes = 0;  // of a body kept in `response` (not of one passed to on_data)
  bool too_large = false;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* ex = static_cast<Exchange*>(user);
  size_t len = size * n;
  if (ex->on_data != nullptr) {
    long code = 0;
    curl_easy_getinfo(ex->handle, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code < 300) {
      if (!(*ex->on_data)(std::string_view(data, len))) {
        ex->stopped_by_caller = true;
        return 0;  // makes curl stop with CURLE_WRITE_ERROR
      }
      return len;
    }
  }
  if (ex->response->body.size() + len > ex->max_body_bytes) {
    ex->too_large = true;
    return 0;  // makes curl stop with CURLE_WRITE_ERROR
  }
  ex->response->body.append(data, len);
  return len;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* ex = static_cast<Exchange*>(user);
  size_t len = size * n;
  std::string_view line(data, len);
  if (line.rfind("HTTP/", 0) == 0) {
    ex->response->headers.clear();  // a new status line (after "100 Continue" or a redirect)
    return len;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return len;
  std::string name = Lower(Trim(line.substr(0, colon)));
  std::string value(Trim(line.substr(colon + 1)));
  auto [it, inserted] = ex->response->headers.try_emplace(name, value);
  if (!inserted) it->second += ", " + value;
  return len;
}

std::string JoinUrl(const std::string& base, std::string_view path) {
  std::string url = base;
  if (!url.empty() && url.back() == '/' && !path.empty() && path.front() == '/') url.pop_back();
  url += path;
  return url;
}

}  // namespace

struct HttpClient::HandlePool {
  ~HandlePool() {
    for (CURL* h : idle) curl_easy_cleanup(h);
  }
  CURL* Take() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!idle.empty()) {
        CURL* h = idle.back();
        idle.pop_back();
        return h;
      }
    }
    return curl_easy_init();
  }
  void Give(CURL* h) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (idle.size() < kMaxIdleHandles) {
        idle.push_back(h);
        return;
      }
    }
    curl_easy_cleanup(h);
  }

  std::mutex mu;
  std::vector<CURL*> idle;  // guarded by mu
};

HttpClient::HttpClient(ClientOptions options) : options_(std::move(options)), handles_(std::make_shared<HandlePool>()) {
  GlobalInit();
}

namespace {

// Performs one exchange on `h` (which the caller owns). Transport errors become Status.
Status Perform(CURL* h, const ClientOptions& options, std::string_view method, const std::string& url,
               std::string_view body, const std::map<std::string, std::string>& headers, Exchange* ex, bool streaming,
               int idle_timeout_ms) {
  curl_easy_reset(h);
  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options.connect_timeout_ms));
  if (!streaming) {
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout_ms));
  } else if (idle_timeout_ms > 0) {
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, static_cast<long>((idle_timeout_ms + 999) / 1000));
  }
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  if (!options.basic_user.empty()) {
    curl_easy_setopt(h, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
    curl_easy_setopt(h, CURLOPT_USERNAME, options.basic_user.c_str());
    curl_easy_setopt(h, CURLOPT_PASSWORD, options.basic_password.c_str());
  }
  if (!options.ca_cert_pem.empty()) {
    curl_blob ca{const_cast<char*>(options.ca_cert_pem.data()), options.ca_cert_pem.size(), CURL_BLOB_COPY};
    curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca);
  }
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &OnBody);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, ex);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, ex);

  const std::string m(method);
  bool has_content_type = false;
  Slist list;
  auto add = [&](const std::string& line) {
    curl_slist* next = curl_slist_append(list.get(), line.c_str());
    if (next != nullptr) {
      // `next` is the list's head: it owns the old nodes now (curl_slist_append links onto them).
      static_cast<void>(list.release());
      list.reset(next);
    }
  };
  add("Expect:");  // no "100 Continue" round trip for larger bodies
  if (!options.bearer_token.empty()) add("Authorization: Bearer " + options.bearer_token);
  for (const auto& [name, value] : headers) {
    if (Lower(name) == "content-type") has_content_type = true;
    add(name + ": " + value);
  }
  if (m == "GET" && body.empty()) {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else if (m == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m.c_str());
    if (!body.empty() || m == "POST" || m == "PUT" || m == "PATCH") {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
      if (!has_content_type) add(body.empty() ? "Content-Type:" : "Content-Type: application/json");
    }
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, list.get());

  ex->handle = h;
  CURLcode rc = curl_easy_perform(h);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);
  if (rc == CURLE_OK) return Status::Ok();
  if (rc == CURLE_WRITE_ERROR && ex->stopped_by_caller) return Status::Ok();
  if (rc == CURLE_WRITE_ERROR && ex->too_large) {
    return ResourceExhaustedError(m + " " + url + ": answer larger than " + std::to_string(ex->max_body_bytes) +
                                  " bytes");
  }
  std::string what = m + " " + url + ": " + curl_easy_strerror(rc);
  if (error[0] != '\0') what += std::string(" (") + error + ")";
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: {
      curl_off_t connect_us = 0;
      curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connect_us);
      // Never connected: the host is unreachable (retry later); otherwise the call ran out of time.
      if (connect_us == 0) return UnavailableError(what);
      return DeadlineExceededError(what);
    }
    case CURLE_PEER_FAILED_VERIFICATION:
      return UnauthenticatedError(what + ": the peer's certificate is not trusted");
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return InvalidArgumentError(what);
    default:
      return UnavailableError(what);
  }
}

}  // namespace

Result<ClientResponse> HttpClient::Do(std::string_view method, std::string_view path, std::string_view body,
                                      const std::map<std::string, std::string>& headers) const {
  CURL* h = handles_->Take();
  if (h == nullptr) return InternalError("curl_easy_init failed");
  ClientResponse response;
  Exchange ex;
  ex.response = &response;
  ex.max_body_bytes = options_.max_response_bytes;
  Status st = Perform(h, options_, method, JoinUrl(options_.base_url, path), body, headers, &ex,
                      /*streaming=*/false, 0);
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  handles_->Give(h);
  if (!st.ok()) return st;
  response.status = static_cast<int>(code);
  return response;
}

Result<Json> HttpClient::Call(std::string_view method, std::string_view path, const Json* body) const {
  std::map<std::string, std::string> headers = {{"Accept", "application/json"}};
  std::string payload;
  if (body != nullptr) {
    payload = body->dump();
    headers["Content-Type"] = "application/json";
  }
  UW_ASSIGN_OR_RETURN(ClientResponse r, Do(method, path, payload, headers));
  if (r.status < 200 || r.status >= 300) return StatusFromHttp(r.status, r.body);
  if (Trim(r.body).empty()) return Json();
  auto parsed = ParseJson(r.body, std::string(method) + " " + std::string(path) + ": response body");
  if (!parsed.ok()) return InternalError(parsed.status().message());
  return parsed;
}

Status HttpClient::Stream(std::string_view method, std::string_view path,
                          const std::function<bool(std::string_view data)>& on_data,
                          const std::map<std::string, std::string>& headers, int idle_timeout_ms) const {
  CURL* h = handles_->Take();
  if (h == nullptr) return InternalError("curl_easy_init failed");
  ClientResponse response;
  Exchange ex;
  ex.response = &response;
  ex.max_body_bytes = options_.max_response_bytes;
  ex.on_data = &on_data;
  std::map<std::string, std::string> all = headers;
  all.try_emplace("Accept", "text/event-stream");
  Status st = Perform(h, options_, method, JoinUrl(options_.base_url, path), "", all, &ex,
                      /*streaming=*/true, idle_timeout_ms);
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  handles_->Give(h);
  if (!st.ok()) return st;
  return StatusFromHttp(static_cast<int>(code), response.body);
}

}  // namespace uw::api
