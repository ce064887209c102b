// OvsdbClient (see ovsdb.h): JSON-RPC over ovsdb-server's unix socket on a libuv loop thread.
#include "netvirt/ovsdb.h"

#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

namespace uw::netvirt {

// ---------------------------------------------------------------------------------------------
// The stream of JSON texts

Status JsonStreamSplitter::Feed(std::string_view bytes, std::vector<std::string>& out) {
  if (!broken_.ok()) return broken_;
  for (const char c : bytes) {
    if (depth_ == 0) {
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
      if (c != '{' && c != '[') {
        broken_ = InvalidArgumentError("JSON-RPC stream: byte 0x" + std::to_string(static_cast<unsigned char>(c)) +
                                       " between messages (expected '{' or '[')");
        return broken_;
      }
    }
    text_.push_back(c);
    if (text_.size() > max_) {
      broken_ = ResourceExhaustedError("JSON-RPC stream: a message over " + std::to_string(max_) + " bytes");
      return broken_;
    }
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      continue;
    }
    if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if ((c == '}' || c == ']') && --depth_ == 0) {
      out.push_back(std::move(text_));
      text_.clear();
    }
  }
  return Status::Ok();
}

StatusCode OvsdbErrorCode(std::string_view error, std::string_view details) {
  if (error == "constraint violation") {
    // A unique index ("... to have identical values ...") is a name already taken.
    return details.find("identical values") != std::string_view::npos ? StatusCode::kAlreadyExists
                                                                      : StatusCode::kFailedPrecondition;
  }
  if (error == "resources exhausted") return StatusCode::kResourceExhausted;
  if (error == "timed out") return StatusCode::kDeadlineExceeded;
  if (error == "syntax error" || error == "unknown database" || error == "unknown table" || error == "unknown column" ||
      error == "unknown method" || error == "unknown monitor") {
    return StatusCode::kInvalidArgument;
  }
  return StatusCode::kFailedPrecondition;  // referential integrity, not owner, aborted, ...
}

namespace {

// An RFC 7047 error (a string, or {"error", "details"}) as a Status, `what` first.
Status ErrorStatus(const std::string& what, const Json& e) {
  std::string error = e.is_string() ? e.get<std::string>() : "", details;
  if (e.is_object()) {
    error = e.value("error", "");
    if (auto d = e.find("details"); d != e.end()) details = d->is_string() ? d->get<std::string>() : d->dump();
  }
  if (error.empty()) error = e.dump();
  return Status(OvsdbErrorCode(error, details), what + ": " + error + (details.empty() ? "" : ": " + details));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The connection

struct OvsdbClient::Impl {
  struct Pending {
    bool done = false;
    Status status = Status::Ok();
    Json result;
  };
  struct Write {
    uv_write_t req{};
    std::string bytes;
  };

  std::string socket;
  uv_loop_t loop{};
  uv_pipe_t pipe{};
  uv_async_t wakeup{};
  uv_connect_t connect_req{};
  std::thread thread;
  JsonStreamSplitter splitter{kMaxMessageBytes};  // loop thread only

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> outbox;  // guarded by mu
  bool connect_done = false;       // guarded by mu
  Status connect_status = Status::Ok();
  bool up = false;  // guarded by mu: connected and not lost
  bool closing = false;
  int64_t next_id = 1;
  std::map<int64_t, std::shared_ptr<Pending>> pending;  // guarded by mu
  std::map<std::string, UpdateFn> monitors;             // guarded by mu

  // Loop thread: the connection is gone; every waiting call fails.
  void Lose(const Status& why) {
    std::lock_guard l(mu);
    up = false;
    for (auto& [id, p] : pending) {
      p->done = true;
      p->status = why;
    }
    pending.clear();
    cv.notify_all();
  }

  // Loop thread.
  void Send(std::string bytes) {
    auto* w = new Write;
    w->bytes = std::move(bytes);
    w->req.data = w;
    uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    const int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&pipe), &buf, 1, [](uv_write_t* req, int status) {
      auto* self = static_cast<Impl*>(req->handle->data);
      delete static_cast<Write*>(req->data);
      if (status < 0) self->Lose(UnavailableError("ovsdb " + self->socket + ": write: " + uv_strerror(status)));
    });
    if (rc < 0) {
      delete w;
      Lose(UnavailableError("ovsdb " + socket + ": write: " + uv_strerror(rc)));
    }
  }

