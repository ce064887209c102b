// Live migration: ordering a plan's moves, the per-migration state machine, and the convergence
// policy. Pure logic (no I/O, no clock, no threads): the manager drives it with facts it reads
// from the state store and the agents, and the agents do what it decides through libvirt.
//
//   plan.moves ──OrderMoves──▶ Schedule (steps, waves, depends_on) ──NextRunnable──▶ start steps
//   each step: begin → prepare → transfer → switch_over → confirm → done
//                         └──────────┴────────────┴──▶ rolling_back → rolled_back | failed
//   during transfer: Progress ──Decide──▶ continue | raise bandwidth | restart with auto-converge
//                                         | start post-copy | abort
//   after a crash: Observation of both hosts ──Reconcile──▶ wait | finish on destination |
//                                         roll back | confirm | lost
//
// Everything here is a value type; thread safety is the caller's.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "placement/placement.h"

namespace uw::migration {

// ---------------------------------------------------------------------------------------------
// Ordering a plan's moves
// ---------------------------------------------------------------------------------------------

// Concurrency caps. A running migration counts against both its source and its destination.
// Defaults suit 10 GbE hosts (vSphere allows 8 vMotions per 10 GbE host; QEMU's default
// 128 MiB/s stream leaves room for about four at full speed on 10 GbE).
struct Caps {
  int64_t per_host = 4;  // migrations touching one host at once, > 0
  int64_t cluster = 16;  // migrations at once in the whole cluster, > 0

  friend bool operator==(const Caps&, const Caps&) = default;
};

// Errors: kInvalidArgument naming the field ("migration.per_host: expected a positive integer").
Result<Caps> ParseCaps(const Json& json, std::string_view path = "migration");
Json CapsToJson(const Caps& caps);

// One move of a schedule.
struct Step {
  placement::Move move;
  int plan_index = 0;           // position in the moves given to OrderMoves
  int wave = 0;                 // steps of one wave may run at once within the caps
  std::vector<int> depends_on;  // indexes into Schedule::steps that must be done first

