// Latency of a trivial JSON GET over one keep-alive connection, end to end through the real
// server (loop thread -> worker -> loop thread), from HttpClient (libcurl) and from a raw socket;
// plus the socket-free parts (request parsing, routing) to show where the time goes.
//
//   build-api/bench/api_benchmark --benchmark_format=json   (machine-readable results)
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "api/http.h"
#include "api/request_parser.h"

namespace uw::api {
namespace {

Router* PingRouter() {
  static Router* router = [] {
    auto* r = new Router;
    r->Add("GET", "/api/v1/ping", [](const Request&) { return Response::Json(200, {{"ok", true}}); });
    r->Add("GET", "/api/v1/guests/{name}/stats", [](const Request& req) {
      return Response::Json(200, {{"name", req.params.at("name")}});
    });
    r->SetAuthenticator([](Request& req) -> Status {
      return req.BearerToken() == "t" ? Status::Ok() : UnauthenticatedError("bad token");
    });
    return r;
  }();
  return router;
}

std::unique_ptr<HttpServer> StartServer(benchmark::State& state) {
  auto server = std::make_unique<HttpServer>(ServerOptions{}, PingRouter());
  if (Status st = server->Start(); !st.ok()) {
    state.SkipWithError(st.ToString().c_str());
    return nullptr;
  }
  return server;
}

void BM_HttpClientGetKeepAlive(benchmark::State& state) {
  auto server = StartServer(state);
  if (!server) return;
  ClientOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(server->port());
  o.bearer_token = "t";
  HttpClient client(o);
  for (auto _ : state) {
    auto r = client.Call("GET", "/api/v1/ping");
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HttpClientGetKeepAlive)->UseRealTime();

// Reads one Content-Length framed response; false on EOF/error.
bool ReadResponse(int fd, std::string& buf) {
  char tmp[8192];
  size_t head_end;
  while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
  }
  size_t cl = buf.find("Content-Length: ");
  if (cl == std::string::npos || cl > head_end) return false;
  size_t len = std::stoul(buf.substr(cl + 16));
  while (buf.size() < head_end + 4 + len) {
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
  }
  buf.erase(0, head_end + 4 + len);
  return true;
}

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// state.range(0) requests are sent back to back (pipelined) per round trip; 1 = plain keep-alive.
void BM_RawSocketGetKeepAlive(benchmark::State& state) {
  auto server = StartServer(state);
  if (!server) return;
  int fd = Connect(server->port());
  if (fd < 0) {
    state.SkipWithError("connect failed");
    return;
  }
  const int depth = static_cast<int>(state.range(0));
  std::string one = "GET /api/v1/ping HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer t\r\n\r\n";
  std::string batch;
  for (int i = 0; i < depth; ++i) batch += one;
  std::string buf;
  for (auto _ : state) {
    if (send(fd, batch.data(), batch.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(batch.size())) {
      state.SkipWithError("send failed");
      break;
    }
    for (int i = 0; i < depth; ++i) {
      if (!ReadResponse(fd, buf)) {
        state.SkipWithError("read failed");
        break;
      }
    }
  }
  close(fd);
  state.SetItemsProcessed(state.iterations() * depth);
}
BENCHMARK(BM_RawSocketGetKeepAlive)->Arg(1)->Arg(16)->UseRealTime();

void BM_ParseRequest(benchmark::State& state) {
  const std::string in =
      "GET /api/v1/guests/web%201/stats?window=5m HTTP/1.1\r\nHost: manager:7700\r\n"
      "Authorization: Bearer 0123456789abcdef\r\nAccept: application/json\r\n"
      "User-Agent: uwctl/0.1\r\n\r\n";
  for (auto _ : state) {
    RequestParser p(ParserLimits{});
    size_t used = 0;
    if (p.Feed(in, &used) != RequestParser::Outcome::kRequest) {
      state.SkipWithError("parse failed");
      break;
    }
    benchmark::DoNotOptimize(p.TakeRequest());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(in.size()));
}
BENCHMARK(BM_ParseRequest);

void BM_RouterDispatch(benchmark::State& state) {
  Request req;
  req.method = "GET";
  req.path = "/api/v1/guests/web1/stats";
  req.target = req.path;
  req.headers["authorization"] = "Bearer t";
  for (auto _ : state) {
    Response r = PingRouter()->Dispatch(req);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_RouterDispatch);

}  // namespace
}  // namespace uw::api

BENCHMARK_MAIN();
