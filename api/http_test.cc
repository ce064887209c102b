// End-to-end tests: a real HttpServer on 127.0.0.1, driven by HttpClient and by raw sockets.
// Nothing here sleeps to wait: tests block on promises, latches and socket reads, each bounded by
// a generous deadline that only matters when the code under test is broken. (Sleeps only pace a
// deliberately slow client or let a deadline pass.)
#include "api/http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace uw::api {
namespace {

using std::chrono::seconds;
constexpr auto kDeadline = seconds(20);

// A one-shot gate: Wait() blocks until Open().
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kDeadline, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

struct RawResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case keys
  std::string body;
  Json Body() const { return Json::parse(body); }
};

// A blocking client socket with a receive deadline.
class RawConnection {
 public:
  explicit RawConnection(int port) {
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
  ~RawConnection() {
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return connected_; }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }
  // Closes with a TCP reset (SO_LINGER 0) instead of a FIN.
  void Reset() {
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd_);
    fd_ = -1;
  }

  // Reads one response (Content-Length or chunked). status 0 when the connection ended first.
  RawResponse Read() {
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

  // Everything until the server closes the connection.
  std::string ReadAll() {
    while (Fill()) {
    }
    return std::exchange(buf_, "");
  }

  // Reads a response head only (for streams that stay open): its status, 0 when the connection
  // ended first.
  int ReadHeadStatus() {
    size_t head_end;
    while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return 0;
    }
    int status = std::stoi(buf_.substr(9, 3));
    buf_.erase(0, head_end + 4);
    return status;
  }

  // True when the server closes the connection (EOF or reset) with no further bytes.
  bool ReadEof() {
    if (!buf_.empty()) return false;
    char c;
    ssize_t n = recv(fd_, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  bool Fill() {
    char tmp[16384];
    ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

void ExpectErrorShape(const std::string& body, int status, std::string_view code) {
  Json j = Json::parse(body);
  ASSERT_TRUE(j.contains("error")) << body;
  EXPECT_EQ(j["error"]["code"], code) << body;
  EXPECT_EQ(j["error"]["status"], status) << body;
  EXPECT_TRUE(j["error"]["message"].is_string()) << body;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
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

  void StartServer() {
    server_ = std::make_unique<HttpServer>(options_, &router_);
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_GT(server_->port(), 0);
  }

  void TearDown() override {
    release_slow_.Open();
    if (server_) server_->Stop();
  }

  HttpClient Client(std::string token = "s3cret") {
    ClientOptions o;
    o.base_url = "http://127.0.0.1:" + std::to_string(server_->port());
    o.bearer_token = std::move(token);
    o.timeout_ms = 20'000;
    return HttpClient(o);
  }

  std::string Auth() const { return "Authorization: Bearer s3cret\r\n"; }

  Router router_;
  ServerOptions options_;
  std::unique_ptr<HttpServer> server_;
  std::atomic<int> posts_{0};
  std::promise<void> slow_started_;
  Gate release_slow_;

  std::shared_ptr<StreamWriter> WaitForWriter() {
    std::unique_lock<std::mutex> lock(writer_mu_);
    writer_cv_.wait_for(lock, kDeadline, [this] { return writer_ != nullptr; });
    return writer_;
  }
  std::mutex writer_mu_;
  std::condition_variable writer_cv_;
  std::shared_ptr<StreamWriter> writer_;             // guarded by writer_mu_
  std::vector<std::shared_ptr<StreamWriter>> held_;  // guarded by writer_mu_
  Gate stream_closed_;
};

TEST_F(HttpServerTest, RoutesWithDecodedParamsAndQuery) {
  StartServer();
  auto r = Client().Call("GET", "/api/v1/guests/web%201/stats?window=5%20m&tag=a%26b&x=1+2");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["name"], "web 1");
  EXPECT_EQ((*r)["path"], "/api/v1/guests/web 1/stats");
  EXPECT_EQ((*r)["query"]["window"], "5 m");
  EXPECT_EQ((*r)["query"]["tag"], "a&b");
  EXPECT_EQ((*r)["query"]["x"], "1 2");
  EXPECT_EQ((*r)["principal"], "operator");
}

TEST_F(HttpServerTest, AuthMissingOrWrongTokenIs401) {
  StartServer();
  auto missing = Client("").Call("GET", "/api/v1/guests/a/stats");
  EXPECT_EQ(missing.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(missing.status().message(), "missing bearer token");
  auto wrong = Client("nope").Do("GET", "/api/v1/guests/a/stats");
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(wrong->status, 401);
  ExpectErrorShape(wrong->body, 401, "unauthenticated");
  EXPECT_TRUE(Client("").Call("GET", "/healthz").ok());  // public
}

TEST_F(HttpServerTest, NotFoundAndMethodNotAllowedShapes) {
  StartServer();
  auto nf = Client().Do("GET", "/api/v1/nothing");
  ASSERT_TRUE(nf.ok());
  EXPECT_EQ(nf->status, 404);
  ExpectErrorShape(nf->body, 404, "not_found");
  EXPECT_EQ(nf->headers["content-type"], "application/json");
  auto na = Client().Do("DELETE", "/echo");
  ASSERT_TRUE(na.ok());
  EXPECT_EQ(na->status, 405);
  ExpectErrorShape(na->body, 405, "method_not_allowed");
  EXPECT_EQ(na->headers["allow"], "GET, HEAD, POST");
}

TEST_F(HttpServerTest, HandlerExceptionIs500) {
  StartServer();
  auto r = Client().Do("GET", "/boom");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 500);
  ExpectErrorShape(r->body, 500, "internal");
  // The server carries on.
  EXPECT_TRUE(Client().Call("GET", "/echo").ok());
}

TEST_F(HttpServerTest, StatusRoundTripsThroughTheWire) {
  StartServer();
  auto r = Client().Call("GET", "/missing");
  EXPECT_EQ(r.status(), NotFoundError("guest 'web1' is not defined"));
}

TEST_F(HttpServerTest, MalformedRequestLineIs400ThenClose) {
  StartServer();
  RawConnection c(server_->port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send("GARBAGE\r\n\r\n"));
  RawResponse r = c.Read();
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.headers["connection"], "close");
  ExpectErrorShape(r.body, 400, "invalid_argument");
  EXPECT_TRUE(c.ReadEof());
}

TEST_F(HttpServerTest, BadPercentEscapeIs400) {
  StartServer();
  RawConnection c(server_->port());
  ASSERT_TRUE(c.Send("GET /api/v1/guests/a%zz/stats HTTP/1.1\r\n" + Auth() + "\r\n"));
  RawResponse r = c.Read();
  EXPECT_EQ(r.status, 400);
  ExpectErrorShape(r.body, 400, "invalid_argument");
}

TEST_F(HttpServerTest, OversizedBodyIs413WithoutRunningTheHandler) {
  StartServer();
  {
    // Rejected from Content-Length alone, before the body is sent.
    RawConnection c(server_->port());
    ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\n" + Auth() + "Content-Length: 100000\r\n\r\n"));
    RawResponse r = c.Read();
    EXPECT_EQ(r.status, 413);
    ExpectErrorShape(r.body, 413, "resource_exhausted");
    EXPECT_TRUE(c.ReadEof());
  }
  {
    // A chunked body that grows past the limit.
    RawConnection c(server_->port());
    std::string chunk(3000, 'x');
    ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\n" + Auth() + "Transfer-Encoding: chunked\r\n\r\n"));
    ASSERT_TRUE(c.Send("bb8\r\n" + chunk + "\r\nbb8\r\n" + chunk + "\r\n"));
    RawResponse r = c.Read();
    EXPECT_EQ(r.status, 413);
    ExpectErrorShape(r.body, 413, "resource_exhausted");
  }
  // Through the client, with the body actually sent: the client reads the 413, not a reset.
  auto r = Client().Do("POST", "/echo", std::string(200000, 'y'));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(posts_.load(), 0);
  // At the limit it is dispatched.
  auto ok = Client().Call("POST", "/echo", nullptr);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(posts_.load(), 1);
  auto exact = Client().Do("POST", "/echo", std::string(4096, 'z'));
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->status, 200);
  EXPECT_EQ(exact->body, "{\"size\":4096}");
}

