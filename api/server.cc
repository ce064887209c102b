// HttpServer: one libuv loop thread owns every socket; handlers run on a worker pool; answers come
// back to the loop through one uv_async "post" queue. See README.md for the picture.
//
// Ownership and threads:
//   - Connection objects live on the loop thread only. Workers and stream writers never hold a
//     Connection*: they post closures that look the connection up by id, so an answer for a
//     connection that closed meanwhile finds nothing and is dropped.
//   - A ServerStream (the StreamWriter) may be held by any thread, even after the server is gone.
//     It touches the server only while it is open, under its own mutex; the server closes every
//     open stream (under that mutex) before it tears anything down.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "api/http.h"
#include "api/request_parser.h"

namespace uw::api {
namespace {

constexpr size_t kReadBufferBytes = 64 << 10;
// How long a connection that got an error answer is drained (so the client reads the answer
// instead of a reset) and how long Stop() waits for a client that does not read its answer.
constexpr uint64_t kLingerMs = 1000;
constexpr uint64_t kForceCloseMs = 1000;
// Connections over a cap that are being answered 503 at once. Past this many (a connect flood)
// further ones are closed without an answer, so that refusing costs no more than a bounded set.
constexpr size_t kMaxRefusing = 256;
// An idle connection's input buffer is given back when it grew past this (a large body).
constexpr size_t kKeptInputCapacity = 16 << 10;

// FIFO pool of worker threads. Drain() runs what is queued, then joins.
class WorkerPool {
 public:
  void Start(int threads) {
    for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Run(); });
  }
  void Submit(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }
  void Drain() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      draining_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void Run() {
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return draining_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool draining_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

std::string_view ReasonPhrase(int status) {
  const char* s = http_status_str(static_cast<http_status>(status));
  if (s == nullptr || s[0] == '<') return "Unknown";
  return s;
}

bool IsFramingHeader(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return lower == "content-length" || lower == "transfer-encoding" || lower == "connection" || lower == "content-type";
}

bool HasControl(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return true;
  }
  return false;
}

// Status line and headers. `content_length` < 0: no Content-Length (streamed body).
std::string SerializeHead(const Response& resp, long long content_length, bool chunked, bool keep_alive) {
  std::string out;
  out.reserve(160);
  out += "HTTP/1.1 ";
  out += std::to_string(resp.status);
  out += ' ';
  out += ReasonPhrase(resp.status);
  out += "\r\n";
  if (!resp.content_type.empty() && !HasControl(resp.content_type)) {
    out += "Content-Type: ";
    out += resp.content_type;
    out += "\r\n";
  }
  for (const auto& [name, value] : resp.headers) {
    if (name.empty() || IsFramingHeader(name) || HasControl(name) || HasControl(value) ||
        name.find(':') != std::string::npos) {
      continue;
    }
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  if (content_length >= 0) {
    out += "Content-Length: ";
    out += std::to_string(content_length);
    out += "\r\n";
  }
  if (chunked) out += "Transfer-Encoding: chunked\r\n";
  out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  out += "\r\n";
  return out;
}

bool BodyAllowed(int status) { return status >= 200 && status != 204 && status != 304; }

// A complete answer with a Content-Length body (no body for HEAD).
std::string SerializeResponse(const Response& resp, bool keep_alive, bool head_only) {
  bool with_body = BodyAllowed(resp.status);
  std::string out = SerializeHead(resp, with_body ? static_cast<long long>(resp.body.size()) : -1, false, keep_alive);
  if (with_body && !head_only) out += resp.body;
  return out;
}

std::string FormatAddress(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

// The peer's IP address ("10.77.0.5", "::1") and port; false when unknown.
bool PeerAddress(const uv_tcp_t* tcp, std::string* host, int* port) {
  sockaddr_storage ss{};
  int len = sizeof(ss);
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
  char name[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    uv_ip4_name(sin, name, sizeof(name));
    *port = ntohs(sin->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    uv_ip6_name(sin6, name, sizeof(name));
    *port = ntohs(sin6->sin6_port);
  } else {
    return false;
  }
  *host = name;
  return true;
}

// Lets the process hold `want` descriptors when the hard limit allows (the soft limit is often
// 1024, below the connection caps).
void RaiseDescriptorLimit(rlim_t want) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return;
  rlim_t before = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? want : std::min(want, rl.rlim_max);
  if (rl.rlim_cur > before && setrlimit(RLIMIT_NOFILE, &rl) == 0) {
    spdlog::debug("api: raised the descriptor limit from {} to {}", before, rl.rlim_cur);
  }
}

void IgnoreSigpipe() {
  struct sigaction sa {};
  if (sigaction(SIGPIPE, nullptr, &sa) == 0 && (sa.sa_flags & SA_SIGINFO) == 0 && sa.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
}

class ServerCore;

// The StreamWriter handed to stream functions.
class ServerStream final : public StreamWriter, public std::enable_shared_from_this<ServerStream> {
 public:
  ServerStream(ServerCore* core, uint64_t conn_id, bool chunked, bool open, size_t max_buffered)
      : core_(core), conn_id_(conn_id), chunked_(chunked), max_buffered_(max_buffered), open_(open) {}

  bool Write(std::string_view chunk) override;
  void Close() override { End(/*abort=*/false); }
  bool IsOpen() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return open_;
  }
  void OnClose(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (open_) {
        on_close_ = std::move(fn);
        return;
      }
    }
    if (fn) fn();
  }

  // Loop thread: the connection went away, the server is stopping, or a write failed.
  void MarkClosedByServer();
  // Loop thread: `bytes` of body left the buffer.
  void Release(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    buffered_ -= std::min(buffered_, bytes);
  }
  uint64_t conn_id() const { return conn_id_; }
  bool chunked() const { return chunked_; }

 private:
  void End(bool abort);

  ServerCore* const core_;  // used only while open_ (the server closes streams before teardown)
  const uint64_t conn_id_;
  const bool chunked_;
  const size_t max_buffered_;
  mutable std::mutex mu_;
  bool open_;                       // guarded by mu_
  size_t buffered_ = 0;             // guarded by mu_: written, not yet taken by the kernel
  std::function<void()> on_close_;  // guarded by mu_
};

struct Connection;

// Everything behind HttpServer. Methods named On*/Loop-side run on the loop thread only.
class ServerCore {
 public:
  ServerCore(ServerOptions options, const Router* router) : options_(std::move(options)), router_(router) {}

  Status Start();
  void Stop();
  int port() const { return port_.load(); }

  // Any thread: runs `fn` on the loop thread (dropped once the loop has finished).
  void Post(std::function<void()> fn);

  // Stream plumbing (loop thread unless noted).
  bool RegisterStream(const std::shared_ptr<ServerStream>& s);  // any thread; false if stopping
  void UnregisterStream(const std::shared_ptr<ServerStream>& s);
  void OnStreamChunk(const std::shared_ptr<ServerStream>& s, std::string framed, size_t raw);
  void OnStreamEnd(const std::shared_ptr<ServerStream>& s, bool abort);

 private:
  friend struct Connection;
  // What the connection's one timer is waiting for. kIdle: the next request (idle_timeout_ms);
  // kHead / kBody: the rest of a request's head / body (header_timeout_ms / body_timeout_ms,
  // armed once per request, never extended by bytes arriving); kLinger: the client to go after
  // an error answer; kForce: a last write during Stop().
  enum class TimerMode { kNone, kIdle, kHead, kBody, kLinger, kForce };

  static void OnWakeup(uv_async_t* handle);
  static void OnNewConnection(uv_stream_t* server, int status);
  static void OnAlloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void OnWriteDone(uv_write_t* req, int status);
  static void OnShutdown(uv_shutdown_t* req, int status);
  static void OnTimer(uv_timer_t* timer);
  static void OnHandleClosed(uv_handle_t* handle);

  Connection* Find(uint64_t id);
  void ProcessInput(Connection* c);
  void StartRequest(Connection* c, ParsedRequest parsed);
  void RunHandler(uint64_t conn_id, Request req, bool keep_alive, bool http_1_0, bool head_only);
  void OnResponse(uint64_t conn_id, std::string bytes, bool keep_alive);
  void OnStreamHead(const std::shared_ptr<ServerStream>& s, std::string head, bool keep_alive);
  void Reject(Connection* c, int http_status, const Status& status);
  void Reject(Connection* c, const Response& resp);
  void UpdateDeadline(Connection* c);
  bool Write(Connection* c, std::string bytes, std::shared_ptr<ServerStream> stream = nullptr, size_t stream_bytes = 0);
  void AfterAnswer(Connection* c, bool keep_alive);
  void MaybeFinishWrites(Connection* c);
  void StartLinger(Connection* c);
  void ArmTimer(Connection* c, TimerMode mode, uint64_t ms);
  void StartReading(Connection* c);
  void CloseNow(Connection* c);
  void BeginStop();
  void FinishStop();
  void MaybeExitLoop();
  // Unparsed input a connection may hold: bytes wait unparsed only while a request is in flight
  // (pipelined requests, a client writing during a stream); past this, reading pauses and TCP
  // pushes back until the answer is out. Bodies do not wait here: they are parsed as they come.
  // Small, so that thousands of connections cannot pin much memory each.
  static constexpr size_t InputCap() { return kReadBufferBytes; }

  const ServerOptions options_;
  const Router* const router_;
  std::atomic<int> port_{0};

  std::mutex state_mu_;
  bool started_ = false;  // guarded by state_mu_
  bool stopped_ = false;  // guarded by state_mu_

  uv_loop_t loop_{};
  uv_tcp_t listener_{};
  uv_async_t wakeup_{};
  std::thread loop_thread_;
  WorkerPool pool_;

  std::mutex post_mu_;
  std::vector<std::function<void()>> posted_;  // guarded by post_mu_
  bool loop_done_ = false;                     // guarded by post_mu_

  std::mutex streams_mu_;
  std::set<std::shared_ptr<ServerStream>> streams_;  // guarded by streams_mu_: open streams
  bool streams_closed_ = false;                      // guarded by streams_mu_

  // Loop thread only.
  std::unordered_map<uint64_t, Connection*> conns_;
  size_t counted_ = 0;                               // connections within the caps
  std::unordered_map<std::string, int> per_client_;  // of those, by client IP address
  size_t refusing_ = 0;                              // connections being answered 503
  size_t refused_unlogged_ = 0;                      // refusals since the last log line
  uint64_t next_refusal_log_ms_ = 0;                 // uv_now() before which refusals are only counted
  uint64_t next_conn_id_ = 1;
  bool stopping_ = false;
  bool finishing_ = false;
  bool exited_ = false;
  char read_buffer_[kReadBufferBytes];
};

struct Connection {
  Connection(ServerCore* core, uint64_t id, ParserLimits limits) : core(core), id(id), parser(limits) {}

  ServerCore* core;
  const uint64_t id;
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_shutdown_t shutdown_req{};
  int open_handles = 2;
  std::string remote;    // "10.77.0.5:51234"
  std::string client;    // "10.77.0.5": what max_connections_per_client counts
  bool counted = false;  // within the caps
  bool refused = false;  // over a cap: being answered 503 (counted in refusing_)
  bool served = false;   // a request has been dispatched on this connection
  RequestParser parser;
  std::string input;  // bytes read, parsed up to input_pos
  size_t input_pos = 0;

  bool reading = false;
  bool read_eof = false;
  bool in_flight = false;                // a request is with a handler or streaming
  std::shared_ptr<ServerStream> stream;  // the open stream answering the request in flight
  bool stream_keep_alive = false;
  size_t writes_pending = 0;
  bool close_after_write = false;  // no more requests on this connection
  bool linger = false;             // drain input after the last write (error answers)
  bool draining = false;
  bool closing = false;
  ServerCore::TimerMode timer_mode = ServerCore::TimerMode::kNone;
};

struct WriteRequest {
  uv_write_t req{};
  std::string data;
  std::shared_ptr<ServerStream> stream;
  size_t stream_bytes = 0;
};

// ---- ServerStream
// --------------------------------------------------------------------------------

bool ServerStream::Write(std::string_view chunk) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!open_) return false;
  if (chunk.empty()) return true;
  if (buffered_ + chunk.size() > max_buffered_) {
    const size_t behind = buffered_;  // read under mu_: the loop thread releases concurrently
    lock.unlock();
    spdlog::warn("api: stream on connection {} fell {} bytes behind; closing it", conn_id_, behind);
    End(/*abort=*/true);
    return false;
  }
  buffered_ += chunk.size();
  std::string framed;
  if (chunked_) {
    char size_line[24];
    int n = std::snprintf(size_line, sizeof(size_line), "%zx\r\n", chunk.size());
    framed.reserve(chunk.size() + n + 2);
    framed.append(size_line, n);
    framed.append(chunk);
    framed.append("\r\n");
  } else {
    framed.assign(chunk);
  }
  // Posted under mu_ while open: the server cannot be torn down meanwhile.
  core_->Post([self = shared_from_this(), framed = std::move(framed), raw = chunk.size()]() mutable {
    self->core_->OnStreamChunk(self, std::move(framed), raw);
  });
  return true;
}

