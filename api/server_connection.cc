// A connection's life on the loop thread: accepted, read and parsed request by request, each
// request run by a handler on a worker, its answer written in order, then kept alive, lingered
// after an error, or closed.
#include <spdlog/spdlog.h>
#include <uv.h>

#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "api/http.h"
#include "api/request_parser.h"
#include "api/server_core.h"

namespace uw::api::internal {
namespace {

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

}  // namespace

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
  if (!self->Admit(c)) return;
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
}  // namespace uw::api::internal
