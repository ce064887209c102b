// Trace replay (Replay): loads PlanetLab day files, drives the placement engine over simulated
// time on a cluster of identical hosts, and reports per-step figures and a summary; also the
// summary's JSON and the steps' CSV.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "sim/sim.h"

namespace uw::sim {

using placement::HostState;
using placement::Snapshot;

namespace {

constexpr int kStepsPerDay = 288;
constexpr double kStepSeconds = 300;
// Power of every host: idle and at full CPU load.
constexpr double kIdleWatts = 100, kPeakWatts = 250;

using Day = std::vector<std::vector<float>>;  // per VM row: 288 utilisations in [0, 1]

Result<Day> LoadDay(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError(path + ": cannot open trace file");
  Day day;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    std::vector<float> row;
    row.reserve(kStepsPerDay);
    size_t pos = line.find(',');
    while (pos != std::string::npos) {
      size_t next = line.find(',', pos + 1);
      std::string cell = line.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
      char* end = nullptr;
      double v = std::strtod(cell.c_str(), &end);
      if (end == cell.c_str() || v < 0) {
        return InvalidArgumentError(path + ": line " + std::to_string(line_no) + ": bad utilisation '" + cell + "'");
      }
      row.push_back(static_cast<float>(std::min(100.0, v) / 100));
      pos = next;
    }
    if (row.size() < kStepsPerDay) {
      return InvalidArgumentError(path + ": line " + std::to_string(line_no) + ": expected 288 values, got " +
                                  std::to_string(row.size()));
    }
    day.push_back(std::move(row));
  }
  if (day.empty()) return InvalidArgumentError(path + ": no VMs");
  return day;
}

// The first `days` trace files of the directory, in name order.
Result<std::vector<Day>> LoadTrace(const ReplayOptions& o) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(o.trace_dir, ec)) return NotFoundError(o.trace_dir + ": not a trace directory");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(o.trace_dir, ec)) {
    if (e.path().extension() == ".csv") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) return NotFoundError(o.trace_dir + ": no *.csv trace files");
  const int64_t days = std::clamp<int64_t>(o.days, 1, static_cast<int64_t>(files.size()));
  std::vector<Day> trace;
  for (int64_t d = 0; d < days; ++d) {
    UW_ASSIGN_OR_RETURN(Day day, LoadDay(files[d]));
    trace.push_back(std::move(day));
  }
  return trace;
}

// The cluster: identical hosts, all on; guests unplaced (the first plan places them).
Snapshot MakeCluster(const ReplayOptions& o, int64_t vms) {
  Snapshot s;
  for (int64_t h = 0; h < o.hosts; ++h) {
    placement::Host x;
    char name[32];
    std::snprintf(name, sizeof name, "h%03lld", static_cast<long long>(h));
    x.name = name;
    x.cpu_cores = o.host_cores;
    x.memory_mib = o.host_memory_mib;
    x.power = {kIdleWatts, kPeakWatts};
    s.hosts.push_back(x);
  }
  const int64_t kMem[] = {1024, 2048, 2048, 4096};
  for (int64_t i = 0; i < vms; ++i) {
    placement::Vm v;
    char name[32];
    std::snprintf(name, sizeof name, "vm%04lld", static_cast<long long>(i));
    v.name = name;
    v.vcpus = 1;
    v.memory_mib = kMem[(i * 7919) % 4];
    s.vms.push_back(v);
  }
  s.settings.drs.threshold = o.threshold;
  s.settings.drs.migration_bandwidth_mib_s = o.bandwidth_mib_s;
  s.settings.dpm.enabled = o.dpm;
  return s;
}

// The state of one replay: the cluster, each guest's last move, and the figures so far.
class ReplayRun {
 public:
  ReplayRun(const ReplayOptions& o, Snapshot s, int64_t vms, int64_t days, const placement::Policy& policy)
      : o_(o), s_(std::move(s)), vms_(vms), days_(days), policy_(policy) {
    ReplaySummary& sum = result_.summary;
    sum.vms = vms;
    sum.hosts = o.hosts;
    sum.days = static_cast<double>(days);
    last_move_.assign(vms, -std::numeric_limits<double>::infinity());
    for (int64_t i = 0; i < vms; ++i) vm_idx_[s_.vms[i].name] = i;
    for (int64_t h = 0; h < o.hosts; ++h) host_idx_[s_.hosts[h].name] = h;
  }