void ServerStream::End(bool abort) {
  std::function<void()> cb;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!open_) return;
    core_->Post([self = shared_from_this(), abort] { self->core_->OnStreamEnd(self, abort); });
    open_ = false;
    cb = std::move(on_close_);
  }
  if (cb) cb();
}

void ServerStream::MarkClosedByServer() {
  std::function<void()> cb;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!open_) return;
    open_ = false;
    cb = std::move(on_close_);
  }
  core_->UnregisterStream(shared_from_this());
  if (cb) cb();
}

// ---- ServerCore: start and stop ----------------------------------------------------------------

Status ServerCore::Start() {
  std::lock_guard<std::mutex> lock(state_mu_);
  if (started_) return FailedPreconditionError("HTTP server already started");
  const std::string where = FormatAddress(options_.address, options_.port);

  int rc = uv_loop_init(&loop_);
  if (rc != 0) return InternalError(std::string("uv_loop_init: ") + uv_strerror(rc));
  uv_tcp_init(&loop_, &listener_);
  listener_.data = this;
  sockaddr_storage addr{};
  if (options_.address.find(':') != std::string::npos) {
    rc = uv_ip6_addr(options_.address.c_str(), options_.port, reinterpret_cast<sockaddr_in6*>(&addr));
  } else {
    rc = uv_ip4_addr(options_.address.c_str(), options_.port, reinterpret_cast<sockaddr_in*>(&addr));
  }
  if (rc == 0) rc = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 511, &OnNewConnection);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    return UnavailableError("cannot listen on " + where + ": " + uv_strerror(rc));
  }
  sockaddr_storage bound{};
  int len = sizeof(bound);
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  uv_async_init(&loop_, &wakeup_, &OnWakeup);
  wakeup_.data = this;

  IgnoreSigpipe();
  RaiseDescriptorLimit(static_cast<rlim_t>(std::max(0, options_.max_connections)) + 256);
  pool_.Start(options_.worker_threads);
  loop_thread_ = std::thread([this] {
    uv_run(&loop_, UV_RUN_DEFAULT);
    if (int rc = uv_loop_close(&loop_); rc != 0) {
      spdlog::error("api: loop closed with handles open: {}", uv_strerror(rc));
    }
  });
  started_ = true;
  spdlog::debug("api: listening on {}", FormatAddress(options_.address, port_));
  return Status::Ok();
}

