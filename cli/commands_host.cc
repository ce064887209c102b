// uwctl host: list, show, groups, maintenance, reclaim, power, power-driver.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

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
  // power
  std::string action;
  std::string driver, address, username, password_file, url, ca_cert_file, system, mac, broadcast;
  int64_t port = 0, cipher_suite = 3, timeout_ms = 15000;
  std::vector<std::string> status_command, on_command, off_command, cycle_command;
};

// The secret of --password-file (its first line; "-": standard input). Never an argument: a
// command line is visible to every user of the machine.
Result<std::string> ReadSecret(const std::string& file) {
  std::string line;
  if (file == "-") {
    std::getline(std::cin, line);
  } else {
    std::ifstream in(file);
    if (!in) return InvalidArgumentError("--password-file: cannot read " + file);
    std::getline(in, line);
  }
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

void AddHostPower(CLI::App* host, Invocation& inv, HostArgs& a) {
  auto* power = host->add_subcommand("power", "power a host on, off (into standby) or cycle it, or ask its BMC");
  power->add_option("action", a.action, "on | off | cycle | status")
      ->required()
      ->check(CLI::IsMember({"on", "off", "cycle", "status"}));
  power->add_option("name", a.name, "host name")->required();
  power->callback([&inv, &a] {
    if (a.action == "status") return Answer(inv, inv.c.Call("GET", "/api/v1/hosts/" + a.name + "/power"));
    Json body = {{"action", a.action}};
    Answer(inv, inv.c.Call("POST", "/api/v1/hosts/" + a.name + "/power", &body));
  });

  auto* pd = host->add_subcommand("power-driver", "a host's power driver (admins): set, delete");
  pd->require_subcommand(1);
  auto* set = pd->add_subcommand("set", "set how the manager powers the host on and off");
  set->add_option("name", a.name, "host name")->required();
  set->add_option("--driver", a.driver, "ipmi | redfish | wol | exec")
      ->required()
      ->check(CLI::IsMember({"ipmi", "redfish", "wol", "exec"}));
  set->add_option("--address", a.address, "ipmi: the BMC's address");
  set->add_option("--port", a.port, "ipmi: the BMC's UDP port (default 623); wol: the packet's UDP port (default 9)");
  set->add_option("--username", a.username, "ipmi, redfish: the BMC user");
  set->add_option("--url", a.url, "redfish: the BMC's base URL, https://ADDRESS[:PORT]");
  set->add_option("--ca-cert-file", a.ca_cert_file,
                  "redfish: PEM file of the certificate(s) the BMC's must chain to (default: the system's CAs)");
  set->add_option("--system", a.system, "redfish: the host's ComputerSystem path when the BMC has several");
  set->add_option("--mac", a.mac, "wol: the host NIC's MAC address");
  set->add_option("--broadcast", a.broadcast, "wol: where the magic packet goes (default 255.255.255.255)");
  set->add_option("--cipher-suite", a.cipher_suite, "ipmi: IPMI 2.0 cipher suite (default 3)");
  set->add_option("--password-file", a.password_file,
                  "the BMC password (exec: UW_POWER_SECRET) from the first line of FILE, - for stdin; "
                  "left out: the stored one is kept");
  set->add_option("--status-command", a.status_command, "exec: argv of the command that prints on or off");
  set->add_option("--on-command", a.on_command, "exec: argv of the power-on command");
  set->add_option("--off-command", a.off_command, "exec: argv of the power-off command");
  set->add_option("--cycle-command", a.cycle_command, "exec: argv of the power-cycle command");
  set->add_option("--timeout-ms", a.timeout_ms, "each call's deadline (default 15000)");
  set->callback([&inv, &a] {
    Json body = {{"driver", a.driver}, {"timeout_ms", a.timeout_ms}};
    if (a.driver == "ipmi") {
      body["address"] = a.address;
      if (a.port > 0) body["port"] = a.port;
      body["username"] = a.username;
      body["cipher_suite"] = a.cipher_suite;
    } else if (a.driver == "redfish") {
      body["url"] = a.url;
      body["username"] = a.username;
      if (!a.system.empty()) body["system"] = a.system;
      if (!a.ca_cert_file.empty()) {
        std::ifstream in(a.ca_cert_file);
        std::stringstream pem;
        pem << in.rdbuf();
        if (!in)
          return void(inv.rc = inv.c.Fail(InvalidArgumentError("--ca-cert-file: cannot read " + a.ca_cert_file)));
        body["ca_cert"] = pem.str();
      }
    } else if (a.driver == "wol") {
      body["mac"] = a.mac;
      if (!a.broadcast.empty()) body["broadcast"] = a.broadcast;
      if (a.port > 0) body["port"] = a.port;
    } else {
      body["status_command"] = a.status_command;
      body["on_command"] = a.on_command;
      body["off_command"] = a.off_command;
      if (!a.cycle_command.empty()) body["cycle_command"] = a.cycle_command;
    }
    if (!a.password_file.empty()) {
      auto secret = ReadSecret(a.password_file);
      if (!secret.ok()) return void(inv.rc = inv.c.Fail(secret.status()));
      body["password"] = *secret;
    }
    Answer(inv, inv.c.Call("PUT", "/api/v1/hosts/" + a.name + "/power-driver", &body));
  });
  auto* del = pd->add_subcommand("delete", "remove a host's power driver (only while the host is on)");
  del->add_option("name", a.name, "host name")->required();
  del->callback([&inv, &a] { Answer(inv, inv.c.Call("DELETE", "/api/v1/hosts/" + a.name + "/power-driver")); });
}

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
  AddHostPower(host, inv, a);
  auto* maint = host->add_subcommand("maintenance", "enter (on) or leave (off) maintenance mode");
  maint->add_option("name", a.name, "host name")->required();
  maint->add_option("mode", a.on_off, "on | off")->required()->check(CLI::IsMember({"on", "off"}));
  maint->callback([&inv, &a] {
    Answer(inv, inv.c.Call(a.on_off == "on" ? "POST" : "DELETE", "/api/v1/hosts/" + a.name + "/maintenance"));
  });
}

}  // namespace uw::cli
