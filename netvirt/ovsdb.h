// A client of ovsdb-server's JSON-RPC protocol (RFC 7047) over its unix socket, on a libuv loop of
// its own. Debian ships no C or C++ OVSDB library, so this one is small and stays close to the RFC:
//
//   caller threads ──Call()──> queue ──uv_async──> loop thread ──write──> ovsdb-server
//   caller waits on its id <── answer by id <── JsonStreamSplitter <──read── ovsdb-server
//                                 "echo" requests answered, "update" notifications -> monitors
//
// Thread safety: every public method may be called from any thread; monitor callbacks run on the
// loop thread and must not call back into the client synchronously.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace uw::netvirt {

// Cuts a byte stream of concatenated JSON texts (objects or arrays, as JSON-RPC peers send them
// with no delimiter) into whole texts. Whitespace between texts is skipped.
class JsonStreamSplitter {
 public:
  explicit JsonStreamSplitter(size_t max_text_bytes) : max_(max_text_bytes) {}
  // Appends each text completed by `bytes` to `out`. kResourceExhausted when a text grows over the
  // limit, kInvalidArgument for a byte between texts that cannot start one; the splitter is then
  // broken (the stream cannot be resynchronised) and every later call fails the same way.
  Status Feed(std::string_view bytes, std::vector<std::string>& out);

 private:
  size_t max_;
  std::string text_;  // the text being read
  int depth_ = 0;
  bool in_string_ = false, escaped_ = false;
  Status broken_ = Status::Ok();
};

// RFC 7047's error strings of a failed operation or commit, as a Status code: "constraint
// violation" of a unique index -> kAlreadyExists; "referential integrity violation" and other
// constraint violations -> kFailedPrecondition; "resources exhausted" -> kResourceExhausted;
// "timed out" -> kDeadlineExceeded; syntax and unknown names -> kInvalidArgument.
StatusCode OvsdbErrorCode(std::string_view error, std::string_view details);

class OvsdbClient {
 public:
  using Millis = std::chrono::milliseconds;
  // `on_update(monitor_id, table_updates)` for each "update" notification of a monitor.
  using UpdateFn = std::function<void(const Json& table_updates)>;

  // Connects to ovsdb-server's socket ("unix:PATH" or PATH). kUnavailable naming the socket when
  // nothing answers there within `timeout`.
  static Result<std::unique_ptr<OvsdbClient>> Connect(const std::string& socket, Millis timeout);
  ~OvsdbClient();  // closes the connection; calls still waiting fail kUnavailable
  OvsdbClient(const OvsdbClient&) = delete;
  OvsdbClient& operator=(const OvsdbClient&) = delete;

  // One JSON-RPC request and its answer's "result". A JSON-RPC error -> OvsdbErrorCode with the
  // server's error and details; no answer within `timeout` -> kDeadlineExceeded; the connection
  // lost -> kUnavailable.
  Result<Json> Call(std::string_view method, Json params, Millis timeout);
  Result<std::vector<std::string>> ListDbs(Millis timeout);
  // "transact" on `db` with `operations` (an array of RFC 7047 operations), all or nothing: the
  // results of each operation, or the first operation's (or the commit's) error naming its index
  // and op, with OvsdbErrorCode's code. Nothing is applied when it fails.
  Result<Json> Transact(std::string_view db, const Json& operations, Millis timeout);
  // "monitor" of `db`: `requests` maps table -> monitor request (RFC 7047 4.1.5). Returns the
  // initial contents (table updates); later changes go to `on_update` until MonitorCancel.
  Result<Json> Monitor(std::string_view db, const std::string& monitor_id, const Json& requests, UpdateFn on_update,
                       Millis timeout);
  Status MonitorCancel(const std::string& monitor_id, Millis timeout);
  // False once the connection is lost (the server went away or sent what is not JSON-RPC).
  bool connected() const;

  // Largest message accepted from the server (a bigger one breaks the connection).
  static constexpr size_t kMaxMessageBytes = 64 << 20;

 private:
  struct Impl;
  explicit OvsdbClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Waits until the Open_vSwitch database's Interface `name` has an OpenFlow port number (what
// ovs-vswitchd writes once the port works) and returns it; `add-port` succeeds even when the port
// then fails, so a port whose ofport is -1 or whose `error` column is set is kFailedPrecondition
// with that error. kDeadlineExceeded when neither happens within `timeout`; kNotFound when the
// interface is not in the database.
Result<int64_t> WaitForOfport(OvsdbClient& client, const std::string& name, OvsdbClient::Millis timeout);

}  // namespace uw::netvirt
