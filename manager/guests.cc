// Guests: the placement snapshot of the store, admission, placement and reservation of creates,
// and the guest views and operations of the API.
// Part of Manager (manager.h), which is split by responsibility across manager/*.cc.
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "api/http.h"
#include "common/id.h"
#include "manager/guest_listing.h"
#include "manager/guest_table.h"
#include "manager/host_table.h"
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/snapshot_builder.h"
#include "manager/task_journal.h"
#include "placement/placement.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

using internal::GuestKey;
using internal::NeedWrite;
using internal::ShowShortNames;

// ---------------------------------------------------------------------------------------------
// Snapshot

// Rules are stored as written: they may name guests that do not exist yet (they apply to their
// placement when they are created) and host groups that no host is in any more. The engine's
// snapshot names only what exists (internal::BuildSnapshot cuts each rule down to its known
// members, and leaves out a rule that then constrains nothing that exists).
Result<placement::Snapshot> Manager::BuildSnapshot(const placement::Vm* incoming) {
  UW_ASSIGN_OR_RETURN(DrsConfig cfg, GetDrsConfig());
  return internal::BuildSnapshot(*store_, NowMs(), internal::DrsSettingsFromConfig(cfg), incoming);
}

Result<placement::Snapshot> Manager::ClusterSnapshot() { return BuildSnapshot(); }

// ---------------------------------------------------------------------------------------------
// Guests

Result<Page<Guest>> Manager::ListGuests(const Principal& p, const PageQuery& page) {
  const bool tenant = p.role == Role::kTenant;
  PageQuery stored = page;  // a tenant's cursor is a short name, its guests are "<tenant>:<name>" in the store
  if (tenant && !page.after.empty()) stored.after = internal::GuestKey(p.tenant, page.after);
  UW_ASSIGN_OR_RETURN(Page<Guest> out,
                      guests_->List(tenant ? std::optional<std::string>(p.tenant) : std::nullopt, stored));
  if (out.next) out.next = std::string(internal::ShownGuestName(p, *out.next));
  return out;
}

Result<std::string> Manager::ListGuestsBody(const Principal& p, const PageQuery& page) {
  return listing_->Body(p, page);
}

Result<std::set<std::string>> Manager::GuestsWithTaskInFlight() { return tasks_->SubjectsInFlight(); }

Result<Guest> Manager::VisibleGuest(const Principal& p, std::string_view name) {
  UW_RETURN_IF_ERROR(ValidateGuestName(name, "guest name"));
  const std::string missing = "guest '" + std::string(name) + "' not found";
  std::string n(name);
  const size_t colon = n.find(':');
  if (p.role == Role::kTenant) {
    // Its own guests only, by short name (or by full name with its own tenant). A guest created
    // before names were per tenant is stored under its short name.
    if (colon != std::string::npos) {
      if (n.compare(0, colon, p.tenant) != 0 || colon != p.tenant.size()) return NotFoundError(missing);
      n = n.substr(colon + 1);
    }
    UW_ASSIGN_OR_RETURN(std::optional<Guest> g, guests_->FindOfTenant(p.tenant, GuestKey(p.tenant, n), n));
    if (!g) return NotFoundError(missing);
    return std::move(*g);
  }
  UW_ASSIGN_OR_RETURN(std::optional<Guest> g, guests_->Find(n));
  if (g) return std::move(*g);
  if (colon == std::string::npos) {
    // A short name that names one tenant's guest.
    UW_ASSIGN_OR_RETURN(std::vector<Guest> named, guests_->WithShortName(n));
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

Result<Task> Manager::CreateGuest(const Principal& p, GuestCreate req) {
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
  std::lock_guard placement_lock(placement_mu_);
  UW_ASSIGN_OR_RETURN(bool taken, guests_->NameTaken(req.name, req.tenant, short_name));
  if (taken) return AlreadyExistsError("guest '" + short_name + "' already exists: choose another name");
  if (!req.pool.empty()) UW_RETURN_IF_ERROR(AdmitToPool(req));
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
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, BuildSnapshot(&vm));
  placement::Snapshot without_it = snap;  // AdmitVm compares the cluster before and after the guest
  std::erase_if(without_it.vms, [&](const placement::Vm& v) { return v.name == req.name; });
  if (Status s = placement::AdmitVm(without_it, vm); !s.ok()) {
    return Status(s.code(), "admission control refused guest '" + req.name + "': " + s.message());
  }
  UW_ASSIGN_OR_RETURN(auto index, placement::PlacementIndex::Build(snap, config_.placement_policy));
  placement::PlacementDecision d = index->Place(vm);
  if (d.host.empty() || d.needs_power_on) {
    std::string why = d.reason.empty() ? "no host can take it" : d.reason;
    for (const auto& r : d.rejected) why += "; " + r.host + ": " + r.reason;
    if (snap.hosts.empty()) why = "no host has joined the cluster yet";
    return ResourceExhaustedError("no host for guest '" + req.name + "': " + why);
  }
  Json rejected = Json::array();
  for (const auto& r : d.rejected) rejected.push_back({{"host", r.host}, {"reason", r.reason}});
  std::string task_id = NewId("task");
  int64_t now = NowMs();
  Json request = {{"guest", req.name}, {"host", d.host}, {"spec", req.agent_spec}};
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(guests_->Admit({.name = req.name,
                                       .tenant = req.tenant,
                                       .host = d.host,
                                       .pool = req.pool.empty() ? std::nullopt : std::optional<std::string>(req.pool),
                                       .kind = std::string(GuestKindName(req.kind)),
                                       .vcpus = req.vcpus,
                                       .memory_mib = req.memory_mib,
                                       .spec = req.agent_spec,
                                       .automation = req.automation,
                                       .placement_reason = d.reason,
                                       .on_crash = req.on_crash,
                                       .lease_class = req.lease_class,
                                       .now_ms = now}));
    UW_RETURN_IF_ERROR(tasks_->Insert(task_id, "guest.create", req.name, req.tenant, request,
                                      "placed on " + d.host + "; waiting for a worker"));
    return AddEvent(
        "guest.placed", req.name, req.tenant,
        {{"host", d.host}, {"reason", d.reason}, {"score", d.score}, {"rejected", rejected}, {"task", task_id}});
  }));
  Enqueue(task_id);
  return tasks_->Get(task_id);
}

