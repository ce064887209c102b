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
#include "manager/guest_service.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/lease_service.h"
#include "manager/manager.h"
#include "manager/migration_dispatcher.h"
#include "manager/snapshot_builder.h"
#include "manager/storage_service.h"
#include "manager/task_journal.h"
#include "manager/views.h"
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
      UW_RETURN_IF_ERROR(leases_->Fail(t.subject, NowMs(), "the create was cancelled"));
      if (t.request.contains("waits_for")) UW_RETURN_IF_ERROR(leases_->WithdrawAdmission(t.request["waits_for"]));
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
  // A create admitted by reclaim runs once the leases it waits for gave the room back (the lease
  // loop queues it again then); a restart's Recover queues it early.
  if (auto t = tasks_->Get(id); t.ok() && t->state == "pending" && t->request.contains("waits_for")) {
    auto done = leases_->AdmissionDone(t->request["waits_for"]);
    if (done.ok() && !*done) return;
  }
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
    s = guest_service_->RunCreate(id, request, guest);
  } else if (kind == "guest.recover") {
    s = guest_service_->RunRecover(id, request, guest);
  } else if (kind == "image.import") {
    auto image = storage_->RunImport(request);
    s = tasks_->Finish(id, image.status(), image.ok() ? ImageView(*image) : Json());
  } else if (kind.rfind("guest.", 0) == 0) {
    s = guest_service_->RunOperation(id, kind, request, guest);
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

}  // namespace uw::manager
