// uwctl's commands, private to cli/: the state every command's callback shares (where the manager
// is, how to print, what the chosen command answered), the helpers that print tables, objects and
// tasks, and one Add*Commands function per command group, each in its own commands_<group>.cc.
//
//   Run -> Invocation (options of the app) -> Add*Commands(app, inv) -> CLI11 parses -> the one
//   chosen command's callback -> Context::Call / List -> Answer, AnswerList or AnswerTask -> inv.rc
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "api/http.h"
#include "cli/uwctl.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"

namespace CLI {
class App;
}  // namespace CLI

namespace uw::cli {

constexpr int kOk = 0, kFailed = 1, kUsage = 2, kAuth = 3, kNotFound = 4, kConflict = 5, kUnavailable = 6, kTimeout = 7,
              kUnimplemented = 8;

// A JSON value as one table cell: "-" for null, "yes"/"no", strings unquoted, floats to 3 digits.
std::string Str(const Json& j);

// Where the manager is and where output goes (from --url, --token, -o and the environment).
struct Context {
  std::string url;
  std::string token;
  std::string output = "table";
  std::ostream* out;
  std::ostream* err;
  bool live_progress = false;  // err is a terminal: redraw one progress line in place
  // Time for --wait: tests give a FakeClock and a sleeper that advances it.
  Clock* clock = &Clock::Real();
  std::function<void(Duration)> sleep = [](Duration d) { std::this_thread::sleep_for(d); };

  api::HttpClient Client() const { return api::HttpClient({url, token, 60'000, 3'000}); }

  // Prints the error and its hint on err; answers the exit code for it.
  int Fail(const Status& s) const;
  // Calls the API; prints JSON output or returns the body for table rendering.
  Result<Json> Call(std::string_view method, const std::string& path, const Json* body = nullptr) const {
    return Client().Call(method, path, body);
  }
  // A list route, page by page (?limit=&after=): the first `limit` items, or (limit 0) all of them,
  // fetched 1,000 at a time. Answers the list's shape: {key: items, "next": ..., "total": N}.
  Result<Json> List(const std::string& path, const char* key, int64_t limit = 0) const;
  // Polls a task every 200 ms until it is final, printing a progress line on err; answers the final
  // task, or kDeadlineExceeded after `timeout_s` (on `clock`'s monotonic time).
  Result<Json> WaitTask(const std::string& id, int timeout_s) const;
  bool AsJson() const { return output == "json"; }
  void PrintJson(const uw::Json& j) const { *out << j.dump(2) << "\n"; }
};

// What the callbacks of one uwctl run share. It must outlive the CLI::App its commands are
// registered on: options bind to its members and callbacks keep references to it.
struct Invocation {
  Invocation() = default;
  Invocation(const Invocation&) = delete;  // callbacks hold references to it
  Invocation& operator=(const Invocation&) = delete;

  Context c;
  int rc = kOk;  // the exit code the chosen command's callback sets
  // --wait / --timeout, for every command that starts a task (AddWait).
  bool wait = false;
  int timeout_s = 600;

  // Adds --wait and --timeout to `cmd`.
  void AddWait(CLI::App* cmd);
  // A value of type T that lives as long as this invocation: the storage a command group binds
  // its options to.
  template <typename T>
  T& Own() {
    auto p = std::make_shared<T>();
    owned_.push_back(p);
    return *p;
  }

 private:
  std::vector<std::shared_ptr<void>> owned_;
};

// Prints a task answer; with `wait` waits for it (progress on err) and maps its outcome to the
// exit code.
int TaskOutcome(const Context& c, const Json& task, bool wait, int timeout_s);
// Prints an object as FIELD / VALUE rows, or as JSON with -o json.
int PrintObject(const Context& c, const Json& j);
// Sets inv.rc from a call that answers an object: printed, or the failure's exit code.
void Answer(Invocation& inv, const Result<Json>& r);
// Sets inv.rc from a list call (Context::List): its items `r[key]` printed as a table of row(item)
// under `header` (or r as JSON with -o json), or the failure's exit code.
void AnswerList(Invocation& inv, const Result<Json>& r, const std::string& key, const std::vector<std::string>& header,
                const std::function<std::vector<std::string>(const Json&)>& row);
// Sets inv.rc from a call that answers a task: TaskOutcome (with --wait / --timeout), or the
// failure's exit code.
void AnswerTask(Invocation& inv, const Result<Json>& r);

// A subcommand with one required positional argument that calls `method` on `path` + the argument
// and prints the answer (Answer): show, delete and the like.
struct ObjectCall {
  const char* name;         // the subcommand: "show"
  const char* description;  // its help line
  const char* arg;          // the argument's name: "name"
  const char* arg_help;     // its help: "pool name"
  const char* method;       // "GET"
  const char* path;         // "/api/v1/pools/"
};
// Adds `call` to `parent`; the argument is stored in `arg`.
void AddObjectCall(CLI::App* parent, Invocation& inv, const ObjectCall& call, std::string& arg);

// One function per command group; each adds its command and subcommands to `app`.
void AddHostCommands(CLI::App& app, Invocation& inv);       // commands_host.cc
void AddGuestCommands(CLI::App& app, Invocation& inv);      // commands_guest.cc
void AddMigrationCommands(CLI::App& app, Invocation& inv);  // commands_guest.cc
void AddTaskCommands(CLI::App& app, Invocation& inv);       // commands_task.cc
void AddDrsCommands(CLI::App& app, Invocation& inv);        // commands_drs.cc
void AddPoolCommands(CLI::App& app, Invocation& inv);       // commands_pool.cc
void AddRuleCommands(CLI::App& app, Invocation& inv);       // commands_rule.cc
void AddClusterCommands(CLI::App& app, Invocation& inv);    // commands_cluster.cc
void AddEventsCommand(CLI::App& app, Invocation& inv);      // commands_cluster.cc
void AddTokenCommands(CLI::App& app, Invocation& inv);      // commands_cluster.cc
void AddLeaseCommands(CLI::App& app, Invocation& inv);      // commands_lease.cc
void AddNoticeCommands(CLI::App& app, Invocation& inv);     // commands_lease.cc
void AddBudgetCommands(CLI::App& app, Invocation& inv);     // commands_lease.cc
void AddImageCommands(CLI::App& app, Invocation& inv);      // commands_storage.cc
void AddVolumeCommands(CLI::App& app, Invocation& inv);     // commands_storage.cc
void AddNetworkCommands(CLI::App& app, Invocation& inv);    // commands_network.cc (network and port)
void AddStorageCommands(CLI::App& app, Invocation& inv);    // commands_storage.cc
void AddUsageCommands(CLI::App& app, Invocation& inv);      // commands_usage.cc
void AddBillingCommands(CLI::App& app, Invocation& inv);    // commands_billing.cc

}  // namespace uw::cli
