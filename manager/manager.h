// uw-manager's core: the one public header of `uw::manager`.
//
//   REST handlers (manager/http_api.cc) --typed commands--> Manager --> Store (SQLite)
//                                                              |--> task runner --HTTP--> uw-agent on the host
//                                                              |--> monitor loop: heartbeat deadlines, DRS every N s
//                                                              '--> placement/ (pure policy on a snapshot of the store)
//
// Crash-only: every task is journalled in the store before anything is done for it; on Start() every
// task not in a final state is either resumed (its steps are idempotent against the agent) or
// failed with the reason. A guest row with a host is that host's capacity reservation: it is written
// in the same transaction as the placement decision, so parallel creations cannot over-commit a
// host, and it is removed when the creation fails.
//
// Thread safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "api/http.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "lease/broker.h"
#include "lease/lease.h"
#include "manager/agent_client.h"
#include "manager/auth.h"
#include "manager/manager_config.h"
#include "manager/storage_types.h"
#include "manager/store.h"
#include "migration/migration.h"
#include "placement/placement.h"

namespace uw::manager {
namespace internal {
class EventLog;
class TokenRegistry;
class TaskJournal;
class HostTable;
class GuestTable;
class MigrationDispatcher;
class MigrationRun;
class DrsController;
class GuestListing;
class HostSessions;
class GuestService;
class LeaseService;
class PowerService;
class HaService;
class StorageService;
class MeteringService;
}  // namespace internal

// A guest creation request, parsed and validated by the HTTP layer.
struct GuestCreate {
  std::string name;
  std::string tenant;  // owner; forced to the caller's tenant for tenant tokens
  std::string pool;    // "" for the cluster root
  GuestKind kind = GuestKind::kQemu;
  int64_t vcpus = 1;
  int64_t memory_mib = 256;
  std::string automation = "default";  // default | manual | automatic | disabled (DRS override)
  std::string lease_class = "guaranteed";
  lease::Resources grant{1, 256};               // what the guest starts with (vcpus, memory_mib)
  std::optional<int64_t> lease_term_s;          // nullopt: open-ended
  std::optional<lease::Resources> lease_floor;  // elastic: what it may be shrunk to
  int64_t lease_bid = 0;                        // credits per GiB-hour (the market broker), within the tenant's budget
  std::string on_crash = "restart";             // restart | keep | stop (what the manager does when it crashes)
  std::string restart_priority = "medium";      // high | medium | low | disabled: HA restarts, in this order
  Json agent_spec;  // the body sent to the agent (name, kind, vcpus, memory_mib, image, ...)
  // Disks {"volume": NAME} (the tenant's) or {"image": NAME, "size_gib": N} (a clone deleted with the
  // guest); agent_spec's disks[index] is a placeholder until the catalogue makes it its volume's.
  struct CatalogueDisk {
    size_t index = 0;
    std::string volume, image, target;
    int64_t size_gib = 0;
  };
  std::vector<CatalogueDisk> catalogue_disks;
  // NICs {"network": NAME, "ip", "mac"}: a port of the tenant's network made for the guest (deleted
  // with it); agent_spec's nics[index] is a placeholder until then (NetworkService::AttachForCreate).
  struct NetworkNic {
    size_t index = 0;
    std::string network, ip, mac;
  };
  std::vector<NetworkNic> network_nics;
  // The spec rights the request uses, each with the first field that needs it ({"bridges", "nics[0].source"}).
  std::vector<std::pair<std::string, std::string>> rights_needed;
};

// Parses a POST /api/v1/guests body with the agent's own guest spec parser and checks
// (vmm::GuestSpecFromJson, ValidateGuestSpec), so that nothing the agent would refuse is accepted.
// kInvalidArgument naming the field.
Result<GuestCreate> ParseGuestCreate(const Json& body);

struct HostJoin {  // NOLINT(bugprone-exception-escape): clang-tidy 14 misreads the implicit move of `info`
  std::string name;
  std::string agent_url;
  std::string agent_token;
  double cpu_cores = 0;
  int64_t memory_mib = 0;
  Json info;  // what the agent reports about itself (optional)
};
Result<HostJoin> ParseHostJoin(const Json& body);

// DRS settings (GET/PUT /api/v1/drs/config): what the engine reads (placement::DrsSettings), the
// policy that plans, and how often the manager runs a pass on its own.
// DPM, part of the DRS config: off | manual (the power actions are listed for an operator) |
// automatic (carried out through the hosts' power drivers).
struct DpmConfig {
  std::string mode = "off";
  double band_low = 0.45, band_high = 0.81;  // the target utilisation band, fractions of capacity
  int64_t min_hosts_on = 1;
  std::vector<std::string> keep_on;  // hosts DPM never powers off
  double hysteresis_s = 300;         // how long a power action must stay planned before it is carried out
};
// High availability (ha_service.h): restarts of a failed host's guests, after it is fenced.
struct HaConfig {
  bool enabled = false;
  int64_t host_failures = 1;  // admission keeps room to restart every guest after this many fail; 0: none
  int64_t isolation_s = 30;   // a host silent while its BMC says on is isolated this long, then fenced
};
struct DrsConfig {
  std::string automation = "manual";  // manual | automatic
  int threshold = 3;                  // 1..5: moves of priority <= threshold are recommended
  std::optional<int64_t> max_moves;   // per pass; nullopt: no cap
  std::string policy = "drs";         // a placement::PolicyNames() name
  bool allow_cold_moves = false;      // evacuation may stop, move and start what cannot live-migrate
  double min_move_interval_s = 0;     // the engine's cooldown; GetDrsConfig fills in its default
  int64_t interval_ms = 0;            // ManagerConfig::drs_interval_ms (read-only over the API)
  DpmConfig dpm;
  HaConfig ha;
};
// A PUT body over `current`: each field given replaces its value, with its path in errors.
Result<DrsConfig> ParseDrsConfigChange(const Json& body, DrsConfig current);
// The "dpm" object of a DRS config change over `current` ({"mode", "band": [low, high] in percent,
// "min_hosts_on", "keep_on", "hysteresis_s"}), and its JSON view.
Result<DpmConfig> ParseDpmConfigChange(const Json& body, DpmConfig current);
Json DpmConfigJson(const DpmConfig& c);
// The "ha" object of a DRS config change ({"enabled", "host_failures", "isolation_s"}), and its view.
Result<HaConfig> ParseHaConfigChange(const Json& body, HaConfig current);
Json HaConfigJson(const HaConfig& c);

// A guest operation (POST /api/v1/guests/{name}/{op}, DELETE for delete) with its arguments.
struct GuestOp {
  std::string op;                            // start | stop | resize | delete
  bool force = false;                        // stop: power off at once; delete: power off first
  std::optional<int64_t> timeout_s;          // stop: how long a clean shutdown may take
  std::optional<int64_t> vcpus, memory_mib;  // resize: at least one
};
// kInvalidArgument naming the field (an unknown op or argument, a wrong type, a resize of nothing).
Result<GuestOp> ParseGuestOp(std::string_view op, const Json& args);

// An operator's move of one guest (POST /api/v1/guests/{name}/migrate).
struct MigrateRequest {
  std::string host;  // the destination
  bool cold = false;
  std::optional<double> bandwidth_mib_s;
  std::optional<int64_t> downtime_limit_ms;
  std::optional<bool> allow_postcopy;
};
Result<MigrateRequest> ParseMigrateRequest(const Json& body);

// POST /api/v1/hosts/{name}/power: {"action": "on" | "off" | "cycle"}.
Result<std::string> ParsePowerAction(const Json& body);
// PUT /api/v1/hosts/{name}/groups: {"groups": [...]}, each a valid name, none twice.
Result<std::vector<std::string>> ParseHostGroups(const Json& body);
// POST /api/v1/pools and /api/v1/rules: one entry of the snapshot format (docs/snapshot-format.md),
// read by the engine's parser; the checks against the other pools, rules, guests and hosts are the
// manager's (CreatePool, CreateRule).
Result<placement::Pool> ParsePoolCreate(const Json& body);
Result<placement::Rule> ParseRuleCreate(const Json& body);

// One page of a list route (?limit=N&after=KEY). Each list has a fixed order: by name (hosts,
// guests, pools, rules), oldest first (tokens), by priority (pending recommendations) or newest
// first (tasks, migrations, every recommendation). `after` is the key (name or id) of the last item
// of the previous page as the caller saw it. Every list answers
// {"<items>": [...], "next": KEY or null, "total": N}: `total` counts the whole list the caller may
// see, `next` is the `after` of the following page (null on the last page).
struct PageQuery {
  int64_t limit = 0;  // items at most; 0: all of them
  std::string after;  // "": from the first
};
inline constexpr int64_t kMaxPageLimit = 10000;
// A page of a list as the core returns it; the HTTP layer shows it as {"<items>": [...], "next", "total"}.
template <class T>
struct Page {
  std::vector<T> items;
  int64_t total = 0;                // the whole list the caller may see
  std::optional<std::string> next;  // the `after` of the following page; nullopt on the last page
};

// A task as the core returns it: a create, a guest operation or a migration (views.h has its JSON).
struct TaskError {
  std::string code;  // a StatusCodeName
  std::string message;
};
struct Task {
  std::string id, kind, subject, tenant;
  std::string state;  // pending | running | succeeded | failed | cancelled
  double progress = 0;
  std::string message;
  int64_t attempts = 0;
  int64_t created_ms = 0, updated_ms = 0;
  std::optional<TaskError> error;
  Json result;   // what the task's kind records when it ends; null before
  Json request;  // what it was asked to do (internal: the API does not show it)
  bool final() const { return state == "succeeded" || state == "failed" || state == "cancelled"; }
};

// An event of the log (GET /api/v1/events shows it as JSON; views.h).
struct Event {
  int64_t seq = 0;
  int64_t at_ms = 0;
  std::string type, subject, tenant;
  Json data;  // what happened, by type (free-form)
};

// A guest as the core returns it (views.h has its JSON): the spec's size, the reservation its
// placement holds, where it is, and what its host last reported.
struct Guest {  // NOLINT(bugprone-exception-escape): clang-tidy 14 misreads the implicit move of `alert` and `crash`
  std::string name, tenant;  // the cluster-wide name ("acme:web1" for a tenant's guest)
  std::optional<std::string> host, pool;
  std::string kind;     // kvm | virtio | qemu | lxc
  std::string devices;  // virtio | emulated | container
  std::string state;
  int64_t vcpus = 0, memory_mib = 0;  // as the spec asks
  int64_t reserved_vcpus = 0, reserved_memory_mib = 0;
  // Its lease ended (released, preempted) and it stays stopped: it holds no room on its host, and
  // starting it needs the room again.
  bool released = false;
  std::string automation;
  std::optional<std::string> migrating_to;
  std::string placement_reason;
  Json alert;                         // null, or {"type": "duplicate", "also_on": [...], "since": ...}
  std::optional<std::string> health;  // ready | starting | unresponsive | none, from its agent
  std::string on_crash;
  std::string restart_priority;  // high | medium | low | disabled (HA restarts after its host failed)
  Json crash;                    // null, or {"at", "host", "console_tail", "restarts": [ms...]}
  double used_cpu_cores = 0;
  int64_t used_memory_mib = 0;
  int64_t created_ms = 0;
};
// A guest's lease as the manager keeps it (lease/lease.h; manager/lease_service.h).
struct LeaseRecord {
  lease::Lease lease;
  std::optional<int64_t> term_ms;         // a term's length, added at each renewal; nullopt: open-ended
  std::optional<lease::Renewal> renewal;  // an extension whose amount takes effect at the term end
};
// How a notice reached its guest: pending (not tried yet), delivered (the guest's daemon answered
// through the control channel, `answer` is what it said), silent (no daemon, or it did not
// answer: `detail` says which).
struct NoticeDelivery {
  std::string state = "pending";
  std::string answer, detail;
  int64_t at_ms = 0;
};
struct NoticeRecord {
  lease::Notice notice;
  NoticeDelivery delivery;
  // The guest admitted on the notice's host whose room it makes ("" for none): its counter-offers
  // are declined, since the room is owed. Never shown (the guest is another tenant's).
  std::string makes_room_for;
};
// POST /api/v1/leases/{id}/extend: a new term (term_s from the current term end, or from now for
// an open-ended lease) and/or a new amount (flex), which takes effect at the current term end.
struct LeaseExtend {
  std::optional<int64_t> term_s, vcpus, memory_mib;
  std::optional<int64_t> bid;  // credits per GiB-hour, at once, within the tenant's budget
};
// A tenant's budget for the market broker (GET/PUT /api/v1/budgets): the most its leases' bids
// may cost per hour, and what they cost now.
struct Budget {
  std::string tenant;
  int64_t per_hour = 0, committed = 0;
};
// POST /api/v1/leases/{id}/reclaim (operators, brokers): take part or all of a lease back after a
// notice of notice_s seconds (urgent: at once, the record is still written).
struct LeaseReclaim {
  lease::NoticeAction action = lease::NoticeAction::kShrink;  // shrink | stop | evict
  std::optional<int64_t> vcpus, memory_mib;                   // shrink: the amounts after
  int64_t notice_s = 30;
  std::string reason;
  bool urgent = false;
};
// POST /api/v1/notices/{id}/reply: the guest's (or its tenant's controller's) answer.
struct NoticeAnswer {
  lease::ReplyKind kind = lease::ReplyKind::kAck;
  std::optional<int64_t> vcpus, memory_mib;  // counter: a smaller shrink
  std::optional<int64_t> delay_s;            // counter: act this much later (by the deadline)
};
// POST /api/v1/hosts/{name}/reclaim (operators): take `need` back from the host's guests; the
// broker's policy picks which leases give how much (lease/broker.h), each gets a notice.
struct HostReclaimRequest {
  lease::Resources need;
  int64_t notice_s = 30;
  std::string reason;
  std::optional<lease::BrokerPolicy> policy;  // nullopt: the lease_reclaim_policy setting
};
struct HostReclaim {
  lease::BrokerPolicy policy = lease::BrokerPolicy::kStrictPriority;
  std::vector<NoticeRecord> notices;
  lease::Resources shortfall;  // what the host's leases could not give
};
Result<HostReclaimRequest> ParseHostReclaim(const Json& body);
Result<LeaseExtend> ParseLeaseExtend(const Json& body);
// PUT /api/v1/budgets/{tenant}: {"per_hour": N}, credits per hour.
Result<int64_t> ParseBudget(const Json& body);
Result<LeaseReclaim> ParseLeaseReclaim(const Json& body);
Result<NoticeAnswer> ParseNoticeAnswer(const Json& body);
// What a guest's daemon printed in answer to a notice (guest/README.md): "ack", "release",
// "counter [vcpus=N] [memory_mib=N] [delay_s=N]"; nullopt for anything else (a silent guest).
std::optional<NoticeAnswer> ParseChannelAnswer(std::string_view output);

struct GuestDetail {  // NOLINT(bugprone-exception-escape): clang-tidy 14 misreads the implicit move of `guest`
  Guest guest;
  std::vector<LeaseRecord> leases;  // the live one (none after it closed), newest first
};

// A host as the core returns it (views.h has its JSON). Reservations are the guests' (kept by the
// store's triggers); usage is what the host's last heartbeat reported.
struct Host {
  std::string name, agent_url;
  // connected | disconnected, or the power phase of a host in one: entering_standby | standby | waking
  std::string state;
  bool maintenance = false;
  std::vector<std::string> groups;
  double cpu_cores = 0;  // capacity
  int64_t memory_mib = 0;
  double reserved_vcpus = 0;
  int64_t reserved_memory_mib = 0;
  double used_cpu_cores = 0;
  int64_t used_memory_mib = 0;
  int64_t guests = 0;
  int64_t last_heartbeat_ms = 0;
};
// One host in full (GET /api/v1/hosts/{name}): its guests by name, the evacuation while it is in
// maintenance, and what its agent reported about itself when it joined.
struct HostDetail {  // NOLINT(bugprone-exception-escape): clang-tidy 14 misreads the implicit move of `info`
  Host host;
  std::vector<std::string> guest_names;
  struct Evacuation {
    int64_t remaining = 0;  // guests still on the host
    bool done = false;
  };
  std::optional<Evacuation> evacuation;  // while in maintenance
  Json info;                             // the agent's own report (free-form, passed through)
};
// A host's power management (GET /api/v1/hosts/{name}/power): its driver with the secrets left
// out, where it is in a power operation, and what its BMC says when it was asked.
struct HostPower {
  std::string host;
  Json driver;               // power::PowerConfigJson(kRedacted); null when the host has none
  std::string phase = "on";  // on | entering_standby | standby | waking
  int64_t phase_since_ms = 0;
  std::optional<int64_t> wake_tested_ms;  // when a power-on from standby last brought the agent back
  std::string last_error;
  std::optional<std::string> bmc;  // on | off, when asked
  std::string bmc_error;           // why the BMC could not be asked
};
// The answer to a join: the host's secret for its heartbeats (shown only here).
struct HostJoined {
  std::string name, host_token;
  int heartbeat_interval_ms = 0;
};
struct HeartbeatAck {
  std::string name, state;
  int heartbeat_interval_ms = 0;
  int64_t samples_through = -1;  // the highest numbered usage sample stored (-1: none came)
};

// A DRS recommendation: one move of a pass, kept until applied or superseded.
struct Recommendation {
  std::string id, guest, from, to;
  int64_t priority = 0;  // 1 (mandatory: maintenance, rules) .. 5
  std::string reason;
  double gain = 0, imbalance_before = 0, imbalance_after = 0;
  std::string state;  // pending | applied | superseded
  std::string note;
  int64_t created_ms = 0;
};
// What StartMoves did with a list of moves: the guest.migrate tasks it journalled (in the order
// migration::OrderMoves gave them) and the moves it could not schedule, with why.
struct UnschedulableMove {
  std::string guest, from, to, reason;
};
struct StartedMoves {
  std::vector<Task> tasks;
  std::vector<UnschedulableMove> unschedulable;
  int64_t waves = 0;
};
// One DRS pass: the engine's plan and, when it applied moves at once, what was started.
struct DrsPass {
  placement::Plan plan;
  std::optional<StartedMoves> started;
};

// A migration's record (migration::Record, its phases and figures) with its task.
struct Migration {
  migration::Record record;
  std::string task;
  int64_t created_ms = 0, updated_ms = 0;
};

// A pool (as the engine reads it) with the guests in it now.
struct PoolDetail {
  placement::Pool pool;
  std::vector<std::string> guests;
};
// A rule with the guests it names that do not exist (yet).
struct RuleDetail {
  placement::Rule rule;
  std::vector<std::string> pending_guests;
};

class Manager {
 public:
  Manager(ManagerConfig config, Clock& clock = Clock::Real());
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Opens the store, installs the bootstrap admin token, recovers every non-final task, starts the
  // task workers and the monitor loop. kUnavailable / kFailedPrecondition from Store::Open.
  Status Start();
  // How the manager reaches agents (before Start): tests give an in-process client. The default
  // talks HTTP to the address each host joined with, one client (and its connections) per host.
  void SetAgentFactory(AgentDirectory::Factory factory);
  // How the manager's loops wait between polls of an agent (migrations): by default on its own
  // condition variable (false once it stops); FakeClock tests advance the clock instead.
  void SetPollSleeper(std::function<bool(Duration)> sleeper);
  // Stops loops and workers (tasks being run finish their current agent call). Idempotent.
  void Stop();
  const ManagerConfig& config() const { return config_; }
  Clock& clock() { return clock_; }
  Store& store() { return *store_; }
  internal::MeteringService& metering() { return *metering_; }  // usage records, the events: set by Start
  internal::EventLog& event_log() { return *events_; }

