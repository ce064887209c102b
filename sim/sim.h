// uw-sim's library (`uw::sim`): seeded cluster generation, trace replay against the real
// placement engine, and the small CSV / SVG writers the replay report uses.
//
// Unlike placement/, this library does I/O (trace files, reports) and reads a monotonic clock to
// report planning time. Thread safety: functions are reentrant; nothing is shared.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "placement/placement.h"

namespace uw::sim {

struct GenOptions {
  int64_t hosts = 16;
  int64_t vms = 400;
  uint64_t seed = 1;
  int64_t rules = 0;
  // Fraction of cluster memory the guests' configured memory fills.
  double memory_fill = 0.6;
  // Fraction of guests on the most loaded third of the hosts (skew).
  double skew = 0.6;
  // All hosts the same size (else every fourth host has half the capacity).
  bool uniform_hosts = false;
};

// A realistic, seeded snapshot: two host classes (every fourth host has half the capacity), guest
// sizes from a t-shirt mix (1 vCPU/2 GiB ... 16 vCPU/64 GiB) scaled to the requested density,
// CPU demand 5-80% of vCPUs, memory demand 40-90% of size, skewed placement that never
// over-commits memory, and `rules` rules (anti-affinity, affinity, vm-host must/should over
// rack groups) that hold in the generated placement. Same options and seed, same snapshot.
placement::Snapshot Generate(const GenOptions& options);

// ---------------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------------

struct ReplayOptions {
  std::string trace_dir;  // holds YYYYMMDD.csv files (PlanetLab format)
  int64_t hosts = 100;
  int64_t days = 1;
  int64_t vms = 0;  // 0: every VM of the first day's file
  std::string policy = "drs";
  bool dpm = false;
  double host_cores = 8;
  int64_t host_memory_mib = 65536;
  double bandwidth_mib_s = 125;  // 1 GbE migration network
  int64_t plan_every_steps = 1;  // DRS/DPM every 5 simulated minutes
  int threshold = 3;
};

struct ReplayStep {
  double time_s = 0;
  double imbalance = 0;
  int64_t hosts_on = 0;
  double demand_cores = 0;
  double unmet_cores = 0;  // demand above host capacity, after the step's plan
  int64_t migrations = 0;
  double migration_s = 0;
  double watts = 0;
  double plan_ms = 0;
};

struct ReplaySummary {
  int64_t vms = 0;
  int64_t hosts = 0;
  double days = 0;
  int64_t migrations = 0;                // after the first (deployment) plan
  int64_t initial_deployment_moves = 0;  // moves of the first plan, which also places every guest
  double migrations_per_guest_per_day = 0;
  double min_seconds_between_moves_of_a_guest = -1;  // -1: no guest moved twice
  int64_t guests_moved_twice_within_an_hour = 0;
  double host_hours_on = 0;
  double host_hours_always_on = 0;
  double energy_kwh = 0;
  double energy_kwh_always_on = 0;
  double demand_core_hours = 0;
  double unmet_core_hours = 0;
  double mean_imbalance = 0;
  double max_imbalance = 0;
  double mean_plan_ms = 0;
  double max_plan_ms = 0;
  int64_t plan_check_failures = 0;
  int64_t unplaced = 0;
};

struct ReplayResult {
  std::vector<ReplayStep> steps;
  ReplaySummary summary;
};

// Replays the traces: guest CPU demand = utilisation x 1 core; memory demand = configured size x
// (0.5 + 0.5 x utilisation). Every `plan_every_steps` steps the policy plans on the current state,
// CheckPlan verifies the plan and it is applied. Errors: kNotFound / kInvalidArgument for the
// trace directory or files.
Result<ReplayResult> Replay(const ReplayOptions& options);

Json SummaryToJson(const ReplaySummary& s);
std::string StepsToCsv(const std::vector<ReplayStep>& steps);

// ---------------------------------------------------------------------------------------------
// Plots
// ---------------------------------------------------------------------------------------------

struct Series {
  std::string name;
  std::string color;  // CSS colour
  std::vector<std::pair<double, double>> points;
};

// A self-contained SVG line chart with axes, ticks and a legend.
std::string LineChartSvg(const std::string& title, const std::string& x_label, const std::string& y_label,
                         const std::vector<Series>& series);

}  // namespace uw::sim