  // Loop thread: one message from the server.
  void Dispatch(const Json& msg) {
    if (!msg.is_object()) return;
    const auto method = msg.find("method");
    if (method != msg.end() && method->is_string()) {
      const Json params = msg.value("params", Json::array());
      if (*method == "echo") {  // the server's keepalive: answered with its own params
        Send(Json({{"id", msg.value("id", Json())}, {"result", params}, {"error", nullptr}}).dump());
      } else if (*method == "update" && params.is_array() && params.size() == 2 && params[0].is_string()) {
        UpdateFn fn;
        {
          std::lock_guard l(mu);
          if (auto it = monitors.find(params[0].get<std::string>()); it != monitors.end()) fn = it->second;
        }
        if (fn) fn(params[1]);
      }
      return;
    }
    const auto id = msg.find("id");
    if (id == msg.end() || !id->is_number_integer()) return;
    std::lock_guard l(mu);
    auto it = pending.find(id->get<int64_t>());
    if (it == pending.end()) return;  // a call that timed out
    const auto error = msg.find("error");
    if (error != msg.end() && !error->is_null()) {
      it->second->status = ErrorStatus("ovsdb", *error);
    } else {
      it->second->result = msg.value("result", Json());
    }
    it->second->done = true;
    pending.erase(it);
    cv.notify_all();
  }

  static void OnRead(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
    auto* self = static_cast<Impl*>(stream->data);
    std::unique_ptr<char[]> owned(buf->base);
    if (n < 0) {
      uv_read_stop(stream);
      self->Lose(UnavailableError("ovsdb " + self->socket + ": " +
                                  (n == UV_EOF ? std::string("the server closed the connection") : uv_strerror(n))));
      return;
    }
    std::vector<std::string> texts;
    Status s = self->splitter.Feed(std::string_view(buf->base, static_cast<size_t>(n)), texts);
    for (const std::string& t : texts) {
      auto msg = ParseJson(t, "JSON-RPC message", JsonLimits{.max_depth = 64, .max_bytes = kMaxMessageBytes});
      if (!msg.ok()) {
        s = msg.status();
        break;
      }
      self->Dispatch(*msg);
    }
    if (!s.ok()) {
      uv_read_stop(stream);
      self->Lose(UnavailableError("ovsdb " + self->socket + ": " + s.message()));
    }
  }

  static void OnWakeup(uv_async_t* handle) {
    auto* self = static_cast<Impl*>(handle->data);
    std::deque<std::string> out;
    bool close = false;
    {
      std::lock_guard l(self->mu);
      out.swap(self->outbox);
      close = self->closing;
    }
    if (close) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&self->pipe));
      uv_close(reinterpret_cast<uv_handle_t*>(&self->pipe), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&self->wakeup), nullptr);
      return;
    }
    for (auto& m : out) self->Send(std::move(m));
  }

  static void OnConnect(uv_connect_t* req, int status) {
    auto* self = static_cast<Impl*>(req->handle->data);
    if (status == 0) {
      uv_read_start(
          req->handle,
          [](uv_handle_t*, size_t, uv_buf_t* buf) {
            constexpr size_t kRead = 64 << 10;
            *buf = uv_buf_init(new char[kRead], kRead);
          },
          &OnRead);
    }
    std::lock_guard l(self->mu);
    self->connect_done = true;
    self->up = status == 0;
    if (status != 0) self->connect_status = UnavailableError("ovsdb " + self->socket + ": " + uv_strerror(status));
    self->cv.notify_all();
  }
};

OvsdbClient::OvsdbClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OvsdbClient::~OvsdbClient() {
  {
    std::lock_guard l(impl_->mu);
    impl_->closing = true;
  }
  uv_async_send(&impl_->wakeup);
  impl_->thread.join();
  uv_loop_close(&impl_->loop);
  impl_->Lose(UnavailableError("ovsdb " + impl_->socket + ": the client was closed"));
}