void ServerCore::Stop() {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (!started_ || stopped_) return;
    stopped_ = true;
  }
  // 1. On the loop: stop accepting, close idle connections and open streams.
  std::promise<void> begun;
  Post([this, &begun] {
    BeginStop();
    begun.set_value();
  });
  begun.get_future().wait();
  // 2. Let every handler already accepted finish; their answers are posted to the loop.
  pool_.Drain();
  // 3. On the loop: answers are written, then the remaining connections and handles close.
  Post([this] { FinishStop(); });
  loop_thread_.join();
}

void ServerCore::BeginStop() {
  stopping_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  std::vector<Connection*> conns;
  for (auto& [id, c] : conns_) conns.push_back(c);
  for (Connection* c : conns) {
    if (c->stream) {
      std::shared_ptr<ServerStream> s = std::move(c->stream);
      s->MarkClosedByServer();
      if (s->chunked()) Write(c, "0\r\n\r\n");
      c->in_flight = false;
      c->close_after_write = true;
      MaybeFinishWrites(c);
    } else if (c->in_flight) {
      // Answered with "Connection: close" when the handler returns (OnResponse sees stopping_).
    } else if (c->writes_pending > 0) {
      c->close_after_write = true;
      ArmTimer(c, TimerMode::kForce, kForceCloseMs);
    } else {
      CloseNow(c);
    }
  }
  // Streams whose head has not reached the loop yet.
  std::set<std::shared_ptr<ServerStream>> rest;
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    streams_closed_ = true;
    rest.swap(streams_);
  }
  for (const auto& s : rest) s->MarkClosedByServer();
}