  // kUnauthenticated for a missing or unknown token.
  Result<Principal> Authenticate(std::string_view bearer_token);

  // --- hosts -----------------------------------------------------------------------------------
  // kUnauthenticated for a wrong join token. A host that joins again (agent restarted) gets a new
  // host token and is reconciled on its next heartbeat.
  Result<HostJoined> JoinHost(std::string_view join_token, const HostJoin& join);
  // Body: {"stats": <agent /api/v1/stats>, "guests": [<agent guest infos>]}. kUnauthenticated for a
  // wrong host token; kNotFound for an unknown host. Reconciles the host's guests.
  Result<HeartbeatAck> Heartbeat(std::string_view name, std::string_view host_token, const Json& body);
  Result<Page<Host>> ListHosts(const PageQuery& page = {});  // by name
  Result<HostDetail> GetHost(std::string_view name);         // kNotFound for an unknown host
  // Maintenance on starts the evacuation (mandatory DRS moves); off cancels its migrations not yet
  // switched over (running ones aborted, their guests staying here). kNotFound: unknown host.
  Result<HostDetail> SetMaintenance(std::string_view name, bool on);
  // The host's groups (ParseHostGroups), which vm-host rules name. Replaces the previous list.
  // kNotFound for an unknown host.
  Result<HostDetail> SetHostGroups(std::string_view name, const std::vector<std::string>& groups);
  // Power (manager/power_service.h). The host's driver from a request body (power::ParsePowerConfig);
  // the view never carries its secrets. kNotFound for an unknown host.
  Result<HostPower> SetPowerDriver(std::string_view host, const Json& body);
  Status DeletePowerDriver(std::string_view host);
  // With `ask_bmc`, what the host's BMC says now (its error in bmc_error, never an error here).
  Result<HostPower> GetHostPower(std::string_view host, bool ask_bmc);
  // action: on | off | cycle (PowerService::Act's checks and errors).
  Result<HostPower> PowerHost(std::string_view host, std::string_view action);
  // Marks hosts whose heartbeat is older than heartbeat_timeout_ms disconnected, and raises
  // host.wake_failed for hosts powered on whose agents did not join in time (the monitor loop
  // calls this; tests call it with a FakeClock).
  void CheckHeartbeats();
  // One HA pass (ha_service.h): silent hosts checked, isolated, fenced; guests of fenced hosts
  // restarted elsewhere. Its thread runs it every second; tests on a FakeClock call it.
  Status RunHa();

