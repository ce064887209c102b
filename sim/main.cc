// uw-sim: runs the real placement engine on snapshots and traces.
//
//   uw-sim plan    --snapshot FILE [--policy drs|consolidate|opportunity-cost] [--out FILE]
//   uw-sim gen     --hosts N --vms M [--seed S] [--rules K] [--out FILE]
//   uw-sim replay  --trace DIR --hosts N [--days D] [--policy P] [--dpm] [--out DIR]
//   uw-sim check   --snapshot FILE --plan FILE
//   uw-sim apply   --snapshot FILE --plan FILE [--out FILE]
//   uw-sim metrics --snapshot FILE
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "common/json.h"
#include "placement/placement.h"
#include "sim/sim.h"

namespace {

namespace pl = uw::placement;

int Fail(const uw::Status& s) {
  std::cerr << "uw-sim: " << s.ToString() << "\n";
  return s.code() == uw::StatusCode::kInvalidArgument || s.code() == uw::StatusCode::kNotFound ? 2 : 1;
}

bool WriteText(const std::string& path, const std::string& text) {
  if (path.empty() || path == "-") {
    std::cout << text;
    return true;
  }
  std::ofstream out(path);
  out << text;
  return static_cast<bool>(out);
}

uw::Result<pl::Snapshot> LoadSnapshot(const std::string& path) {
  UW_ASSIGN_OR_RETURN(uw::Json j, uw::LoadJsonFile(path));
  auto s = pl::ParseSnapshot(j);
  if (!s.ok()) return s.status().WithContext(path);
  return s;
}

uw::Result<pl::Plan> LoadPlan(const std::string& path) {
  UW_ASSIGN_OR_RETURN(uw::Json j, uw::LoadJsonFile(path));
  auto p = pl::ParsePlan(j);
  if (!p.ok()) return p.status().WithContext(path);
  return p;
}

int RunPlan(const std::string& snapshot_path, const std::string& policy, int threshold, const std::string& out_path) {
  auto s = LoadSnapshot(snapshot_path);
  if (!s.ok()) return Fail(s.status());
  if (threshold >= 1 && threshold <= 5) s->settings.drs.threshold = threshold;
  auto t0 = std::chrono::steady_clock::now();
  auto p = pl::MakePlan(*s, policy);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!p.ok()) return Fail(p.status());
  p->elapsed_ms = ms;
  uw::Status st = pl::CheckPlan(*s, *p);
  if (!st.ok()) {
    std::cerr << "uw-sim: the plan failed its check: " << st.ToString() << "\n";
    return 3;
  }
  if (!WriteText(out_path, pl::PlanToJson(*p).dump(2) + "\n"))
    return Fail(uw::UnavailableError("cannot write " + out_path));
  return 0;
}

int RunGen(const uw::sim::GenOptions& gen_opts, const std::string& out_path) {
  pl::Snapshot s = uw::sim::Generate(gen_opts);
  return WriteText(out_path, pl::SnapshotToJson(s).dump(1) + "\n") ? 0 : 1;
}

int RunReplay(const uw::sim::ReplayOptions& rep, const std::string& rep_out) {
  auto r = uw::sim::Replay(rep);
  if (!r.ok()) return Fail(r.status());
  std::filesystem::create_directories(rep_out);
  WriteText(rep_out + "/replay.csv", uw::sim::StepsToCsv(r->steps));
  std::vector<uw::sim::Series> imb{{"imbalance", "#1f77b4", {}}}, hosts{{"hosts on", "#d62728", {}}},
      unmet{{"demand (cores)", "#2ca02c", {}}, {"unmet demand (cores)", "#ff7f0e", {}}};
  for (const auto& st : r->steps) {
    double h = st.time_s / 3600;
    imb[0].points.emplace_back(h, st.imbalance);
    hosts[0].points.emplace_back(h, static_cast<double>(st.hosts_on));
    unmet[0].points.emplace_back(h, st.demand_cores);
    unmet[1].points.emplace_back(h, st.unmet_cores);
  }
  std::string tag = " (" + rep.policy + (rep.dpm ? ", dpm" : "") + ")";
  WriteText(rep_out + "/imbalance.svg", uw::sim::LineChartSvg("Imbalance" + tag, "hours", "imbalance", imb));
  WriteText(rep_out + "/hosts.svg", uw::sim::LineChartSvg("Powered-on hosts" + tag, "hours", "hosts", hosts));
  WriteText(rep_out + "/demand.svg", uw::sim::LineChartSvg("CPU demand" + tag, "hours", "cores", unmet));
  uw::Json summary = uw::sim::SummaryToJson(r->summary);
  summary["policy"] = rep.policy;
  summary["dpm"] = rep.dpm;
  WriteText(rep_out + "/summary.json", summary.dump(2) + "\n");
  std::cout << summary.dump(2) << "\n";
  return r->summary.plan_check_failures == 0 ? 0 : 3;
}

