// uwctl's entry point and its public helpers: exit codes, hints and tables (cli/uwctl.h). The
// commands themselves are in commands_<group>.cc (cli/commands.h).
#include "cli/uwctl.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "cli/commands.h"

namespace uw::cli {

int ExitCodeFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return kOk;
    case StatusCode::kInvalidArgument:
      return kUsage;
    case StatusCode::kUnauthenticated:
    case StatusCode::kPermissionDenied:
      return kAuth;
    case StatusCode::kNotFound:
      return kNotFound;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAborted:
    case StatusCode::kResourceExhausted:
      return kConflict;
    case StatusCode::kUnavailable:
      return kUnavailable;
    case StatusCode::kDeadlineExceeded:
      return kTimeout;
    case StatusCode::kUnimplemented:
      return kUnimplemented;
    default:
      return kFailed;
  }
}

std::string HintFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kUnauthenticated:
      return "pass a valid API token with --token or UW_TOKEN";
    case StatusCode::kPermissionDenied:
      return "use a token with a role that may do this (ask an admin)";
    case StatusCode::kUnavailable:
      return "is uw-manager running at --url / UW_URL? retry when it is back";
    case StatusCode::kNotFound:
      return "check the name or id (uwctl guest list, uwctl task show)";
    case StatusCode::kResourceExhausted:
      return "free capacity, add a host or ask for less (see uwctl host list)";
    case StatusCode::kFailedPrecondition:
      return "fix the state first (wait for the running task, reconnect the host)";
    case StatusCode::kAlreadyExists:
      return "choose another name";
    case StatusCode::kUnimplemented:
      return "this arrives in a later release";
    case StatusCode::kDeadlineExceeded:
      return "wait longer (--timeout) or check the task later";
    default:
      return "";
  }
}

std::string FormatTable(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  std::ostringstream o;
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < width.size(); ++i) {
      std::string cell = i < r.size() ? r[i] : "";
      s += cell;
      if (i + 1 < width.size()) s += std::string(width[i] - cell.size() + 2, ' ');
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    o << s << "\n";
  };
  line(header);
  for (const auto& r : rows) line(r);
  return o.str();
}

int Run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Invocation inv;
  Context& c = inv.c;
  c.out = &out;
  c.err = &err;
  c.live_progress = &err == &std::cerr && isatty(STDERR_FILENO);
  if (const char* u = std::getenv("UW_URL")) c.url = u;
  if (const char* t = std::getenv("UW_TOKEN")) c.token = t;
  if (c.url.empty()) c.url = "http://127.0.0.1:7800";

  CLI::App app{"uwctl: operate an Underware cluster through uw-manager's REST API"};
  app.require_subcommand(1);
  app.add_option("--url", c.url, "manager URL (env UW_URL)");
  app.add_option("--token", c.token, "API token (env UW_TOKEN)");
  app.add_option("-o,--output", c.output, "output format")->check(CLI::IsMember({"table", "json"}));
  // In this order in --help.
  AddHostCommands(app, inv);
  AddGuestCommands(app, inv);
  AddMigrationCommands(app, inv);
  AddImageCommands(app, inv);
  AddVolumeCommands(app, inv);
  AddStorageCommands(app, inv);
  AddNetworkCommands(app, inv);
  AddTaskCommands(app, inv);
  AddDrsCommands(app, inv);
  AddPoolCommands(app, inv);
  AddRuleCommands(app, inv);
  AddLeaseCommands(app, inv);
  AddNoticeCommands(app, inv);
  AddBudgetCommands(app, inv);
  AddUsageCommands(app, inv);
  AddBillingCommands(app, inv);
  AddClusterCommands(app, inv);
  AddEventsCommand(app, inv);
  AddTokenCommands(app, inv);

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    out << app.help();
    return kOk;
  } catch (const CLI::CallForAllHelp& e) {
    out << app.help("", CLI::AppFormatMode::All);
    return kOk;
  } catch (const CLI::ParseError& e) {
    err << "uwctl: " << e.what() << "\n";
    // Name the deepest subcommand the user reached for its help.
    err << "run 'uwctl --help' (or 'uwctl <command> --help') for usage\n";
    return kUsage;
  }
  return inv.rc;
}

}  // namespace uw::cli
