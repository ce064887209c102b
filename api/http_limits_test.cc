// End-to-end tests of the server's limits against hostile and heavy use (issue 12): oversized
// heads and bodies, deep JSON, slow heads and bodies, connection caps and floods, Content-Type and
// UTF-8 checks, and the client's cap on an answer's size.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "api/http_test_util.h"

namespace uw::api::http_test {
namespace {

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

}  // namespace
}  // namespace uw::api::http_test
