#include "cli/uwctl.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "api/http.h"
#include "api/request_parser.h"
#include "placement/placement.h"

namespace uw::cli {
namespace {

constexpr int kOk = 0, kFailed = 1, kUsage = 2, kAuth = 3, kNotFound = 4, kConflict = 5, kUnavailable = 6, kTimeout = 7,
              kUnimplemented = 8;

std::string Str(const Json& j) {
  if (j.is_null()) return "-";
  if (j.is_string()) return j.get<std::string>();
  if (j.is_boolean()) return j.get<bool>() ? "yes" : "no";
  if (j.is_number_float()) {
    std::ostringstream o;
    o.precision(3);
    o << j.get<double>();
    return o.str();
  }
  return j.dump();
}

struct Context {
  std::string url;
  std::string token;
  std::string output = "table";
  std::ostream* out;
  std::ostream* err;
  bool live_progress = false;  // err is a terminal: redraw one progress line in place

  api::HttpClient Client() const { return api::HttpClient({url, token, 60'000, 3'000}); }

  int Fail(const Status& s) const {
    *err << "uwctl: " << s.ToString() << "\n";
    std::string hint = HintFor(s);
    if (!hint.empty()) *err << "hint: " << hint << "\n";
    return ExitCodeFor(s);
  }
  // Calls the API; prints JSON output or returns the body for table rendering.
  Result<Json> Call(std::string_view method, const std::string& path, const Json* body = nullptr) const {
    return Client().Call(method, path, body);
  }
  // A list route, page by page (?limit=&after=): the first `limit` items, or (limit 0) all of them,
  // fetched 1,000 at a time. Answers the list's shape: {key: items, "next": ..., "total": N}.
  Result<Json> List(const std::string& path, const char* key, int64_t limit = 0) const {
    const char* sep = path.find('?') == std::string::npos ? "?" : "&";
    Json items = Json::array();
    Json next = nullptr;
    int64_t total = 0;
    std::string after;
    do {
      const int64_t want = limit > 0 ? std::min<int64_t>(limit - static_cast<int64_t>(items.size()), 1000) : 1000;
      std::string url = path + sep + "limit=" + std::to_string(want);
      if (!after.empty()) url += "&after=" + api::PercentEncode(after);
      UW_ASSIGN_OR_RETURN(Json page, Call("GET", url));
      if (!page.contains(key) || !page[key].is_array()) {
        return InternalError("the answer of GET " + path + " has no '" + key + "' list");
      }
      for (auto& item : page[key]) items.push_back(std::move(item));
      total = page.value("total", static_cast<int64_t>(items.size()));
      next = page.value("next", Json(nullptr));
      after = next.is_string() ? next.get<std::string>() : "";
    } while (!after.empty() && (limit == 0 || static_cast<int64_t>(items.size()) < limit));
    Json out = Json::object();
    out[key] = std::move(items);
    out["next"] = std::move(next);
    out["total"] = total;
    return out;
  }
  bool AsJson() const { return output == "json"; }
  void PrintJson(const uw::Json& j) const { *out << j.dump(2) << "\n"; }
};

// Polls a task until it is final, printing a progress line on stderr; returns the final task.
Result<Json> WaitTask(const Context& c, const std::string& id, int timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  std::string last;
  while (true) {
    UW_ASSIGN_OR_RETURN(Json t, c.Call("GET", "/api/v1/tasks/" + id));
    std::string state = t.value("state", "?");
    int pct = static_cast<int>(t.value("progress", 0.0) * 100);
    std::string bar(pct / 5, '#');
    bar.resize(20, '.');
    std::ostringstream line;
    line << id << " [" << bar << "] " << pct << "% " << state << ": " << t.value("message", "");
    if (line.str() != last) {
      // On a terminal one line is redrawn; in a log or a pipe each change is its own line.
      if (c.live_progress) {
        *c.err << "\r" << line.str() << "\033[K" << std::flush;
      } else {
        *c.err << line.str() << "\n";
      }
      last = line.str();
    }
    if (state == "succeeded" || state == "failed" || state == "cancelled") {
      if (c.live_progress) *c.err << "\n";  // end the redrawn line
      return t;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      if (c.live_progress) *c.err << "\n";
      return DeadlineExceededError("task " + id + " is still " + state + " after " + std::to_string(timeout_s) +
                                   " s; check later with: uwctl task show " + id);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// Prints a task answer; with --wait waits for it and maps its outcome to the exit code.
int TaskOutcome(const Context& c, const Json& task, bool wait, int timeout_s) {
  std::string id = task.value("id", "");
  if (!wait) {
    if (c.AsJson()) {
      c.PrintJson(task);
    } else {
      *c.out << "task " << id << " " << task.value("state", "?") << " (" << task.value("kind", "") << " "
             << task.value("subject", "") << "); follow with: uwctl task show " << id << " --wait\n";
    }
    return kOk;
  }
  auto done = WaitTask(c, id, timeout_s);
  if (!done.ok()) return c.Fail(done.status());
  if (c.AsJson()) {
    c.PrintJson(*done);
  } else {
    *c.out << "task " << id << " " << (*done)["state"].get<std::string>();
    if (!(*done)["error"].is_null()) *c.out << ": " << Str((*done)["error"]["message"]);
    *c.out << "\n";
  }
  if ((*done)["state"] == "succeeded") return kOk;
  if (!(*done)["error"].is_null()) {
    return std::max(kFailed, ExitCodeFor(Status(StatusCodeFromName(Str((*done)["error"]["code"])), "")));
  }
  return kFailed;
}

int PrintList(const Context& c, const Json& j, const std::string& key, const std::vector<std::string>& header,
              const std::function<std::vector<std::string>(const Json&)>& row) {
  if (c.AsJson()) {
    c.PrintJson(j);
    return kOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : j.value(key, Json::array())) rows.push_back(row(e));
  *c.out << FormatTable(header, rows);
  return kOk;
}

int PrintObject(const Context& c, const Json& j) {
  if (c.AsJson()) {
    c.PrintJson(j);
    return kOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (auto it = j.begin(); it != j.end(); ++it) rows.push_back({it.key(), Str(it.value())});
  *c.out << FormatTable({"FIELD", "VALUE"}, rows);
  return kOk;
}

}  // namespace

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
  Context c;
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
  bool wait = false;
  int timeout_s = 600;
  auto add_wait = [&](CLI::App* cmd) {
    cmd->add_flag("--wait", wait, "wait for the task to finish, showing progress");
    cmd->add_option("--timeout", timeout_s, "seconds to wait with --wait");
  };
  int rc = kOk;
  std::string name, id, file;

  // host
  auto* host = app.add_subcommand("host", "hosts of the cluster");
  host->require_subcommand(1);
  host->add_subcommand("list", "list hosts")->callback([&] {
    auto r = c.List("/api/v1/hosts", "hosts");
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    rc = PrintList(c, *r, "hosts", {"NAME", "STATE", "MAINT", "CPUS", "MEM_MIB", "RESERVED_MIB", "CPU_USED", "GUESTS"},
                   [](const Json& h) {
                     return std::vector<std::string>{Str(h["name"]),
                                                     Str(h["state"]),
                                                     Str(h["maintenance"]),
                                                     Str(h["capacity"]["cpu_cores"]),
                                                     Str(h["capacity"]["memory_mib"]),
                                                     Str(h["reserved"]["memory_mib"]),
                                                     Str(h["usage"]["cpu_cores"]),
                                                     Str(h["guests"])};
                   });
  });
  auto* host_show = host->add_subcommand("show", "show one host");
  host_show->add_option("name", name, "host name")->required();
  host_show->callback([&] {
    auto r = c.Call("GET", "/api/v1/hosts/" + name);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });
  auto* hgroups =
      host->add_subcommand("groups", "set a host's groups (which vm-host rules name); --clear empties them");
  std::vector<std::string> group_names;
  bool clear_groups = false;
  hgroups->add_option("name", name, "host name")->required();
  hgroups->add_option("groups", group_names, "group names (replace the current ones)");
  hgroups->add_flag("--clear", clear_groups, "remove every group");
  hgroups->callback([&] {
    if (group_names.empty() && !clear_groups) {
      auto r = c.Call("GET", "/api/v1/hosts/" + name);
      if (!r.ok()) return void(rc = c.Fail(r.status()));
      if (c.AsJson()) return void(c.PrintJson({{"name", (*r)["name"]}, {"groups", (*r)["groups"]}}));
      for (const auto& g : (*r)["groups"]) *c.out << Str(g) << "\n";
      return void(rc = kOk);
    }
    Json body = {{"groups", group_names}};
    auto r = c.Call("PUT", "/api/v1/hosts/" + name + "/groups", &body);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });
  auto* maint = host->add_subcommand("maintenance", "enter (on) or leave (off) maintenance mode");
  std::string on_off;
  maint->add_option("name", name, "host name")->required();
  maint->add_option("mode", on_off, "on | off")->required()->check(CLI::IsMember({"on", "off"}));
  maint->callback([&] {
    auto r = c.Call(on_off == "on" ? "POST" : "DELETE", "/api/v1/hosts/" + name + "/maintenance");
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });

  // guest
  auto* guest = app.add_subcommand("guest", "guests (virtual machines and containers)");
  guest->require_subcommand(1);
  auto* create = guest->add_subcommand("create", "create a guest (placed by the manager)");
  int64_t vcpus = 1, memory = 256;
  std::string image, kind = "qemu", tenant, pool, automation, on_crash;
  bool no_start = false, no_paravirt = false;
  create->add_option("name", name, "guest name")->required();
  create->add_option("--vcpus", vcpus, "virtual CPUs")->check(CLI::PositiveNumber);
  create->add_option("--memory", memory, "memory in MiB")->check(CLI::PositiveNumber);
  create->add_option("--image", image, "image name known to the agents (e.g. tiny)");
  create->add_option("--kind", kind, "kvm | qemu | lxc")->check(CLI::IsMember({"kvm", "qemu", "lxc"}));
  create->add_option("--tenant", tenant, "owner tenant (admins and operators)");
  create->add_option("--pool", pool, "resource pool");
  create->add_option("--automation", automation, "DRS override: default | manual | automatic | disabled");
  create->add_option("--on-crash", on_crash, "when it crashes: restart (default; 3 tries in 10 minutes) | keep | stop")
      ->check(CLI::IsMember({"restart", "keep", "stop"}));
  create->add_flag("--no-start", no_start, "define but do not start");
  create->add_flag("--no-paravirt", no_paravirt,
                   "emulated devices (SATA disk, e1000e NIC, no balloon) instead of virtio (VMs only)");
  add_wait(create);
  create->callback([&] {
    Json body = {{"name", name}, {"vcpus", vcpus}, {"memory_mib", memory}, {"kind", kind}};
    if (!image.empty()) body["image"] = image;
    if (!tenant.empty()) body["tenant"] = tenant;
    if (!pool.empty()) body["pool"] = pool;
    if (!automation.empty()) body["automation"] = automation;
    if (!on_crash.empty()) body["on_crash"] = on_crash;
    if (no_start) body["start"] = false;
    if (no_paravirt) body["paravirt"] = false;
    auto r = c.Call("POST", "/api/v1/guests", &body);
    rc = r.ok() ? TaskOutcome(c, *r, wait, timeout_s) : c.Fail(r.status());
  });
  guest->add_subcommand("list", "list guests")->callback([&] {
    auto r = c.List("/api/v1/guests", "guests");
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    rc = PrintList(c, *r, "guests", {"NAME", "KIND", "STATE", "HOST", "VCPUS", "MEM_MIB", "TENANT", "CPU_USED"},
                   [](const Json& g) {
                     // kvm/virtio, qemu/emulated (device model), lxc.
                     std::string kind = Str(g["kind"]);
                     if (g.value("devices", "container") != "container") kind += "/" + Str(g["devices"]);
                     return std::vector<std::string>{Str(g["name"]),   kind,
                                                     Str(g["state"]),  Str(g["host"]),
                                                     Str(g["vcpus"]),  Str(g["memory_mib"]),
                                                     Str(g["tenant"]), Str(g["usage"]["cpu_cores"])};
                   });
  });
  auto* gshow = guest->add_subcommand("show", "show a guest and why it is where it is");
  gshow->add_option("name", name, "guest name")->required();
  gshow->callback([&] {
    auto r = c.Call("GET", "/api/v1/guests/" + name);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });
  bool force = false;
  for (const char* op : {"start", "stop", "delete"}) {
    auto* cmd = guest->add_subcommand(op, std::string(op) + " a guest");
    cmd->add_option("name", name, "guest name")->required();
    if (std::string(op) == "delete") {
      cmd->add_flag("--force", force, "power a running guest off first (without it only a stopped guest is deleted)");
    }
    add_wait(cmd);
    cmd->callback([&, op = std::string(op)] {
      auto r = op == "delete" ? c.Call("DELETE", "/api/v1/guests/" + name + (force ? "?force=true" : ""))
                              : c.Call("POST", "/api/v1/guests/" + name + "/" + op);
      rc = r.ok() ? TaskOutcome(c, *r, wait, timeout_s) : c.Fail(r.status());
    });
  }
  auto* resize = guest->add_subcommand("resize", "change vCPUs or memory within the guest's reservation");
  int64_t new_vcpus = 0, new_memory = 0;
  resize->add_option("name", name, "guest name")->required();
  resize->add_option("--vcpus", new_vcpus, "virtual CPUs");
  resize->add_option("--memory", new_memory, "memory in MiB");
  add_wait(resize);
  resize->callback([&] {
    Json body = Json::object();
    if (new_vcpus > 0) body["vcpus"] = new_vcpus;
    if (new_memory > 0) body["memory_mib"] = new_memory;
    auto r = c.Call("POST", "/api/v1/guests/" + name + "/resize", &body);
    rc = r.ok() ? TaskOutcome(c, *r, wait, timeout_s) : c.Fail(r.status());
  });

  auto* migrate = guest->add_subcommand("migrate", "move a guest to another host (live; --cold for stop, move, start)");
  std::string to_host;
  bool cold = false;
  double bandwidth = 0;
  migrate->add_option("name", name, "guest name")->required();
  migrate->add_option("--to", to_host, "destination host")->required();
  migrate->add_flag("--cold", cold, "stop, move and start (containers, non-migratable guests)");
  migrate->add_option("--bandwidth", bandwidth, "starting bandwidth limit in MiB/s");
  add_wait(migrate);
  migrate->callback([&] {
    Json body = {{"host", to_host}, {"mode", cold ? "cold" : "live"}};
    if (bandwidth > 0) body["bandwidth_mib_s"] = bandwidth;
    auto r = c.Call("POST", "/api/v1/guests/" + name + "/migrate", &body);
    rc = r.ok() ? TaskOutcome(c, *r, wait, timeout_s) : c.Fail(r.status());
  });

  // migration
  auto* migration = app.add_subcommand("migration", "live migrations and their figures");
  migration->require_subcommand(1);
  auto* mlist = migration->add_subcommand("list", "recent migrations (phase, time, downtime)");
  std::string of_guest;
  mlist->add_option("--guest", of_guest, "only this guest's");
  int64_t list_limit = 100;
  mlist->add_option("--limit", list_limit, "newest N (0: all)")->check(CLI::NonNegativeNumber);
  mlist->callback([&] {
    auto r =
        c.List("/api/v1/migrations" + (of_guest.empty() ? std::string() : "?guest=" + api::PercentEncode(of_guest)),
               "migrations", list_limit);
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    rc = PrintList(c, *r, "migrations",
                   {"ID", "GUEST", "FROM", "TO", "MODE", "PHASE", "TOTAL MS", "DOWNTIME MS", "ERROR"},
                   [](const Json& m) {
                     return std::vector<std::string>{Str(m["id"]),
                                                     Str(m["guest"]),
                                                     Str(m["source"]),
                                                     Str(m["destination"]),
                                                     Str(m["mode"]),
                                                     Str(m["phase"]),
                                                     Str(m["stats"]["total_ms"]),
                                                     Str(m["stats"]["downtime_ms"]),
                                                     Str(m["error"])};
                   });
  });

  // task
  auto* task = app.add_subcommand("task", "long-running operations");
  task->require_subcommand(1);
  auto* tshow = task->add_subcommand("show", "show a task");
  tshow->add_option("id", id, "task id")->required();
  add_wait(tshow);
  tshow->callback([&] {
    auto r = c.Call("GET", "/api/v1/tasks/" + id);
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    rc = wait ? TaskOutcome(c, *r, true, timeout_s) : PrintObject(c, *r);
  });
  auto* tcancel = task->add_subcommand("cancel", "cancel a pending task, or abort a running migration");
  tcancel->add_option("id", id, "task id")->required();
  tcancel->callback([&] {
    auto r = c.Call("POST", "/api/v1/tasks/" + id + "/cancel");
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });
  auto* tlist = task->add_subcommand("list", "recent tasks, newest first");
  tlist->add_option("--limit", list_limit, "newest N (0: all)")->check(CLI::NonNegativeNumber);
  tlist->callback([&] {
    auto r = c.List("/api/v1/tasks", "tasks", list_limit);
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    rc = PrintList(c, *r, "tasks", {"ID", "KIND", "SUBJECT", "STATE", "PROGRESS", "ERROR"}, [](const Json& t) {
      return std::vector<std::string>{Str(t["id"]),       Str(t["kind"]),
                                      Str(t["subject"]),  Str(t["state"]),
                                      Str(t["progress"]), t["error"].is_null() ? "-" : Str(t["error"]["message"])};
    });
  });

  // drs
  auto* drs = app.add_subcommand("drs", "distributed resource scheduling");
  drs->require_subcommand(1);
  drs->add_subcommand("recommendations", "pending recommendations with reasons")->callback([&] {
    auto r = c.List("/api/v1/drs/recommendations", "recommendations");
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    rc = PrintList(
        c, *r, "recommendations", {"ID", "GUEST", "FROM", "TO", "PRIO", "IMBALANCE", "REASON"}, [](const Json& m) {
          return std::vector<std::string>{
              Str(m["id"]),    Str(m["guest"]),    Str(m["from"]),
              Str(m["to"]),    Str(m["priority"]), Str(m["imbalance_before"]) + " -> " + Str(m["imbalance_after"]),
              Str(m["reason"])};
        });
  });
  auto* apply = drs->add_subcommand("apply", "apply one recommendation (ID) or all (--all)");
  bool all = false;
  apply->add_option("id", id, "recommendation id");
  apply->add_flag("--all", all, "apply every pending recommendation");
  add_wait(apply);
  apply->callback([&] {
    if (!all && id.empty()) return void(rc = c.Fail(InvalidArgumentError("give a recommendation id or --all")));
    if (!all) {
      auto r = c.Call("POST", "/api/v1/drs/recommendations/" + id + "/apply");
      return void(rc = r.ok() ? TaskOutcome(c, *r, wait, timeout_s) : c.Fail(r.status()));
    }
    auto r = c.Call("POST", "/api/v1/drs/apply");
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    if (!wait) return void(rc = PrintObject(c, *r));
    // One after another as the manager runs them (dependencies first); the worst outcome wins.
    rc = kOk;
    for (const auto& t : (*r)["tasks"]) rc = std::max(rc, TaskOutcome(c, t, true, timeout_s));
    for (const auto& u : (*r)["unschedulable"])
      *c.err << "not started: " << Str(u["guest"]) << ": " << Str(u["reason"]) << "\n";
  });
  auto* config = drs->add_subcommand("config", "show or change DRS settings");
  std::string set_automation;
  int threshold = 0;
  std::string allow_cold;
  config
      ->add_option("--allow-cold-moves", allow_cold,
                   "true: maintenance may stop, move and start containers and non-migratable guests")
      ->check(CLI::IsMember({"true", "false"}));
  config->add_option("--automation", set_automation, "manual | automatic")
      ->check(CLI::IsMember({"manual", "automatic"}));
  config->add_option("--threshold", threshold, "1 (mandatory only) .. 5 (every gain)")->check(CLI::Range(1, 5));
  double cooldown = -1;
  config
      ->add_option("--min-move-interval", cooldown,
                   "cooldown in seconds: a guest that moved more recently is not moved again for balance")
      ->check(CLI::Range(0.0, 2592000.0));
  config->callback([&] {
    Result<Json> r = Json();
    if (set_automation.empty() && threshold == 0 && allow_cold.empty() && cooldown < 0) {
      r = c.Call("GET", "/api/v1/drs/config");
    } else {
      Json body = Json::object();
      if (!set_automation.empty()) body["automation"] = set_automation;
      if (threshold) body["threshold"] = threshold;
      if (!allow_cold.empty()) body["allow_cold_moves"] = allow_cold == "true";
      if (cooldown >= 0) body["min_move_interval_s"] = cooldown;
      r = c.Call("PUT", "/api/v1/drs/config", &body);
    }
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });
  auto* plan = drs->add_subcommand("plan", "dry-run plan on the live cluster, or offline on --snapshot FILE");
  plan->add_option("--snapshot", file, "snapshot file (uwctl cluster snapshot > FILE); no manager needed");
  std::string policy = "drs";
  plan->add_option(
      "--policy", policy, "policy for --snapshot: " + [] {
        std::string names;
        for (const auto& n : placement::PolicyNames()) names += (names.empty() ? "" : ", ") + n;
        return names;
      }());
  plan->callback([&] {
    Result<Json> r = Json();
    if (!file.empty()) {
      auto snap = LoadJsonFile(file);
      if (!snap.ok()) return void(rc = c.Fail(snap.status()));
      auto parsed = placement::ParseSnapshot(*snap);
      if (!parsed.ok()) return void(rc = c.Fail(parsed.status().WithContext(file)));
      auto p = placement::MakePlan(*parsed, policy);
      if (!p.ok()) return void(rc = c.Fail(p.status()));
      r = placement::PlanToJson(*p);
    } else {
      Json body = Json::object();
      r = c.Call("POST", "/api/v1/drs/plan", &body);
    }
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    if (c.AsJson()) return void(c.PrintJson(*r));
    const Json& p = *r;
    *c.out << "imbalance " << Str(p["before"]["imbalance"]) << " -> " << Str(p["after"]["imbalance"]) << ", "
           << p["moves"].size() << " moves, " << p["placements"].size() << " placements\n";
    std::vector<std::vector<std::string>> rows;
    for (const auto& m : p["moves"]) {
      rows.push_back(
          {"move", Str(m["vm"]), Str(m["from"]) + " -> " + Str(m["to"]), Str(m["priority"]), Str(m["reason"])});
    }
    for (const auto& m : p["placements"])
      rows.push_back({"place", Str(m["vm"]), Str(m["host"]), "-", Str(m["reason"])});
    for (const auto& m : p.value("unplaced", Json::array()))
      rows.push_back({"unplaced", Str(m["vm"]), "-", "-", Str(m["reason"])});
    *c.out << FormatTable({"ACTION", "GUEST", "WHERE", "PRIO", "REASON"}, rows);
  });

  // pool
  auto* pool_cmd = app.add_subcommand("pool", "resource pools (reservations, limits, shares)");
  pool_cmd->require_subcommand(1);
  auto* pcreate = pool_cmd->add_subcommand("create", "create a resource pool");
  std::string parent;
  double cpu_res = -1, cpu_limit = -1, mem_res = -1, mem_limit = -1;
  int64_t cpu_shares = 0, mem_shares = 0;
  bool fixed = false;
  pcreate->add_option("name", name, "pool name")->required();
  pcreate->add_option("--parent", parent, "parent pool (default: the cluster root)");
  pcreate->add_option("--cpu-reservation", cpu_res, "CPU cores reserved for the pool")->check(CLI::NonNegativeNumber);
  pcreate->add_option("--cpu-limit", cpu_limit, "CPU cores its guests may have (vCPUs) and use")
      ->check(CLI::NonNegativeNumber);
  pcreate->add_option("--cpu-shares", cpu_shares, "CPU shares (normal 4000)")->check(CLI::PositiveNumber);
  pcreate->add_option("--memory-reservation", mem_res, "memory reserved for the pool, MiB")
      ->check(CLI::NonNegativeNumber);
  pcreate->add_option("--memory-limit", mem_limit, "memory its guests may have, MiB")->check(CLI::NonNegativeNumber);
  pcreate->add_option("--memory-shares", mem_shares, "memory shares (normal 4000)")->check(CLI::PositiveNumber);
  pcreate->add_flag("--fixed", fixed, "not expandable: may not borrow reservation from its parent");
  pcreate->callback([&] {
    Json body = {{"name", name}};
    if (!parent.empty()) body["parent"] = parent;
    Json cpu = Json::object(), mem = Json::object();
    if (cpu_res >= 0) cpu["reservation_cores"] = cpu_res;
    if (cpu_limit >= 0) cpu["limit_cores"] = cpu_limit;
    if (cpu_shares > 0) cpu["shares"] = cpu_shares;
    if (mem_res >= 0) mem["reservation_mib"] = mem_res;
    if (mem_limit >= 0) mem["limit_mib"] = mem_limit;
    if (mem_shares > 0) mem["shares"] = mem_shares;
    if (!cpu.empty()) body["cpu"] = cpu;
    if (!mem.empty()) body["memory"] = mem;
    if (fixed) body["expandable"] = false;
    auto r = c.Call("POST", "/api/v1/pools", &body);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });
  pool_cmd->add_subcommand("list", "list resource pools")->callback([&] {
    auto r = c.List("/api/v1/pools", "pools");
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    rc = PrintList(
        c, *r, "pools",
        {"NAME", "PARENT", "CPU_RES", "CPU_LIMIT", "CPU_SHARES", "MEM_RES_MIB", "MEM_LIMIT_MIB", "MEM_SHARES"},
        [](const Json& p) {
          const Json cpu = p.value("cpu", Json::object()), mem = p.value("memory", Json::object());
          return std::vector<std::string>{Str(p["name"]),
                                          Str(p.value("parent", Json(nullptr))),
                                          Str(cpu.value("reservation_cores", Json(0))),
                                          Str(cpu.value("limit_cores", Json(nullptr))),
                                          Str(cpu.value("shares", Json(nullptr))),
                                          Str(mem.value("reservation_mib", Json(0))),
                                          Str(mem.value("limit_mib", Json(nullptr))),
                                          Str(mem.value("shares", Json(nullptr)))};
        });
  });
  auto* pshow = pool_cmd->add_subcommand("show", "show a resource pool and its guests");
  pshow->add_option("name", name, "pool name")->required();
  pshow->callback([&] {
    auto r = c.Call("GET", "/api/v1/pools/" + name);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });
  auto* pdelete = pool_cmd->add_subcommand("delete", "delete an empty resource pool");
  pdelete->add_option("name", name, "pool name")->required();
  pdelete->callback([&] {
    auto r = c.Call("DELETE", "/api/v1/pools/" + name);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });

  // rule
  auto* rule = app.add_subcommand("rule", "placement rules (affinity, anti-affinity, guest to host)");
  rule->require_subcommand(1);
  auto* rcreate = rule->add_subcommand("create", "create a rule; it may name guests that do not exist yet");
  std::string rule_type, mode;
  std::vector<std::string> rule_vms, rule_hosts, rule_groups;
  bool soft = false;
  rcreate->add_option("name", name, "rule name")->required();
  rcreate->add_option("--type", rule_type, "vm-affinity | vm-anti-affinity | vm-host")
      ->required()
      ->check(CLI::IsMember({"vm-affinity", "vm-anti-affinity", "vm-host"}));
  rcreate->add_option("--vms", rule_vms, "guests (comma-separated)")->required()->delimiter(',');
  rcreate->add_option("--hosts", rule_hosts, "vm-host: hosts (comma-separated)")->delimiter(',');
  rcreate->add_option("--groups", rule_groups, "vm-host: host groups (comma-separated)")->delimiter(',');
  rcreate->add_option("--mode", mode, "vm-host: must | should | must-not | should-not")
      ->check(CLI::IsMember({"must", "should", "must-not", "should-not"}));
  rcreate->add_flag("--soft", soft, "vm-vm: preferred, not required");
  rcreate->callback([&] {
    Json body = {{"name", name}, {"type", rule_type}, {"vms", rule_vms}};
    if (rule_type == "vm-host") {
      body["mode"] = mode.empty() ? "must" : mode;
      if (!rule_hosts.empty()) body["hosts"] = rule_hosts;
      if (!rule_groups.empty()) body["groups"] = rule_groups;
    } else {
      if (!mode.empty() || !rule_hosts.empty() || !rule_groups.empty()) {
        return void(rc = c.Fail(InvalidArgumentError("--mode, --hosts and --groups are for --type vm-host")));
      }
      body["required"] = !soft;
    }
    auto r = c.Call("POST", "/api/v1/rules", &body);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });
  rule->add_subcommand("list", "list rules")->callback([&] {
    auto r = c.List("/api/v1/rules", "rules");
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    rc = PrintList(c, *r, "rules", {"NAME", "TYPE", "GUESTS", "HOSTS", "MODE"}, [](const Json& x) {
      auto join = [](const Json& a) {
        std::string s;
        for (const auto& e : a) s += (s.empty() ? "" : ",") + Str(e);
        return s.empty() ? std::string("-") : s;
      };
      std::string hosts = join(x.value("hosts", Json::array()));
      for (const auto& g : x.value("groups", Json::array())) hosts += (hosts == "-" ? "" : ",") + ("group:" + Str(g));
      const bool vm_host = x.value("type", "") == "vm-host";
      return std::vector<std::string>{
          Str(x["name"]), Str(x["type"]), join(x.value("vms", Json::array())), vm_host ? hosts : "-",
          vm_host ? Str(x.value("mode", Json(nullptr))) : (x.value("required", true) ? "required" : "preferred")};
    });
  });
  auto* rshow = rule->add_subcommand("show", "show a rule (pending_guests: named, not created yet)");
  rshow->add_option("name", name, "rule name")->required();
  rshow->callback([&] {
    auto r = c.Call("GET", "/api/v1/rules/" + name);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });
  auto* rdelete = rule->add_subcommand("delete", "delete a rule");
  rdelete->add_option("name", name, "rule name")->required();
  rdelete->callback([&] {
    auto r = c.Call("DELETE", "/api/v1/rules/" + name);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });

  // cluster, events, tokens
  auto* cluster = app.add_subcommand("cluster", "the cluster as a whole");
  cluster->require_subcommand(1);
  cluster->add_subcommand("snapshot", "print the placement snapshot (JSON) of the live cluster")->callback([&] {
    auto r = c.Call("GET", "/api/v1/cluster/snapshot");
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    *c.out << r->dump(2) << "\n";
  });
  auto* events = app.add_subcommand("events", "print events (SSE); --follow keeps streaming");
  bool follow = false;
  int64_t since = 0;
  events->add_flag("--follow,-f", follow, "keep streaming new events");
  events->add_option("--since", since, "start after this event sequence number");
  events->callback([&] {
    std::string buf;
    Status s =
        c.Client().Stream("GET", "/api/v1/events?since=" + std::to_string(since) + (follow ? "" : "&follow=false"),
                          [&](std::string_view d) {
                            buf += d;
                            size_t pos;
                            while ((pos = buf.find("\n\n")) != std::string::npos) {
                              std::string frame = buf.substr(0, pos);
                              buf.erase(0, pos + 2);
                              size_t data = frame.find("data: ");
                              if (data == std::string::npos) continue;
                              auto parsed = ParseJson(frame.substr(data + 6), "event");  // within JsonLimits
                              if (!parsed.ok()) continue;
                              Json e = std::move(parsed).value();
                              if (c.AsJson()) {
                                *c.out << e.dump() << "\n";
                              } else {
                                *c.out << Str(e["seq"]) << "  " << Str(e["at"]) << "  " << Str(e["type"]) << "  "
                                       << Str(e["subject"]) << "  " << e["data"].dump() << "\n";
                              }
                              c.out->flush();
                            }
                            return true;
                          });
    if (!s.ok()) rc = c.Fail(s);
  });
  auto* token = app.add_subcommand("token", "API tokens (admin)");
  token->require_subcommand(1);
  auto* tcreate = token->add_subcommand("create", "create a token; the secret is printed once");
  std::string role;
  tcreate->add_option("name", name, "token name")->required();
  tcreate->add_option("--role", role, "admin | operator | read-only | tenant | billing-reader")->required();
  tcreate->add_option("--tenant", tenant, "tenant (for --role tenant)");
  std::vector<std::string> rights;
  tcreate->add_option(
      "--right", rights,
      "grant a guest spec right (repeatable): host_paths, bridges, vlans, cpu_tuning, pools, automation");
  tcreate->callback([&] {
    Json body = {{"name", name}, {"role", role}};
    if (!tenant.empty()) body["tenant"] = tenant;
    if (!rights.empty()) body["rights"] = rights;
    auto r = c.Call("POST", "/api/v1/tokens", &body);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });
  token->add_subcommand("list", "list tokens")->callback([&] {
    auto r = c.List("/api/v1/tokens", "tokens");
    if (!r.ok()) return void(rc = c.Fail(r.status()));
    rc = PrintList(c, *r, "tokens", {"ID", "NAME", "ROLE", "TENANT", "RIGHTS", "CREATED"}, [](const Json& t) {
      std::string rights;
      for (const auto& x : t.value("rights", Json::array())) rights += (rights.empty() ? "" : ",") + Str(x);
      return std::vector<std::string>{
          Str(t["id"]),     Str(t["name"]), Str(t["role"]), Str(t["tenant"]), rights.empty() ? "-" : rights,
          Str(t["created"])};
    });
  });
  auto* tdelete = token->add_subcommand("delete", "revoke a token");
  tdelete->add_option("id", id, "token id")->required();
  tdelete->callback([&] {
    auto r = c.Call("DELETE", "/api/v1/tokens/" + id);
    rc = r.ok() ? PrintObject(c, *r) : c.Fail(r.status());
  });

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
  return rc;
}

}  // namespace uw::cli
