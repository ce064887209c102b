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

}  // namespace

Result<ReplayResult> Replay(const ReplayOptions& o) {
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
  auto policy = placement::MakePolicy(o.policy);
  if (!policy.ok()) return policy.status();

  // The cluster: identical hosts, all on; guests unplaced (the first plan places them).
  Snapshot s;
  for (int64_t h = 0; h < o.hosts; ++h) {
    placement::Host x;
    char name[32];
    std::snprintf(name, sizeof name, "h%03lld", static_cast<long long>(h));
    x.name = name;
    x.cpu_cores = o.host_cores;
    x.memory_mib = o.host_memory_mib;
    x.power = {100, 250};
    s.hosts.push_back(x);
  }
  const int64_t vms = o.vms > 0 ? o.vms : static_cast<int64_t>(trace[0].size());
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

  ReplayResult result;
  ReplaySummary& sum = result.summary;
  sum.vms = vms;
  sum.hosts = o.hosts;
  sum.days = static_cast<double>(days);
  std::vector<double> last_move(vms, -std::numeric_limits<double>::infinity());
  std::unordered_map<std::string, int64_t> vm_idx, host_idx;
  for (int64_t i = 0; i < vms; ++i) vm_idx[s.vms[i].name] = i;
  for (int64_t h = 0; h < o.hosts; ++h) host_idx[s.hosts[h].name] = h;
  double plan_ms_total = 0;
  int64_t plans = 0;
  const double idle = 100, peak = 250;

  for (int64_t d = 0; d < days; ++d) {
    const Day& day = trace[d];
    for (int t = 0; t < kStepsPerDay; ++t) {
      const int64_t step = d * kStepsPerDay + t;
      const double now = static_cast<double>(step) * kStepSeconds;
      double demand = 0;
      for (int64_t i = 0; i < vms; ++i) {
        placement::Vm& v = s.vms[i];
        double u = day[i % day.size()][t];
        v.demand.cpu_cores = u;
        v.demand.memory_mib = static_cast<int64_t>(static_cast<double>(v.memory_mib) * (0.5 + 0.5 * u));
        demand += u;
        if (std::isfinite(last_move[i])) v.last_moved_ago_s = now - last_move[i];
      }
      ReplayStep rs;
      rs.time_s = now;
      rs.demand_cores = demand;
      if (step % std::max<int64_t>(1, o.plan_every_steps) == 0) {
        auto t0 = std::chrono::steady_clock::now();
        auto plan = (*policy)->MakePlan(s);
        rs.plan_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        plan_ms_total += rs.plan_ms;
        sum.max_plan_ms = std::max(sum.max_plan_ms, rs.plan_ms);
        ++plans;
        if (!plan.ok()) return plan.status();
        auto next = placement::ApplyPlan(s, *plan);  // runs the checker
        if (!next.ok()) {
          ++sum.plan_check_failures;
        } else {
          s = std::move(*next);
          for (const auto& m : plan->moves) {
            int64_t i = vm_idx[m.vm];
            if (step == 0) {
              // The first plan deploys the guests (placements, then DPM packing): not counted as
              // migrations of running guests.
              ++sum.initial_deployment_moves;
              continue;
            }
            if (std::isfinite(last_move[i])) {
              double gap = now - last_move[i];
              if (sum.min_seconds_between_moves_of_a_guest < 0 || gap < sum.min_seconds_between_moves_of_a_guest) {
                sum.min_seconds_between_moves_of_a_guest = gap;
              }
              if (gap < 3600) ++sum.guests_moved_twice_within_an_hour;
            }
            last_move[i] = now;
            ++rs.migrations;
            rs.migration_s += static_cast<double>(s.vms[i].memory_mib) / o.bandwidth_mib_s;
          }
          sum.unplaced = static_cast<int64_t>(plan->unplaced.size());
        }
      }
      // Per-host demand after the plan: unmet demand and power.
      std::vector<double> host_cpu(o.hosts, 0);
      for (int64_t i = 0; i < vms; ++i) {
        if (!s.vms[i].host.empty())
          host_cpu[host_idx[s.vms[i].host]] += s.vms[i].demand.cpu_cores;
        else
          rs.unmet_cores += s.vms[i].demand.cpu_cores;
      }
      for (int64_t h = 0; h < o.hosts; ++h) {
        if (s.hosts[h].state != HostState::kOn) continue;
        ++rs.hosts_on;
        rs.unmet_cores += std::max(0.0, host_cpu[h] - o.host_cores);
        rs.watts += idle + (peak - idle) * std::min(1.0, host_cpu[h] / o.host_cores);
      }
      rs.imbalance = placement::ComputeMetrics(s).imbalance;
      sum.migrations += rs.migrations;
      sum.host_hours_on += static_cast<double>(rs.hosts_on) * kStepSeconds / 3600;
      sum.energy_kwh += rs.watts * kStepSeconds / 3600 / 1000;
      // Always-on reference: every host idles; the dynamic part depends only on total demand.
      double always_w = static_cast<double>(o.hosts) * idle +
                        (peak - idle) * std::min(demand, static_cast<double>(o.hosts) * o.host_cores) / o.host_cores;
      sum.energy_kwh_always_on += always_w * kStepSeconds / 3600 / 1000;
      sum.demand_core_hours += demand * kStepSeconds / 3600;
      sum.unmet_core_hours += rs.unmet_cores * kStepSeconds / 3600;
      result.steps.push_back(rs);
    }
  }
  const double hours = static_cast<double>(days) * 24;
  sum.host_hours_always_on = static_cast<double>(o.hosts) * hours;
  sum.migrations_per_guest_per_day =
      static_cast<double>(sum.migrations) / static_cast<double>(vms) / static_cast<double>(days);
  double imb = 0;
  for (const auto& rs : result.steps) {
    imb += rs.imbalance;
    sum.max_imbalance = std::max(sum.max_imbalance, rs.imbalance);
  }
  sum.mean_imbalance = result.steps.empty() ? 0 : imb / static_cast<double>(result.steps.size());
  sum.mean_plan_ms = plans ? plan_ms_total / static_cast<double>(plans) : 0;
  return result;
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
