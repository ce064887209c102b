// The migration dispatcher: starts each journalled guest.migrate task when its dependencies are
// met and the caps allow (migration::NextRunnable), one thread per running migration, and takes
// cancel requests for them. Private to manager/.
//
//   NewTask(guest.migrate) --Wake--> loop: unfinished migrate tasks -> schedule -> NextRunnable
//        --claim--> thread: run(task, resume) (MigrationRun) --> joined by the loop when it ends
//
// After a restart, Recover resumes every migration that had begun (from its record) and makes
// pending again the ones that were claimed but had done nothing. Thread safety: every method may
// be called from any thread.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/status.h"
#include "manager/store.h"
#include "migration/migration.h"

namespace uw::manager::internal {

class EventLog;
class TaskJournal;

class MigrationDispatcher {
 public:
  // Runs one migration to its end (resume: from its record after a restart).
  using Runner = std::function<void(const std::string& task_id, bool resume)>;
  MigrationDispatcher(Store& store, TaskJournal& tasks, EventLog& events, migration::Caps caps, Runner run);
  ~MigrationDispatcher();  // Stop()s.
  MigrationDispatcher(const MigrationDispatcher&) = delete;
  MigrationDispatcher& operator=(const MigrationDispatcher&) = delete;

  // Before Start: resumes the migrations a previous process left running.
  Status Recover();
  void Start();
  // Joins the loop and every migration thread (their runners must be told to stop first). Idempotent.
  void Stop();
  // A migrate task was added or a migration ended: look again now.
  void Wake();
  // A running migration's task is to be cancelled; its run asks CancelRequested.
  void RequestCancel(const std::string& task_id);
  bool CancelRequested(const std::string& task_id);

 private:
  void Loop();
  void Dispatch();
  void Spawn(const std::string& task_id, bool resume);  // requires mu_

  Store& store_;
  TaskJournal& tasks_;
  EventLog& events_;
  const migration::Caps caps_;
  const Runner run_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                       // guarded by mu_
  std::map<std::string, std::thread> threads_;  // guarded by mu_ (by task id)
  std::set<std::string> finished_;              // guarded by mu_: threads to join
  std::set<std::string> cancel_requested_;      // guarded by mu_
  std::thread loop_;
};

}  // namespace uw::manager::internal
