// The guest service (guest_service.h).
#include "manager/guest_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/id.h"
#include "manager/event_log.h"
#include "manager/guest_table.h"
#include "manager/host_table.h"
#include "manager/internal.h"
#include "manager/lease_service.h"
#include "manager/task_journal.h"
#include "vmm/hypervisor.h"

namespace uw::manager::internal {

int64_t GuestService::NowMs() const { return ToUnixMillis(d_.clock.Now()); }

Result<Page<Guest>> GuestService::List(const Principal& p, const PageQuery& page) {
  PageQuery stored = page;
  stored.after = StoredCursor(p, page.after);
  UW_ASSIGN_OR_RETURN(Page<Guest> out, d_.guests.List(ListingTenant(p), stored));
  if (out.next) out.next = std::string(ShownGuestName(p, *out.next));
  return out;
}

Result<Guest> GuestService::Visible(const Principal& p, std::string_view name) {
  UW_RETURN_IF_ERROR(ValidateGuestName(name, "guest name"));
  const std::string missing = "guest '" + std::string(name) + "' not found";
  std::string n(name);
  const size_t colon = n.find(':');
  if (p.role == Role::kTenant) {
    // Its own guests only, by short name (or by full name with its own tenant). A guest created
    // before names were per tenant is stored under its short name.
    std::optional<std::string> own = TenantShortName(p, name);
    if (!own) return NotFoundError(missing);
    n = std::move(*own);
    UW_ASSIGN_OR_RETURN(std::optional<Guest> g, d_.guests.FindOfTenant(p.tenant, GuestKey(p.tenant, n), n));
    if (!g) return NotFoundError(missing);
    return std::move(*g);
  }
  UW_ASSIGN_OR_RETURN(std::optional<Guest> g, d_.guests.Find(n));
  if (g) return std::move(*g);
  if (colon == std::string::npos) {
    // A short name that names one tenant's guest.
    UW_ASSIGN_OR_RETURN(std::vector<Guest> named, d_.guests.WithShortName(n));
    if (named.size() == 1) return std::move(named[0]);
    if (named.size() > 1) {
      std::string all;
      for (const auto& r : named) all += (all.empty() ? "" : ", ") + r.name;
      return FailedPreconditionError("guest name '" + n + "' names guests of several tenants (" + all +
                                     "): give the full name");
    }
  }
  return NotFoundError(missing);
}

Result<Task> GuestService::Create(const Principal& p, GuestCreate req) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  if (p.role == Role::kTenant) {
    if (!req.tenant.empty() && req.tenant != p.tenant) {
      return PermissionDeniedError("tenant: a tenant token may only create guests for its own tenant '" + p.tenant +
                                   "'");
    }
    req.tenant = p.tenant;
  }
  for (const auto& [right, field] : req.rights_needed) {
    if (!p.Holds(right)) {
      return PermissionDeniedError(field + ": needs the right '" + right +
                                   "', which this token does not hold (an admin grants it: uwctl token create "
                                   "--right " +
                                   right + ")");
    }
  }
  // Names are unique per tenant: the guest is "<tenant>:<name>" in the cluster (and on its host).
  const std::string short_name = req.name;
  req.name = GuestKey(req.tenant, short_name);
  UW_RETURN_IF_ERROR(ValidateGuestName(req.name, "name"));
  req.agent_spec["name"] = req.name;
  std::lock_guard placement_lock(d_.placement_mu);
  UW_ASSIGN_OR_RETURN(bool taken, d_.guests.NameTaken(req.name, req.tenant, short_name));
  if (taken) return AlreadyExistsError("guest '" + short_name + "' already exists: choose another name");
  if (!req.pool.empty()) UW_RETURN_IF_ERROR(d_.admit_to_pool(req));
  if (req.catalogue_disks.empty() && req.network_nics.empty()) return Place(req);
  // Its catalogue disks and ports are the guest's from here; released when it is not admitted.
  UW_RETURN_IF_ERROR(d_.attach_devices(req));
  Result<Task> placed = Place(req);
  if (!placed.ok()) d_.release_devices(req.name, req.tenant);
  return placed;
}

