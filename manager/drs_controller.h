// The DRS controller: the stored DRS config, one pass (plan on the live cluster, store the moves as
// recommendations, start the ones automation allows), the recommendations an operator applies, and
// dry-run plans. Private to manager/ (Manager owns one, made by Start, and its public DRS calls
// are this class's).
//
//   monitor loop / POST /drs/run --RunPass--> snapshot --> placement::MakePlan --> recommendations
//        --(automatic, or evacuating a host in maintenance)--> start_moves (guest.migrate tasks)
//   POST /drs/recommendations/{id}/apply --Apply--> verified on the live cluster --> start_moves
//
// The snapshot and the start of moves are the manager's (given as functions): admission holds the
// placement lock there, never here.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"
#include "placement/placement.h"

namespace uw::manager::internal {

class EventLog;
class GuestTable;
class TaskJournal;

class DrsController {
 public:
  using SnapshotFn = std::function<Result<placement::Snapshot>()>;
  // Starts `moves` (recommendation ids beside them) as guest.migrate tasks in one safe order.
  using StartMovesFn =
      std::function<Result<StartedMoves>(const std::vector<placement::Move>&, const std::vector<std::string>&)>;
  struct Deps {
    Store& store;
    EventLog& events;
    TaskJournal& tasks;
    GuestTable& guests;
    Clock& clock;
    int64_t interval_ms;  // ManagerConfig::drs_interval_ms, shown in the config
    SnapshotFn snapshot;
    StartMovesFn start_moves;
    // DPM's hands: a power action on a host (PowerService::Act) and a host's power (Get, no BMC).
    std::function<Result<HostPower>(std::string_view host, std::string_view action)> power;
    std::function<Result<HostPower>(std::string_view host)> power_of;
  };
  explicit DrsController(Deps deps) : d_(std::move(deps)) {}

  // The stored config (defaults where never set).
  Result<DrsConfig> Config();
  // Stores `config` (not its interval) with a drs.config_changed event; answers the config now in force.
  Result<DrsConfig> SetConfig(const DrsConfig& config);
  // Pending ones in the order they are applied, or all of them newest first.
  Result<Page<Recommendation>> Recommendations(bool pending_only, const PageQuery& page);
  // Verifies the move on the live cluster, then starts it. kAborted when it no longer fits (the
  // recommendation is superseded) or cannot start; kFailedPrecondition when it is not pending.
  Result<Task> Apply(std::string_view id);
  // Every pending one, in one order (a move that frees room starts before the one that needs it).
  Result<StartedMoves> ApplyAll();
  // A plan on `snapshot` (the default policy) or on the live cluster (the configured one).
  Result<placement::Plan> DryRun(const placement::Snapshot* snapshot);
  // One pass: plan, store the moves as the pending recommendations (with a drs.pass event), start
  // those that automation allows: all in automatic mode, and in any mode the evacuation of hosts
  // in maintenance; never a guest whose own automation is manual, or disabled, or that has a task
  // in flight.
  Result<DrsPass> RunPass();
  // The power actions of the last pass (DPM manual or automatic): {host, action, reason,
  // planned_since, due, state: waiting | due | acted | failed | blocked, note}.
  Result<Json> PowerRecommendations();

 private:
  // DPM on the pass's plan: lists its power actions with their hysteresis, and (automatic mode)
  // says which due power-offs are allowed, so that their evacuation moves may start.
  struct DpmStep {
    std::set<std::string> evacuate;  // hosts whose dpm evacuation moves may start now
  };
  DpmStep PlanDpm(const DrsConfig& cfg, const placement::Plan& plan);
  // Automatic mode: carries out the due actions (a power-off once the host is empty, per `snap`).
  void ActDpm(const placement::Snapshot& snap);

  Deps d_;
  std::mutex dpm_mu_;
  std::map<std::string, int64_t> dpm_since_;  // "host action" -> when first planned (ms); guarded by dpm_mu_
  Json dpm_last_ = Json::array();             // the last pass's power actions; guarded by dpm_mu_
};

}  // namespace uw::manager::internal
