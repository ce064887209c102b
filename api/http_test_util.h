// Shared by the api's end-to-end tests (http_test.cc, http_stream_test.cc, http_limits_test.cc):
// HttpServerTest, a real HttpServer on 127.0.0.1 with a router of test routes, and RawConnection, a
// blocking socket client for what HttpClient cannot do (pipelining, half-close, slow clients).
// Nothing here sleeps to wait: tests block on promises, latches and socket reads, each bounded by
// a generous deadline that only matters when the code under test is broken. (Sleeps only pace a
// deliberately slow client or let a deadline pass.)
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "api/http.h"

namespace uw::api::http_test {

inline constexpr auto kDeadline = std::chrono::seconds(20);

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
  explicit RawConnection(int port);
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;
  bool connected() const { return connected_; }

  bool Send(std::string_view data);
  void ShutdownWrite();
  // Closes with a TCP reset (SO_LINGER 0) instead of a FIN.
  void Reset();
  // Reads one response (Content-Length or chunked). status 0 when the connection ended first.
  RawResponse Read();
  // Everything until the server closes the connection.
  std::string ReadAll();
  // Reads a response head only (for streams that stay open): its status, 0 when the connection
  // ended first.
  int ReadHeadStatus();
  // True when the server closes the connection (EOF or reset) with no further bytes.
  bool ReadEof();

 private:
  bool Fill();

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

// `body` is the one error shape with this HTTP status and code.
void ExpectErrorShape(const std::string& body, int status, std::string_view code);
// The error body's message.
std::string Message(const std::string& body);

class HttpServerTest : public ::testing::Test {
 protected:
  // Test routes: /healthz (public), /api/v1/guests/{name}/stats, /echo (GET, POST), /guests (a
  // JSON route taking 4 MiB), /boom (throws), /missing, /slow (until release_slow_ opens),
  // /events/hold, /events/burst and /events/live (streams); bearer token "s3cret". Server
  // options: bodies and heads up to 4096 bytes; tests may change options_ before StartServer().
  void SetUp() override;

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

}  // namespace uw::api::http_test