TEST_F(HttpServerTest, HugeHeaderIs431) {
  StartServer();
  RawConnection c(server_->port());
  ASSERT_TRUE(c.Send("GET /echo HTTP/1.1\r\n" + Auth() + "X-Big: " + std::string(8000, 'h') + "\r\n\r\n"));
  RawResponse r = c.Read();
  EXPECT_EQ(r.status, 431);
  ExpectErrorShape(r.body, 431, "resource_exhausted");
  EXPECT_TRUE(c.ReadEof());
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  StartServer();
  RawConnection c(server_->port());
  std::string remote;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c.Send("GET /echo?i=" + std::to_string(i) + " HTTP/1.1\r\nHost: t\r\n" + Auth() + "\r\n"));
    RawResponse r = c.Read();
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["connection"], "keep-alive");
    EXPECT_EQ(r.Body()["i"], std::to_string(i));
    if (i == 0) remote = r.Body()["remote"];
    EXPECT_EQ(r.Body()["remote"], remote);  // same peer port: one connection
  }
  ASSERT_TRUE(c.Send("GET /echo?i=last HTTP/1.1\r\nConnection: close\r\n" + Auth() + "\r\n"));
  RawResponse r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["connection"], "close");
  EXPECT_TRUE(c.ReadEof());
}

