// One migration, driven through its persisted phases (issue 13, step 2). Private to manager/.
//
//   begin ──> cold move ─────────────────────────────────────────────> verify ──> finish
//     │                                                                  ^
//     └──> start transfer ──> monitor ──(completed)──────────────────────┘
//                               │  ^
//                   (agent lost, failed, cancelled)
//                               v  │
//                             settle: ask both hosts, migration::Reconcile decides
//
// Every phase is stored before it begins (crash-only: a restarted manager resumes from the record
// and asks the hosts). A phase that cannot be stored stops the run, which ends `unknown` and says
// why; a run never goes on past a write it could not make. Time comes from the manager's Clock and
// waits go through its poll sleeper, so tests drive a run with a FakeClock without sleeping.
#pragma once

#include <string>

#include "common/json.h"
#include "common/status.h"
#include "manager/agent_client.h"
#include "manager/manager.h"
#include "migration/migration.h"

namespace uw::manager::internal {

class MigrationRun {
 public:
  MigrationRun(Manager& manager, std::string task_id);
  // Runs the task's migration to its end (resume: after a manager restart, from the record).
  void Run(bool resume);

 private:
  enum class Outcome { kDone, kRolledBack, kLost, kUnknown, kFailedAfterSwitchover };
  enum class Step { kGoOn, kEnded };  // what a step left to do

  // Beginning and resuming.
  Step Begin();
  Step Resume();
  Status CheckStillFits(bool cold);
  void LoadGuestMemory();
  // The two kinds of move.
  void ColdMove(bool resume);
  void ColdResume(const Result<AgentGuest>& on_src, const Result<AgentGuest>& on_dest);
  void Live(bool resume);
  Status StartTransfer();
  void Monitor();
  Step OnTransferRunning(const migration::Stats& stats);
  Step OnTransferEnded(const MigrationJob& job);
  Step Settle(const Status& cause);
  Step SettleBy(migration::Recovery r, const migration::Observation& o, const Status& cause);
  void VerifyAndFinish();
  bool SourceClean();
  void AbandonDestination();
  // The end of every path: the store says where the guest is, the task how it went.
  void Finish(Outcome outcome, const Status& why);
  void EndPhases(Outcome outcome, const Status& why);
  Status RecordOutcome(Outcome outcome, bool cancelled);
  Json ResultJson(Outcome outcome) const;
  void FailEarly(const Status& why);

  // The record: stored before each phase begins.
  Status Persist();
  Status Advance(migration::Phase phase, const std::string& note);
  // A phase the record passes without its own store write (stored with the next one).
  void Pass(migration::Phase phase, const std::string& note);
  // Pass, then store the record; on a failed write: Finish(kUnknown) naming what could not be
  // recorded. Returns whether the run goes on.
  bool Record(migration::Phase phase, const std::string& note);
  void Progress(double fraction, const std::string& message);
  bool SleepPoll();  // false when the manager is stopping
  double SecondsSince(Duration start) const;

  std::shared_ptr<AgentClient> Source();
  std::shared_ptr<AgentClient> Destination();

  Manager& m_;
  const std::string task_;
  Json request_;
  std::string guest_;
  std::string tenant_;
  std::string recommendation_;
  Json options_;
  migration::Record rec_;
  int64_t memory_mib_ = 0;
  std::string dead_state_ = "crashed";     // the guest's state when it failed after the switch-over
  std::string arrived_state_ = "running";  // its state when done ("unknown" when it could not be verified)
  // Live transfers.
  migration::ConvergencePolicy policy_;
  bool postcopy_armed_ = false;
  migration::ConvergenceState convergence_;
  Duration attempt_start_{0};
  bool cancel_sent_ = false, restarting_ = false;
  std::string abort_reason_;
};

}  // namespace uw::manager::internal