Result<Task> GuestService::Place(const GuestCreate& req) {
  // Decide on a snapshot that includes every reservation made so far (placement_mu_ keeps it
  // current) and the new guest, unplaced: rules created before it name it and apply. The
  // engine's admission and placement are the only capacity checks.
  placement::Vm vm;
  vm.name = req.name;
  vm.vcpus = req.vcpus;
  vm.memory_mib = req.memory_mib;
  vm.demand = {static_cast<double>(req.vcpus), req.memory_mib};
  vm.reservation = {0, req.memory_mib};
  vm.pool = req.pool;
  vm.kind = req.kind;
  vm.migratable = req.automation != "disabled";
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, d_.snapshot(&vm));
  placement::Snapshot without_it = snap;  // AdmitVm compares the cluster before and after the guest
  std::erase_if(without_it.vms, [&](const placement::Vm& v) { return v.name == req.name; });
  const Status admitted = placement::AdmitVm(without_it, vm);
  if (!admitted.ok() && admitted.code() != StatusCode::kResourceExhausted) {
    return Status(admitted.code(), "admission control refused guest '" + req.name + "': " + admitted.message());
  }
  placement::PlacementDecision d;
  if (admitted.ok()) {
    UW_ASSIGN_OR_RETURN(auto index, placement::PlacementIndex::Build(snap, d_.config.placement_policy));
    d = index->Place(vm);
  }
  Json rejected = Json::array();
  for (const auto& r : d.rejected) rejected.push_back({{"host", r.host}, {"reason", r.reason}});
  if (!d.host.empty() && !d.needs_power_on) {
    return AdmitOn(req, d.host, {{"reason", d.reason}, {"score", d.score}, {"rejected", rejected}}, nullptr);
  }
  // No room: a host may make it from leases the broker may take from (elastic, preemptible).
  if (!d.needs_power_on && !snap.hosts.empty()) {
    UW_ASSIGN_OR_RETURN(std::optional<LeaseService::Admission> a,
                        d_.leases.PlanAdmission(snap, vm, req.lease_class, d_.config.placement_policy));
    if (a) {
      const std::string reason = "no host had room; " + a->host + " gets it once " + std::to_string(a->takes.size()) +
                                 " lease(s) there give back " + std::to_string(a->taken.memory_mib) + " MiB and " +
                                 std::to_string(a->taken.vcpus) + " vCPUs (" +
                                 std::string(lease::BrokerPolicyName(d_.config.lease_reclaim_policy)) + ")";
      return AdmitOn(req, a->host, {{"reason", reason}, {"rejected", rejected}}, &*a);
    }
  }
  if (!admitted.ok()) {
    return Status(admitted.code(), "admission control refused guest '" + req.name + "': " + admitted.message());
  }
  std::string why = d.reason.empty() ? "no host can take it" : d.reason;
  for (const auto& r : d.rejected) why += "; " + r.host + ": " + r.reason;
  if (snap.hosts.empty()) why = "no host has joined the cluster yet";
  return ResourceExhaustedError("no host for guest '" + req.name + "': " + why);
}

