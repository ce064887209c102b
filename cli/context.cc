// The state uwctl's commands share (Context, Invocation) and how they print: cells, tables of
// lists, objects, and tasks followed to their end with --wait.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <sstream>
#include <thread>

#include "api/request_parser.h"
#include "cli/commands.h"

namespace uw::cli {
namespace {

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

}  // namespace

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

Result<Json> Context::WaitTask(const std::string& id, int timeout_s) const {
  const Context& c = *this;
  const Duration deadline = clock->Monotonic() + std::chrono::seconds(timeout_s);
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
    if (clock->Monotonic() >= deadline) {
      if (c.live_progress) *c.err << "\n";
      return DeadlineExceededError("task " + id + " is still " + state + " after " + std::to_string(timeout_s) +
                                   " s; check later with: uwctl task show " + id);
    }
    sleep(std::chrono::milliseconds(200));
  }
}

int Context::Fail(const Status& s) const {
  *err << "uwctl: " << s.ToString() << "\n";
  std::string hint = HintFor(s);
  if (!hint.empty()) *err << "hint: " << hint << "\n";
  return ExitCodeFor(s);
}

Result<Json> Context::List(const std::string& path, const char* key, int64_t limit) const {
  const char* sep = path.find('?') == std::string::npos ? "?" : "&";
  Json items = Json::array();
  Json next = nullptr;
  int64_t total = 0;
  std::string after;
  do {
    const int64_t want = limit > 0 ? std::min<int64_t>(limit - static_cast<int64_t>(items.size()), 1000) : 1000;
    std::string page_url = path + sep + "limit=" + std::to_string(want);
    if (!after.empty()) page_url += "&after=" + api::PercentEncode(after);
    UW_ASSIGN_OR_RETURN(Json page, Call("GET", page_url));
    if (!page.contains(key) || !page[key].is_array()) {
      return InternalError("the answer of GET " + path + " has no '" + key + "' list");
    }
    for (auto& item : page[key]) items.push_back(std::move(item));
    // The first page's total (a usage listing counts on its first page only).
    if (page.contains("total") && page["total"].is_number_integer()) {
      if (after.empty()) total = page["total"].get<int64_t>();
    } else if (!page.contains("total")) {
      total = static_cast<int64_t>(items.size());
    }
    next = page.value("next", Json(nullptr));
    after = next.is_string() ? next.get<std::string>() : "";
  } while (!after.empty() && (limit == 0 || static_cast<int64_t>(items.size()) < limit));
  Json out = Json::object();
  out[key] = std::move(items);
  out["next"] = std::move(next);
  out["total"] = total;
  return out;
}

void Invocation::AddWait(CLI::App* cmd) {
  cmd->add_flag("--wait", wait, "wait for the task to finish, showing progress");
  cmd->add_option("--timeout", timeout_s, "seconds to wait with --wait");
}

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
  auto done = c.WaitTask(id, timeout_s);
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

void Answer(Invocation& inv, const Result<Json>& r) {
  inv.rc = r.ok() ? PrintObject(inv.c, *r) : inv.c.Fail(r.status());
}

void AnswerList(Invocation& inv, const Result<Json>& r, const std::string& key, const std::vector<std::string>& header,
                const std::function<std::vector<std::string>(const Json&)>& row) {
  inv.rc = r.ok() ? PrintList(inv.c, *r, key, header, row) : inv.c.Fail(r.status());
}

void AnswerTask(Invocation& inv, const Result<Json>& r) {
  inv.rc = r.ok() ? TaskOutcome(inv.c, *r, inv.wait, inv.timeout_s) : inv.c.Fail(r.status());
}

void AddObjectCall(CLI::App* parent, Invocation& inv, const ObjectCall& call, std::string& arg) {
  auto* cmd = parent->add_subcommand(call.name, call.description);
  cmd->add_option(call.arg, arg, call.arg_help)->required();
  cmd->callback([&inv, &arg, method = std::string(call.method), path = std::string(call.path)] {
    Answer(inv, inv.c.Call(method, path + api::PercentEncode(arg)));
  });
}

}  // namespace uw::cli