  // --- guests ----------------------------------------------------------------------------------
  // Admission + placement + reservation in one transaction, then a journalled task. Returns the
  // task. kAlreadyExists (name taken), kResourceExhausted (admission failed or no host fits; the
  // message carries the per-host reasons), kNotFound (unknown pool), kPermissionDenied.
  Result<Task> CreateGuest(const Principal& p, GuestCreate req);
  Result<Page<Guest>> ListGuests(const Principal& p, const PageQuery& page = {});
  // The body of GET /api/v1/guests, byte for byte PageView("guests", ListGuests(p, page),
  // GuestJson as p sees it).dump() (views.h), written from the store's rows without a JSON tree
  // (guest_listing.h). Errors as ListGuests.
  Result<std::string> ListGuestsBody(const Principal& p, const PageQuery& page = {});
  // Guest names are unique per tenant: a tenant's guest "web1" is "acme:web1" cluster-wide (its
  // libvirt domain name too). A tenant addresses and sees its guests by their short names; admins
  // and operators use the full name, or the short one when it names one guest only. kNotFound also
  // for another tenant's guest (tenants cannot learn what others own or name).
  Result<GuestDetail> GetGuest(const Principal& p, std::string_view name);
  // op: start | stop | resize | delete. Returns the task. kFailedPrecondition when the guest has
  // a task in flight or its host is disconnected, and for delete of a guest that is not stopped
  // unless forced (the task then powers it off first); kInvalidArgument for a resize above the
  // guest's maxima. Deleting a guest removes
  // it from every rule (a rule left with no guest is deleted).
  Result<Task> GuestOperation(const Principal& p, std::string_view name, const GuestOp& op);