Result<Task> GuestService::AdmitOn(const GuestCreate& req, const std::string& host, Json placed,
                                   const LeaseService::Admission* reclaim) {
  const std::string task_id = NewId("task");
  const int64_t now = NowMs();
  Json request = {{"guest", req.name}, {"host", host}, {"spec", req.agent_spec}};
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    std::string message = "placed on " + host + "; waiting for a worker";
    if (reclaim) {
      // The create waits (pending, not queued) until those leases gave the room back.
      UW_ASSIGN_OR_RETURN(std::vector<std::string> notices, d_.leases.SendAdmissionNotices(*reclaim, req.name));
      request["waits_for"] = notices;
      placed["reclaim"] = {{"notices", notices},
                           {"vcpus", reclaim->taken.vcpus},
                           {"memory_mib", reclaim->taken.memory_mib},
                           {"policy", lease::BrokerPolicyName(d_.config.lease_reclaim_policy)}};
      message = "placed on " + host + "; waiting for " + std::to_string(notices.size()) +
                " lease(s) there to give back " + std::to_string(reclaim->taken.memory_mib) + " MiB (notices " +
                Json(notices).dump() + ")";
    }
    UW_RETURN_IF_ERROR(d_.guests.Admit({.name = req.name,
                                        .tenant = req.tenant,
                                        .host = host,
                                        .pool = req.pool.empty() ? std::nullopt : std::optional<std::string>(req.pool),
                                        .kind = std::string(GuestKindName(req.kind)),
                                        .vcpus = req.vcpus,
                                        .memory_mib = req.memory_mib,
                                        .spec = req.agent_spec,
                                        .automation = req.automation,
                                        .placement_reason = placed.value("reason", ""),
                                        .on_crash = req.on_crash,
                                        .restart_priority = req.restart_priority,
                                        .now_ms = now}));
    UW_RETURN_IF_ERROR(d_.leases.Open(req, req.name, req.tenant, now));
    UW_RETURN_IF_ERROR(d_.tasks.Insert(task_id, "guest.create", req.name, req.tenant, request, message));
    placed["host"] = host;
    placed["task"] = task_id;
    return d_.events.Add("guest.placed", req.name, req.tenant, placed);
  }));
  if (reclaim) {
    d_.leases.Wake();
  } else {
    d_.enqueue(task_id);
  }
  return d_.tasks.Get(task_id);
}

Result<GuestDetail> GuestService::Get(const Principal& p, std::string_view name) {
  GuestDetail d;
  UW_ASSIGN_OR_RETURN(d.guest, Visible(p, name));
  UW_ASSIGN_OR_RETURN(d.leases, d_.leases.OfGuest(d.guest.name));
  return d;
}

Result<Task> GuestService::Operation(const Principal& p, std::string_view name, const GuestOp& op) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  std::lock_guard placement_lock(d_.placement_mu);
  UW_ASSIGN_OR_RETURN(Guest g, Visible(p, name));
  const std::string guest = g.name;
  UW_ASSIGN_OR_RETURN(std::optional<Task> busy, d_.tasks.InFlightOf(guest));
  if (busy) {
    return FailedPreconditionError("guest '" + guest + "' has task " + busy->id + " (" + busy->kind +
                                   ") in flight: wait for it or cancel it");
  }
  if (!g.host) return FailedPreconditionError("guest '" + guest + "' is not placed on a host");
  UW_ASSIGN_OR_RETURN(auto host, d_.hosts.SessionOf(*g.host));
  if (host.state != "connected" && op.op != "delete") {
    return FailedPreconditionError("host " + *g.host + " of guest '" + guest +
                                   "' is disconnected: wait until it reconnects");
  }
  // The task's arguments, as its run reads them (RunOperation).
  Json args = Json::object();
  if (op.op == "resize") {
    if (op.vcpus && *op.vcpus > g.reserved_vcpus) {
      return InvalidArgumentError("vcpus: " + std::to_string(*op.vcpus) + " is above the guest's maximum of " +
                                  std::to_string(g.reserved_vcpus) + " (max_vcpus at creation)");
    }
    if (op.memory_mib && *op.memory_mib > g.reserved_memory_mib) {
      return InvalidArgumentError("memory_mib: " + std::to_string(*op.memory_mib) +
                                  " is above the guest's reservation of " + std::to_string(g.reserved_memory_mib) +
                                  " MiB (max_memory_mib at creation)");
    }
    if (op.memory_mib) UW_RETURN_IF_ERROR(RoomToGrow(d_.hosts, g, *op.memory_mib, "memory_mib"));
    args = ResizeArgs(g.kind, op.vcpus, op.memory_mib);
  } else if (op.op == "stop") {
    args["force"] = op.force;
    if (op.timeout_s) args["timeout_s"] = *op.timeout_s;
  } else if (op.op == "delete") {
    // The agent deletes only a stopped guest: refuse here, before any task, unless forced (the
    // task then powers it off first). A lost guest is gone from its host already.
    const std::string& state = g.state;
    if (!op.force && state != "shutoff" && state != "lost") {
      return FailedPreconditionError("guest '" + guest + "' is " + state +
                                     ": stop it first, or delete with ?force=true (uwctl guest delete --force) "
                                     "to power it off and delete it");
    }
    args["force"] = op.force;
  } else if (op.op == "start") {
    // A guest whose lease ended holds no room on its host: starting it takes the room again.
    if (g.released) {
      UW_RETURN_IF_ERROR(RoomToGrow(d_.hosts, g, g.memory_mib, "start"));
      UW_RETURN_IF_ERROR(d_.guests.SetReleased(g.name, false));
    }
  } else {
    return InvalidArgumentError("unknown guest operation '" + op.op + "'");
  }
  if (op.op == "stop" && op.force && p.IsOperator()) {
    // An operator's forced stop takes the guest's lease at once: the stop is urgent (no notice
    // period) and leaves a repossession record the tenant can read.
    UW_ASSIGN_OR_RETURN(std::optional<std::string> task,
                        d_.leases.ForceStop(g, "an operator's forced stop (token " + p.token_id + ")"));
    if (task) return d_.tasks.Get(*task);
  }
  Json request = {{"guest", guest}, {"host", *g.host}, {"args", args}};
  return d_.new_task("guest." + op.op, guest, g.tenant, request);
}