void ServerCore::FinishStop() {
  finishing_ = true;
  std::vector<Connection*> conns;
  for (auto& [id, c] : conns_) conns.push_back(c);
  for (Connection* c : conns) {
    if (c->writes_pending == 0 || c->draining) {
      CloseNow(c);
    } else {
      c->close_after_write = true;
      ArmTimer(c, TimerMode::kForce, kForceCloseMs);
    }
  }
  MaybeExitLoop();
}

void ServerCore::MaybeExitLoop() {
  if (!finishing_ || exited_ || !conns_.empty()) return;
  exited_ = true;
  std::vector<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    loop_done_ = true;
    dropped.swap(posted_);
  }
  dropped.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&wakeup_), nullptr);
}

void ServerCore::Post(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(post_mu_);
  if (loop_done_) return;
  posted_.push_back(std::move(fn));
  uv_async_send(&wakeup_);  // under post_mu_: the handle is not closed while loop_done_ is false
}

void ServerCore::OnWakeup(uv_async_t* handle) {
  auto* self = static_cast<ServerCore*>(handle->data);
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(self->post_mu_);
    batch.swap(self->posted_);
  }
  for (auto& fn : batch) fn();
}

// ---- ServerCore: connections
// ---------------------------------------------------------------------

void ServerCore::OnNewConnection(uv_stream_t* server, int status) {
  auto* self = static_cast<ServerCore*>(server->data);
  if (status < 0) {
    spdlog::warn("api: accept failed: {}", uv_strerror(status));
    return;
  }
  if (self->stopping_) return;
  ParserLimits limits{self->options_.max_body_bytes, self->options_.max_header_bytes, self->router_};
  auto* c = new Connection(self, self->next_conn_id_++, limits);
  uv_tcp_init(&self->loop_, &c->tcp);
  uv_timer_init(&self->loop_, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    c->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), &OnHandleClosed);
    uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), &OnHandleClosed);
    return;
  }
  int port = 0;
  if (PeerAddress(&c->tcp, &c->client, &port)) c->remote = FormatAddress(c->client, port);
  self->conns_[c->id] = c;
  uv_tcp_nodelay(&c->tcp, 1);

  // The caps: one over them is answered 503 at once (its request is not read) and closed.
  const auto max_total = static_cast<size_t>(std::max(0, self->options_.max_connections));
  const int max_per_client = self->options_.max_connections_per_client;
  auto known = self->per_client_.find(c->client);
  const int from_client = known == self->per_client_.end() ? 0 : known->second;
  if (self->counted_ >= max_total || from_client >= max_per_client) {
    if (self->refusing_ >= kMaxRefusing) {
      self->CloseNow(c);
      return;
    }
    ++self->refusing_;
    c->refused = true;
    const bool total = self->counted_ >= max_total;
    const std::string why =
        total ? "too many open connections (" + std::to_string(self->counted_) + ")"
              : "too many open connections from " + c->client + " (" + std::to_string(from_client) + ")";
    // At most one line a second: a connect flood must not become a log flood.
    ++self->refused_unlogged_;
    if (uv_now(&self->loop_) >= self->next_refusal_log_ms_) {
      spdlog::warn("api: refused {} connection(s) in the last second; latest from {}: {}", self->refused_unlogged_,
                   c->remote, why);
      self->refused_unlogged_ = 0;
      self->next_refusal_log_ms_ = uv_now(&self->loop_) + 1000;
    }
    Response resp = Response::Error(503, UnavailableError(why + "; retry later"));
    resp.headers["Retry-After"] = "1";
    self->Reject(c, resp);
    return;
  }
  c->counted = true;
  ++self->counted_;
  ++self->per_client_[c->client];
  self->StartReading(c);
  self->UpdateDeadline(c);
}