TEST_F(HttpServerTest, ClientReusesItsKeepAliveConnection) {
  StartServer();
  HttpClient client = Client();
  auto a = client.Call("GET", "/echo?i=1");
  auto b = client.Call("GET", "/echo?i=2");
  HttpClient copy = client;  // copies share the idle connections
  auto c = copy.Call("GET", "/echo?i=3");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ((*a)["remote"], (*b)["remote"]);
  EXPECT_EQ((*a)["remote"], (*c)["remote"]);
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer();
  RawConnection c(server_->port());
  std::string batch;
  for (int i = 0; i < 10; ++i) {
    batch += "GET /echo?i=" + std::to_string(i) + " HTTP/1.1\r\n" + Auth() + "\r\n";
  }
  batch += "POST /echo HTTP/1.1\r\n" + Auth() + "Content-Length: 3\r\n\r\nabc";
  batch += "GET /nope HTTP/1.1\r\n" + Auth() + "\r\n";
  ASSERT_TRUE(c.Send(batch));
  for (int i = 0; i < 10; ++i) {
    RawResponse r = c.Read();
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.Body()["i"], std::to_string(i));
  }
  RawResponse post = c.Read();
  EXPECT_EQ(post.status, 200);
  EXPECT_EQ(post.Body()["size"], 3);
  EXPECT_EQ(c.Read().status, 404);
}

TEST_F(HttpServerTest, ExpectContinueGetsInterimAnswer) {
  StartServer();
  RawConnection c(server_->port());
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\n" + Auth() + "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n"));
  EXPECT_EQ(c.Read().status, 100);
  ASSERT_TRUE(c.Send("12345"));
  RawResponse r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Body()["size"], 5);
}

TEST_F(HttpServerTest, HeadHasNoBody) {
  StartServer();
  RawConnection c(server_->port());
  ASSERT_TRUE(c.Send("HEAD /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"));
  std::string all = c.ReadAll();
  EXPECT_EQ(all.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << all;
  EXPECT_NE(all.find("Content-Length: 11\r\n"), std::string::npos) << all;
  EXPECT_EQ(all.substr(all.size() - 4), "\r\n\r\n") << all;  // head only
}

TEST_F(HttpServerTest, SlowHandlerDoesNotBlockAFastOne) {
  StartServer();
  auto started = slow_started_.get_future();
  auto slow = std::async(std::launch::async, [this] { return Client().Call("GET", "/slow"); });
  ASSERT_EQ(started.wait_for(kDeadline), std::future_status::ready);
  // The slow handler holds a worker; the fast request still gets through.
  ClientOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(server_->port());
  o.bearer_token = "s3cret";
  o.timeout_ms = 5'000;
  auto fast = HttpClient(o).Call("GET", "/echo?i=fast");
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();
  EXPECT_EQ((*fast)["i"], "fast");
  EXPECT_EQ(slow.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  release_slow_.Open();
  auto s = slow.get();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)["slow"], true);
}

TEST_F(HttpServerTest, ClientDisconnectMidBodyIsNotDispatched) {
  StartServer();
  {
    RawConnection c(server_->port());
    ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\n" + Auth() + "Content-Length: 100\r\n\r\n0123456789"));
    c.ShutdownWrite();
    EXPECT_TRUE(c.ReadEof());  // the server closes; nothing to answer
  }
  {
    RawConnection c(server_->port());
    ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\n" + Auth() + "Content-Length: 100\r\n\r\n0123"));
    c.Reset();
  }
  EXPECT_TRUE(Client().Call("GET", "/echo").ok());
  EXPECT_EQ(posts_.load(), 0);
}

TEST_F(HttpServerTest, ClientGoneWhileHandlerRunsDropsTheAnswer) {
  StartServer();
  auto started = slow_started_.get_future();
  {
    RawConnection c(server_->port());
    ASSERT_TRUE(c.Send("GET /slow HTTP/1.1\r\n" + Auth() + "\r\n"));
    ASSERT_EQ(started.wait_for(kDeadline), std::future_status::ready);
    c.Reset();
  }
  release_slow_.Open();
  // The answer for the vanished connection is dropped (ASan would flag a use-after-free); the
  // server keeps serving.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(Client().Call("GET", "/echo").ok());
}

TEST_F(HttpServerTest, HalfClosedClientStillGetsItsAnswer) {
  StartServer();
  RawConnection c(server_->port());
  ASSERT_TRUE(c.Send("GET /echo?i=h HTTP/1.1\r\n" + Auth() + "\r\n"));
  c.ShutdownWrite();
  RawResponse r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Body()["i"], "h");
  EXPECT_TRUE(c.ReadEof());
}