Status GuestService::RunCreate(const std::string& id, const Json& request, const std::string& guest) {
  std::string host = request.value("host", "");
  UW_RETURN_IF_ERROR(d_.tasks.SetProgress(id, 0.2, "creating the guest on host " + host));
  Json spec = request.value("spec", Json::object());
  auto agent = d_.agent_of(host);
  const Status copied = d_.copy_images(*agent, spec);
  Result<AgentGuest> created = copied.ok() ? agent->Create(spec) : Result<AgentGuest>(copied);
  if (!created.ok() && created.status().code() == StatusCode::kAlreadyExists) {
    // Resumed after a crash: the agent made it before the manager could record it. Unless the
    // guest is not there: then something else exists (a local disk left by an earlier guest of
    // that name), and the agent's own words say what.
    Result<AgentGuest> existing = agent->Get(guest);
    if (existing.ok() || existing.status().code() != StatusCode::kNotFound) created = std::move(existing);
  }
  if (!created.ok()) {
    Status cause = created.status();
    if (cause.code() == StatusCode::kDeadlineExceeded) {
      // The agent may have made it after all: best-effort removal before releasing the capacity.
      (void)agent->Delete(guest, false);
    }
    std::string owner_tenant;
    UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
      auto owner = d_.guests.TenantOf(guest);
      if (!owner.ok() && owner.status().code() != StatusCode::kNotFound) return owner.status();
      if (owner.ok()) owner_tenant = *owner;
      UW_RETURN_IF_ERROR(d_.leases.Fail(guest, NowMs(), "the create failed: " + cause.ToString()));
      UW_RETURN_IF_ERROR(d_.guests.ReleaseCreating(guest));
      return d_.events.Add("guest.create_failed", guest, owner.ok() ? *owner : "",
                           {{"host", host}, {"error", cause.ToString()}, {"reservation", "released"}});
    }));
    d_.release_devices(guest, owner_tenant);
    return d_.tasks.Finish(id, cause, nullptr);
  }
  const std::string state = created->state;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(d_.guests.SetState(guest, state, NowMs()));
    UW_RETURN_IF_ERROR(d_.leases.Activate(guest, NowMs()));
    UW_ASSIGN_OR_RETURN(std::string tenant, d_.guests.TenantOf(guest));
    return d_.events.Add("guest.created", guest, tenant, {{"host", host}, {"state", state}});
  }));
  return d_.tasks.Finish(id, Status::Ok(), {{"guest", guest}, {"host", host}, {"state", state}});
}

