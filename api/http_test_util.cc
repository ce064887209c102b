// HttpServerTest's routes and RawConnection (http_test_util.h).
#include "api/http_test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <stdexcept>
#include <utility>

namespace uw::api::http_test {

RawConnection::RawConnection(int port) {
  fd_ = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{static_cast<time_t>(kDeadline.count()), 0};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
}

RawConnection::~RawConnection() {
  if (fd_ >= 0) close(fd_);
}

bool RawConnection::Send(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void RawConnection::ShutdownWrite() { shutdown(fd_, SHUT_WR); }

void RawConnection::Reset() {
  linger l{1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd_);
  fd_ = -1;
}

RawResponse RawConnection::Read() {
  RawResponse r;
  size_t head_end;
  while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (!Fill()) return r;
  }
  std::string head = buf_.substr(0, head_end);
  buf_.erase(0, head_end + 4);
  size_t line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  r.status = std::stoi(status_line.substr(9, 3));
  size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string::npos) end = head.size();
    std::string line = head.substr(pos, end - pos);
    size_t colon = line.find(':');
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    size_t v = colon + 1;
    while (v < line.size() && line[v] == ' ') ++v;
    r.headers[name] = line.substr(v);
    pos = end + 2;
  }
  if (r.status == 100) return r;
  if (r.headers.count("content-length") != 0) {
    size_t len = std::stoul(r.headers["content-length"]);
    while (buf_.size() < len) {
      if (!Fill()) return RawResponse();
    }
    r.body = buf_.substr(0, len);
    buf_.erase(0, len);
  } else if (r.headers["transfer-encoding"] == "chunked") {
    while (true) {
      size_t eol;
      while ((eol = buf_.find("\r\n")) == std::string::npos) {
        if (!Fill()) return RawResponse();
      }
      size_t len = std::stoul(buf_.substr(0, eol), nullptr, 16);
      while (buf_.size() < eol + 2 + len + 2) {
        if (!Fill()) return RawResponse();
      }
      r.body += buf_.substr(eol + 2, len);
      buf_.erase(0, eol + 2 + len + 2);
      if (len == 0) break;
    }
  }
  return r;
}

std::string RawConnection::ReadAll() {
  while (Fill()) {
  }
  return std::exchange(buf_, "");
}

int RawConnection::ReadHeadStatus() {
  size_t head_end;
  while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (!Fill()) return 0;
  }
  int status = std::stoi(buf_.substr(9, 3));
  buf_.erase(0, head_end + 4);
  return status;
}

bool RawConnection::ReadEof() {
  if (!buf_.empty()) return false;
  char c;
  ssize_t n = recv(fd_, &c, 1, 0);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

bool RawConnection::Fill() {
  char tmp[16384];
  ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
  if (n <= 0) return false;
  buf_.append(tmp, static_cast<size_t>(n));
  return true;
}

void ExpectErrorShape(const std::string& body, int status, std::string_view code) {
  Json j = Json::parse(body);
  ASSERT_TRUE(j.contains("error")) << body;
  EXPECT_EQ(j["error"]["code"], code) << body;
  EXPECT_EQ(j["error"]["status"], status) << body;
  EXPECT_TRUE(j["error"]["message"].is_string()) << body;
}

std::string Message(const std::string& body) { return Json::parse(body)["error"]["message"].get<std::string>(); }

void HttpServerTest::SetUp() {
  router_.AddPublic("GET", "/healthz", [](const Request&) { return Response::Json(200, {{"ok", true}}); });
  router_.Add("GET", "/api/v1/guests/{name}/stats", [](const Request& req) {
    Json query = Json::object();
    for (const auto& [k, v] : req.query) query[k] = v;
    return Response::Json(
        200, {{"name", req.params.at("name")}, {"query", query}, {"path", req.path}, {"principal", req.principal}});
  });
  router_.Add("GET", "/echo", [](const Request& req) {
    return Response::Json(200, {{"i", req.query.count("i") ? req.query.at("i") : ""}, {"remote", req.remote}});
  });
  router_.Add(
      "POST", "/echo",
      [this](const Request& req) {
        ++posts_;
        return Response::Json(200, {{"size", req.body.size()}});
      },
      RouteOptions{.json_body = false});
  // A JSON route like the manager's create: parses the body and answers it back (nlohmann's
  // recursive dump of the parsed labels is what crashed uw-manager), with a larger body limit.
  router_.Add(
      "POST", "/guests",
      [](const Request& req) {
        auto body = req.JsonBody();
        if (!body.ok()) return Response::Error(body.status());
        return Response::Json(201, *body);
      },
      RouteOptions{.max_body_bytes = 4 << 20});
  router_.Add("GET", "/events/hold", [this](const Request&) {
    // Hands the writer to a "producer" (a list) and returns: the worker is free at once.
    return Response::Stream("text/event-stream", [this](std::shared_ptr<StreamWriter> w) {
      w->Write(": open\n\n");
      std::lock_guard<std::mutex> lock(writer_mu_);
      held_.push_back(std::move(w));
    });
  });
  router_.Add("GET", "/boom", [](const Request&) -> Response { throw std::runtime_error("handler exploded"); });
  router_.Add("GET", "/missing",
              [](const Request&) { return Response::Error(NotFoundError("guest 'web1' is not defined")); });
  router_.Add("GET", "/slow", [this](const Request&) {
    slow_started_.set_value();
    release_slow_.Wait();
    return Response::Json(200, {{"slow", true}});
  });
  router_.Add("GET", "/events/burst", [](const Request& req) {
    // Writes everything at once and ends the body.
    return Response::Stream("text/event-stream", [](std::shared_ptr<StreamWriter> w) {
      for (int i = 1; i <= 3; ++i) {
        w->Write(SseEvent("guest", "{\"n\":" + std::to_string(i) + "}", std::to_string(i)));
      }
      w->Close();
    });
  });
  router_.Add("GET", "/events/live", [this](const Request& req) {
    // Hands the writer to a "producer" (the test body) and returns.
    Response r = Response::Stream("text/event-stream", [this](std::shared_ptr<StreamWriter> w) {
      w->OnClose([this] { stream_closed_.Open(); });
      std::lock_guard<std::mutex> lock(writer_mu_);
      writer_ = std::move(w);
      writer_cv_.notify_all();
    });
    r.headers["Cache-Control"] = "no-cache";
    return r;
  });
  router_.SetAuthenticator([](Request& req) -> Status {
    std::string token = req.BearerToken();
    if (token.empty()) return UnauthenticatedError("missing bearer token");
    if (token != "s3cret") return UnauthenticatedError("unknown bearer token");
    req.principal = "operator";
    return Status::Ok();
  });
  options_.max_body_bytes = 4096;
  options_.max_header_bytes = 4096;
}

}  // namespace uw::api::http_test