  // Step `t` of day `d`: new demand, a plan when one is due, then the step's figures.
  Status Step(const Day& day, int64_t d, int t) {
    const int64_t step = d * kStepsPerDay + t;
    const double now = static_cast<double>(step) * kStepSeconds;
    ReplayStep rs;
    rs.time_s = now;
    const double demand = SetDemand(day, t, now);
    rs.demand_cores = demand;
    if (step % std::max<int64_t>(1, o_.plan_every_steps) == 0) UW_RETURN_IF_ERROR(PlanAndApply(step, now, rs));
    Measure(demand, rs);
    result_.steps.push_back(rs);
    return Status::Ok();
  }

  ReplayResult Finish() {
    ReplaySummary& sum = result_.summary;
    const double hours = static_cast<double>(days_) * 24;
    sum.host_hours_always_on = static_cast<double>(o_.hosts) * hours;
    sum.migrations_per_guest_per_day =
        static_cast<double>(sum.migrations) / static_cast<double>(vms_) / static_cast<double>(days_);
    double imb = 0;
    for (const auto& rs : result_.steps) {
      imb += rs.imbalance;
      sum.max_imbalance = std::max(sum.max_imbalance, rs.imbalance);
    }
    sum.mean_imbalance = result_.steps.empty() ? 0 : imb / static_cast<double>(result_.steps.size());
    sum.mean_plan_ms = plans_ ? plan_ms_total_ / static_cast<double>(plans_) : 0;
    return std::move(result_);
  }

 private:
  // Guest CPU demand = utilisation x 1 core; memory = size x (0.5 + 0.5 x utilisation). Returns
  // the total CPU demand.
  double SetDemand(const Day& day, int t, double now) {
    double demand = 0;
    for (int64_t i = 0; i < vms_; ++i) {
      placement::Vm& v = s_.vms[i];
      double u = day[i % day.size()][t];
      v.demand.cpu_cores = u;
      v.demand.memory_mib = static_cast<int64_t>(static_cast<double>(v.memory_mib) * (0.5 + 0.5 * u));
      demand += u;
      if (std::isfinite(last_move_[i])) v.last_moved_ago_s = now - last_move_[i];
    }
    return demand;
  }

  Status PlanAndApply(int64_t step, double now, ReplayStep& rs) {
    ReplaySummary& sum = result_.summary;
    auto t0 = std::chrono::steady_clock::now();
    auto plan = policy_.MakePlan(s_);
    rs.plan_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    plan_ms_total_ += rs.plan_ms;
    sum.max_plan_ms = std::max(sum.max_plan_ms, rs.plan_ms);
    ++plans_;
    if (!plan.ok()) return plan.status();
    auto next = placement::ApplyPlan(s_, *plan);  // runs the checker
    if (!next.ok()) {
      ++sum.plan_check_failures;
      return Status::Ok();
    }
    s_ = std::move(*next);
    for (const auto& m : plan->moves) RecordMove(m, step, now, rs);
    sum.unplaced = static_cast<int64_t>(plan->unplaced.size());
    return Status::Ok();
  }

  void RecordMove(const placement::Move& m, int64_t step, double now, ReplayStep& rs) {
    ReplaySummary& sum = result_.summary;
    int64_t i = vm_idx_[m.vm];
    if (step == 0) {
      // The first plan deploys the guests (placements, then DPM packing): not counted as
      // migrations of running guests.
      ++sum.initial_deployment_moves;
      return;
    }
    if (std::isfinite(last_move_[i])) {
      double gap = now - last_move_[i];
      if (sum.min_seconds_between_moves_of_a_guest < 0 || gap < sum.min_seconds_between_moves_of_a_guest) {
        sum.min_seconds_between_moves_of_a_guest = gap;
      }
      if (gap < 3600) ++sum.guests_moved_twice_within_an_hour;
    }
    last_move_[i] = now;
    ++rs.migrations;
    rs.migration_s += static_cast<double>(s_.vms[i].memory_mib) / o_.bandwidth_mib_s;
  }