Status GuestService::RunRecover(const std::string& id, const Json& request, const std::string& guest) {
  const std::string host = request.value("host", "");
  const std::string from = request.value("from", "");
  UW_RETURN_IF_ERROR(
      d_.tasks.SetProgress(id, 0.3, "restarting on host " + host + " after its host " + from + " failed"));
  const auto start = d_.clock.Monotonic();
  auto agent = d_.agent_of(host);
  const Json spec = request.value("spec", Json::object());
  const Status copied = d_.copy_images(*agent, spec);
  Result<AgentGuest> made = copied.ok() ? agent->Create(spec) : Result<AgentGuest>(copied);
  if (!made.ok() && made.status().code() == StatusCode::kAlreadyExists) {
    made = agent->Get(guest);  // resumed after a crash: made before the manager could record it
    if (made.ok() && made->state != "running") made = agent->Start(guest);
  }
  const int64_t took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(d_.clock.Monotonic() - start).count();
  UW_ASSIGN_OR_RETURN(std::string tenant, d_.guests.TenantOf(guest));
  if (!made.ok()) {
    const Status cause = made.status();
    if (cause.code() == StatusCode::kDeadlineExceeded) (void)agent->Delete(guest, true);  // it may have made it
    UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(d_.guests.EndMove(guest, from, request.value("was", "unknown"), NowMs()));
      return d_.events.Add("guest.restart_failed", guest, tenant,
                           {{"from", from},
                            {"to", host},
                            {"error", cause.ToString()},
                            {"reason", "restarting it on " + host + " failed; HA tries again"}});
    }));
    return d_.tasks.Finish(id, cause, nullptr);
  }
  const std::string state = made->state;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(d_.guests.SetState(guest, state, NowMs()));
    return d_.events.Add("guest.restarted_elsewhere", guest, tenant,
                         {{"from", from}, {"host", host}, {"state", state}, {"took_ms", took_ms}});
  }));
  d_.leases.Changed(guest);  // its holdings name its new host
  return d_.tasks.Finish(id, Status::Ok(), {{"guest", guest}, {"from", from}, {"host", host}, {"state", state}});
}

namespace {

// A guest operation's arguments (checked by GuestOperation) sent to the agent as its typed call.
Result<AgentGuest> CallGuestOp(AgentClient& agent, const std::string& op, const std::string& guest, const Json& args,
                               const std::string& state_before) {
  if (op == "restart" || (op == "start" && state_before == "crashed")) {
    // A crashed domain is kept by libvirt (on_crash preserve): power it off, then boot it again.
    auto stopped = agent.Stop(guest, StopRequest{.force = true, .timeout_s = std::nullopt});
    if (!stopped.ok() && stopped.status().code() != StatusCode::kFailedPrecondition) {
      return stopped.status().WithContext("powering off the crashed guest");
    }
    return agent.Start(guest);
  }
  if (op == "start") return agent.Start(guest);
  if (op == "stop") {
    StopRequest r;
    r.force = args.value("force", false);
    if (args.contains("timeout_s")) r.timeout_s = args["timeout_s"].get<int64_t>();
    return agent.Stop(guest, r);
  }
  if (op == "pause") return agent.Pause(guest);
  if (op == "resume") return agent.Resume(guest);
  if (op == "resize") {
    ResizeRequest r;
    if (args.contains("cpu_quota_us")) {  // a container: its cgroup's cap stands for its vCPUs
      r.cpu_quota_us = args["cpu_quota_us"].get<int64_t>();
      r.cpu_period_us = args.value("cpu_period_us", kCpuPeriodUs);
    } else if (args.contains("vcpus")) {
      r.vcpus = args["vcpus"].get<int64_t>();
    }
    if (args.contains("memory_mib")) r.memory_mib = args["memory_mib"].get<int64_t>();
    return agent.Resize(guest, r);
  }
  return InvalidArgumentError("unknown guest operation '" + op + "'");
}

}  // namespace