  friend bool operator==(const Step&, const Step&) = default;
};

struct Schedule {
  // A safe serial order: executing the steps one after another in this order passes
  // placement::CheckPlan, and so does any execution NextRunnable allows (memory counted on
  // both hosts while a guest is in flight, a move into a host after the moves out of it).
  std::vector<Step> steps;
  // Moves that cannot run from the snapshot (guest elsewhere, destination off, no room ever,
  // a required rule it would break): subject = guest name.
  std::vector<placement::Unresolved> unschedulable;
  int waves = 0;
};

// Orders `moves` (as a plan lists them) for execution on `snapshot`. Moves run by priority
// (1 first) then plan order, as soon as their destination has room counting guests still in
// flight on both hosts and no required rule gets worse; a required-affinity group moving
// between the same two hosts stays together and consecutive. The result is verified with
// placement::CheckPlan. Errors: kInvalidArgument for caps that are not positive; kInternal if
// the checker rejects the order (a bug in this function, never expected).
Result<Schedule> OrderMoves(const placement::Snapshot& snapshot, const std::vector<placement::Move>& moves,
                            const Caps& caps = {});

enum class StepState { kPending, kRunning, kDone, kFailed, kSkipped };

// Indexes of pending steps that may start now: all depends_on done, and the caps hold counting
// the running steps. In schedule order. `states` has one entry per step.
std::vector<int> NextRunnable(const Schedule& schedule, const std::vector<StepState>& states, const Caps& caps);

// Pending steps that can never run because a step they depend on failed or was skipped
// (transitively). The caller marks them kSkipped with the returned reason.
std::vector<std::pair<int, std::string>> BlockedByFailure(const Schedule& schedule,
                                                          const std::vector<StepState>& states);

// ---------------------------------------------------------------------------------------------
// The per-migration state machine
// ---------------------------------------------------------------------------------------------

enum class Phase {
  kBegin,                  // recorded, nothing done yet
  kPrepare,                // destination checked, directories and volumes made
  kTransfer,               // libvirt is copying memory (and disks); the guest runs on the source
  kSwitchOver,             // the guest paused on the source to be resumed on the destination
  kConfirm,                // running on the destination; the source definition is being removed
  kVerify,                 // source clean; the destination must show the guest running (and answering its
                           // control channel) through the verification window
  kDone,                   // on the destination, verified, source clean
  kRollingBack,            // abort requested or a step failed; cleaning the destination
  kRolledBack,             // running on the source as before
  kFailed,                 // ended without a clean state (guest lost or on neither host): operator needed
  kFailedAfterSwitchover,  // the guest died (crashed, stopped, never answered) on the destination
                           // within the verification window; the source copy is gone
};

std::string_view PhaseName(Phase p);
// Errors: kInvalidArgument "unknown migration phase 'x'".
Result<Phase> PhaseFromName(std::string_view name);
bool IsTerminal(Phase p);
// True once the guest runs (or may run) on the destination: rolling back is no longer possible.
bool PastSwitchOver(Phase p);

// What the destination showed of the guest during one check of the verification window.
struct VerifyObservation {
  double since_switchover_s = 0;
  bool reachable = true;     // the destination's agent answered
  std::string state;         // the guest's state there ("running", "crashed", "shutoff", "" = absent)
  bool has_channel = false;  // the guest has a control channel
  bool answered = false;     // it has answered the channel since the switch-over
};
struct VerifyPolicy {
  double window_s = 10;       // the guest must be seen running this long after the switch-over
  double timeout_s = 90;      // ... and answer its channel (if it has one) within this long
  double unreachable_s = 60;  // an agent that does not answer is waited for this long
};
enum class Verdict { kWait, kVerified, kDied, kUnreachable };
// One check of the verification window: kVerified once the window has passed with the guest
// running and (with a channel) answering; kDied at once when it is crashed, shut off or gone, or
// when it has not answered by the timeout; kUnreachable when the agent stayed silent past the
// timeout; kWait otherwise. `why` says what was seen for kDied and kUnreachable.
Verdict VerifyCheck(const VerifyObservation& o, const VerifyPolicy& p, std::string* why);

enum class Mode { kLive, kCold };
std::string_view ModeName(Mode m);

// Measured figures of a finished or running migration.
struct Stats {
  int64_t total_ms = 0;     // libvirt's time elapsed
  int64_t downtime_ms = 0;  // QEMU's downtime figure
  int64_t memory_total_bytes = 0;
  int64_t memory_remaining_bytes = 0;
  int64_t memory_processed_bytes = 0;
  int64_t dirty_rate_pages_s = 0;
  int64_t expected_downtime_ms = 0;
  int64_t disk_total_bytes = 0;
  int64_t disk_remaining_bytes = 0;
  int64_t iteration = 0;

  friend bool operator==(const Stats&, const Stats&) = default;
};

// The persisted record of one migration. The manager stores it (JSON) before each phase begins
// so that a restarted manager knows where it was.
struct Record {
  std::string id;
  std::string guest;
  std::string source;
  std::string destination;
  Mode mode = Mode::kLive;
  bool copy_storage = false;
  Phase phase = Phase::kBegin;
  int attempt = 1;             // restarts (auto-converge) increase it
  double bandwidth_mib_s = 0;  // current limit; 0 = libvirt's default
  int64_t downtime_limit_ms = 0;
  bool auto_converge = false;
  bool postcopy = false;             // started post-copy
  std::string error;                 // why it rolled back or failed
  std::string console_tail;          // the destination console's last lines when it failed after switch-over
  std::vector<std::string> history;  // "transfer: raise bandwidth to 256 MiB/s (stalled)"
  Stats stats;

