#include "manager/task_journal.h"

#include <spdlog/spdlog.h>

#include "common/id.h"
#include "manager/event_log.h"
#include "manager/internal.h"

namespace uw::manager::internal {
namespace {

Task TaskOfRow(const SqlRow& r) {
  Task t{r.Str("id"),        r.Str("kind"),      r.Str("subject"),   r.Str("tenant"),     r.Str("state"),
         r.Real("progress"), r.Str("message"),   r.Int("attempts"),  r.Int("created_ms"), r.Int("updated_ms"),
         std::nullopt,       r.JsonOf("result"), r.JsonOf("request")};
  if (!r.IsNull("error_code")) t.error = TaskError{r.Str("error_code"), r.Str("error_message")};
  return t;
}

}  // namespace

TaskJournal::TaskJournal(Store& store, EventLog& events, Clock& clock)
    : store_(store), events_(events), clock_(clock) {}

int64_t TaskJournal::NowMs() const { return ToUnixMillis(clock_.Now()); }

Status TaskJournal::Insert(const std::string& id, std::string_view kind, std::string_view subject,
                           std::string_view tenant, const Json& request, std::string_view message) {
  const int64_t now = NowMs();
  return store_.Exec(
      "INSERT INTO tasks(id, kind, subject, tenant, state, message, request, created_ms, updated_ms) VALUES "
      "(?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
      {id, std::string(kind), std::string(subject), std::string(tenant), std::string(message), request.dump(), now,
       now});
}

Result<std::string> TaskJournal::Add(std::string_view kind, std::string_view subject, std::string_view tenant,
                                     const Json& request) {
  std::string id = NewId("task");
  UW_RETURN_IF_ERROR(store_.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(Insert(id, kind, subject, tenant, request, ""));
    return events_.Add("task.created", id, tenant, {{"kind", kind}, {"subject", subject}});
  }));
  return id;
}

Result<Task> TaskJournal::Get(std::string_view id) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT * FROM tasks WHERE id = ?", {std::string(id)},
                                                "task '" + std::string(id) + "' not found"));
  return TaskOfRow(r);
}

Result<Page<Task>> TaskJournal::List(const Principal& p, const PageQuery& page) {
  SqlFilter scope;
  if (p.role == Role::kTenant) scope.And("tenant = ?", {p.tenant});
  UW_ASSIGN_OR_RETURN(RowPage rows, PageNewestFirst(store_, "tasks", scope, page));
  Page<Task> out;
  out.total = rows.total;
  out.next = rows.next;
  out.items.reserve(rows.rows.size());
  for (const auto& r : rows.rows) out.items.push_back(TaskOfRow(r));
  return out;
}

Result<std::vector<Task>> TaskJournal::Unfinished(std::string_view kind) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT * FROM tasks WHERE kind = ? AND state IN ('pending', "
                                              "'running') ORDER BY created_ms, rowid",
                                              {std::string(kind)}));
  std::vector<Task> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(TaskOfRow(r));
  return out;
}

namespace {

std::set<std::string> SubjectsOf(const std::vector<SqlRow>& rows) {
  std::set<std::string> out;
  for (const auto& r : rows) out.insert(r.Str("subject"));
  return out;
}

}  // namespace

Result<std::set<std::string>> TaskJournal::SubjectsInFlight() {
  UW_ASSIGN_OR_RETURN(auto rows,
                      store_.Query("SELECT DISTINCT subject FROM tasks WHERE state IN ('pending', 'running')"));
  return SubjectsOf(rows);
}

Result<std::optional<Task>> TaskJournal::InFlightOf(std::string_view subject) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT * FROM tasks WHERE subject = ? AND state IN ('pending', "
                                              "'running') ORDER BY created_ms, rowid LIMIT 1",
                                              {std::string(subject)}));
  if (rows.empty()) return std::optional<Task>();
  return std::optional<Task>(TaskOfRow(rows[0]));
}

Result<std::set<std::string>> TaskJournal::SubjectsEndedSince(int64_t since_ms) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT DISTINCT subject FROM tasks WHERE updated_ms > ? AND "
                                              "state IN ('succeeded', 'failed', 'cancelled')",
                                              {since_ms}));
  return SubjectsOf(rows);
}

Result<std::optional<TaskJournal::Claim>> TaskJournal::ClaimPending(const std::string& id,
                                                                    std::optional<std::string_view> message) {
  UW_ASSIGN_OR_RETURN(auto claimed,
                      store_.Query("UPDATE tasks SET state = 'running', attempts = attempts + 1, message = "
                                   "COALESCE(?, message), updated_ms = ? WHERE id = ? AND state = 'pending' "
                                   "RETURNING kind, subject, request",
                                   {message ? SqlValue(std::string(*message)) : SqlValue(nullptr), NowMs(), id}));
  if (claimed.empty()) return std::optional<Claim>();
  const SqlRow& r = claimed[0];
  return std::optional<Claim>(Claim{r.Str("kind"), r.Str("subject"), r.JsonOf("request")});
}

