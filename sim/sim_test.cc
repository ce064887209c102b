#include "sim/sim.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "placement/placement.h"

namespace uw::sim {
namespace {

namespace pl = uw::placement;
using ::testing::HasSubstr;

std::string SourceDir() {
  const char* d = std::getenv("UW_SOURCE_DIR");
  return d ? d : ".";
}
std::string BinaryDir() {
  const char* d = std::getenv("UW_BINARY_DIR");
  return d ? d : ".";
}

TEST(GenerateTest, SeededValidAndSkewed) {
  GenOptions o;
  o.hosts = 24;
  o.vms = 600;
  o.rules = 20;
  o.seed = 42;
  pl::Snapshot a = Generate(o), b = Generate(o);
  EXPECT_EQ(a, b);
  o.seed = 43;
  EXPECT_NE(Generate(o), a);
  auto parsed = pl::ParseSnapshot(pl::SnapshotToJson(a));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(a.rules.size(), 20u);
  // Memory is never over-committed and every guest is placed.
  std::map<std::string, int64_t> used;
  for (const auto& v : a.vms) {
    ASSERT_FALSE(v.host.empty());
    used[v.host] += v.memory_mib;
  }
  for (const auto& h : a.hosts) EXPECT_LE(used[h.name], h.memory_mib);
  // The generated placement keeps every required rule: a plan with threshold 1 has no moves.
  a.settings.drs.threshold = 1;
  auto plan = pl::MakePlan(a);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(pl::CheckPlan(a, *plan).ok());
  EXPECT_TRUE(plan->unresolved.empty());
  EXPECT_GT(plan->before.imbalance, 0.1);  // skewed
}

TEST(ReplayTest, OneDayOfPlanetLabWithDpmSavesHostHours) {
  ReplayOptions o;
  o.trace_dir = SourceDir() + "/sim/traces/planetlab";
  o.hosts = 20;
  o.vms = 200;
  o.days = 1;
  o.dpm = true;
  o.host_memory_mib = 65536;
  auto r = Replay(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const ReplaySummary& s = r->summary;
  EXPECT_EQ(r->steps.size(), 288u);
  EXPECT_EQ(s.plan_check_failures, 0);
  EXPECT_EQ(s.guests_moved_twice_within_an_hour, 0);
  EXPECT_LT(s.host_hours_on, s.host_hours_always_on);
  EXPECT_LT(s.energy_kwh, s.energy_kwh_always_on);
  EXPECT_EQ(s.unplaced, 0);
  std::string csv = StepsToCsv(r->steps);
  EXPECT_THAT(csv, HasSubstr("time_s,imbalance,hosts_on"));
}

TEST(ReplayTest, MissingTraceDirectory) {
  ReplayOptions o;
  o.trace_dir = "/nonexistent";
  EXPECT_EQ(Replay(o).status().code(), StatusCode::kNotFound);
}

TEST(SvgTest, ChartHasSeriesAndEscapes) {
  std::string svg = LineChartSvg("a < b", "x", "y", {{"s1", "red", {{0, 1}, {1, 2}, {2, 0.5}}}});
  EXPECT_THAT(svg, HasSubstr("<svg"));
  EXPECT_THAT(svg, HasSubstr("a &lt; b"));
  EXPECT_THAT(svg, HasSubstr("<polyline"));
  EXPECT_THAT(svg, HasSubstr("</svg>"));
}

int Shell(const std::string& cmd) { return std::system(cmd.c_str()); }

// Acceptance: `uw-sim plan` on a generated 1,000-host snapshot returns a valid plan.
TEST(UwSimTest, PlanOnThousandHostSnapshotIsValid) {
  const std::string bin = BinaryDir() + "/sim/uw-sim";
  const std::string dir = ::testing::TempDir();
  const std::string snap = dir + "/uwsim_1000.json", plan = dir + "/uwsim_1000_plan.json";
  ASSERT_EQ(Shell(bin + " gen --hosts 1000 --vms 20000 --rules 100 --seed 3 --out " + snap), 0);
  ASSERT_EQ(Shell(bin + " plan --snapshot " + snap + " --out " + plan), 0);
  // Re-check the written plan from scratch, through the CLI and the library.
  ASSERT_EQ(Shell(bin + " check --snapshot " + snap + " --plan " + plan + " > /dev/null"), 0);
  auto s = pl::ParseSnapshot(*LoadJsonFile(snap));
  auto p = pl::ParsePlan(*LoadJsonFile(plan));
  ASSERT_TRUE(s.ok() && p.ok());
  EXPECT_TRUE(pl::CheckPlan(*s, *p).ok());
  EXPECT_FALSE(p->moves.empty());
  EXPECT_LT(p->after.imbalance, p->before.imbalance);
  EXPECT_EQ(p->before.hosts_on, 1000);
  // Bad input gives a clear error and exit code 2.
  std::ofstream(dir + "/bad.json") << R"({"hosts": [{"name": "h", "cpu_cores": 4, "memory_mib": -1}]})";
  EXPECT_EQ(WEXITSTATUS(Shell(bin + " plan --snapshot " + dir + "/bad.json 2> " + dir + "/err.txt")), 2);
  std::ifstream err(dir + "/err.txt");
  std::string line;
  std::getline(err, line);
  EXPECT_THAT(line, HasSubstr("hosts[0].memory_mib: expected a positive integer"));
}

}  // namespace
}  // namespace uw::sim
