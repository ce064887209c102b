// Private to manager/: the event bus behind GET /api/v1/events. Streams are served without a
// thread each: one dispatcher thread reads committed events from the store and pushes them to every
// open stream, and writes the keep-alive comments of all of them.
//
//   AddEvent (INSERT, any thread) --Notify(seq)--> dispatcher thread
//        |  new events: one query for all streams (seq > live_), each frame formatted once,
//        |              written to every caught-up subscriber the principal may see
//        |  new streams: their backlog in pages of kPage (their own query), then they join the live set
//        |  every keep_alive: ": keep-alive" to streams that were sent nothing for that long
//        '--> api::StreamWriter (the HTTP server's loop thread sends it)
//
// Only committed events are sent: the dispatcher reads the store outside any transaction, so an
// event added in a transaction that rolls back is never seen (its seq is reused by the next one).
//
// Semantics (exactly as the thread-per-stream loop had them): a stream starts after `since` (0, the
// ?since= query parameter or Last-Event-ID); a tenant sees only events with its tenant; follow=false
// ends the body after the backlog; a stream that nothing was written to for keep_alive gets a
// ": keep-alive" comment; a store error ends the stream with an "error" event.
//
// Thread safety: every public method may be called from any thread; OnClose callbacks of the
// writers call Unsubscribe, which never blocks on the dispatcher's writes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "api/http.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"

namespace uw::manager::internal {

// The JSON of one stored event row (the shape of GET /api/v1/events data and EventsSince).
Json EventRowJson(const SqlRow& r);

class EventBus {
 public:
  // How an event's JSON is shown to a principal (tenants see their guests' short names).
  using Presenter = std::function<void(const Principal& p, Json& event)>;
  // Events are read from `store`; `clock` times keep-alives (Monotonic).
  EventBus(Store& store, Clock& clock, Presenter present, Duration keep_alive = std::chrono::seconds(15));
  ~EventBus();  // Stop()s.
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  // Starts the dispatcher with every event up to `last_seq` already in the store (streams that
  // subscribe later read what they need of those as backlog).
  void Start(int64_t last_seq);
  // Ends every open stream (Close) and joins the dispatcher. Idempotent.
  void Stop();

  // An event with `seq` was inserted (its transaction may not have committed yet).
  void Notify(int64_t seq);

  // Serves `writer` the events after `since` that `who` may see; with follow=false it is closed
  // after the backlog, otherwise it stays subscribed until the client goes, the server stops or
  // the bus stops. Returns at once; the writer's OnClose unsubscribes it.
  void Subscribe(const Principal& who, int64_t since, bool follow, std::shared_ptr<api::StreamWriter> writer);

  // Open subscriptions (for tests and benchmarks).
  size_t subscribers() const;

  static constexpr int64_t kPage = 500;

 private:
  struct Subscriber {
    uint64_t id = 0;
    Principal who;
    bool tenant_only = false;
    bool follow = true;
    std::shared_ptr<api::StreamWriter> writer;
    // Dispatcher thread only: every event with seq <= position was sent or is not for this
    // subscriber; it is live (fed from the shared query) once position >= live_.
    int64_t position = 0;
    Duration last_write{0};  // Monotonic time of the last frame
  };
  void Run();
  void Unsubscribe(uint64_t id);
  // Dispatcher: one backlog page for `s`; true when it reached the live position (or ended).
  bool CatchUp(Subscriber& s);
  // Dispatcher: events after live_ to every live subscriber.
  void FanOut(const std::vector<std::shared_ptr<Subscriber>>& subs);
  void Fail(Subscriber& s, const Status& error);

  Store& store_;
  Clock& clock_;
  const Presenter present_;
  const Duration keep_alive_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                                           // guarded by mu_
  bool started_ = false;                                            // guarded by mu_
  int64_t notified_seq_ = 0;                                        // guarded by mu_
  uint64_t next_id_ = 1;                                            // guarded by mu_
  std::unordered_map<uint64_t, std::shared_ptr<Subscriber>> subs_;  // guarded by mu_
  std::vector<std::shared_ptr<Subscriber>> joining_;                // guarded by mu_: not yet seen by Run
  std::thread thread_;

  // Dispatcher thread only.
  int64_t live_ = 0;  // every event with seq <= live_ has been fanned out
  std::vector<std::shared_ptr<Subscriber>> catching_up_;
};

}  // namespace uw::manager::internal