Connection* ServerCore::Find(uint64_t id) {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second;
}

void ServerCore::StartReading(Connection* c) {
  if (c->reading || c->read_eof || c->closing) return;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), &OnAlloc, &OnRead) == 0) {
    c->reading = true;
  }
}

void ServerCore::OnAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(handle->data);
  // One buffer per loop: OnRead copies out of it before the next read.
  *buf = uv_buf_init(c->core->read_buffer_, sizeof(c->core->read_buffer_));
}

void ServerCore::OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(stream->data);
  ServerCore* self = c->core;
  if (nread == 0 || c->closing) return;
  if (c->draining) {
    if (nread < 0) self->CloseNow(c);
    return;  // discard: we only wait for the client to read our answer and go
  }
  if (nread < 0) {
    if (nread != UV_EOF) {
      self->CloseNow(c);  // reset or error: nothing more can be sent
      return;
    }
    c->read_eof = true;
    c->reading = false;
    uv_read_stop(stream);
    if (c->stream != nullptr) {
      self->CloseNow(c);  // a streaming client that hangs up is gone
    } else if (!c->in_flight) {
      if (c->parser.InRequest()) {
        self->CloseNow(c);  // a request cut short: nothing to answer
      } else {
        c->close_after_write = true;
        self->MaybeFinishWrites(c);
      }
    }
    // In flight: a half-closed client still gets its answer (AfterAnswer closes then).
    return;
  }
  c->input.append(buf->base, static_cast<size_t>(nread));
  self->ProcessInput(c);
  if (!c->closing && c->reading && c->input.size() - c->input_pos > self->InputCap()) {
    uv_read_stop(stream);  // resumed by ProcessInput once the backlog is parsed
    c->reading = false;
  }
}