  friend bool operator==(const Record&, const Record&) = default;
};

Json RecordToJson(const Record& r);
// Errors: kInvalidArgument naming the field.
Result<Record> ParseRecord(const Json& json);

// Moves `r` to phase `to`. Errors: kFailedPrecondition "migration m1 of vm1: cannot go from done
// to transfer" when the transition is not allowed (the record is unchanged).
Status Advance(Record& r, Phase to, std::string_view note = "");

// ---------------------------------------------------------------------------------------------
// Convergence policy
// ---------------------------------------------------------------------------------------------

struct ConvergencePolicy {
  double bandwidth_mib_s = 128;       // starting limit (QEMU's default)
  double max_bandwidth_mib_s = 1024;  // raise up to this
  int64_t downtime_limit_ms = 300;    // max downtime QEMU may take at switch-over
  double base_timeout_s = 30;         // deadline = base + per_gib × guest memory in GiB
  double timeout_s_per_gib = 60;
  bool allow_auto_converge = true;
  bool allow_postcopy = false;  // operator opt-in: a post-copy failure loses the guest
  int stall_checks = 3;         // checks without a new low of remaining memory = stalled

  friend bool operator==(const ConvergencePolicy&, const ConvergencePolicy&) = default;
};

// Errors: kInvalidArgument naming the field.
Result<ConvergencePolicy> ParseConvergencePolicy(const Json& json, std::string_view path = "convergence");
Json ConvergencePolicyToJson(const ConvergencePolicy& p);

// Seconds a migration of `memory_mib` may take before the policy escalates at once.
double DeadlineSeconds(const ConvergencePolicy& p, int64_t memory_mib);

// What the policy remembers between checks of one migration.
struct ConvergenceState {
  int64_t best_remaining_bytes = -1;  // lowest remaining seen since the last escalation
  int stalled = 0;                    // consecutive checks without a new low
  bool bandwidth_raised = false;
  bool auto_converge = false;  // running with auto-converge (after a restart)
  bool postcopy_started = false;
  double deadline_s = 0;  // elapsed time at which the current stage gives up
};

struct ConvergenceInput {
  double elapsed_s = 0;  // since this attempt began
  int64_t memory_mib = 0;
  Stats stats;
  double bandwidth_mib_s = 0;   // current limit
  bool postcopy_armed = false;  // the migration was started with post-copy enabled
};

enum class Action { kContinue, kRaiseBandwidth, kRestartWithAutoConverge, kStartPostCopy, kAbort };
std::string_view ActionName(Action a);

struct Decision {
  Action action = Action::kContinue;
  double bandwidth_mib_s = 0;  // for kRaiseBandwidth
  std::string reason;
};

// One check of a running transfer. Escalates when the transfer stalls (no new low of remaining
// memory for stall_checks checks after the first pass, or dirtying faster than the limit) or
// the deadline passes: raise bandwidth to the maximum, then restart with auto-converge, then
// post-copy (only when allowed and armed), then abort. Updates `state`.
Decision Decide(ConvergenceState& state, const ConvergenceInput& in, const ConvergencePolicy& p);

// ---------------------------------------------------------------------------------------------
// Recovery after a crash
// ---------------------------------------------------------------------------------------------

enum class Presence { kAbsent, kRunning, kPaused, kUnknown };  // unknown: host unreachable
struct Observation {
  Presence source = Presence::kUnknown;
  Presence destination = Presence::kUnknown;
  bool job_active = false;  // the source still reports a migration job for the guest
};

enum class Recovery {
  kWait,                 // unreachable host or job still active: look again later
  kRollBack,             // clean the destination, resume the guest on the source
  kFinishOnSource,       // nothing on the destination: record rolled back
  kConfirm,              // running on the destination: remove the source copy, record done
  kFinishOnDestination,  // only the destination has it: record done
  kLost,                 // on neither host: record failed, tell the operator
};
std::string_view RecoveryName(Recovery r);

// Where a migration recorded in `phase` stands given what the two hosts report.
Recovery Reconcile(Phase phase, const Observation& o);

}  // namespace uw::migration