  // --- leases and notices (manager/lease_service.h) ----------------------------------------------
  // Tenants see their own; `guest` filters (a name as GetGuest takes it). Newest first.
  Result<Page<LeaseRecord>> ListLeases(const Principal& p, std::string_view guest, const PageQuery& page);
  // kNotFound also for another tenant's lease.
  Result<LeaseRecord> GetLease(const Principal& p, std::string_view id);
  // kFailedPrecondition unless active; kInvalidArgument below the floor, above the guest's maxima,
  // or for nothing to change.
  Result<LeaseRecord> ExtendLease(const Principal& p, std::string_view id, const LeaseExtend& req);
  // The holder gives the lease back: it closes and the guest is stopped (a task).
  Result<LeaseRecord> ReleaseLease(const Principal& p, std::string_view id);
  // Operators: sends the guest a notice (lease::MakeNotice's checks: a guaranteed lease is not
  // shrunk unless urgent, an elastic one not below its floor).
  Result<NoticeRecord> ReclaimLease(const Principal& p, std::string_view id, const LeaseReclaim& req);
  // Operators: notices to the host's guests for what the broker's policy takes from each (leases
  // with a notice open are left out). kNotFound for an unknown host.
  Result<HostReclaim> ReclaimFromHost(const Principal& p, std::string_view host, const HostReclaimRequest& req);
  Result<Page<NoticeRecord>> ListNotices(const Principal& p, std::string_view guest, const PageQuery& page);
  Result<NoticeRecord> GetNotice(const Principal& p, std::string_view id);
  // The answer of the notice's tenant (or an operator on its behalf); lease::ApplyReply's errors.
  Result<NoticeRecord> AnswerNotice(const Principal& p, std::string_view id, const NoticeAnswer& answer);
  Result<Page<lease::Repossession>> ListRepossessions(const Principal& p, std::string_view guest,
                                                      const PageQuery& page);
  // Budgets: tenants read their own, operators all; operators set them (kFailedPrecondition when
  // the tenant's bids already cost more than the new budget).
  Result<std::vector<Budget>> ListBudgets(const Principal& p);
  Result<Budget> SetBudget(const Principal& p, std::string_view tenant, int64_t per_hour);
  // Storage (manager/storage_service.h): images (everyone reads them, operators import and delete
  // them), volumes (a tenant's own; operators all of them), quotas. kFailedPrecondition when the
  // manager has no storage backend configured; the backend's errors (storage/storage.h) otherwise.
  Result<Page<ImageRecord>> ListImages(const Principal& p, const PageQuery& page = {});
  Result<ImageRecord> GetImage(const Principal& p, std::string_view name);
  Result<Task> ImportImage(const Principal& p, const ImageImport& req);  // an image.import task
  Status DeleteImage(const Principal& p, std::string_view name);
  Result<Page<VolumeRecord>> ListVolumes(const Principal& p, const PageQuery& page = {});
  Result<VolumeRecord> GetVolume(const Principal& p, std::string_view name);
  Result<VolumeRecord> CreateVolume(const Principal& p, const VolumeCreate& req);
  Result<VolumeRecord> ResizeVolume(const Principal& p, std::string_view name, int64_t size_gib);
  Status DeleteVolume(const Principal& p, std::string_view name);
  // A free volume made a disk of an existing guest of its tenant (storage_attach.cc), and back.
  Result<VolumeRecord> AttachVolume(const Principal& p, std::string_view name, std::string_view guest);
  Result<VolumeRecord> DetachVolume(const Principal& p, std::string_view name);
  Result<std::vector<StorageQuota>> ListStorageQuotas(const Principal& p);
  Result<StorageQuota> SetStorageQuota(const Principal& p, std::string_view tenant, std::optional<int64_t> gib);
  Result<StorageInfo> GetStorageInfo(const Principal& p);
  // One pass of the lease loop (term ends, deliveries, counters, due actions); the loop runs it
  // every second, tests on a FakeClock call it.
  Status RunLeases();

