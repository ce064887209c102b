// The server's limits against hostile and heavy use that are not about parsing (those are in
// request_parser.cc): the connection caps (503 and close) and each connection's one deadline timer
// (head and body deadlines 408, idle keep-alive, linger after an error, the last write at Stop).
#include <spdlog/spdlog.h>
#include <uv.h>

#include <algorithm>
#include <string>
#include <utility>

#include "api/http.h"
#include "api/server_core.h"

namespace uw::api::internal {

bool ServerCore::Admit(Connection* c) {
  // The caps: one over them is answered 503 at once (its request is not read) and closed.
  const auto max_total = static_cast<size_t>(std::max(0, options_.max_connections));
  const int max_per_client = options_.max_connections_per_client;
  auto known = per_client_.find(c->client);
  const int from_client = known == per_client_.end() ? 0 : known->second;
  if (counted_ >= max_total || from_client >= max_per_client) {
    if (refusing_ >= kMaxRefusing) {
      CloseNow(c);
      return false;
    }
    ++refusing_;
    c->refused = true;
    const bool total = counted_ >= max_total;
    const std::string why =
        total ? "too many open connections (" + std::to_string(counted_) + ")"
              : "too many open connections from " + c->client + " (" + std::to_string(from_client) + ")";
    // At most one line a second: a connect flood must not become a log flood.
    ++refused_unlogged_;
    if (uv_now(&loop_) >= next_refusal_log_ms_) {
      spdlog::warn("api: refused {} connection(s) in the last second; latest from {}: {}", refused_unlogged_, c->remote,
                   why);
      refused_unlogged_ = 0;
      next_refusal_log_ms_ = uv_now(&loop_) + 1000;
    }
    Response resp = Response::Error(503, UnavailableError(why + "; retry later"));
    resp.headers["Retry-After"] = "1";
    Reject(c, resp);
    return false;
  }
  c->counted = true;
  ++counted_;
  ++per_client_[c->client];
  return true;
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

}  // namespace uw::api::internal