void ServerCore::ProcessInput(Connection* c) {
  while (!c->in_flight && !c->close_after_write && !c->closing && c->input_pos < c->input.size()) {
    size_t consumed = 0;
    std::string_view rest(c->input.data() + c->input_pos, c->input.size() - c->input_pos);
    RequestParser::Outcome outcome = c->parser.Feed(rest, &consumed);
    c->input_pos += consumed;
    if (outcome == RequestParser::Outcome::kNeedMore) {
      if (c->parser.TakeExpectContinue()) Write(c, "HTTP/1.1 100 Continue\r\n\r\n");
      break;
    }
    if (outcome == RequestParser::Outcome::kError) {
      Reject(c, c->parser.error_http_status(), c->parser.error());
      break;
    }
    StartRequest(c, c->parser.TakeRequest());
  }
  if (c->closing) return;
  if (c->input_pos == c->input.size()) {
    c->input.clear();
    c->input_pos = 0;
    if (c->input.capacity() > kKeptInputCapacity) c->input.shrink_to_fit();
  } else if (c->input_pos > kReadBufferBytes) {
    c->input.erase(0, c->input_pos);
    c->input_pos = 0;
  }
  if (!c->reading && !c->read_eof && !c->draining && c->input.size() - c->input_pos <= InputCap()) {
    StartReading(c);
  }
  UpdateDeadline(c);
}

void ServerCore::UpdateDeadline(Connection* c) {
  if (c->closing || c->in_flight || c->draining || c->close_after_write) return;
  TimerMode want;
  if (c->parser.InRequest()) {
    want = c->parser.InHead() ? TimerMode::kHead : TimerMode::kBody;
  } else {
    // A new connection owes its first head from the moment it was accepted.
    want = c->served ? TimerMode::kIdle : TimerMode::kHead;
  }
  if (want == c->timer_mode) return;  // armed when the phase began; bytes do not extend it
  int ms = want == TimerMode::kIdle   ? options_.idle_timeout_ms
           : want == TimerMode::kHead ? options_.header_timeout_ms
                                      : options_.body_timeout_ms;
  ArmTimer(c, want, static_cast<uint64_t>(std::max(1, ms)));
}

void ServerCore::StartRequest(Connection* c, ParsedRequest parsed) {
  if (stopping_) {
    Reject(c, 503, UnavailableError("server is stopping"));
    return;
  }
  uv_timer_stop(&c->timer);
  c->timer_mode = TimerMode::kNone;
  c->in_flight = true;
  c->served = true;
  parsed.request.remote = c->remote;
  const bool head_only = parsed.request.method == "HEAD";
  pool_.Submit([this, id = c->id, req = std::move(parsed.request), keep_alive = parsed.keep_alive,
                http_1_0 = parsed.http_1_0,
                head_only]() mutable { RunHandler(id, std::move(req), keep_alive, http_1_0, head_only); });
}

// Worker thread.
void ServerCore::RunHandler(uint64_t conn_id, Request req, bool keep_alive, bool http_1_0, bool head_only) {
  Response resp;
  try {
    resp = router_->Dispatch(std::move(req));
  } catch (const std::exception& e) {
    resp = Response::Error(InternalError(std::string("request failed: ") + e.what()));
  }
  if (resp.stream && !head_only) {
    // HTTP/1.0 has no chunked encoding: the body then ends when the connection closes.
    const bool chunked = !http_1_0;
    const bool stream_keep_alive = keep_alive && chunked;
    auto stream = std::make_shared<ServerStream>(this, conn_id, chunked, true, options_.max_stream_buffered_bytes);
    if (!RegisterStream(stream)) stream->MarkClosedByServer();
    std::string head = SerializeHead(resp, -1, chunked, stream_keep_alive);
    Post([this, stream, head = std::move(head), stream_keep_alive]() mutable {
      OnStreamHead(stream, std::move(head), stream_keep_alive);
    });
    try {
      resp.stream(stream);
    } catch (const std::exception& e) {
      spdlog::error("api: stream function threw: {}", e.what());
      stream->Close();
    }
    return;
  }
  if (resp.stream) resp.body.clear();  // HEAD of a stream: the head alone
  std::string bytes = SerializeResponse(resp, keep_alive, head_only);
  Post([this, conn_id, bytes = std::move(bytes), keep_alive]() mutable {
    OnResponse(conn_id, std::move(bytes), keep_alive);
  });
}