  // --- tasks -----------------------------------------------------------------------------------
  // kNotFound also for another tenant's task.
  Result<Task> GetTask(const Principal& p, std::string_view id);
  // Newest first. kInvalidArgument when `after` names no task the caller sees.
  Result<Page<Task>> ListTasks(const Principal& p, const PageQuery& page);
  // A pending task is cancelled at once; a running migration is aborted (the guest stays on its
  // source) and its task ends cancelled shortly after. kFailedPrecondition otherwise.
  Result<Task> CancelTask(const Principal& p, std::string_view id);
  // Blocks until the task is final or `timeout` passes; returns it either way.
  Result<Task> WaitTask(std::string_view id, Duration timeout);

  // --- events ----------------------------------------------------------------------------------
  // Events with seq > since visible to `p` (tenants see their own), at most `limit`.
  Result<std::vector<Event>> EventsSince(const Principal& p, int64_t since, int64_t limit);
  // Serves GET /api/v1/events on `writer` without holding the calling thread: the events after
  // `since` that `p` may see (tenants their own), then, with `follow`, every new one as it is
  // committed, and ": keep-alive" comments on a quiet stream every 15 s; without `follow` the body
  // ends after the backlog. Returns at once; the stream ends when the client goes, the server
  // stops or the manager stops. Requires Start().
  void SubscribeEvents(const Principal& p, int64_t since, bool follow, std::shared_ptr<api::StreamWriter> writer);
  size_t event_subscribers() const;  // open event streams
  // Appends an event (inside or outside a transaction).
  Status AddEvent(std::string_view type, std::string_view subject, std::string_view tenant, const Json& data);

