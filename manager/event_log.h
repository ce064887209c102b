// The manager's event log: owns the events table and the bus that serves GET /api/v1/events.
// Private to manager/ (Manager owns one and offers its calls to the HTTP layer).
//
//   any component --Add (inside or outside a store transaction)--> events table --> EventBus --> streams
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "api/http.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"

namespace uw::manager::internal {

class EventBus;

class EventLog {
 public:
  EventLog(Store& store, Clock& clock);
  ~EventLog();  // Stop()s.
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Starts serving streams from the events already stored.
  Status Start();
  // Ends every open stream. Idempotent.
  void Stop();

  // Appends an event (inside or outside a transaction; streams see it once it is committed).
  Status Add(std::string_view type, std::string_view subject, std::string_view tenant, const Json& data);
  // Events with seq > since that `p` may see (tenants their own), at most `limit`.
  Result<std::vector<Event>> Since(const Principal& p, int64_t since, int64_t limit);
  // See Manager::SubscribeEvents; a log that is not started closes the writer at once.
  void Subscribe(const Principal& p, int64_t since, bool follow, std::shared_ptr<api::StreamWriter> writer);
  size_t subscribers() const;

 private:
  Store& store_;
  Clock& clock_;
  std::unique_ptr<EventBus> bus_;  // set by Start
};

}  // namespace uw::manager::internal