// `check` prints a summary of a plan that passes the checker; apply writes the snapshot after it.
int RunCheckOrApply(const std::string& snapshot_path, const std::string& plan_path, const std::string& out_path,
                    bool check_only) {
  auto s = LoadSnapshot(snapshot_path);
  if (!s.ok()) return Fail(s.status());
  auto p = LoadPlan(plan_path);
  if (!p.ok()) return Fail(p.status());
  auto after = pl::ApplyPlan(*s, *p);
  if (!after.ok()) {
    std::cerr << "uw-sim: " << after.status().ToString() << "\n";
    return 3;
  }
  if (check_only) {
    std::cout << "ok: " << p->moves.size() << " moves, " << p->placements.size() << " placements, " << p->power.size()
              << " power actions\n";
    return 0;
  }
  return WriteText(out_path, pl::SnapshotToJson(*after).dump(1) + "\n") ? 0 : 1;
}

int RunMetrics(const std::string& snapshot_path) {
  auto s = LoadSnapshot(snapshot_path);
  if (!s.ok()) return Fail(s.status());
  pl::PlanMetrics m = pl::ComputeMetrics(*s);
  uw::Json j = pl::PlanToJson(pl::Plan{})["before"];
  j = {{"imbalance", m.imbalance},
       {"cpu_imbalance", m.cpu_imbalance},
       {"memory_imbalance", m.memory_imbalance},
       {"hosts_on", m.hosts_on},
       {"hosts_used", m.hosts_used},
       {"soft_violations", m.soft_violations},
       {"unmet_cpu_cores", m.unmet_cpu_cores},
       {"consolidation_lower_bound", pl::ConsolidationLowerBound(*s)},
       {"first_fit_decreasing_hosts", pl::FirstFitDecreasingHosts(*s)}};
  std::cout << j.dump(2) << "\n";
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"uw-sim: Underware's placement simulator"};
  app.require_subcommand(1);

  std::string snapshot_path, plan_path, out_path, policy = "drs";
  auto* plan = app.add_subcommand("plan", "print the plan for a snapshot");
  plan->add_option("--snapshot", snapshot_path, "snapshot JSON file")->required();
  plan->add_option("--policy", policy, "drs | consolidate | opportunity-cost");
  plan->add_option("--out", out_path, "write the plan here instead of stdout");
  int threshold = 0;
  plan->add_option("--threshold", threshold, "override settings.drs.threshold (1-5)");

  uw::sim::GenOptions gen_opts;
  auto* gen = app.add_subcommand("gen", "write a generated snapshot");
  gen->add_option("--hosts", gen_opts.hosts, "hosts")->required();
  gen->add_option("--vms", gen_opts.vms, "guests")->required();
  gen->add_option("--seed", gen_opts.seed, "random seed");
  gen->add_option("--rules", gen_opts.rules, "number of rules");
  gen->add_option("--fill", gen_opts.memory_fill, "fraction of cluster memory the guests fill");
  gen->add_option("--skew", gen_opts.skew, "fraction of guests on the first third of the hosts");
  gen->add_flag("--uniform-hosts", gen_opts.uniform_hosts, "all hosts the same size");
  gen->add_option("--out", out_path, "output file (default stdout)");

  uw::sim::ReplayOptions rep;
  std::string rep_out = "replay-out";
  auto* replay = app.add_subcommand("replay", "replay PlanetLab traces against the engine");
  replay->add_option("--trace", rep.trace_dir, "directory of YYYYMMDD.csv trace files")->required();
  replay->add_option("--hosts", rep.hosts, "hosts")->required();
  replay->add_option("--days", rep.days, "days to replay (one file per day)");
  replay->add_option("--vms", rep.vms, "guests (default: every VM of the first day)");
  replay->add_option("--policy", rep.policy, "drs | consolidate | opportunity-cost");
  replay->add_flag("--dpm", rep.dpm, "enable power management");
  replay->add_option("--host-cores", rep.host_cores, "cores per host");
  replay->add_option("--host-memory-mib", rep.host_memory_mib, "memory per host");
  replay->add_option("--bandwidth", rep.bandwidth_mib_s, "migration bandwidth, MiB/s");
  replay->add_option("--threshold", rep.threshold, "DRS threshold 1-5");
  replay->add_option("--out", rep_out, "directory for replay.csv, summary.json and the SVG plots");

  auto* check = app.add_subcommand("check", "check a plan against a snapshot");
  check->add_option("--snapshot", snapshot_path, "snapshot JSON file")->required();
  check->add_option("--plan", plan_path, "plan JSON file")->required();

  auto* apply = app.add_subcommand("apply", "print the snapshot after a plan");
  apply->add_option("--snapshot", snapshot_path, "snapshot JSON file")->required();
  apply->add_option("--plan", plan_path, "plan JSON file")->required();
  apply->add_option("--out", out_path, "output file (default stdout)");

  auto* metrics = app.add_subcommand("metrics", "print the metrics of a snapshot");
  metrics->add_option("--snapshot", snapshot_path, "snapshot JSON file")->required();

  CLI11_PARSE(app, argc, argv);

  if (*plan) return RunPlan(snapshot_path, policy, threshold, out_path);
  if (*gen) return RunGen(gen_opts, out_path);
  if (*replay) return RunReplay(rep, rep_out);
  if (*check || *apply) return RunCheckOrApply(snapshot_path, plan_path, out_path, static_cast<bool>(*check));
  if (*metrics) return RunMetrics(snapshot_path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "uw-sim: %s\n", e.what());
    return 1;
  }
}