TEST_F(HttpServerTest, IdleKeepAliveConnectionIsClosed) {
  options_.idle_timeout_ms = 50;
  StartServer();
  RawConnection c(server_->port());
  ASSERT_TRUE(c.Send("GET /healthz HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(c.Read().status, 200);
  EXPECT_TRUE(c.ReadEof());  // blocks until the server gives up on the idle connection
}

TEST_F(HttpServerTest, StopWaitsForInFlightHandlers) {
  StartServer();
  auto started = slow_started_.get_future();
  auto slow = std::async(std::launch::async, [this] { return Client().Do("GET", "/slow"); });
  ASSERT_EQ(started.wait_for(kDeadline), std::future_status::ready);
  RawConnection idle(server_->port());
  ASSERT_TRUE(idle.connected());
  ASSERT_TRUE(idle.Send("GET /healthz HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(idle.Read().status, 200);

  auto stopped = std::async(std::launch::async, [this] { server_->Stop(); });
  EXPECT_TRUE(idle.ReadEof());  // idle connections are closed at once
  EXPECT_EQ(stopped.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  release_slow_.Open();
  ASSERT_EQ(stopped.wait_for(kDeadline), std::future_status::ready);
  auto r = slow.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->headers["connection"], "close");
  // No longer listening.
  EXPECT_EQ(Client().Call("GET", "/healthz").status().code(), StatusCode::kUnavailable);
  server_->Stop();  // idempotent
}

TEST_F(HttpServerTest, StartOnATakenPortIsUnavailable) {
  StartServer();
  ServerOptions o = options_;
  o.port = server_->port();
  HttpServer second(o, &router_);
  Status st = second.Start();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("127.0.0.1:" + std::to_string(o.port)), std::string::npos) << st.message();
  EXPECT_EQ(server_->Start().code(), StatusCode::kFailedPrecondition);
}

std::string Events(int from, int to) {
  std::string out;
  for (int i = from; i <= to; ++i) {
    out += SseEvent("guest", "{\"n\":" + std::to_string(i) + "}", std::to_string(i));
  }
  return out;
}

TEST_F(HttpServerTest, StreamsServerSentEventsToTheClient) {
  StartServer();
  std::string got;
  Status st = Client().Stream("GET", "/events/burst", [&](std::string_view d) {
    got.append(d);
    return true;
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(got, Events(1, 3));
  // Errors come back as Status, with the body parsed.
  Status unauth = Client("").Stream("GET", "/events/burst", [](std::string_view) { return true; });
  EXPECT_EQ(unauth.code(), StatusCode::kUnauthenticated);
}

TEST_F(HttpServerTest, StreamIsChunkedAndConnectionIsReusedAfterIt) {
  StartServer();
  RawConnection c(server_->port());
  ASSERT_TRUE(c.Send("GET /events/burst HTTP/1.1\r\n" + Auth() + "\r\n"));
  RawResponse r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["transfer-encoding"], "chunked");
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  EXPECT_EQ(r.headers.count("content-length"), 0u);
  EXPECT_EQ(r.body, Events(1, 3));
  ASSERT_TRUE(c.Send("GET /healthz HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(c.Read().status, 200);
}

TEST_F(HttpServerTest, LiveStreamEndsWhenTheClientGoesAway) {
  StartServer();
  std::promise<std::string> first_two;
  auto reader = std::async(std::launch::async, [&] {
    std::string got;
    Status st = Client().Stream("GET", "/events/live", [&](std::string_view d) {
      got.append(d);
      if (got.size() < Events(1, 2).size()) return true;
      first_two.set_value(got);
      return false;  // hang up
    });
    return st;
  });
  std::shared_ptr<StreamWriter> w = WaitForWriter();
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(w->IsOpen());
  EXPECT_TRUE(w->Write(Events(1, 1)));
  EXPECT_TRUE(w->Write(Events(2, 2)));
  auto got = first_two.get_future();
  ASSERT_EQ(got.wait_for(kDeadline), std::future_status::ready);
  EXPECT_EQ(got.get(), Events(1, 2));
  EXPECT_TRUE(reader.get().ok());
  // The server notices the hang-up and closes the stream; the producer learns it.
  ASSERT_TRUE(stream_closed_.Wait());
  EXPECT_FALSE(w->IsOpen());
  EXPECT_FALSE(w->Write(Events(3, 3)));
  bool called = false;
  w->OnClose([&] { called = true; });  // already closed: runs at once
  EXPECT_TRUE(called);
  EXPECT_TRUE(Client().Call("GET", "/echo").ok());
}

TEST_F(HttpServerTest, StopEndsOpenStreamsAndWritersOutliveTheServer) {
  StartServer();
  std::promise<void> got_first;
  auto reader = std::async(std::launch::async, [&] {
    std::string got;
    bool signalled = false;
    Status st = Client().Stream("GET", "/events/live", [&](std::string_view d) {
      got.append(d);
      if (!signalled) {
        signalled = true;
        got_first.set_value();
      }
      return true;
    });
    return std::make_pair(st, got);
  });
  std::shared_ptr<StreamWriter> w = WaitForWriter();
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(w->Write(Events(1, 1)));
  ASSERT_EQ(got_first.get_future().wait_for(kDeadline), std::future_status::ready);
  server_->Stop();
  EXPECT_TRUE(stream_closed_.Wait());
  auto [st, got] = reader.get();
  EXPECT_TRUE(st.ok()) << st.ToString();  // a clean end of the body
  EXPECT_EQ(got, Events(1, 1));
  server_.reset();
  EXPECT_FALSE(w->IsOpen());
  EXPECT_FALSE(w->Write("late"));
  w->Close();
}

TEST_F(HttpServerTest, SlowStreamConsumerIsCutOff) {
  StartServer();
  RawConnection c(server_->port());  // sends the request, then never reads
  ASSERT_TRUE(c.Send("GET /events/live HTTP/1.1\r\n" + Auth() + "\r\n"));
  std::shared_ptr<StreamWriter> w = WaitForWriter();
  ASSERT_NE(w, nullptr);
  const std::string chunk(256 << 10, 'e');
  int writes = 0;
  while (writes < 400 && w->Write(chunk)) ++writes;
  EXPECT_LT(writes, 400);
  EXPECT_GE(static_cast<size_t>(writes) * chunk.size(), StreamWriter::kMaxBufferedBytes - chunk.size());
  EXPECT_FALSE(w->IsOpen());
  EXPECT_TRUE(stream_closed_.Wait());
}

// Thousands of event streams: a stream's backlog is bounded by the server's option, not only by
// the 4 MiB default (256 slow streams from one tenant would otherwise pin 1 GiB).
TEST_F(HttpServerTest, StreamBacklogLimitIsAServerOption) {
  options_.max_stream_buffered_bytes = 64 << 10;
  StartServer();
  RawConnection c(server_->port());  // sends the request, then never reads
  ASSERT_TRUE(c.Send("GET /events/live HTTP/1.1\r\n" + Auth() + "\r\n"));
  std::shared_ptr<StreamWriter> w = WaitForWriter();
  ASSERT_NE(w, nullptr);
  const std::string chunk(16 << 10, 'e');
  size_t written = 0;
  while (written < (64 << 20) && w->Write(chunk)) written += chunk.size();
  // What the kernel took (socket buffers) plus at most the option.
  EXPECT_LT(written, size_t{16} << 20);
  EXPECT_FALSE(w->IsOpen());
  EXPECT_TRUE(stream_closed_.Wait());
}

TEST_F(HttpServerTest, ClientTimeoutsAreDeadlineExceeded) {
  StartServer();
  ClientOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(server_->port());
  o.bearer_token = "s3cret";
  o.timeout_ms = 200;
  auto slow = HttpClient(o).Call("GET", "/slow");
  EXPECT_EQ(slow.status().code(), StatusCode::kDeadlineExceeded) << slow.status().ToString();
  // A stream that goes quiet.
  Status quiet = HttpClient(o).Stream(
      "GET", "/events/live", [](std::string_view) { return true; }, {}, /*idle_timeout_ms=*/1000);
  EXPECT_EQ(quiet.code(), StatusCode::kDeadlineExceeded) << quiet.ToString();
}

// ---- Issue 12: hostile and heavy use -----------------------------------------------------------

std::string Message(const std::string& body) { return Json::parse(body)["error"]["message"].get<std::string>(); }

// A create body whose `labels` was 70,000 nested arrays (140 KB) segfaulted uw-manager.
TEST_F(HttpServerTest, DeeplyNestedCreateBodyIs400AndTheServerKeepsAnswering) {
  StartServer();
  const std::string prefix = R"({"name":"deep","kind":"qemu","vcpus":1,"memory_mib":16,"labels":)";
  for (size_t depth : {70'000u, 1'000'000u}) {
    std::string body = prefix + std::string(depth, '[') + std::string(depth, ']') + "}";
    auto r = Client().Do("POST", "/guests", body);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 400);
    ExpectErrorShape(r->body, 400, "invalid_argument");
    EXPECT_EQ(Message(r->body),
              "request body: line 1, column " + std::to_string(prefix.size() + 64) + ": nesting deeper than 64");
    auto health = Client().Call("GET", "/healthz");
    EXPECT_TRUE(health.ok()) << health.status().ToString();
  }
  // At the limit (the object is depth 1) the body is taken.
  std::string at_limit = prefix + std::string(63, '[') + std::string(63, ']') + "}";
  auto ok = Client().Do("POST", "/guests", at_limit);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->status, 201);
}

// Five connections sending one byte every 2 s were never closed (each byte re-armed the idle
// timer). The head now has a deadline counted from its first byte.
TEST_F(HttpServerTest, SlowHeaderClientsAreAnswered408AndClosed) {
  options_.header_timeout_ms = 400;
  StartServer();
  constexpr int kClients = 5;
  std::vector<std::unique_ptr<RawConnection>> conns;
  for (int i = 0; i < kClients; ++i) {
    conns.push_back(std::make_unique<RawConnection>(server_->port()));
    ASSERT_TRUE(conns.back()->connected());
  }
  const auto start = std::chrono::steady_clock::now();
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    const std::string head = "GET /echo HTTP/1.1\r\nX-Slow: " + std::string(1000, 's');
    for (size_t i = 0; i < head.size() && !stop; ++i) {
      for (auto& c : conns) c->Send(head.substr(i, 1));  // fails once the server closed
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  for (auto& c : conns) {
    RawResponse r = c->Read();
    EXPECT_EQ(r.status, 408);
    EXPECT_EQ(r.headers["connection"], "close");
    ExpectErrorShape(r.body, 408, "deadline_exceeded");
    EXPECT_TRUE(c->ReadEof());
  }
  const auto closed_after = std::chrono::steady_clock::now() - start;
  stop = true;
  trickle.join();
  // The deadline plus at most the one-second linger after an error answer.
  EXPECT_LT(closed_after, std::chrono::milliseconds(400 + 1000 + 1000));
  std::printf("slow-header clients closed %lld ms after connecting (header_timeout_ms 400)\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(closed_after).count()));
  EXPECT_TRUE(Client().Call("GET", "/healthz").ok());
}

TEST_F(HttpServerTest, SilentConnectionIsClosedWithoutAnAnswer) {
  options_.header_timeout_ms = 200;
  StartServer();
  RawConnection silent(server_->port());
  RawConnection blank_lines(server_->port());
  ASSERT_TRUE(blank_lines.Send("\r\n\r\n"));  // skipped by HTTP; not the start of a request
  EXPECT_TRUE(silent.ReadEof());
  EXPECT_TRUE(blank_lines.ReadEof());
}

TEST_F(HttpServerTest, SlowBodyClientIsAnswered408AndClosed) {
  options_.body_timeout_ms = 300;
  StartServer();
  RawConnection c(server_->port());
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\n" + Auth() + "Content-Length: 1000\r\n\r\n"));
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    for (int i = 0; i < 1000 && !stop; ++i) {
      if (!c.Send("x")) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  RawResponse r = c.Read();
  stop = true;
  trickle.join();
  EXPECT_EQ(r.status, 408);
  ExpectErrorShape(r.body, 408, "deadline_exceeded");
  EXPECT_NE(Message(r.body).find("request body not received within 300 ms"), std::string::npos);
  EXPECT_EQ(posts_.load(), 0);
}

// The head deadline runs from a request's first byte: a keep-alive connection may rest between
// requests for idle_timeout_ms.
TEST_F(HttpServerTest, KeepAliveRestBetweenRequestsIsNotAHeadDeadline) {
  options_.header_timeout_ms = 150;
  StartServer();
  RawConnection c(server_->port());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(c.Send("GET /healthz HTTP/1.1\r\n\r\n"));
    EXPECT_EQ(c.Read().status, 200);
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // let the time pass
  }
  ASSERT_TRUE(c.Send("GET /healthz HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(c.Read().status, 200);
}

// Nothing capped connections: one client could hold every descriptor.
TEST_F(HttpServerTest, ConnectionsOverThePerClientCapAre503AndClosed) {
  options_.max_connections_per_client = 3;
  StartServer();
  std::vector<std::unique_ptr<RawConnection>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawConnection>(server_->port()));
    ASSERT_TRUE(held.back()->Send("GET /healthz HTTP/1.1\r\n\r\n"));
    ASSERT_EQ(held.back()->Read().status, 200);
  }
  RawConnection over(server_->port());
  ASSERT_TRUE(over.connected());
  RawResponse r = over.Read();  // answered without sending a request
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.headers["retry-after"], "1");
  EXPECT_EQ(r.headers["connection"], "close");
  ExpectErrorShape(r.body, 503, "unavailable");
  EXPECT_NE(Message(r.body).find("from 127.0.0.1"), std::string::npos);
  EXPECT_TRUE(over.ReadEof());
  // Those within the cap are not held up.
  ASSERT_TRUE(held[0]->Send("GET /healthz HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(held[0]->Read().status, 200);
  // A freed place is given to the next connection.
  held.pop_back();
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  int status = 0;
  while (status != 200 && std::chrono::steady_clock::now() < deadline) {
    RawConnection next(server_->port());
    ASSERT_TRUE(next.Send("GET /healthz HTTP/1.1\r\n\r\n"));
    status = next.Read().status;
  }
  EXPECT_EQ(status, 200);
}

TEST_F(HttpServerTest, ConnectionsOverTheTotalCapAre503) {
  options_.max_connections = 2;
  StartServer();
  RawConnection a(server_->port()), b(server_->port());
  ASSERT_TRUE(a.Send("GET /healthz HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(b.Send("GET /healthz HTTP/1.1\r\n\r\n"));
  ASSERT_EQ(a.Read().status, 200);
  ASSERT_EQ(b.Read().status, 200);
  auto r = Client().Do("GET", "/healthz");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(StatusFromHttp(r->status, r->body).code(), StatusCode::kUnavailable);
  EXPECT_NE(Message(r->body).find("too many open connections (2)"), std::string::npos);
}

// A connect flood over the cap: each refused connection is answered 503 or, past a bounded
// number of refusals in progress, closed at once; none is left hanging and the server answers.
TEST_F(HttpServerTest, ConnectFloodOverTheCapIsShed) {
  options_.max_connections_per_client = 1;
  StartServer();
  RawConnection held(server_->port());
  ASSERT_TRUE(held.Send("GET /healthz HTTP/1.1\r\n\r\n"));
  ASSERT_EQ(held.Read().status, 200);
  std::vector<std::unique_ptr<RawConnection>> flood;
  for (int i = 0; i < 600; ++i) flood.push_back(std::make_unique<RawConnection>(server_->port()));
  int answered = 0, closed = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto& c : flood) {
    std::string all = c->ReadAll();  // bounded by the receive deadline if left hanging
    if (all.rfind("HTTP/1.1 503 ", 0) == 0) {
      ++answered;
    } else {
      EXPECT_EQ(all, "");
      ++closed;
    }
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));  // none hung
  EXPECT_EQ(answered + closed, 600);
  EXPECT_GE(answered, 256);
  ASSERT_TRUE(held.Send("GET /healthz HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(held.Read().status, 200);
}

// While a request is with its handler, what the client pipelines behind it waits unparsed, at
// most 64 KiB per connection (then TCP pushes back), not a whole body limit's worth.
TEST_F(HttpServerTest, LargeBodyPipelinedBehindASlowRequestIsReadAfterIt) {
  StartServer();
  RawConnection c(server_->port());
  auto started = slow_started_.get_future();
  ASSERT_TRUE(c.Send("GET /slow HTTP/1.1\r\n" + Auth() + "\r\n"));
  ASSERT_EQ(started.wait_for(kDeadline), std::future_status::ready);
  const std::string body = "{\"labels\": [\"" + std::string(3 << 20, 'l') + "\"]}";
  std::thread sender([&] {
    c.Send("POST /guests HTTP/1.1\r\n" + Auth() + "Content-Type: application/json\r\n" +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  });
  release_slow_.Open();
  RawResponse slow = c.Read();
  EXPECT_EQ(slow.status, 200);
  RawResponse post = c.Read();
  sender.join();
  EXPECT_EQ(post.status, 201);
  EXPECT_EQ(post.body.size(), body.size() - 1);  // answered back without the space after ':'
}

// A host with 592 guests sent a 459,106-byte heartbeat, over the one server-wide limit: a route
// may now take more, and the 413 is still decided before the body is read.
TEST_F(HttpServerTest, RouteBodyLimitAppliesBeforeTheBodyIsRead) {
  StartServer();  // max_body_bytes 4096; POST /guests takes 4 MiB
  std::string big = "{\"labels\": [\"" + std::string(500'000, 'l') + "\"]}";
  auto ok = Client().Do("POST", "/guests", big);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->status, 201);
  auto echo = Client().Do("POST", "/echo", std::string(5000, 'e'));
  ASSERT_TRUE(echo.ok());
  EXPECT_EQ(echo->status, 413);
  {
    // From Content-Length alone: the answer comes before any of the body is sent.
    RawConnection c(server_->port());
    ASSERT_TRUE(c.Send("POST /guests HTTP/1.1\r\n" + Auth() +
                       "Content-Type: application/json\r\nContent-Length: 4194305\r\n\r\n"));
    RawResponse r = c.Read();
    EXPECT_EQ(r.status, 413);
    ExpectErrorShape(r.body, 413, "resource_exhausted");
    EXPECT_NE(Message(r.body).find("limit of 4194304 bytes"), std::string::npos);
  }
  {
    // A chunked body, counted as it arrives.
    RawConnection c(server_->port());
    ASSERT_TRUE(c.Send("POST /guests HTTP/1.1\r\n" + Auth() +
                       "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"));
    const std::string chunk = "10000\r\n" + std::string(0x10000, ' ') + "\r\n";
    for (int i = 0; i < 80 && c.Send(chunk); ++i) {
    }
    RawResponse r = c.Read();
    EXPECT_EQ(r.status, 413);
    ExpectErrorShape(r.body, 413, "resource_exhausted");
  }
}

// Content-Type was never checked.
TEST_F(HttpServerTest, BodyThatIsNotJsonIs415) {
  StartServer();
  auto form = Client().Do("POST", "/guests", "{}", {{"Content-Type", "application/x-www-form-urlencoded"}});
  ASSERT_TRUE(form.ok());
  EXPECT_EQ(form->status, 415);
  ExpectErrorShape(form->body, 415, "unsupported_media_type");
  auto charset = Client().Do("POST", "/guests", "{}", {{"Content-Type", "application/json; charset=utf-8"}});
  ASSERT_TRUE(charset.ok());
  EXPECT_EQ(charset->status, 201);
  RawConnection c(server_->port());
  ASSERT_TRUE(c.Send("POST /guests HTTP/1.1\r\n" + Auth() + "Content-Length: 2\r\n\r\n{}"));
  RawResponse r = c.Read();
  EXPECT_EQ(r.status, 415);
  ExpectErrorShape(r.body, 415, "unsupported_media_type");
  // The connection stays usable: 415 is the handler's kind of answer, not a framing error.
  ASSERT_TRUE(c.Send("GET /healthz HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(c.Read().status, 200);
}

// Invalid UTF-8 and NUL bytes anywhere in a request: 400 in the error shape, never a throw
// while answering.
TEST_F(HttpServerTest, InvalidUtf8AndNulBytesAre400) {
  StartServer();
  const std::vector<std::string> heads = {
      "GET /api/v1/guests/%FF/stats HTTP/1.1\r\n" + Auth() + "\r\n",
      "GET /api/v1/guests/a%C3%28/stats HTTP/1.1\r\n" + Auth() + "\r\n",
      "GET /echo?i=%ED%A0%80 HTTP/1.1\r\n" + Auth() + "\r\n",  // a UTF-16 surrogate
      "GET /echo HTTP/1.1\r\n" + Auth() + "Idempotency-Key: k\xff\xfe\r\n\r\n",
      "GET /echo HTTP/1.1\r\n" + Auth() + std::string("X-Nul: a\0b\r\n\r\n", 14),
      std::string("GET /ec\0ho HTTP/1.1\r\n\r\n", 23),
      "GET /api/v1/guests/a%00/stats HTTP/1.1\r\n" + Auth() + "\r\n",
  };
  for (const std::string& head : heads) {
    RawConnection c(server_->port());
    ASSERT_TRUE(c.Send(head));
    RawResponse r = c.Read();
    EXPECT_EQ(r.status, 400) << head;
    ExpectErrorShape(r.body, 400, "invalid_argument");
  }
  for (std::string body : {std::string("{\"name\": \"\xff\"}"), std::string("{\"name\": \"a\0\"}", 14),
                           std::string("{\"name\":\0 1}", 12)}) {
    auto r = Client().Do("POST", "/guests", body);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 400) << body;
    ExpectErrorShape(r->body, 400, "invalid_argument");
    for (char ch : Message(r->body)) EXPECT_TRUE(ch >= 0x20 && ch < 0x7f) << Message(r->body);
  }
  // Valid UTF-8 is fine.
  auto cafe = Client().Call("GET", "/api/v1/guests/caf%C3%A9/stats");
  ASSERT_TRUE(cafe.ok()) << cafe.status().ToString();
  EXPECT_EQ((*cafe)["name"], "caf\xc3\xa9");
  EXPECT_TRUE(Client().Call("GET", "/healthz").ok());
}

size_t HeapInUse() { return mallinfo2().uordblks; }

// Each event stream held a worker thread, so 16 open streams froze every route. A stream whose
// function hands its writer to a producer holds none: 2,000 of them on 2 workers leave other
// routes answering at once.
TEST_F(HttpServerTest, TwoThousandOpenStreamsLeaveTwoWorkersFree) {
  constexpr int kStreams = 2000;
  options_.worker_threads = 2;
  options_.max_connections_per_client = 4096;
  StartServer();  // raises the soft descriptor limit to max_connections + 256 where allowed
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 2 * kStreams + 64) GTEST_SKIP() << "descriptor limit " << rl.rlim_cur;
  const size_t heap_before = HeapInUse();
  std::vector<std::unique_ptr<RawConnection>> streams;
  streams.reserve(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(std::make_unique<RawConnection>(server_->port()));
    ASSERT_TRUE(streams.back()->Send("GET /events/hold HTTP/1.1\r\n" + Auth() + "\r\n"));
  }
  for (auto& s : streams) ASSERT_EQ(s->ReadHeadStatus(), 200);
  {
    std::unique_lock<std::mutex> lock(writer_mu_);
    writer_cv_.wait_for(lock, kDeadline, [this] { return held_.size() == kStreams; });
    ASSERT_EQ(held_.size(), static_cast<size_t>(kStreams));
  }
  const size_t heap_after = HeapInUse();
  std::vector<double> ms;
  HttpClient client = Client();
  for (int i = 0; i < 50; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(client.Call("GET", "/healthz").ok());
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf(
      "%d open streams on 2 workers: /healthz median %.2f ms, max %.2f ms; heap %zu "
      "bytes per open stream (server and test client)\n",
      kStreams, ms[ms.size() / 2], ms.back(), (heap_after - heap_before) / kStreams);
  EXPECT_LT(ms[ms.size() / 2], 10.0);
  // Every stream is live: the producer can still write to the first and last.
  std::lock_guard<std::mutex> lock(writer_mu_);
  EXPECT_TRUE(held_.front()->Write("data: first\n\n"));
  EXPECT_TRUE(held_.back()->Write("data: last\n\n"));
}

// An agent's reply is outside input too: the client does not buffer an answer without bound.
TEST_F(HttpServerTest, OversizedAnswerFailsTheCallInsteadOfBeingBuffered) {
  router_.Add("GET", "/big", [](const Request&) { return Response::Json(200, {{"blob", std::string(2 << 20, 'b')}}); });
  StartServer();
  ClientOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(server_->port());
  o.bearer_token = "s3cret";
  o.max_response_bytes = 1 << 20;
  auto r = HttpClient(o).Call("GET", "/big");
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  EXPECT_NE(r.status().message().find("answer larger than 1048576 bytes"), std::string::npos);
  EXPECT_TRUE(HttpClient(o).Call("GET", "/healthz").ok());  // the handle pool is still usable
  EXPECT_TRUE(Client().Call("GET", "/big").ok());
}

TEST(HttpClientTest, RefusedConnectionIsUnavailable) {
  // Bind a port, then free it, so nothing listens there.
  Router router;
  int port;
  {
    HttpServer s(ServerOptions{}, &router);
    ASSERT_TRUE(s.Start().ok());
    port = s.port();
  }
  ClientOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(port);
  auto r = HttpClient(o).Call("GET", "/x");
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("/x"), std::string::npos);
}

}  // namespace
}  // namespace uw::api