Result<std::unique_ptr<OvsdbClient>> OvsdbClient::Connect(const std::string& socket, Millis timeout) {
  auto impl = std::make_unique<Impl>();
  impl->socket = socket.rfind("unix:", 0) == 0 ? socket.substr(5) : socket;
  if (impl->socket.empty() || impl->socket.size() >= 108) {
    return InvalidArgumentError("ovsdb socket: expected a unix socket path under 108 bytes, got '" + socket + "'");
  }
  if (int rc = uv_loop_init(&impl->loop); rc < 0) return InternalError(std::string("uv_loop_init: ") + uv_strerror(rc));
  uv_pipe_init(&impl->loop, &impl->pipe, 0);
  impl->pipe.data = impl.get();
  uv_async_init(&impl->loop, &impl->wakeup, &Impl::OnWakeup);
  impl->wakeup.data = impl.get();
  uv_pipe_connect(&impl->connect_req, &impl->pipe, impl->socket.c_str(), &Impl::OnConnect);
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { uv_run(&raw->loop, UV_RUN_DEFAULT); });
  std::unique_ptr<OvsdbClient> client(new OvsdbClient(std::move(impl)));
  std::unique_lock l(raw->mu);
  if (!raw->cv.wait_for(l, timeout, [raw] { return raw->connect_done; })) {
    l.unlock();
    return UnavailableError("ovsdb " + raw->socket + ": no connection within " + std::to_string(timeout.count()) +
                            " ms");
  }
  if (!raw->connect_status.ok()) {
    Status why = raw->connect_status;
    l.unlock();
    return why;
  }
  return client;
}

bool OvsdbClient::connected() const {
  std::lock_guard l(impl_->mu);
  return impl_->up;
}

Result<Json> OvsdbClient::Call(std::string_view method, Json params, Millis timeout) {
  auto p = std::make_shared<Impl::Pending>();
  {
    std::lock_guard l(impl_->mu);
    if (!impl_->up) return UnavailableError("ovsdb " + impl_->socket + ": not connected");
    const int64_t id = impl_->next_id++;
    impl_->pending[id] = p;
    impl_->outbox.push_back(Json({{"method", method}, {"params", std::move(params)}, {"id", id}}).dump());
  }
  uv_async_send(&impl_->wakeup);
  std::unique_lock l(impl_->mu);
  if (!impl_->cv.wait_for(l, timeout, [&] { return p->done; })) {
    for (auto it = impl_->pending.begin(); it != impl_->pending.end(); ++it) {
      if (it->second == p) {
        impl_->pending.erase(it);
        break;
      }
    }
    return DeadlineExceededError("ovsdb " + impl_->socket + ": no answer to " + std::string(method) + " within " +
                                 std::to_string(timeout.count()) + " ms");
  }
  if (!p->status.ok()) return p->status.WithContext(std::string(method));
  return std::move(p->result);
}

Result<std::vector<std::string>> OvsdbClient::ListDbs(Millis timeout) {
  UW_ASSIGN_OR_RETURN(Json dbs, Call("list_dbs", Json::array(), timeout));
  if (!dbs.is_array()) return InternalError("ovsdb list_dbs: expected an array, got " + dbs.dump());
  std::vector<std::string> out;
  for (const Json& d : dbs) {
    if (d.is_string()) out.push_back(d.get<std::string>());
  }
  return out;
}

Result<Json> OvsdbClient::Transact(std::string_view db, const Json& operations, Millis timeout) {
  if (!operations.is_array()) return InvalidArgumentError("transact: operations must be an array");
  Json params = Json::array({db});
  for (const Json& op : operations) params.push_back(op);
  UW_ASSIGN_OR_RETURN(Json results, Call("transact", std::move(params), timeout));
  if (!results.is_array()) return InternalError("ovsdb transact: expected an array, got " + results.dump());
  for (size_t i = 0; i < results.size(); ++i) {
    const Json& r = results[i];
    if (!r.is_object() || !r.contains("error")) continue;
    std::string what = "transact on " + std::string(db) + ": the commit";
    if (i < operations.size()) {
      const Json& op = operations[i];
      what = "transact on " + std::string(db) + ": operation " + std::to_string(i) + " (" +
             (op.is_object() ? op.value("op", "?") + " " + op.value("table", "") : op.dump()) + ")";
    }
    return ErrorStatus(what, r);
  }
  return results;
}

