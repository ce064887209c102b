// uwctl cluster snapshot, uwctl events (the SSE event stream) and uwctl token (API tokens).
#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace uw::cli {
namespace {

struct EventsArgs {
  bool follow = false;
  int64_t since = 0;
};

struct TokenArgs {
  std::string name, id, role, tenant;
  std::vector<std::string> rights;
};

// Prints the complete SSE frames at the front of `buf` (one line per event) and drops them.
void PrintEventFrames(const Context& c, std::string& buf) {
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
      *c.out << Str(e["seq"]) << "  " << Str(e["at"]) << "  " << Str(e["type"]) << "  " << Str(e["subject"]) << "  "
             << e["data"].dump() << "\n";
    }
    c.out->flush();
  }
}

}  // namespace

void AddClusterCommands(CLI::App& app, Invocation& inv) {
  auto* cluster = app.add_subcommand("cluster", "the cluster as a whole");
  cluster->require_subcommand(1);
  cluster->add_subcommand("snapshot", "print the placement snapshot (JSON) of the live cluster")->callback([&inv] {
    auto r = inv.c.Call("GET", "/api/v1/cluster/snapshot");
    if (!r.ok()) return void(inv.rc = inv.c.Fail(r.status()));
    *inv.c.out << r->dump(2) << "\n";
  });
}

void AddEventsCommand(CLI::App& app, Invocation& inv) {
  EventsArgs& a = inv.Own<EventsArgs>();
  auto* events = app.add_subcommand("events", "print events (SSE); --follow keeps streaming");
  events->add_flag("--follow,-f", a.follow, "keep streaming new events");
  events->add_option("--since", a.since, "start after this event sequence number");
  events->callback([&inv, &a] {
    std::string buf;
    Status s = inv.c.Client().Stream(
        "GET", "/api/v1/events?since=" + std::to_string(a.since) + (a.follow ? "" : "&follow=false"),
        [&](std::string_view d) {
          buf += d;
          PrintEventFrames(inv.c, buf);
          return true;
        });
    if (!s.ok()) inv.rc = inv.c.Fail(s);
  });
}

void AddTokenCommands(CLI::App& app, Invocation& inv) {
  TokenArgs& a = inv.Own<TokenArgs>();
  auto* token = app.add_subcommand("token", "API tokens (admin)");
  token->require_subcommand(1);
  auto* tcreate = token->add_subcommand("create", "create a token; the secret is printed once");
  tcreate->add_option("name", a.name, "token name")->required();
  tcreate->add_option("--role", a.role, "admin | operator | read-only | tenant | billing-reader")->required();
  tcreate->add_option("--tenant", a.tenant, "tenant (for --role tenant)");
  tcreate->add_option(
      "--right", a.rights,
      "grant a guest spec right (repeatable): host_paths, bridges, vlans, cpu_tuning, pools, automation, rbd_images");
  tcreate->callback([&inv, &a] {
    Json body = {{"name", a.name}, {"role", a.role}};
    if (!a.tenant.empty()) body["tenant"] = a.tenant;
    if (!a.rights.empty()) body["rights"] = a.rights;
    Answer(inv, inv.c.Call("POST", "/api/v1/tokens", &body));
  });
  token->add_subcommand("list", "list tokens")->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/tokens", "tokens"), "tokens",
               {"ID", "NAME", "ROLE", "TENANT", "RIGHTS", "CREATED"}, [](const Json& t) {
                 std::string rights;
                 for (const auto& x : t.value("rights", Json::array())) rights += (rights.empty() ? "" : ",") + Str(x);
                 return std::vector<std::string>{
                     Str(t["id"]),     Str(t["name"]), Str(t["role"]), Str(t["tenant"]), rights.empty() ? "-" : rights,
                     Str(t["created"])};
               });
  });
  AddObjectCall(token, inv, {"delete", "revoke a token", "id", "token id", "DELETE", "/api/v1/tokens/"}, a.id);
}

}  // namespace uw::cli
