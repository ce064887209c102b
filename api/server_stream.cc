// Streamed answers: ServerStream, the StreamWriter a stream function writes to from any thread, and
// the loop-side half that frames its chunks onto the connection and ends the body.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "api/http.h"
#include "api/server_core.h"

namespace uw::api::internal {

// ---- ServerStream --------------------------------------------------------------------------------

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
// ---- ServerCore: streams -------------------------------------------------------------------------

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

}  // namespace uw::api::internal
