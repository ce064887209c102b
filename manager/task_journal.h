// The task journal: owns the tasks table. A task is a row before anything is done for it
// (crash-only: a restarted manager resumes or fails every task that is not final), and its outcome
// is recorded with an event in the same transaction. The workers that run tasks are the manager's
// (tasks.cc); migrations are run by the migration dispatcher. Private to manager/.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"

namespace uw::manager::internal {

class EventLog;

inline constexpr int kMaxTaskAttempts = 3;

class TaskJournal {
 public:
  TaskJournal(Store& store, EventLog& events, Clock& clock);

  // A pending task with a task.created event (inside or outside a transaction). Returns its id.
  Result<std::string> Add(std::string_view kind, std::string_view subject, std::string_view tenant,
                          const Json& request);
  // A pending task row only, with `message` (the caller records its own event).
  Status Insert(const std::string& id, std::string_view kind, std::string_view subject, std::string_view tenant,
                const Json& request, std::string_view message);
  Result<Task> Get(std::string_view id);
  // Newest first; tenants see their own. kInvalidArgument when `after` names no task in scope.
  Result<Page<Task>> List(const Principal& p, const PageQuery& page);

  // What a worker claimed (pending -> running, one more attempt); nullopt when the task is no
  // longer pending (cancelled meanwhile, or claimed already).
  struct Claim {
    std::string kind, subject;
    Json request;
  };
  // `message`, when given, replaces the task's message.
  Result<std::optional<Claim>> ClaimPending(const std::string& id,
                                            std::optional<std::string_view> message = std::nullopt);
  // The pending and running tasks of `kind`, oldest first.
  Result<std::vector<Task>> Unfinished(std::string_view kind);
  // The subjects (guest names) with a pending or running task.
  Result<std::set<std::string>> SubjectsInFlight();
  // The pending or running task of `subject`, the oldest; nullopt when it has none.
  Result<std::optional<Task>> InFlightOf(std::string_view subject);
  // The subjects whose task ended (succeeded, failed, cancelled) after `since_ms`.
  Result<std::set<std::string>> SubjectsEndedSince(int64_t since_ms);
  // Makes a task pending again, saying why.
  Status Requeue(const std::string& id, std::string_view message);
  Status SetProgress(const std::string& id, double progress, std::string_view message);
  // succeeded (with `result`) or failed (with the error), with its event; wakes Wait.
  Status Finish(const std::string& id, const Status& outcome, const Json& result);
  // Ends the task cancelled ('aborted', "cancelled by request"), with `message` and `result` when
  // given, and a task.cancelled event; wakes Wait. Call it inside a transaction for both writes to
  // be one.
  Status Cancel(const std::string& id, std::optional<std::string_view> message, const Json& result);
  // Marks a running migration's task as being cancelled (its run ends it), with its event.
  Status CancelRequested(const Task& t);
  // Blocks until the task is final or `timeout` passes; returns it either way.
  Result<Task> Wait(std::string_view id, Duration timeout);
  void WakeWaiters();

  // On start: every non-final task that is not a migration is made pending again and handed to
  // `enqueue` (its steps are idempotent against the agent), or failed after kMaxTaskAttempts.
  Status Recover(const std::function<void(const std::string&)>& enqueue);

 private:
  int64_t NowMs() const;

  Store& store_;
  EventLog& events_;
  Clock& clock_;
  std::mutex mu_;
  std::condition_variable finished_;  // any task ended
};

}  // namespace uw::manager::internal
