// Private to api/: the inside of HttpServer, shared by its files.
//   server.cc             start and stop, the loop's post queue, the worker pool, HttpServer
//   server_connection.cc  accepting, reading and parsing, running handlers, writing answers, closing
//   server_limits.cc      the connection caps (503) and the per-connection deadlines (408, idle, linger)
//   server_stream.cc      streamed answers: ServerStream (the StreamWriter) and its loop-side plumbing
//   server_wire.cc        the bytes of an answer's status line, headers and body
//
// One libuv loop thread owns every socket; handlers run on a worker pool; answers come back to the
// loop through one uv_async "post" queue. See README.md for the picture.
//
// Ownership and threads:
//   - Connection objects live on the loop thread only. Workers and stream writers never hold a
//     Connection*: they post closures that look the connection up by id, so an answer for a
//     connection that closed meanwhile finds nothing and is dropped.
//   - A ServerStream (the StreamWriter) may be held by any thread, even after the server is gone.
//     It touches the server only while it is open, under its own mutex; the server closes every
//     open stream (under that mutex) before it tears anything down.
#pragma once

#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "api/http.h"
#include "api/request_parser.h"

namespace uw::api::internal {

// The loop's one read buffer; also what a connection may hold unparsed (ServerCore::InputCap).
inline constexpr size_t kReadBufferBytes = 64 << 10;
// How long a connection that got an error answer is drained (so the client reads the answer
// instead of a reset) and how long Stop() waits for a client that does not read its answer.
inline constexpr uint64_t kLingerMs = 1000;
inline constexpr uint64_t kForceCloseMs = 1000;
// Connections over a cap that are being answered 503 at once. Past this many (a connect flood)
// further ones are closed without an answer, so that refusing costs no more than a bounded set.
inline constexpr size_t kMaxRefusing = 256;
// An idle connection's input buffer is given back when it grew past this (a large body).
inline constexpr size_t kKeptInputCapacity = 16 << 10;

// FIFO pool of worker threads. Drain() runs what is queued, then joins.
class WorkerPool {
 public:
  void Start(int threads);
  void Submit(std::function<void()> fn);
  void Drain();

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool draining_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

// Status line and headers. `content_length` < 0: no Content-Length (streamed body).
std::string SerializeHead(const Response& resp, long long content_length, bool chunked, bool keep_alive);
// A complete answer with a Content-Length body (no body for HEAD).
std::string SerializeResponse(const Response& resp, bool keep_alive, bool head_only);
// "host:port", "[v6]:port".
std::string FormatAddress(const std::string& host, int port);

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
  // Loop thread: admits a new connection within the caps, or answers it 503 (or, in a connect
  // flood, closes it at once) and answers false.
  bool Admit(Connection* c);
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

}  // namespace uw::api::internal
