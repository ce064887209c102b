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
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/snapshot_builder.h"
#include "placement/placement.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

using internal::Dump;
using internal::GuestKey;
using internal::IsFinal;
using internal::kMaxTaskAttempts;
using internal::NeedWrite;
using internal::ShowShortNames;

// ---------------------------------------------------------------------------------------------
// Tasks

Result<Json> Manager::NewTask(std::string_view kind, std::string_view subject, std::string_view tenant,
                              const Json& request) {
  std::string id = NewId("task");
  int64_t now = NowMs();
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_->Exec(
        "INSERT INTO tasks(id, kind, subject, tenant, state, request, created_ms, updated_ms) VALUES (?, ?, ?, ?, "
        "'pending', ?, ?, ?)",
        {id, std::string(kind), std::string(subject), std::string(tenant), Dump(request), now, now}));
    return AddEvent("task.created", id, tenant, {{"kind", kind}, {"subject", subject}});
  }));
  if (kind == "guest.migrate") {
    migrator_cv_.notify_all();  // the migrator starts it when its dependencies and the caps allow
  } else {
    Enqueue(id);
  }
  return TaskJson(id);
}

namespace {

// A task row as the API shows it.
Json TaskRowJson(const SqlRow& r) {
  Json j = {{"id", r.Str("id")},
            {"kind", r.Str("kind")},
            {"subject", r.Str("subject")},
            {"tenant", r.Str("tenant")},
            {"state", r.Str("state")},
            {"progress", r.Real("progress")},
            {"message", r.Str("message")},
            {"attempts", r.Int("attempts")},
            {"created", FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("created_ms"))))},
            {"updated", FormatRfc3339(TimePoint(std::chrono::milliseconds(r.Int("updated_ms"))))},
            {"error", nullptr},
            {"result", r.JsonOf("result")}};
  if (!r.IsNull("error_code")) j["error"] = {{"code", r.Str("error_code")}, {"message", r.Str("error_message")}};
  return j;
}

}  // namespace

Result<Json> Manager::TaskJson(std::string_view id) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT * FROM tasks WHERE id = ?", {std::string(id)},
                                                 "task '" + std::string(id) + "' not found"));
  return TaskRowJson(r);
}

Result<Json> Manager::GetTask(const Principal& p, std::string_view id) {
  UW_ASSIGN_OR_RETURN(Json j, TaskJson(id));
  if (p.role == Role::kTenant && j["tenant"] != p.tenant)
    return NotFoundError("task '" + std::string(id) + "' not found");
  ShowShortNames(p, j);
  return j;
}

Result<Json> Manager::ListTasks(const Principal& p, const PageQuery& page) {
  internal::SqlFilter scope;
  if (p.role == Role::kTenant) scope.And("tenant = ?", {p.tenant});
  UW_ASSIGN_OR_RETURN(internal::RowPage rows, internal::PageNewestFirst(*store_, "tasks", scope, page));
  Json out = Json::array();
  for (const auto& r : rows.rows) {
    Json j = TaskRowJson(r);
    ShowShortNames(p, j);
    out.push_back(std::move(j));
  }
  return internal::PageJson("tasks", std::move(out), rows.total, rows.next);
}