void ServerCore::OnResponse(uint64_t conn_id, std::string bytes, bool keep_alive) {
  Connection* c = Find(conn_id);
  if (c == nullptr) return;  // the client went away: drop the answer
  c->in_flight = false;
  if (keep_alive && stopping_) {
    // Serialized before Stop() began: this is the connection's last answer after all.
    constexpr std::string_view kKeep = "\r\nConnection: keep-alive\r\n";
    size_t head_end = bytes.find("\r\n\r\n");
    size_t pos = bytes.rfind(kKeep, head_end);
    if (pos != std::string::npos) bytes.replace(pos, kKeep.size(), "\r\nConnection: close\r\n");
  }
  Write(c, std::move(bytes));
  AfterAnswer(c, keep_alive);
}

void ServerCore::AfterAnswer(Connection* c, bool keep_alive) {
  if (c->closing) return;
  if (!keep_alive || stopping_) {
    // A client that does not read its last answer is closed after idle_timeout_ms.
    ArmTimer(c, TimerMode::kIdle, options_.idle_timeout_ms);
    c->close_after_write = true;
    MaybeFinishWrites(c);
    return;
  }
  ProcessInput(c);  // the next pipelined request, if any; arms the deadline of what comes next
  if (c->closing || c->in_flight) return;
  if (c->read_eof && !c->close_after_write) {
    ArmTimer(c, TimerMode::kIdle, options_.idle_timeout_ms);
    c->close_after_write = true;
    MaybeFinishWrites(c);
  }
}

void ServerCore::Reject(Connection* c, int http_status, const Status& status) {
  Reject(c, Response::Error(http_status, status));
}

void ServerCore::Reject(Connection* c, const Response& resp) {
  Write(c, SerializeResponse(resp, /*keep_alive=*/false, /*head_only=*/false));
  c->close_after_write = true;
  c->linger = true;
  MaybeFinishWrites(c);
}

bool ServerCore::Write(Connection* c, std::string bytes, std::shared_ptr<ServerStream> stream, size_t stream_bytes) {
  if (c->closing) {
    if (stream) stream->Release(stream_bytes);
    return false;
  }
  auto* w = new WriteRequest;
  w->data = std::move(bytes);
  w->stream = std::move(stream);
  w->stream_bytes = stream_bytes;
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned int>(w->data.size()));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1, &OnWriteDone);
  if (rc != 0) {
    if (w->stream) w->stream->Release(w->stream_bytes);
    delete w;
    CloseNow(c);
    return false;
  }
  ++c->writes_pending;
  return true;
}

void ServerCore::OnWriteDone(uv_write_t* req, int status) {
  std::unique_ptr<WriteRequest> w(reinterpret_cast<WriteRequest*>(req));
  auto* c = static_cast<Connection*>(req->handle->data);
  --c->writes_pending;
  if (w->stream) w->stream->Release(w->stream_bytes);
  if (status < 0) {
    c->core->CloseNow(c);  // the peer is gone (EPIPE, reset) or we are closing (canceled)
    return;
  }
  c->core->MaybeFinishWrites(c);
}

void ServerCore::MaybeFinishWrites(Connection* c) {
  if (c->closing || c->draining || !c->close_after_write || c->writes_pending > 0) return;
  if (c->linger && !stopping_) {
    StartLinger(c);
  } else {
    CloseNow(c);
  }
}

// After an error answer the client may still be sending (a body we refused): half-close, read and
// discard until the client closes or kLingerMs pass, so that it sees our answer, not a reset.
void ServerCore::StartLinger(Connection* c) {
  c->draining = true;
  if (uv_shutdown(&c->shutdown_req, reinterpret_cast<uv_stream_t*>(&c->tcp), &OnShutdown) != 0) {
    CloseNow(c);
    return;
  }
  if (c->read_eof) {
    CloseNow(c);
    return;
  }
  StartReading(c);
  ArmTimer(c, TimerMode::kLinger, kLingerMs);
}

void ServerCore::OnShutdown(uv_shutdown_t* req, int status) {
  auto* c = static_cast<Connection*>(req->handle->data);
  if (status < 0 && !c->closing) c->core->CloseNow(c);
}

