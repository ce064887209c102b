// End-to-end tests of HttpServer and HttpClient on 127.0.0.1: routing, auth and the error shape,
// malformed requests, keep-alive and pipelining, handlers that are slow, throw or lose their client,
// and Stop. Streams are in http_stream_test.cc, limits against hostile use in http_limits_test.cc.
#include "api/http.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "api/http_test_util.h"

namespace uw::api::http_test {
namespace {

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
}  // namespace uw::api::http_test