Result<Json> OvsdbClient::Monitor(std::string_view db, const std::string& monitor_id, const Json& requests,
                                  UpdateFn on_update, Millis timeout) {
  {
    std::lock_guard l(impl_->mu);
    if (impl_->monitors.count(monitor_id)) return AlreadyExistsError("monitor '" + monitor_id + "' exists");
    impl_->monitors[monitor_id] = std::move(on_update);
  }
  auto initial = Call("monitor", Json::array({db, monitor_id, requests}), timeout);
  if (!initial.ok()) {
    std::lock_guard l(impl_->mu);
    impl_->monitors.erase(monitor_id);
  }
  return initial;
}

Status OvsdbClient::MonitorCancel(const std::string& monitor_id, Millis timeout) {
  Status s = Call("monitor_cancel", Json::array({monitor_id}), timeout).status();
  std::lock_guard l(impl_->mu);
  impl_->monitors.erase(monitor_id);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Ports

namespace {

// An optional column's value: the atom, or ["set", []] when empty (RFC 7047 5.1).
const Json* OptionalAtom(const Json& row, const char* column) {
  auto it = row.find(column);
  if (it == row.end()) return nullptr;
  if (it->is_array() && it->size() == 2 && (*it)[0] == "set" && (*it)[1].is_array()) {
    return (*it)[1].empty() ? nullptr : &(*it)[1][0];
  }
  return &*it;
}

}  // namespace

Result<int64_t> WaitForOfport(OvsdbClient& client, const std::string& name, OvsdbClient::Millis timeout) {
  static std::atomic<int64_t> counter{0};
  const std::string id = "ofport-" + name + "-" + std::to_string(++counter);
  // What the interface's row says; shared with the monitor's callback, which may run on the loop
  // thread until the monitor is cancelled (after this function returns).
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool seen = false, gone = false;
    int64_t ofport = 0;  // 0: none yet
    std::string error;
  };
  auto st = std::make_shared<State>();
  auto look = [st, name](const Json& table_updates) {
    if (!table_updates.is_object()) return;
    const auto rows = table_updates.find("Interface");
    if (rows == table_updates.end() || !rows->is_object()) return;
    std::lock_guard l(st->mu);
    for (const auto& [uuid, change] : rows->items()) {
      if (!change.is_object()) continue;
      const auto now = change.find("new"), old = change.find("old");
      if (now == change.end() || !now->is_object()) {
        if (old != change.end() && old->is_object() && old->value("name", "") == name) st->gone = true;
        continue;
      }
      if (now->value("name", "") != name) continue;
      st->seen = true;
      if (const Json* p = OptionalAtom(*now, "ofport"); p && p->is_number_integer()) st->ofport = p->get<int64_t>();
      if (const Json* e = OptionalAtom(*now, "error"); e && e->is_string()) st->error = e->get<std::string>();
    }
    st->cv.notify_all();
  };
  const Json request = {{"Interface", {{"columns", {"name", "ofport", "error"}}}}};
  UW_ASSIGN_OR_RETURN(Json initial, client.Monitor("Open_vSwitch", id, request, look, timeout));
  look(initial);
  std::unique_lock l(st->mu);
  const bool ended =
      st->cv.wait_for(l, timeout, [&] { return st->gone || !st->error.empty() || st->ofport != 0 || !st->seen; });
  const bool seen = st->seen, gone = st->gone;
  const int64_t port = st->ofport;
  const std::string why = st->error;
  l.unlock();
  (void)client.MonitorCancel(id, timeout);
  const std::string what = "interface " + name;
  if (!seen || gone) return NotFoundError(what + " is not in the Open_vSwitch database");
  if (!why.empty() || port < 0) return FailedPreconditionError(what + " failed: " + (why.empty() ? "ofport -1" : why));
  if (!ended || port == 0) {
    return DeadlineExceededError(what + " has no OpenFlow port after " + std::to_string(timeout.count()) + " ms");
  }
  return port;
}

}  // namespace uw::netvirt