void ServerCore::ArmTimer(Connection* c, TimerMode mode, uint64_t ms) {
  if (c->closing) return;
  c->timer_mode = mode;
  uv_timer_start(&c->timer, &OnTimer, ms, 0);
}

void ServerCore::OnTimer(uv_timer_t* timer) {
  auto* c = static_cast<Connection*>(timer->data);
  ServerCore* self = c->core;
  const TimerMode mode = std::exchange(c->timer_mode, TimerMode::kNone);
  switch (mode) {
    case TimerMode::kIdle:
      if (c->in_flight) return;  // busy, not idle
      break;
    case TimerMode::kHead:
    case TimerMode::kBody:
      if (c->in_flight || c->draining || c->close_after_write) break;
      if (c->parser.InRequest()) {
        const bool head = mode == TimerMode::kHead;
        // Debug only: a slow-client flood must not become a log flood.
        spdlog::debug("api: {} from {} not received in time; closing", head ? "request head" : "request body",
                      c->remote);
        self->Reject(
            c, 408,
            DeadlineExceededError(
                std::string(head ? "request head" : "request body") + " not received within " +
                std::to_string(head ? self->options_.header_timeout_ms : self->options_.body_timeout_ms) + " ms"));
        return;
      }
      break;  // nothing of a request arrived: close without an answer
    default:
      break;
  }
  self->CloseNow(c);
}

void ServerCore::CloseNow(Connection* c) {
  if (c->closing) return;
  c->closing = true;
  conns_.erase(c->id);
  if (c->counted) {
    --counted_;
    auto it = per_client_.find(c->client);
    if (it != per_client_.end() && --it->second <= 0) per_client_.erase(it);
  } else if (c->refused) {
    --refusing_;
  }
  if (c->stream) {
    std::shared_ptr<ServerStream> s = std::move(c->stream);
    s->MarkClosedByServer();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), &OnHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), &OnHandleClosed);
  MaybeExitLoop();
}

void ServerCore::OnHandleClosed(uv_handle_t* handle) {
  auto* c = static_cast<Connection*>(handle->data);
  if (--c->open_handles == 0) delete c;
}

// ---- ServerCore: streams
// --------------------------------------------------------------------------

bool ServerCore::RegisterStream(const std::shared_ptr<ServerStream>& s) {
  std::lock_guard<std::mutex> lock(streams_mu_);
  if (streams_closed_) return false;
  streams_.insert(s);
  return true;
}

void ServerCore::UnregisterStream(const std::shared_ptr<ServerStream>& s) {
  std::lock_guard<std::mutex> lock(streams_mu_);
  streams_.erase(s);
}

void ServerCore::OnStreamHead(const std::shared_ptr<ServerStream>& s, std::string head, bool keep_alive) {
  Connection* c = Find(s->conn_id());
  if (c == nullptr) {
    s->MarkClosedByServer();
    return;
  }
  if (stopping_) {
    s->MarkClosedByServer();
    c->in_flight = false;
    Reject(c, 503, UnavailableError("server is stopping"));
    return;
  }
  Write(c, std::move(head));
  c->stream = s;
  c->stream_keep_alive = keep_alive;
  // A stream the producer closed before its head got here: OnStreamEnd is already queued.
}

void ServerCore::OnStreamChunk(const std::shared_ptr<ServerStream>& s, std::string framed, size_t raw) {
  Connection* c = Find(s->conn_id());
  if (c == nullptr || c->stream != s) {
    s->Release(raw);
    return;
  }
  Write(c, std::move(framed), s, raw);
}

void ServerCore::OnStreamEnd(const std::shared_ptr<ServerStream>& s, bool abort) {
  UnregisterStream(s);
  Connection* c = Find(s->conn_id());
  if (c == nullptr || c->stream != s) return;
  c->stream = nullptr;
  c->in_flight = false;
  if (abort) {
    CloseNow(c);
    return;
  }
  if (s->chunked()) Write(c, "0\r\n\r\n");
  AfterAnswer(c, c->stream_keep_alive && !c->read_eof);
}

}  // namespace

// ---- HttpServer
// ------------------------------------------------------------------------------------

struct HttpServer::Impl {
  Impl(ServerOptions options, const Router* router) : core(std::move(options), router) {}
  ServerCore core;
};

HttpServer::HttpServer(ServerOptions options, const Router* router)
    : impl_(std::make_unique<Impl>(std::move(options), router)) {}

HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Start() { return impl_->core.Start(); }

void HttpServer::Stop() { impl_->core.Stop(); }

int HttpServer::port() const { return impl_->core.port(); }

}  // namespace uw::api