  // Per-host demand after the plan: unmet demand and power; the step's share of the summary.
  void Measure(double demand, ReplayStep& rs) {
    ReplaySummary& sum = result_.summary;
    const ReplayOptions& o = o_;
    const Snapshot& s = s_;
    std::vector<double> host_cpu(o.hosts, 0);
    for (int64_t i = 0; i < vms_; ++i) {
      if (!s.vms[i].host.empty())
        host_cpu[host_idx_[s.vms[i].host]] += s.vms[i].demand.cpu_cores;
      else
        rs.unmet_cores += s.vms[i].demand.cpu_cores;
    }
    for (int64_t h = 0; h < o.hosts; ++h) {
      if (s.hosts[h].state != HostState::kOn) continue;
      ++rs.hosts_on;
      rs.unmet_cores += std::max(0.0, host_cpu[h] - o.host_cores);
      rs.watts += kIdleWatts + (kPeakWatts - kIdleWatts) * std::min(1.0, host_cpu[h] / o.host_cores);
    }
    rs.imbalance = placement::ComputeMetrics(s).imbalance;
    sum.migrations += rs.migrations;
    sum.host_hours_on += static_cast<double>(rs.hosts_on) * kStepSeconds / 3600;
    sum.energy_kwh += rs.watts * kStepSeconds / 3600 / 1000;
    // Always-on reference: every host idles; the dynamic part depends only on total demand.
    double always_w =
        static_cast<double>(o.hosts) * kIdleWatts +
        (kPeakWatts - kIdleWatts) * std::min(demand, static_cast<double>(o.hosts) * o.host_cores) / o.host_cores;
    sum.energy_kwh_always_on += always_w * kStepSeconds / 3600 / 1000;
    sum.demand_core_hours += demand * kStepSeconds / 3600;
    sum.unmet_core_hours += rs.unmet_cores * kStepSeconds / 3600;
  }

  const ReplayOptions& o_;
  Snapshot s_;
  const int64_t vms_;
  const int64_t days_;
  const placement::Policy& policy_;
  ReplayResult result_;
  std::vector<double> last_move_;
  std::unordered_map<std::string, int64_t> vm_idx_, host_idx_;
  double plan_ms_total_ = 0;
  int64_t plans_ = 0;
};

}  // namespace

Result<ReplayResult> Replay(const ReplayOptions& o) {
  UW_ASSIGN_OR_RETURN(std::vector<Day> trace, LoadTrace(o));
  const int64_t days = static_cast<int64_t>(trace.size());
  auto policy = placement::MakePolicy(o.policy);
  if (!policy.ok()) return policy.status();
  const int64_t vms = o.vms > 0 ? o.vms : static_cast<int64_t>(trace[0].size());
  ReplayRun run(o, MakeCluster(o, vms), vms, days, **policy);
  for (int64_t d = 0; d < days; ++d) {
    for (int t = 0; t < kStepsPerDay; ++t) UW_RETURN_IF_ERROR(run.Step(trace[d], d, t));
  }
  return run.Finish();
}

Json SummaryToJson(const ReplaySummary& s) {
  return {{"vms", s.vms},
          {"hosts", s.hosts},
          {"days", s.days},
          {"migrations", s.migrations},
          {"initial_deployment_moves", s.initial_deployment_moves},
          {"migrations_per_guest_per_day", s.migrations_per_guest_per_day},
          {"min_seconds_between_moves_of_a_guest", s.min_seconds_between_moves_of_a_guest},
          {"guests_moved_twice_within_an_hour", s.guests_moved_twice_within_an_hour},
          {"host_hours_on", s.host_hours_on},
          {"host_hours_always_on", s.host_hours_always_on},
          {"energy_kwh", s.energy_kwh},
          {"energy_kwh_always_on", s.energy_kwh_always_on},
          {"demand_core_hours", s.demand_core_hours},
          {"unmet_core_hours", s.unmet_core_hours},
          {"unmet_fraction", s.demand_core_hours > 0 ? s.unmet_core_hours / s.demand_core_hours : 0},
          {"mean_imbalance", s.mean_imbalance},
          {"max_imbalance", s.max_imbalance},
          {"mean_plan_ms", s.mean_plan_ms},
          {"max_plan_ms", s.max_plan_ms},
          {"plan_check_failures", s.plan_check_failures},
          {"unplaced_at_end", s.unplaced}};
}

std::string StepsToCsv(const std::vector<ReplayStep>& steps) {
  std::ostringstream out;
  out << "time_s,imbalance,hosts_on,demand_cores,unmet_cores,migrations,migration_s,watts,plan_ms\n";
  char buf[256];
  for (const auto& r : steps) {
    std::snprintf(buf, sizeof buf, "%.0f,%.6f,%lld,%.3f,%.3f,%lld,%.2f,%.1f,%.3f\n", r.time_s, r.imbalance,
                  static_cast<long long>(r.hosts_on), r.demand_cores, r.unmet_cores,
                  static_cast<long long>(r.migrations), r.migration_s, r.watts, r.plan_ms);
    out << buf;
  }
  return out.str();
}

}  // namespace uw::sim