Result<Json> Manager::CancelTask(const Principal& p, std::string_view id) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  UW_ASSIGN_OR_RETURN(Json t, GetTask(p, id));
  Status s = store_->Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT state, kind, subject FROM tasks WHERE id = ?",
                                                   {std::string(id)}, "task vanished"));
    if (r.Str("state") == "running" && r.Str("kind") == "guest.migrate") {
      // Aborted by its migration thread; the task ends cancelled once the guest is back.
      {
        std::lock_guard ml(migrator_mu_);
        cancel_requested_.insert(std::string(id));
      }
      UW_RETURN_IF_ERROR(store_->Exec("UPDATE tasks SET message = 'cancelling', updated_ms = ? WHERE id = ?",
                                      {NowMs(), std::string(id)}));
      return AddEvent("task.cancel_requested", id, t["tenant"].get<std::string>(),
                      {{"kind", r.Str("kind")}, {"subject", r.Str("subject")}});
    }
    if (r.Str("state") != "pending") {
      return FailedPreconditionError("task " + std::string(id) + " is " + r.Str("state") +
                                     "; only a pending task or a running migration can be cancelled");
    }
    UW_RETURN_IF_ERROR(store_->Exec(
        "UPDATE tasks SET state = 'cancelled', error_code = 'aborted', error_message = 'cancelled by request', "
        "updated_ms = ? WHERE id = ?",
        {NowMs(), std::string(id)}));
    if (r.Str("kind") == "guest.create") {
      // Release the reservation: the guest was never created.
      UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM guests WHERE name = ? AND state = 'creating'", {r.Str("subject")}));
    }
    return AddEvent("task.cancelled", id, t["tenant"].get<std::string>(),
                    {{"kind", r.Str("kind")}, {"subject", r.Str("subject")}});
  });
  UW_RETURN_IF_ERROR(s);
  tasks_cv_.notify_all();
  UW_ASSIGN_OR_RETURN(Json task, TaskJson(id));
  ShowShortNames(p, task);
  return task;
}

Result<Json> Manager::WaitTask(std::string_view id, Duration timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    UW_ASSIGN_OR_RETURN(Json j, TaskJson(id));
    if (IsFinal(j["state"].get<std::string>()) || std::chrono::steady_clock::now() >= deadline) return j;
    std::unique_lock l(tasks_mu_);
    tasks_cv_.wait_for(l, std::chrono::milliseconds(50));
  }
}

Status Manager::SetTaskProgress(const std::string& id, double progress, std::string_view message) {
  return store_->Exec("UPDATE tasks SET progress = ?, message = ?, updated_ms = ? WHERE id = ?",
                      {progress, std::string(message), NowMs(), id});
}

Status Manager::FinishTask(const std::string& id, const Status& outcome, const Json& result) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT kind, subject, tenant FROM tasks WHERE id = ?", {id}, "task"));
  Status s = store_->Transact([&]() -> Status {
    if (outcome.ok()) {
      UW_RETURN_IF_ERROR(
          store_->Exec("UPDATE tasks SET state = 'succeeded', progress = 1, message = 'done', result = ?, "
                       "error_code = NULL, error_message = NULL, updated_ms = ? WHERE id = ?",
                       {result.is_null() ? SqlValue(nullptr) : SqlValue(Dump(result)), NowMs(), id}));
    } else {
      UW_RETURN_IF_ERROR(store_->Exec(
          "UPDATE tasks SET state = 'failed', message = 'failed', error_code = ?, error_message = ?, updated_ms = ? "
          "WHERE id = ?",
          {std::string(StatusCodeName(outcome.code())), outcome.message(), NowMs(), id}));
    }
    return AddEvent(outcome.ok() ? "task.succeeded" : "task.failed", id, r.Str("tenant"),
                    {{"kind", r.Str("kind")},
                     {"subject", r.Str("subject")},
                     {"error", outcome.ok() ? Json(nullptr) : Json(outcome.ToString())}});
  });
  tasks_cv_.notify_all();
  return s;
}

std::shared_ptr<AgentClient> Manager::AgentOf(const std::string& host) { return agents_->For(host); }

std::string Manager::ConsoleTail(const std::string& host, const std::string& guest, size_t bytes) {
  auto tail = AgentOf(host)->ConsoleTail(guest, bytes);
  return tail.ok() ? *tail : "";
}