  // --- tokens ----------------------------------------------------------------------------------
  // See TokenRegistry::Create: the secret is returned only here.
  Result<NewToken> CreateToken(std::string_view name, Role role, std::string_view tenant,
                               const std::vector<std::string>& rights = {});
  // Oldest first, paged by id.
  Result<Page<TokenInfo>> ListTokens(const PageQuery& page = {});
  Status DeleteToken(std::string_view id);

  // --- pools and rules -------------------------------------------------------------------------
  Result<Page<placement::Pool>> ListPools(const PageQuery& page = {});
  // kNotFound for an unknown pool.
  Result<PoolDetail> GetPool(std::string_view name);
  // kResourceExhausted when the pool's reservations cannot be backed by the powered-on hosts
  // (with the other pools' and the guests' reservations).
  Result<placement::Pool> CreatePool(const placement::Pool& pool);
  Status DeletePool(std::string_view name);
  Result<Page<placement::Rule>> ListRules(const PageQuery& page = {});
  // kNotFound for an unknown rule.
  Result<RuleDetail> GetRule(std::string_view name);
  // A rule may name guests that do not exist yet: it applies to their placement when they are
  // created. Hosts and host groups must exist.
  Result<placement::Rule> CreateRule(const placement::Rule& rule);
  Status DeleteRule(std::string_view name);

