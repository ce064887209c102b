// The task journal and its workers: tasks are rows first, then work for a worker; creates and
// guest operations call the host's agent (AgentClient).
// Part of Manager (manager.h), which is split by responsibility across manager/*.cc.
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "api/http.h"
#include "common/id.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/migration_dispatcher.h"
#include "manager/snapshot_builder.h"
#include "manager/task_journal.h"
#include "placement/placement.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

using internal::NeedWrite;

// ---------------------------------------------------------------------------------------------
// Tasks

Result<Task> Manager::NewTask(std::string_view kind, std::string_view subject, std::string_view tenant,
                              const Json& request) {
  UW_ASSIGN_OR_RETURN(std::string id, tasks_->Add(kind, subject, tenant, request));
  if (kind == "guest.migrate") {
    migrations_->Wake();  // the dispatcher starts it when its dependencies and the caps allow
  } else {
    Enqueue(id);
  }
  return tasks_->Get(id);
}

Result<Task> Manager::GetTask(const Principal& p, std::string_view id) {
  UW_ASSIGN_OR_RETURN(Task t, tasks_->Get(id));
  if (p.role == Role::kTenant && t.tenant != p.tenant) return NotFoundError("task '" + std::string(id) + "' not found");
  return t;
}

Result<Page<Task>> Manager::ListTasks(const Principal& p, const PageQuery& page) { return tasks_->List(p, page); }

Result<Task> Manager::CancelTask(const Principal& p, std::string_view id) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  UW_ASSIGN_OR_RETURN(Task seen, GetTask(p, id));
  Status s = store_->Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(Task t, tasks_->Get(id));
    if (t.state == "running" && t.kind == "guest.migrate") {
      // Aborted by its migration thread; the task ends cancelled once the guest is back.
      migrations_->RequestCancel(t.id);
      return tasks_->CancelRequested(t);
    }
    if (t.state != "pending") {
      return FailedPreconditionError("task " + t.id + " is " + t.state +
                                     "; only a pending task or a running migration can be cancelled");
    }
    if (t.kind == "guest.create") {
      // Release the reservation: the guest was never created.
      UW_RETURN_IF_ERROR(guests_->ReleaseCreating(t.subject));
    }
    return tasks_->Cancel(t.id, std::nullopt, nullptr);
  });
  UW_RETURN_IF_ERROR(s);
  return tasks_->Get(id);
}

Result<Task> Manager::WaitTask(std::string_view id, Duration timeout) { return tasks_->Wait(id, timeout); }

std::shared_ptr<AgentClient> Manager::AgentOf(const std::string& host) { return agents_->For(host); }

std::string Manager::ConsoleTail(const std::string& host, const std::string& guest, size_t bytes) {
  auto tail = AgentOf(host)->ConsoleTail(guest, bytes);
  return tail.ok() ? *tail : "";
}

void Manager::RunTask(const std::string& id) {
  auto claimed = tasks_->ClaimPending(id);
  if (!claimed.ok()) {
    spdlog::error("task {}: cannot claim: {}", id, claimed.status().ToString());
    return;
  }
  if (!*claimed) return;  // cancelled meanwhile, or claimed already
  const std::string kind = (*claimed)->kind;
  const Json request = std::move((*claimed)->request);
  const std::string guest = (*claimed)->subject;
  Status s;
  if (kind == "guest.create") {
    s = RunCreate(id, request, guest);
  } else if (kind.rfind("guest.", 0) == 0) {
    s = RunGuestOp(id, kind, request, guest);
  } else {
    s = tasks_->Finish(id, InternalError("unknown task kind '" + kind + "'"), nullptr);
  }
  if (!s.ok()) {
    // The store refused a step: end the task explicitly rather than leave it running.
    spdlog::error("task {} ({} {}): {}", id, kind, guest, s.ToString());
    if (Status f = tasks_->Finish(id, s.WithContext("recording the outcome"), nullptr); !f.ok()) {
      spdlog::error("task {}: cannot record failure ({}); it is resumed on the next start", id, f.ToString());
    }
  }
}