Status TaskJournal::SetProgress(const std::string& id, double progress, std::string_view message) {
  return store_.Exec("UPDATE tasks SET progress = ?, message = ?, updated_ms = ? WHERE id = ?",
                     {progress, std::string(message), NowMs(), id});
}

Status TaskJournal::Finish(const std::string& id, const Status& outcome, const Json& result) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT kind, subject, tenant FROM tasks WHERE id = ?", {id}, "task"));
  Status s = store_.Transact([&]() -> Status {
    if (outcome.ok()) {
      UW_RETURN_IF_ERROR(
          store_.Exec("UPDATE tasks SET state = 'succeeded', progress = 1, message = 'done', result = ?, "
                      "error_code = NULL, error_message = NULL, updated_ms = ? WHERE id = ?",
                      {result.is_null() ? SqlValue(nullptr) : SqlValue(result.dump()), NowMs(), id}));
    } else {
      UW_RETURN_IF_ERROR(store_.Exec(
          "UPDATE tasks SET state = 'failed', message = 'failed', error_code = ?, error_message = ?, updated_ms = ? "
          "WHERE id = ?",
          {std::string(StatusCodeName(outcome.code())), outcome.message(), NowMs(), id}));
    }
    return events_.Add(outcome.ok() ? "task.succeeded" : "task.failed", id, r.Str("tenant"),
                       {{"kind", r.Str("kind")},
                        {"subject", r.Str("subject")},
                        {"error", outcome.ok() ? Json(nullptr) : Json(outcome.ToString())}});
  });
  WakeWaiters();
  return s;
}

Status TaskJournal::Cancel(const std::string& id, std::optional<std::string_view> message, const Json& result) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT kind, subject, tenant FROM tasks WHERE id = ?", {id}, "task"));
  UW_RETURN_IF_ERROR(store_.Exec(
      "UPDATE tasks SET state = 'cancelled', message = COALESCE(?, message), error_code = 'aborted', error_message = "
      "'cancelled by request', result = COALESCE(?, result), updated_ms = ? WHERE id = ?",
      {message ? SqlValue(std::string(*message)) : SqlValue(nullptr),
       result.is_null() ? SqlValue(nullptr) : SqlValue(result.dump()), NowMs(), id}));
  UW_RETURN_IF_ERROR(
      events_.Add("task.cancelled", id, r.Str("tenant"), {{"kind", r.Str("kind")}, {"subject", r.Str("subject")}}));
  WakeWaiters();
  return Status::Ok();
}

Status TaskJournal::CancelRequested(const Task& t) {
  UW_RETURN_IF_ERROR(
      store_.Exec("UPDATE tasks SET message = 'cancelling', updated_ms = ? WHERE id = ?", {NowMs(), t.id}));
  return events_.Add("task.cancel_requested", t.id, t.tenant, {{"kind", t.kind}, {"subject", t.subject}});
}

Result<Task> TaskJournal::Wait(std::string_view id, Duration timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    UW_ASSIGN_OR_RETURN(Task t, Get(id));
    if (t.final() || std::chrono::steady_clock::now() >= deadline) return t;
    std::unique_lock l(mu_);
    finished_.wait_for(l, std::chrono::milliseconds(50));
  }
}

Status TaskJournal::Requeue(const std::string& id, std::string_view message) {
  return store_.Exec("UPDATE tasks SET state = 'pending', message = ?, updated_ms = ? WHERE id = ?",
                     {std::string(message), NowMs(), id});
}

void TaskJournal::WakeWaiters() { finished_.notify_all(); }

Status TaskJournal::Recover(const std::function<void(const std::string&)>& enqueue) {
  // Migrations have their own recovery (RecoverMigrations): they cannot simply start over.
  UW_ASSIGN_OR_RETURN(auto rows,
                      store_.Query("SELECT id, kind, subject, state, attempts FROM tasks WHERE state IN "
                                   "('pending', 'running') AND kind <> 'guest.migrate' ORDER BY created_ms"));
  for (const auto& r : rows) {
    std::string id = r.Str("id");
    if (r.Int("attempts") >= kMaxTaskAttempts) {
      UW_RETURN_IF_ERROR(Finish(id,
                                AbortedError("manager restarted " + std::to_string(r.Int("attempts")) +
                                             " times while this task ran; giving up"),
                                nullptr));
      continue;
    }
    // Every step is idempotent against the agent (create treats "already exists" as done, delete
    // treats "not found" as done), so a running task is resumed from its start.
    UW_RETURN_IF_ERROR(Requeue(id, "resumed after a manager restart (was " + r.Str("state") + ")"));
    UW_RETURN_IF_ERROR(events_.Add("task.resumed", id, "",
                                   {{"kind", r.Str("kind")}, {"subject", r.Str("subject")}, {"was", r.Str("state")}}));
    spdlog::info("resuming task {} ({} {}, was {})", id, r.Str("kind"), r.Str("subject"), r.Str("state"));
    enqueue(id);
  }
  return Status::Ok();
}

}  // namespace uw::manager::internal
