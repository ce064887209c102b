// uwctl drs: recommendations, apply, config, and plan (on the live cluster or offline on a
// snapshot file, with any placement policy).
#include <CLI/CLI.hpp>
#include <algorithm>

#include "cli/commands.h"
#include "placement/placement.h"

namespace uw::cli {
namespace {

struct DrsArgs {
  // apply
  std::string id;
  bool all = false;
  // config
  std::string set_automation;
  int threshold = 0;
  std::string allow_cold;
  double cooldown = -1;
  // config: DPM
  std::string dpm_mode;
  std::vector<double> dpm_band;
  int64_t dpm_min_hosts_on = 0;
  std::vector<std::string> dpm_keep_on;
  bool dpm_keep_none = false;
  double dpm_hysteresis_s = -1;
  // config: HA
  std::string ha;
  int64_t ha_host_failures = -1;
  int64_t ha_isolation_s = -1;
  // plan
  std::string file;
  std::string policy = "drs";
};

void AddDrsRecommendations(CLI::App* drs, Invocation& inv) {
  drs->add_subcommand("recommendations", "pending recommendations with reasons")->callback([&inv] {
    AnswerList(inv, inv.c.List("/api/v1/drs/recommendations", "recommendations"), "recommendations",
               {"ID", "GUEST", "FROM", "TO", "PRIO", "IMBALANCE", "REASON"}, [](const Json& m) {
                 return std::vector<std::string>{
                     Str(m["id"]),       Str(m["guest"]),
                     Str(m["from"]),     Str(m["to"]),
                     Str(m["priority"]), Str(m["imbalance_before"]) + " -> " + Str(m["imbalance_after"]),
                     Str(m["reason"])};
               });
  });
}

void AddDrsApply(CLI::App* drs, Invocation& inv, DrsArgs& a) {
  auto* apply = drs->add_subcommand("apply", "apply one recommendation (ID) or all (--all)");
  apply->add_option("id", a.id, "recommendation id");
  apply->add_flag("--all", a.all, "apply every pending recommendation");
  inv.AddWait(apply);
  apply->callback([&inv, &a] {
    const Context& c = inv.c;
    if (!a.all && a.id.empty()) return void(inv.rc = c.Fail(InvalidArgumentError("give a recommendation id or --all")));
    if (!a.all) return AnswerTask(inv, c.Call("POST", "/api/v1/drs/recommendations/" + a.id + "/apply"));
    auto r = c.Call("POST", "/api/v1/drs/apply");
    if (!r.ok()) return void(inv.rc = c.Fail(r.status()));
    if (!inv.wait) return void(inv.rc = PrintObject(c, *r));
    // One after another as the manager runs them (dependencies first); the worst outcome wins.
    inv.rc = kOk;
    for (const auto& t : (*r)["tasks"]) inv.rc = std::max(inv.rc, TaskOutcome(c, t, true, inv.timeout_s));
    for (const auto& u : (*r)["unschedulable"])
      *c.err << "not started: " << Str(u["guest"]) << ": " << Str(u["reason"]) << "\n";
  });
}

void AddDrsConfig(CLI::App* drs, Invocation& inv, DrsArgs& a) {
  auto* config = drs->add_subcommand("config", "show or change DRS settings");
  config
      ->add_option("--allow-cold-moves", a.allow_cold,
                   "true: maintenance may stop, move and start containers and non-migratable guests")
      ->check(CLI::IsMember({"true", "false"}));
  config->add_option("--automation", a.set_automation, "manual | automatic")
      ->check(CLI::IsMember({"manual", "automatic"}));
  config->add_option("--threshold", a.threshold, "1 (mandatory only) .. 5 (every gain)")->check(CLI::Range(1, 5));
  config
      ->add_option("--min-move-interval", a.cooldown,
                   "cooldown in seconds: a guest that moved more recently is not moved again for balance")
      ->check(CLI::Range(0.0, 2592000.0));
  config->add_option("--dpm", a.dpm_mode, "DPM: off | manual (power actions listed) | automatic (carried out)")
      ->check(CLI::IsMember({"off", "manual", "automatic"}));
  config->add_option("--dpm-band", a.dpm_band, "DPM's target utilisation band in percent: LOW HIGH (default 45 81)")
      ->expected(2);
  config->add_option("--dpm-min-hosts-on", a.dpm_min_hosts_on, "DPM never leaves fewer hosts on (default 1)")
      ->check(CLI::PositiveNumber);
  config->add_option("--dpm-keep-on", a.dpm_keep_on, "hosts DPM never powers off (replaces the list)");
  config->add_flag("--dpm-keep-none", a.dpm_keep_none, "empty the list of hosts DPM keeps on");
  config
      ->add_option("--dpm-hysteresis", a.dpm_hysteresis_s,
                   "seconds a power action must stay planned before DPM carries it out (default 300)")
      ->check(CLI::Range(0.0, 86400.0));
  config->add_option("--ha", a.ha, "HA: on (fence failed hosts, restart their guests elsewhere) | off")
      ->check(CLI::IsMember({"on", "off"}));
  config
      ->add_option("--ha-host-failures", a.ha_host_failures,
                   "admission keeps room to restart every guest after this many host failures (default 1; 0: none)")
      ->check(CLI::Range(0, 64));
  config
      ->add_option("--ha-isolation", a.ha_isolation_s,
                   "seconds an isolated host (silent, its BMC says on) is given before it is fenced (default 30)")
      ->check(CLI::Range(0, 3600));
  config->callback([&inv, &a] {
    Json ha = Json::object();
    if (!a.ha.empty()) ha["enabled"] = a.ha == "on";
    if (a.ha_host_failures >= 0) ha["host_failures"] = a.ha_host_failures;
    if (a.ha_isolation_s >= 0) ha["isolation_s"] = a.ha_isolation_s;
    Json dpm = Json::object();
    if (!a.dpm_mode.empty()) dpm["mode"] = a.dpm_mode;
    if (!a.dpm_band.empty()) dpm["band"] = a.dpm_band;
    if (a.dpm_min_hosts_on > 0) dpm["min_hosts_on"] = a.dpm_min_hosts_on;
    if (!a.dpm_keep_on.empty() || a.dpm_keep_none) dpm["keep_on"] = a.dpm_keep_on;
    if (a.dpm_hysteresis_s >= 0) dpm["hysteresis_s"] = a.dpm_hysteresis_s;
    if (a.set_automation.empty() && a.threshold == 0 && a.allow_cold.empty() && a.cooldown < 0 && dpm.empty() &&
        ha.empty()) {
      return Answer(inv, inv.c.Call("GET", "/api/v1/drs/config"));
    }
    Json body = Json::object();
    if (!dpm.empty()) body["dpm"] = dpm;
    if (!ha.empty()) body["ha"] = ha;
    if (!a.set_automation.empty()) body["automation"] = a.set_automation;
    if (a.threshold) body["threshold"] = a.threshold;
    if (!a.allow_cold.empty()) body["allow_cold_moves"] = a.allow_cold == "true";
    if (a.cooldown >= 0) body["min_move_interval_s"] = a.cooldown;
    Answer(inv, inv.c.Call("PUT", "/api/v1/drs/config", &body));
  });
}

// The plan of `file` (a snapshot) under `policy`, made here without a manager, as PlanToJson.
Result<Json> PlanOffline(const std::string& file, const std::string& policy) {
  UW_ASSIGN_OR_RETURN(Json snap, LoadJsonFile(file));
  auto parsed = placement::ParseSnapshot(snap);
  if (!parsed.ok()) return parsed.status().WithContext(file);
  UW_ASSIGN_OR_RETURN(auto plan, placement::MakePlan(*parsed, policy));
  return placement::PlanToJson(plan);
}

void PrintPlan(const Context& c, const Json& p) {
  *c.out << "imbalance " << Str(p["before"]["imbalance"]) << " -> " << Str(p["after"]["imbalance"]) << ", "
         << p["moves"].size() << " moves, " << p["placements"].size() << " placements\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : p["moves"]) {
    rows.push_back(
        {"move", Str(m["vm"]), Str(m["from"]) + " -> " + Str(m["to"]), Str(m["priority"]), Str(m["reason"])});
  }
  for (const auto& m : p["placements"]) rows.push_back({"place", Str(m["vm"]), Str(m["host"]), "-", Str(m["reason"])});
  for (const auto& m : p.value("unplaced", Json::array()))
    rows.push_back({"unplaced", Str(m["vm"]), "-", "-", Str(m["reason"])});
  *c.out << FormatTable({"ACTION", "GUEST", "WHERE", "PRIO", "REASON"}, rows);
}

void AddDrsPlan(CLI::App* drs, Invocation& inv, DrsArgs& a) {
  auto* plan = drs->add_subcommand("plan", "dry-run plan on the live cluster, or offline on --snapshot FILE");
  plan->add_option("--snapshot", a.file, "snapshot file (uwctl cluster snapshot > FILE); no manager needed");
  plan->add_option(
      "--policy", a.policy, "policy for --snapshot: " + [] {
        std::string names;
        for (const auto& n : placement::PolicyNames()) names += (names.empty() ? "" : ", ") + n;
        return names;
      }());
  plan->callback([&inv, &a] {
    Result<Json> r = Json();
    if (!a.file.empty()) {
      r = PlanOffline(a.file, a.policy);
    } else {
      Json body = Json::object();
      r = inv.c.Call("POST", "/api/v1/drs/plan", &body);
    }
    if (!r.ok()) return void(inv.rc = inv.c.Fail(r.status()));
    if (inv.c.AsJson()) return void(inv.c.PrintJson(*r));
    PrintPlan(inv.c, *r);
  });
}

}  // namespace

void AddDrsCommands(CLI::App& app, Invocation& inv) {
  DrsArgs& a = inv.Own<DrsArgs>();
  auto* drs = app.add_subcommand("drs", "distributed resource scheduling");
  drs->require_subcommand(1);
  AddDrsRecommendations(drs, inv);
  AddDrsApply(drs, inv, a);
  AddDrsConfig(drs, inv, a);
  AddDrsPlan(drs, inv, a);
  drs->add_subcommand("power", "DPM's power actions of the last pass: reasons, when due, what was done")
      ->callback([&inv] {
        AnswerList(inv, inv.c.Call("GET", "/api/v1/drs/power"), "power",
                   {"HOST", "ACTION", "STATE", "DUE", "REASON", "NOTE"}, [](const Json& p) {
                     return std::vector<std::string>{Str(p["host"]), Str(p["action"]), Str(p["state"]),
                                                     Str(p["due"]),  Str(p["reason"]), Str(p["note"])};
                   });
      });
}

}  // namespace uw::cli