Status Manager::RunCreate(const std::string& id, const Json& request, const std::string& guest) {
  std::string host = request.value("host", "");
  UW_RETURN_IF_ERROR(tasks_->SetProgress(id, 0.2, "creating the guest on host " + host));
  Json spec = request.value("spec", Json::object());
  auto agent = AgentOf(host);
  Result<AgentGuest> created = agent->Create(spec);
  if (!created.ok() && created.status().code() == StatusCode::kAlreadyExists) {
    // Resumed after a crash: the agent made it before the manager could record it.
    created = agent->Get(guest);
  }
  if (!created.ok()) {
    Status cause = created.status();
    if (cause.code() == StatusCode::kDeadlineExceeded) {
      // The agent may have made it after all: best-effort removal before releasing the capacity.
      (void)agent->Delete(guest, false);
    }
    UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
      auto owner = guests_->TenantOf(guest);
      if (!owner.ok() && owner.status().code() != StatusCode::kNotFound) return owner.status();
      UW_RETURN_IF_ERROR(guests_->ReleaseCreating(guest));
      return AddEvent("guest.create_failed", guest, owner.ok() ? *owner : "",
                      {{"host", host}, {"error", cause.ToString()}, {"reservation", "released"}});
    }));
    return tasks_->Finish(id, cause, nullptr);
  }
  const std::string state = created->state;
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(guests_->SetState(guest, state, NowMs()));
    UW_ASSIGN_OR_RETURN(std::string tenant, guests_->TenantOf(guest));
    return AddEvent("guest.created", guest, tenant, {{"host", host}, {"state", state}});
  }));
  return tasks_->Finish(id, Status::Ok(), {{"guest", guest}, {"host", host}, {"state", state}});
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
    if (args.contains("vcpus")) r.vcpus = args["vcpus"].get<int64_t>();
    if (args.contains("memory_mib")) r.memory_mib = args["memory_mib"].get<int64_t>();
    return agent.Resize(guest, r);
  }
  return InvalidArgumentError("unknown guest operation '" + op + "'");
}

}  // namespace

Status Manager::RunGuestOp(const std::string& id, const std::string& kind, const Json& request,
                           const std::string& guest) {
  std::string host = request.value("host", "");
  std::string op = kind.substr(6);
  Json args = request.value("args", Json::object());
  UW_RETURN_IF_ERROR(tasks_->SetProgress(id, 0.3, op + " on host " + host));
  auto g = guests_->Get(guest);
  if (!g.ok()) return tasks_->Finish(id, g.status(), nullptr);
  const std::string tenant = g->tenant;
  auto agent = AgentOf(host);
  if (op == "delete") {
    // Forced: the agent powers the guest off (destroy) before it undefines it.
    const bool force = args.value("force", false);
    Status deleted = agent->Delete(guest, force);
    if (!deleted.ok() && deleted.code() != StatusCode::kNotFound)
      return tasks_->Finish(id, deleted, nullptr);  // gone already
    UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(guests_->Remove(guest));
      UW_RETURN_IF_ERROR(RemoveGuestFromRules(guest));
      return AddEvent("guest.deleted", guest, tenant, {{"host", host}, {"forced", force}});
    }));
    return tasks_->Finish(id, Status::Ok(), {{"guest", guest}, {"deleted", true}});
  }
  auto answer = CallGuestOp(*agent, op, guest, args, g->state);
  if (!answer.ok()) return tasks_->Finish(id, answer.status(), nullptr);
  const std::string state = answer->state;
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    if (op == "resize") {
      UW_ASSIGN_OR_RETURN(Json spec, guests_->SpecOf(guest));
      if (args.contains("vcpus")) spec["vcpus"] = args["vcpus"];
      if (args.contains("memory_mib")) spec["memory_mib"] = args["memory_mib"];
      UW_RETURN_IF_ERROR(guests_->SetStateAndSpec(guest, state, spec, NowMs()));
    } else {
      UW_RETURN_IF_ERROR(guests_->SetState(guest, state, NowMs()));
    }
    return AddEvent("guest." + op, guest, tenant, {{"host", host}, {"state", state}});
  }));
  return tasks_->Finish(id, Status::Ok(), {{"guest", guest}, {"state", state}});
}

}  // namespace uw::manager