Result<GuestDetail> Manager::GetGuest(const Principal& p, std::string_view name) {
  GuestDetail d;
  UW_ASSIGN_OR_RETURN(d.guest, VisibleGuest(p, name));
  UW_ASSIGN_OR_RETURN(d.leases, guests_->LeasesOf(d.guest.name));
  return d;
}

Result<Task> Manager::GuestOperation(const Principal& p, std::string_view name, std::string_view op, const Json& args) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  std::lock_guard placement_lock(placement_mu_);
  UW_ASSIGN_OR_RETURN(Guest g, VisibleGuest(p, name));
  const std::string guest = g.name;
  UW_ASSIGN_OR_RETURN(std::optional<Task> busy, tasks_->InFlightOf(guest));
  if (busy) {
    return FailedPreconditionError("guest '" + guest + "' has task " + busy->id + " (" + busy->kind +
                                   ") in flight: wait for it or cancel it");
  }
  if (!g.host) return FailedPreconditionError("guest '" + guest + "' is not placed on a host");
  UW_ASSIGN_OR_RETURN(auto host, hosts_->SessionOf(*g.host));
  if (host.state != "connected" && op != "delete") {
    return FailedPreconditionError("host " + *g.host + " of guest '" + guest +
                                   "' is disconnected: wait until it reconnects");
  }
  Json request = {{"guest", guest}, {"host", *g.host}, {"args", args}};
  if (op == "resize") {
    UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(args, ""));
    UW_RETURN_IF_ERROR(v.RejectUnknown({"vcpus", "memory_mib"}));
    if (!v.Has("vcpus") && !v.Has("memory_mib")) return InvalidArgumentError("give vcpus and/or memory_mib to resize");
    if (v.Has("vcpus")) {
      UW_ASSIGN_OR_RETURN(int64_t n, v.PositiveInt("vcpus"));
      if (n > g.reserved_vcpus) {
        return InvalidArgumentError("vcpus: " + std::to_string(n) + " is above the guest's maximum of " +
                                    std::to_string(g.reserved_vcpus) + " (max_vcpus at creation)");
      }
    }
    if (v.Has("memory_mib")) {
      UW_ASSIGN_OR_RETURN(int64_t n, v.PositiveInt("memory_mib"));
      if (n > g.reserved_memory_mib) {
        return InvalidArgumentError("memory_mib: " + std::to_string(n) + " is above the guest's reservation of " +
                                    std::to_string(g.reserved_memory_mib) + " MiB (max_memory_mib at creation)");
      }
    }
  } else if (op == "stop") {
    UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(args, ""));
    UW_RETURN_IF_ERROR(v.RejectUnknown({"force", "timeout_s"}));
    UW_RETURN_IF_ERROR(v.Bool("force", false).status());
    UW_RETURN_IF_ERROR(v.NonNegativeInt("timeout_s", 0).status());
  } else if (op == "delete") {
    // The agent deletes only a stopped guest: refuse here, before any task, unless forced (the
    // task then powers it off first). A lost guest is gone from its host already.
    UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(args, ""));
    UW_RETURN_IF_ERROR(v.RejectUnknown({"force"}));
    UW_ASSIGN_OR_RETURN(bool force, v.Bool("force", false));
    const std::string& state = g.state;
    if (!force && state != "shutoff" && state != "lost") {
      return FailedPreconditionError("guest '" + guest + "' is " + state +
                                     ": stop it first, or delete with ?force=true (uwctl guest delete --force) "
                                     "to power it off and delete it");
    }
  } else if (op != "start") {
    return InvalidArgumentError("unknown guest operation '" + std::string(op) + "'");
  }
  return NewTask("guest." + std::string(op), guest, g.tenant, request);
}

}  // namespace uw::manager
