#include "manager/event_log.h"

#include "manager/event_bus.h"
#include "manager/internal.h"

namespace uw::manager::internal {

EventLog::EventLog(Store& store, Clock& clock) : store_(store), clock_(clock) {}

EventLog::~EventLog() { Stop(); }

Status EventLog::Start() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT COALESCE(MAX(seq), 0) AS seq FROM events"));
  bus_ = std::make_unique<EventBus>(store_, clock_, ShowShortNames);
  bus_->Start(rows[0].Int("seq"));
  return Status::Ok();
}

void EventLog::Stop() {
  if (bus_) bus_->Stop();
}

Status EventLog::Add(std::string_view type, std::string_view subject, std::string_view tenant, const Json& data) {
  const int64_t now = ToUnixMillis(clock_.Now());
  UW_RETURN_IF_ERROR(store_.Exec("INSERT INTO events(at_ms, type, subject, tenant, data) VALUES (?, ?, ?, ?, ?)",
                                 {now, std::string(type), std::string(subject), std::string(tenant), data.dump()}));
  if (bus_) bus_->Notify(store_.LastInsertRowId());
  return Status::Ok();
}

void EventLog::Subscribe(const Principal& p, int64_t since, bool follow, std::shared_ptr<api::StreamWriter> writer) {
  if (bus_ == nullptr) {  // not started: nothing to serve
    writer->Close();
    return;
  }
  bus_->Subscribe(p, since, follow, std::move(writer));
}

size_t EventLog::subscribers() const { return bus_ ? bus_->subscribers() : 0; }

Result<std::vector<Event>> EventLog::Since(const Principal& p, int64_t since, int64_t limit) {
  std::vector<SqlRow> rows;
  if (p.role == Role::kTenant) {
    UW_ASSIGN_OR_RETURN(rows, store_.Query("SELECT * FROM events WHERE seq > ? AND tenant = ? ORDER BY seq LIMIT ?",
                                           {since, p.tenant, limit}));
  } else {
    UW_ASSIGN_OR_RETURN(rows, store_.Query("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", {since, limit}));
  }
  std::vector<Event> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    out.push_back({r.Int("seq"), r.Int("at_ms"), r.Str("type"), r.Str("subject"), r.Str("tenant"), r.JsonOf("data")});
  }
  return out;
}

}  // namespace uw::manager::internal
