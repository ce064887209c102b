// uwctl rule: create, list, show, delete placement rules (affinity, anti-affinity, guest to host).
#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace uw::cli {
namespace {

struct RuleArgs {
  std::string name;
  std::string rule_type, mode;
  std::vector<std::string> rule_vms, rule_hosts, rule_groups;
  bool soft = false;
};

void AddRuleCreate(CLI::App* rule, Invocation& inv, RuleArgs& a) {
  auto* rcreate = rule->add_subcommand("create", "create a rule; it may name guests that do not exist yet");
  rcreate->add_option("name", a.name, "rule name")->required();
  rcreate->add_option("--type", a.rule_type, "vm-affinity | vm-anti-affinity | vm-host")
      ->required()
      ->check(CLI::IsMember({"vm-affinity", "vm-anti-affinity", "vm-host"}));
  rcreate->add_option("--vms", a.rule_vms, "guests (comma-separated)")->required()->delimiter(',');
  rcreate->add_option("--hosts", a.rule_hosts, "vm-host: hosts (comma-separated)")->delimiter(',');
  rcreate->add_option("--groups", a.rule_groups, "vm-host: host groups (comma-separated)")->delimiter(',');
  rcreate->add_option("--mode", a.mode, "vm-host: must | should | must-not | should-not")
      ->check(CLI::IsMember({"must", "should", "must-not", "should-not"}));
  rcreate->add_flag("--soft", a.soft, "vm-vm: preferred, not required");
  rcreate->callback([&inv, &a] {
    Json body = {{"name", a.name}, {"type", a.rule_type}, {"vms", a.rule_vms}};
    if (a.rule_type == "vm-host") {
      body["mode"] = a.mode.empty() ? "must" : a.mode;
      if (!a.rule_hosts.empty()) body["hosts"] = a.rule_hosts;
      if (!a.rule_groups.empty()) body["groups"] = a.rule_groups;
    } else {
      if (!a.mode.empty() || !a.rule_hosts.empty() || !a.rule_groups.empty()) {
        return void(inv.rc = inv.c.Fail(InvalidArgumentError("--mode, --hosts and --groups are for --type vm-host")));
      }
      body["required"] = !a.soft;
    }
    Answer(inv, inv.c.Call("POST", "/api/v1/rules", &body));
  });
}

void AddRuleList(CLI::App* rule, Invocation& inv) {
  rule->add_subcommand("list", "list rules")->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/rules", "rules"), "rules", {"NAME", "TYPE", "GUESTS", "HOSTS", "MODE"},
               [](const Json& x) {
                 auto join = [](const Json& a) {
                   std::string s;
                   for (const auto& e : a) s += (s.empty() ? "" : ",") + Str(e);
                   return s.empty() ? std::string("-") : s;
                 };
                 std::string hosts = join(x.value("hosts", Json::array()));
                 for (const auto& g : x.value("groups", Json::array()))
                   hosts += (hosts == "-" ? "" : ",") + ("group:" + Str(g));
                 const bool vm_host = x.value("type", "") == "vm-host";
                 return std::vector<std::string>{Str(x["name"]), Str(x["type"]), join(x.value("vms", Json::array())),
                                                 vm_host ? hosts : "-",
                                                 vm_host ? Str(x.value("mode", Json(nullptr)))
                                                         : (x.value("required", true) ? "required" : "preferred")};
               });
  });
}

}  // namespace

void AddRuleCommands(CLI::App& app, Invocation& inv) {
  RuleArgs& a = inv.Own<RuleArgs>();
  auto* rule = app.add_subcommand("rule", "placement rules (affinity, anti-affinity, guest to host)");
  rule->require_subcommand(1);
  AddRuleCreate(rule, inv, a);
  AddRuleList(rule, inv);
  AddObjectCall(
      rule, inv,
      {"show", "show a rule (pending_guests: named, not created yet)", "name", "rule name", "GET", "/api/v1/rules/"},
      a.name);
  AddObjectCall(rule, inv, {"delete", "delete a rule", "name", "rule name", "DELETE", "/api/v1/rules/"}, a.name);
}

}  // namespace uw::cli