Status GuestService::RunOperation(const std::string& id, const std::string& kind, const Json& request,
                                  const std::string& guest) {
  std::string host = request.value("host", "");
  std::string op = kind.substr(6);
  Json args = request.value("args", Json::object());
  UW_RETURN_IF_ERROR(d_.tasks.SetProgress(id, 0.3, op + " on host " + host));
  auto g = d_.guests.Get(guest);
  if (!g.ok()) return d_.tasks.Finish(id, g.status(), nullptr);
  const std::string tenant = g->tenant;
  auto agent = d_.agent_of(host);
  if (op == "delete") {
    // Forced: the agent powers the guest off (destroy) before it undefines it.
    const bool force = args.value("force", false);
    Status deleted = agent->Delete(guest, force);
    if (!deleted.ok() && deleted.code() != StatusCode::kNotFound)
      return d_.tasks.Finish(id, deleted, nullptr);  // gone already
    UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(d_.guests.Remove(guest));
      UW_RETURN_IF_ERROR(d_.leases.Close(guest, NowMs(), "the guest was deleted"));
      UW_RETURN_IF_ERROR(d_.remove_from_rules(guest));
      return d_.events.Add("guest.deleted", guest, tenant, {{"host", host}, {"forced", force}});
    }));
    d_.release_devices(guest, tenant);
    return d_.tasks.Finish(id, Status::Ok(), {{"guest", guest}, {"deleted", true}});
  }
  auto answer = CallGuestOp(*agent, op, guest, args, g->state);
  if (!answer.ok()) {
    if (op == "resize" && request.value("by", "") == "lease") d_.leases.Unenforced(guest, answer.status());
    return d_.tasks.Finish(id, answer.status(), nullptr);
  }
  const std::string state = answer->state;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    if (op == "resize") {
      UW_ASSIGN_OR_RETURN(Json spec, d_.guests.SpecOf(guest));
      if (args.contains("vcpus")) spec["vcpus"] = args["vcpus"];
      if (args.contains("memory_mib")) spec["memory_mib"] = args["memory_mib"];
      if (args.contains("cpu_quota_us")) {  // kept with the spec: a re-created container keeps its cap
        if (!spec["cpu"].is_object()) spec["cpu"] = Json::object();
        spec["cpu"]["quota_us"] = args["cpu_quota_us"];
        spec["cpu"]["period_us"] = args.value("cpu_period_us", kCpuPeriodUs);
      }
      UW_RETURN_IF_ERROR(d_.guests.SetStateAndSpec(guest, state, spec, NowMs()));
      auto amount = [&](const char* k) {
        return args.contains(k) ? std::optional<int64_t>(args[k].get<int64_t>()) : std::nullopt;
      };
      UW_RETURN_IF_ERROR(d_.leases.Regrant(
          guest, amount("vcpus"), amount("memory_mib"), NowMs(),
          request.value("by", "") == "lease" ? "the guest was resized (lease)" : "the guest was resized by request"));
    } else {
      UW_RETURN_IF_ERROR(d_.guests.SetState(guest, state, NowMs()));
      if (op == "start" && state == "running") UW_RETURN_IF_ERROR(d_.leases.Reopen(guest, NowMs()));
    }
    return d_.events.Add("guest." + op, guest, tenant, {{"host", host}, {"state", state}});
  }));
  return d_.tasks.Finish(id, Status::Ok(), {{"guest", guest}, {"state", state}});
}

}  // namespace uw::manager::internal
