// uwctl host: list, show, groups, maintenance, reclaim.
#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace uw::cli {
namespace {

struct HostArgs {
  std::string name;
  std::vector<std::string> group_names;
  bool clear_groups = false;
  std::string on_off;
  // reclaim
  int64_t vcpus = 0, memory_mib = 0, notice_s = 30;
  std::string reason, policy;
};

void AddHostReclaim(CLI::App* host, Invocation& inv, HostArgs& a) {
  auto* reclaim = host->add_subcommand(
      "reclaim", "take vCPUs and/or memory back from a host's guests: the broker picks the leases, each gets a notice");
  reclaim->add_option("name", a.name, "host name")->required();
  reclaim->add_option("--vcpus", a.vcpus, "vCPUs to take back")->check(CLI::NonNegativeNumber);
  reclaim->add_option("--memory-mib", a.memory_mib, "memory to take back, in MiB")->check(CLI::NonNegativeNumber);
  reclaim->add_option("--notice-s", a.notice_s, "the guests' notice in seconds (default 30)")
      ->check(CLI::NonNegativeNumber);
  reclaim->add_option("--reason", a.reason, "why (shown to the guests)");
  reclaim->add_option("--policy", a.policy, "strict-priority (default) | proportional | market (lowest bid first)")
      ->check(CLI::IsMember({"strict-priority", "proportional", "market"}));
  reclaim->callback([&inv, &a] {
    if (a.vcpus == 0 && a.memory_mib == 0) {
      return void(inv.rc = inv.c.Fail(InvalidArgumentError("give --vcpus and/or --memory-mib")));
    }
    Json body = {{"notice_s", a.notice_s}};
    if (a.vcpus > 0) body["vcpus"] = a.vcpus;
    if (a.memory_mib > 0) body["memory_mib"] = a.memory_mib;
    if (!a.reason.empty()) body["reason"] = a.reason;
    if (!a.policy.empty()) body["policy"] = a.policy;
    Answer(inv, inv.c.Call("POST", "/api/v1/hosts/" + a.name + "/reclaim", &body));
  });
}

void AddHostGroups(CLI::App* host, Invocation& inv, HostArgs& a) {
  auto* hgroups =
      host->add_subcommand("groups", "set a host's groups (which vm-host rules name); --clear empties them");
  hgroups->add_option("name", a.name, "host name")->required();
  hgroups->add_option("groups", a.group_names, "group names (replace the current ones)");
  hgroups->add_flag("--clear", a.clear_groups, "remove every group");
  hgroups->callback([&inv, &a] {
    const Context& c = inv.c;
    if (a.group_names.empty() && !a.clear_groups) {
      auto r = c.Call("GET", "/api/v1/hosts/" + a.name);
      if (!r.ok()) return void(inv.rc = c.Fail(r.status()));
      if (c.AsJson()) return void(c.PrintJson({{"name", (*r)["name"]}, {"groups", (*r)["groups"]}}));
      for (const auto& g : (*r)["groups"]) *c.out << Str(g) << "\n";
      return void(inv.rc = kOk);
    }
    Json body = {{"groups", a.group_names}};
    Answer(inv, c.Call("PUT", "/api/v1/hosts/" + a.name + "/groups", &body));
  });
}

}  // namespace

void AddHostCommands(CLI::App& app, Invocation& inv) {
  HostArgs& a = inv.Own<HostArgs>();
  auto* host = app.add_subcommand("host", "hosts of the cluster");
  host->require_subcommand(1);
  host->add_subcommand("list", "list hosts")->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/hosts", "hosts"), "hosts",
               {"NAME", "STATE", "MAINT", "CPUS", "MEM_MIB", "RESERVED_MIB", "CPU_USED", "GUESTS"}, [](const Json& h) {
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
  AddObjectCall(host, inv, {"show", "show one host", "name", "host name", "GET", "/api/v1/hosts/"}, a.name);
  AddHostGroups(host, inv, a);
  AddHostReclaim(host, inv, a);
  auto* maint = host->add_subcommand("maintenance", "enter (on) or leave (off) maintenance mode");
  maint->add_option("name", a.name, "host name")->required();
  maint->add_option("mode", a.on_off, "on | off")->required()->check(CLI::IsMember({"on", "off"}));
  maint->callback([&inv, &a] {
    Answer(inv, inv.c.Call(a.on_off == "on" ? "POST" : "DELETE", "/api/v1/hosts/" + a.name + "/maintenance"));
  });
}

}  // namespace uw::cli