  // --- DRS -------------------------------------------------------------------------------------
  Result<DrsConfig> GetDrsConfig();
  // Stores `config` (interval_ms is not stored: it comes from ManagerConfig) with a
  // drs.config_changed event; answers the config now in force.
  Result<DrsConfig> SetDrsConfig(const DrsConfig& config);
  Result<Page<Recommendation>> ListRecommendations(bool pending_only, const PageQuery& page = {});
  // DPM's power actions of the last DRS pass, with their reasons and hysteresis
  // (DrsController::PowerRecommendations). Manual mode: the operator applies them (uwctl host power).
  Result<Json> PowerRecommendations();
  // Verifies the move against the current state, then starts it as a guest.migrate task
  // (returned). kAborted when the move no longer fits (the recommendation is superseded).
  Result<Task> ApplyRecommendation(std::string_view id);
  // Orders every pending recommendation (migration::OrderMoves) and starts them as tasks that
  // wait for the moves they depend on.
  Result<StartedMoves> ApplyAllRecommendations();
  // --- migration -------------------------------------------------------------------------------
  // An operator's move of one guest (ParseMigrateRequest), checked like a plan step.
  // Returns the task. kFailedPrecondition (not running, busy, kind cannot live-migrate),
  // kAborted (the move breaks a required rule or does not fit), kNotFound.
  Result<Task> MigrateGuest(const Principal& p, std::string_view name, const MigrateRequest& req);
  // Migration records, newest first (`guest` filters), with the migration config.
  Result<Page<Migration>> ListMigrations(std::string_view guest, const PageQuery& page);
  // kNotFound for an unknown migration.
  Result<Migration> GetMigration(std::string_view id);
  // A plan on `snapshot` (or on the current state when null); nothing is stored.
  Result<placement::Plan> DryRunPlan(const placement::Snapshot* snapshot);
  // The placement snapshot of the current state (docs/snapshot-format.md).
  Result<placement::Snapshot> ClusterSnapshot();
  // One DRS pass: plan, store recommendations (manual) or apply them (automatic). Returns the plan.
  Result<DrsPass> RunDrs();

