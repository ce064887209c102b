// The guest service: creates (admission, placement and the reservation in one transaction, then a
// journalled task), the guests a principal may see, guest operations (start, stop, resize, delete,
// checked before any task), and the workers' side of those tasks (the call to the host's agent and
// what its answer changes in the store). Private to manager/ (Manager owns one, made by Start, and
// its guest calls are this class's).
//
//   POST /guests --Create--> placement lock { snapshot --> AdmitVm --> Place --> guest row + task }
//        --> worker --RunCreate--> agent Create --> state, event (or the reservation released)
//   POST /guests/{name}/{op} --Operation--> checks --> task --> worker --RunOperation--> agent
//
// The placement lock is the manager's: it also serializes pool admission and the start of moves.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "manager/agent_client.h"
#include "manager/lease_service.h"
#include "manager/manager.h"
#include "manager/store.h"
#include "placement/placement.h"

namespace uw::manager::internal {

class EventLog;
class GuestTable;
class HostTable;
class TaskJournal;

class GuestService {
 public:
  struct Deps {
    Store& store;
    EventLog& events;
    HostTable& hosts;
    GuestTable& guests;
    TaskJournal& tasks;
    LeaseService& leases;  // each guest's lease, written with its row
    Clock& clock;
    const ManagerConfig& config;  // the placement policy
    std::mutex& placement_mu;     // serializes admission + placement + reservation
    // The placement snapshot of the store, with `incoming` (unplaced) when given.
    std::function<Result<placement::Snapshot>(const placement::Vm* incoming)> snapshot;
    std::function<std::shared_ptr<AgentClient>(const std::string& host)> agent_of;
    // Hands a journalled task to the workers.
    std::function<void(const std::string& task_id)> enqueue;
    // Journals a task and hands it to the workers (Manager::NewTask).
    std::function<Result<Task>(std::string_view kind, std::string_view subject, std::string_view tenant,
                               const Json& request)>
        new_task;
    // A create into a pool: the pool's limits and cputune (Manager::AdmitToPool).
    std::function<Status(GuestCreate& req)> admit_to_pool;
    // Inside a transaction: drops a deleted guest from every rule naming it.
    std::function<Status(const std::string& guest)> remove_from_rules;
    // The storage catalogue's disks and the network catalogue's ports of a guest being created
    // (StorageService and NetworkService::AttachForCreate), and their release once it is gone or
    // its create failed (ReleaseGuest).
    std::function<Status(GuestCreate& req)> attach_devices;
    std::function<void(const std::string& guest, const std::string& tenant)> release_devices;
    // Before a create on a host: the images its local disks are made on, copied there
    // (StorageService::CopyBaseImages).
    std::function<Status(AgentClient& agent, const Json& spec)> copy_images;
  };
  explicit GuestService(Deps deps) : d_(std::move(deps)) {}

  // See Manager::CreateGuest, ListGuests, GetGuest and GuestOperation.
  Result<Task> Create(const Principal& p, GuestCreate req);
  Result<Page<Guest>> List(const Principal& p, const PageQuery& page);
  Result<GuestDetail> Get(const Principal& p, std::string_view name);
  Result<Task> Operation(const Principal& p, std::string_view name, const GuestOp& op);
  // The guest row `name` names for `p`. kNotFound (also for another tenant's guest),
  // kInvalidArgument (a malformed name), kFailedPrecondition (a short name that names guests of
  // several tenants).
  Result<Guest> Visible(const Principal& p, std::string_view name);

  // A worker's run of a claimed guest.create task / guest.<op> task. A non-OK status is a step the
  // store refused (the caller ends the task); the agent's refusals end the task failed here.
  Status RunCreate(const std::string& task_id, const Json& request, const std::string& guest);
  Status RunOperation(const std::string& task_id, const std::string& kind, const Json& request,
                      const std::string& guest);
  // HA's restart (ha_service.h) of a guest whose host was fenced: created (and started) on its new
  // host from its stored spec. When that fails the guest goes back to the failed host's books in
  // the state it had, and HA tries again with a backoff.
  Status RunRecover(const std::string& task_id, const Json& request, const std::string& guest);

 private:
  int64_t NowMs() const;
  // The guest's row, lease and create task on `host`, with its guest.placed event (`placed`: why);
  // with `reclaim`, the notices that make room there too, and the task waits for them.
  // Create's admission and placement (under placement_mu), then AdmitOn.
  Result<Task> Place(const GuestCreate& req);
  Result<Task> AdmitOn(const GuestCreate& req, const std::string& host, Json placed,
                       const LeaseService::Admission* reclaim);

  Deps d_;
};

}  // namespace uw::manager::internal
