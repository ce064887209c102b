#include "manager/migration_dispatcher.h"

#include <spdlog/spdlog.h>

#include <vector>

#include "manager/drs_tables.h"
#include "manager/event_log.h"
#include "manager/migration_table.h"
#include "manager/task_journal.h"

namespace uw::manager::internal {

namespace mg = uw::migration;

MigrationDispatcher::MigrationDispatcher(Store& store, TaskJournal& tasks, EventLog& events, mg::Caps caps, Runner run)
    : store_(store), tasks_(tasks), events_(events), caps_(caps), run_(std::move(run)) {}

MigrationDispatcher::~MigrationDispatcher() { Stop(); }

void MigrationDispatcher::Start() {
  {
    std::lock_guard l(mu_);
    stopping_ = false;
  }
  loop_ = std::thread([this] { Loop(); });
}

void MigrationDispatcher::Stop() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (loop_.joinable()) loop_.join();
  std::map<std::string, std::thread> threads;
  {
    std::lock_guard l(mu_);
    threads.swap(threads_);
  }
  for (auto& [id, t] : threads) t.join();
}

void MigrationDispatcher::Wake() { cv_.notify_all(); }

void MigrationDispatcher::RequestCancel(const std::string& task_id) {
  std::lock_guard l(mu_);
  cancel_requested_.insert(task_id);
}

bool MigrationDispatcher::CancelRequested(const std::string& task_id) {
  std::lock_guard l(mu_);
  return cancel_requested_.count(task_id) > 0;
}

void MigrationDispatcher::Loop() {
  std::unique_lock l(mu_);
  while (!stopping_) {
    l.unlock();
    Dispatch();
    l.lock();
    cv_.wait_for(l, std::chrono::milliseconds(250));
    for (const auto& id : finished_) {
      auto it = threads_.find(id);
      if (it == threads_.end()) continue;
      it->second.join();
      threads_.erase(it);
    }
    finished_.clear();
  }
}

void MigrationDispatcher::Spawn(const std::string& task_id, bool resume) {
  if (threads_.count(task_id)) return;
  threads_[task_id] = std::thread([this, task_id, resume] {
    // An agent's malformed answer must fail the move, never the process; the migration record
    // keeps its last persisted phase, and recovery at the next start reconciles it.
    try {
      run_(task_id, resume);
    } catch (const std::exception& e) {
      spdlog::error("migration task {}: {}", task_id, e.what());
      if (Status s = tasks_.Finish(task_id, InternalError(std::string("migration aborted: ") + e.what()), nullptr);
          !s.ok()) {
        spdlog::error("migration task {}: cannot record its failure: {}", task_id, s.ToString());
      }
    }
    {
      std::lock_guard l(mu_);
      finished_.insert(task_id);
      cancel_requested_.erase(task_id);
    }
    cv_.notify_all();
  });
}

void MigrationDispatcher::Dispatch() {
  auto unfinished = tasks_.Unfinished("guest.migrate");
  if (!unfinished.ok()) {
    spdlog::warn("migration dispatcher: {}", unfinished.status().ToString());
    return;
  }
  const std::vector<Task>& rows = *unfinished;
  // The unfinished migrations as one schedule; NextRunnable applies dependencies and caps. A
  // dependency on a task that already finished is met (succeeded) or fatal (failed, cancelled).
  std::map<std::string, int> index;
  for (const auto& t : rows) index[t.id] = static_cast<int>(index.size());
  mg::Schedule sched;
  std::vector<mg::StepState> states;
  for (const auto& t : rows) {
    mg::Step st;
    st.move.vm = t.subject;
    st.move.from = t.request.value("from", "");
    st.move.to = t.request.value("to", "");
    std::string failed_dep;
    for (const auto& d : t.request.value("depends_on", Json::array())) {
      const std::string dep_id = d.get<std::string>();
      if (auto it = index.find(dep_id); it != index.end()) {
        st.depends_on.push_back(it->second);
        continue;
      }
      auto dep = tasks_.Get(dep_id);
      if (!dep.ok()) continue;
      if (dep->state == "failed" || dep->state == "cancelled") failed_dep = dep_id + " (move of " + dep->subject + ")";
    }
    states.push_back(t.state == "running" ? mg::StepState::kRunning : mg::StepState::kPending);
    if (!failed_dep.empty() && states.back() == mg::StepState::kPending) {
      states.back() = mg::StepState::kFailed;
      Status s = tasks_.Finish(
          t.id, AbortedError("not started: it depends on task " + failed_dep + ", which did not succeed"), nullptr);
      if (!s.ok()) spdlog::warn("task {}: {}", t.id, s.ToString());
      if (std::string rec = t.request.value("recommendation", ""); !rec.empty()) {
        Status closed =
            RecommendationTable(store_).Close(rec, RecommendationTable::End::kFailed, "a move it depends on failed");
        if (!closed.ok()) spdlog::warn("recommendation {}: {}", rec, closed.ToString());
      }
    }
    sched.steps.push_back(std::move(st));
  }
  for (int i : mg::NextRunnable(sched, states, caps_)) {
    const std::string& id = rows[i].id;
    auto claimed = tasks_.ClaimPending(id, "starting");
    if (!claimed.ok() || !*claimed) continue;
    std::lock_guard l(mu_);
    Spawn(id, false);
  }
}

Status MigrationDispatcher::Recover() {
  UW_ASSIGN_OR_RETURN(std::vector<Task> unfinished, tasks_.Unfinished("guest.migrate"));
  for (const Task& t : unfinished) {
    if (t.state != "running") continue;
    UW_ASSIGN_OR_RETURN(std::optional<migration::Record> mig, MigrationTable(store_).OfTask(t.id));
    if (!mig) {
      // Claimed but nothing recorded yet: nothing was done; start it again.
      UW_RETURN_IF_ERROR(tasks_.Requeue(t.id, "resumed after a manager restart (nothing was done yet)"));
      continue;
    }
    UW_RETURN_IF_ERROR(events_.Add("task.resumed", t.id, "", {{"kind", "guest.migrate"}, {"migration", mig->id}}));
    spdlog::info("recovering migration task {} (migration {})", t.id, mig->id);
    std::lock_guard l(mu_);
    Spawn(t.id, true);
  }
  return Status::Ok();
}

}  // namespace uw::manager::internal