 private:
  struct TaskRow;
  // A journalled task, handed to the workers (or, for a migration, to the dispatcher).
  Result<Task> NewTask(std::string_view kind, std::string_view subject, std::string_view tenant, const Json& request);
  void Enqueue(const std::string& id);
  void WorkerLoop();
  void MonitorLoop();
  void RunTask(const std::string& id);
  // The guest row `name` names for `p` (see GetGuest). kNotFound, kInvalidArgument (a malformed
  // name), kFailedPrecondition (a short name that names guests of several tenants).
  Result<Guest> VisibleGuest(const Principal& p, std::string_view name);
  // The placement engine's snapshot of the store (manager/snapshot_builder.h). `incoming` (an
  // unplaced guest) is a guest being admitted: rules that name it then apply to its placement.
  // Requires the caller to hold no store transaction.
  Result<placement::Snapshot> BuildSnapshot(const placement::Vm* incoming = nullptr);
  // A create into `req.pool`: the pool exists (kNotFound), no CPU or memory limit on the way to
  // the root is exceeded (kResourceExhausted naming the pool and figures), and the pool's shares and
  // CPU limit are written into the request's cputune. Then its ports and disks (Attach, Release).
  Status AdmitToPool(GuestCreate& req);
  Status AttachDevices(GuestCreate& req);
  void ReleaseDevices(const std::string& guest, const std::string& tenant);
  // Inside a transaction: drops `guest` from every rule naming it.
  Status RemoveGuestFromRules(const std::string& guest);
  // The client of `host`'s agent, looked up per use (kNotFound once the host left the cluster).
  std::shared_ptr<AgentClient> AgentOf(const std::string& host);
  std::string ConsoleTail(const std::string& host, const std::string& guest, size_t bytes);  // "" unreadable
  // Migration execution (manager/migrations.cc).
  Result<StartedMoves> StartMoves(const std::vector<placement::Move>& moves,
                                  const std::vector<std::string>& recommendations, const Json& options);
  void RunMigration(const std::string& task_id, bool resume);
  bool CancelRequested(const std::string& task_id);
  int64_t NowMs() const;
  void MakeDrsAndHa();  // part of Start

  const ManagerConfig config_;
  Clock& clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<AgentDirectory> agents_;      // set by the constructor
  std::function<bool(Duration)> poll_sleeper_;  // set by the constructor
  friend class internal::MigrationRun;
  std::mutex placement_mu_;  // serializes admission + placement + reservation

  std::mutex mu_;
  std::condition_variable cv_;     // tasks queued, stop
  std::deque<std::string> queue_;  // guarded by mu_
  bool stopping_ = false;          // guarded by mu_
  std::vector<std::thread> workers_;
  std::thread monitor_;

  std::unique_ptr<internal::EventLog> events_;                 // set by Start
  std::unique_ptr<internal::TaskJournal> tasks_;               // set by Start
  std::unique_ptr<internal::TokenRegistry> tokens_;            // set by Start
  std::unique_ptr<internal::HostTable> hosts_;                 // set by Start
  std::unique_ptr<internal::GuestTable> guests_;               // set by Start
  std::unique_ptr<internal::GuestListing> listing_;            // set by Start
  std::unique_ptr<internal::MigrationDispatcher> migrations_;  // set by Start
  std::unique_ptr<internal::DrsController> drs_;               // set by Start
  std::unique_ptr<internal::HostSessions> sessions_;           // set by Start
  std::unique_ptr<internal::GuestService> guest_service_;      // set by Start
  std::unique_ptr<internal::LeaseService> leases_;             // set by Start
  std::unique_ptr<internal::PowerService> power_;              // set by Start
  std::unique_ptr<internal::HaService> ha_;                    // set by Start
  std::unique_ptr<internal::StorageService> storage_;          // set by Start
  std::unique_ptr<internal::MeteringService> metering_;        // set by Start
};

}  // namespace uw::manager