void Manager::RunTask(const std::string& id) {
  auto claimed = store_->Query(
      "UPDATE tasks SET state = 'running', attempts = attempts + 1, updated_ms = ? WHERE id = ? AND state = 'pending' "
      "RETURNING kind, subject, request",
      {NowMs(), id});
  if (!claimed.ok()) {
    spdlog::error("task {}: cannot claim: {}", id, claimed.status().ToString());
    return;
  }
  if (claimed->empty()) return;  // cancelled meanwhile, or claimed already
  const SqlRow& r = (*claimed)[0];
  std::string kind = r.Str("kind");
  Json request = r.JsonOf("request");
  std::string guest = r.Str("subject");
  Status s;
  if (kind == "guest.create") {
    s = RunCreate(id, request, guest);
  } else if (kind.rfind("guest.", 0) == 0) {
    s = RunGuestOp(id, kind, request, guest);
  } else {
    s = FinishTask(id, InternalError("unknown task kind '" + kind + "'"), nullptr);
  }
  if (!s.ok()) {
    // The store refused a step: end the task explicitly rather than leave it running.
    spdlog::error("task {} ({} {}): {}", id, kind, guest, s.ToString());
    if (Status f = FinishTask(id, s.WithContext("recording the outcome"), nullptr); !f.ok()) {
      spdlog::error("task {}: cannot record failure ({}); it is resumed on the next start", id, f.ToString());
    }
  }
}

Status Manager::RunCreate(const std::string& id, const Json& request, const std::string& guest) {
  std::string host = request.value("host", "");
  UW_RETURN_IF_ERROR(SetTaskProgress(id, 0.2, "creating the guest on host " + host));
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
      UW_ASSIGN_OR_RETURN(auto owner, store_->Query("SELECT tenant FROM guests WHERE name = ?", {guest}));
      UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM guests WHERE name = ? AND state = 'creating'", {guest}));
      return AddEvent("guest.create_failed", guest, owner.empty() ? "" : owner[0].Str("tenant"),
                      {{"host", host}, {"error", cause.ToString()}, {"reservation", "released"}});
    }));
    return FinishTask(id, cause, nullptr);
  }
  const std::string state = created->state;
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(
        store_->Exec("UPDATE guests SET state = ?, updated_ms = ? WHERE name = ?", {state, NowMs(), guest}));
    UW_ASSIGN_OR_RETURN(SqlRow g,
                        store_->QueryOne("SELECT tenant FROM guests WHERE name = ?", {guest}, "guest row gone"));
    return AddEvent("guest.created", guest, g.Str("tenant"), {{"host", host}, {"state", state}});
  }));
  return FinishTask(id, Status::Ok(), {{"guest", guest}, {"host", host}, {"state", state}});
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
  UW_RETURN_IF_ERROR(SetTaskProgress(id, 0.3, op + " on host " + host));
  auto g = store_->QueryOne("SELECT tenant, spec, state FROM guests WHERE name = ?", {guest},
                            "guest '" + guest + "' not found");
  if (!g.ok()) return FinishTask(id, g.status(), nullptr);
  std::string tenant = g->Str("tenant");
  auto agent = AgentOf(host);
  if (op == "delete") {
    // Forced: the agent powers the guest off (destroy) before it undefines it.
    const bool force = args.value("force", false);
    Status deleted = agent->Delete(guest, force);
    if (!deleted.ok() && deleted.code() != StatusCode::kNotFound)
      return FinishTask(id, deleted, nullptr);  // gone already
    UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM guests WHERE name = ?", {guest}));
      UW_RETURN_IF_ERROR(RemoveGuestFromRules(guest));
      return AddEvent("guest.deleted", guest, tenant, {{"host", host}, {"forced", force}});
    }));
    return FinishTask(id, Status::Ok(), {{"guest", guest}, {"deleted", true}});
  }
  auto answer = CallGuestOp(*agent, op, guest, args, g->Str("state"));
  if (!answer.ok()) return FinishTask(id, answer.status(), nullptr);
  const std::string state = answer->state;
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    Json spec = g->JsonOf("spec");
    if (op == "resize") {
      if (args.contains("vcpus")) spec["vcpus"] = args["vcpus"];
      if (args.contains("memory_mib")) spec["memory_mib"] = args["memory_mib"];
    }
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE guests SET state = ?, spec = ?, updated_ms = ? WHERE name = ?",
                                    {state, Dump(spec), NowMs(), guest}));
    return AddEvent("guest." + op, guest, tenant, {{"host", host}, {"state", state}});
  }));
  return FinishTask(id, Status::Ok(), {{"guest", guest}, {"state", state}});
}

}  // namespace uw::manager
