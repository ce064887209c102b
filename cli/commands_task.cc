// uwctl task: show (optionally --wait), cancel, list.
#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace uw::cli {
namespace {

struct TaskArgs {
  std::string id;
  int64_t list_limit = 100;
};

}  // namespace

void AddTaskCommands(CLI::App& app, Invocation& inv) {
  TaskArgs& a = inv.Own<TaskArgs>();
  auto* task = app.add_subcommand("task", "long-running operations");
  task->require_subcommand(1);
  auto* tshow = task->add_subcommand("show", "show a task");
  tshow->add_option("id", a.id, "task id")->required();
  inv.AddWait(tshow);
  tshow->callback([&inv, &a] {
    auto r = inv.c.Call("GET", "/api/v1/tasks/" + a.id);
    if (!r.ok()) return void(inv.rc = inv.c.Fail(r.status()));
    inv.rc = inv.wait ? TaskOutcome(inv.c, *r, true, inv.timeout_s) : PrintObject(inv.c, *r);
  });
  auto* tcancel = task->add_subcommand("cancel", "cancel a pending task, or abort a running migration");
  tcancel->add_option("id", a.id, "task id")->required();
  tcancel->callback([&inv, &a] { Answer(inv, inv.c.Call("POST", "/api/v1/tasks/" + a.id + "/cancel")); });
  auto* tlist = task->add_subcommand("list", "recent tasks, newest first");
  tlist->add_option("--limit", a.list_limit, "newest N (0: all)")->check(CLI::NonNegativeNumber);
  tlist->callback([&inv, &a] {
    AnswerList(inv, inv.c.List("/api/v1/tasks", "tasks", a.list_limit), "tasks",
               {"ID", "KIND", "SUBJECT", "STATE", "PROGRESS", "ERROR"}, [](const Json& t) {
                 return std::vector<std::string>{
                     Str(t["id"]),    Str(t["kind"]),     Str(t["subject"]),
                     Str(t["state"]), Str(t["progress"]), t["error"].is_null() ? "-" : Str(t["error"]["message"])};
               });
  });
}

}  // namespace uw::cli
