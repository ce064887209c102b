#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "placement/placement.h"
#include "placement/test_util.h"

namespace uw::placement {
namespace {

using ::testing::HasSubstr;

const char kSpecExample[] = R"({
  "version": 1,
  "hosts": [
    {"name": "h01", "cpu_cores": 64, "memory_mib": 262144,
     "state": "on", "groups": ["rack-a"],
     "power": {"idle_watts": 150, "peak_watts": 400}},
    {"name": "h02", "cpu_cores": 64, "memory_mib": 262144, "groups": ["rack-b"]}
  ],
  "pools": [
    {"name": "prod", "parent": null,
     "cpu":    {"reservation_cores": 16, "limit_cores": null, "shares": 4000},
     "memory": {"reservation_mib": 65536, "limit_mib": null, "shares": 4000},
     "expandable": true}
  ],
  "vms": [
    {"name": "vm0001", "host": "h01", "vcpus": 4, "memory_mib": 8192,
     "demand": {"cpu_cores": 1.3, "memory_mib": 6100},
     "pool": "prod",
     "reservation": {"cpu_cores": 0, "memory_mib": 0},
     "limit": {"cpu_cores": null, "memory_mib": null},
     "shares": {"cpu": 1000, "memory": 1000},
     "kind": "kvm", "migratable": true, "some_future_field": 7},
    {"name": "vm0002", "host": null, "vcpus": 2, "memory_mib": 4096}
  ],
  "rules": [
    {"name": "web-apart", "type": "vm-anti-affinity", "vms": ["vm0001", "vm0002"], "required": true},
    {"name": "licence", "type": "vm-host", "vms": ["vm0001"], "hosts": ["h01", "h02"], "mode": "must"},
    {"name": "rack", "type": "vm-host", "vms": ["vm0002"], "groups": ["rack-b"], "mode": "should-not"}
  ],
  "settings": {
    "drs": {"automation": "manual", "threshold": 3, "max_moves": null},
    "dpm": {"enabled": false, "target_utilization": 0.63, "tolerance": 0.18, "min_hosts_on": 1}
  }
})";

TEST(SnapshotTest, ParsesTheSpecExampleWithDefaults) {
  auto r = ParseSnapshotText(kSpecExample);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Snapshot& s = *r;
  ASSERT_EQ(s.hosts.size(), 2u);
  EXPECT_EQ(s.hosts[0].groups, std::vector<std::string>{"rack-a"});
  EXPECT_EQ(s.hosts[1].state, HostState::kOn);
  EXPECT_EQ(s.pools[0].cpu.reservation, 16);
  EXPECT_FALSE(s.pools[0].cpu.limit.has_value());
  EXPECT_DOUBLE_EQ(s.vms[0].demand.cpu_cores, 1.3);
  EXPECT_EQ(s.vms[0].demand.memory_mib, 6100);
  // Defaults: demand = size, no host, kvm, migratable, shares 1000.
  EXPECT_EQ(s.vms[1].host, "");
  EXPECT_DOUBLE_EQ(s.vms[1].demand.cpu_cores, 2);
  EXPECT_EQ(s.vms[1].demand.memory_mib, 4096);
  EXPECT_EQ(s.vms[1].cpu_shares, 1000);
  EXPECT_TRUE(s.vms[1].migratable);
  EXPECT_TRUE(s.rules[0].IsHard());
  EXPECT_TRUE(s.rules[1].IsHard());
  EXPECT_FALSE(s.rules[2].IsHard());
  EXPECT_EQ(s.rules[2].groups, std::vector<std::string>{"rack-b"});
  EXPECT_EQ(s.settings.drs.threshold, 3);
  EXPECT_DOUBLE_EQ(s.settings.dpm.target_utilization, 0.63);
}

TEST(SnapshotTest, RoundTripsThroughJson) {
  auto r = ParseSnapshotText(kSpecExample);
  ASSERT_TRUE(r.ok());
  Snapshot s = *r;
  s.vms[0].last_moved_ago_s = 120;
  s.vms[0].limit_cpu_cores = 3;
  s.settings.ha.enabled = true;
  auto again = ParseSnapshot(SnapshotToJson(s));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, s);
}

TEST(SnapshotTest, RestartPriorityRoundTripsAndIsWrittenOnlyWhenNotMedium) {
  auto r = ParseSnapshotText(kSpecExample);
  ASSERT_TRUE(r.ok());
  Snapshot s = *r;
  EXPECT_EQ(s.vms[0].restart_priority, RestartPriority::kMedium);  // the default
  const Json plain = SnapshotToJson(s);
  EXPECT_FALSE(plain["vms"][0].contains("restart_priority"));
  EXPECT_FALSE(plain["vms"][1].contains("restart_priority"));
  for (RestartPriority p :
       {RestartPriority::kHigh, RestartPriority::kMedium, RestartPriority::kLow, RestartPriority::kDisabled}) {
    EXPECT_EQ(ParseRestartPriority(RestartPriorityName(p)).value(), p);
    s.vms[1].restart_priority = p;
    const Json j = SnapshotToJson(s);
    if (p == RestartPriority::kMedium) {
      EXPECT_EQ(j, plain);  // snapshots without the field stay byte-identical
    } else {
      EXPECT_EQ(j["vms"][1]["restart_priority"], std::string(RestartPriorityName(p)));
    }
    auto again = ParseSnapshot(j);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(*again, s);
  }
  EXPECT_EQ(RestartPriorityName(RestartPriority::kDisabled), "disabled");
  auto bad = ParseRestartPriority("urgent");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "restart priority 'urgent' is not one of high, medium, low, disabled");
}

struct Malformed {
  const char* what;
  std::string json;
  std::string error;
};

class MalformedSnapshotTest : public ::testing::TestWithParam<Malformed> {};

TEST_P(MalformedSnapshotTest, NamesTheField) {
  auto r = ParseSnapshotText(GetParam().json);
  ASSERT_FALSE(r.ok()) << GetParam().what;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr(GetParam().error)) << GetParam().what;
}

std::string WithVms(const std::string& vms, const std::string& extra = "") {
  return R"({"hosts": [{"name": "h1", "cpu_cores": 8, "memory_mib": 16384},
                       {"name": "h2", "cpu_cores": 8, "memory_mib": 16384, "state": "standby"}],
            "vms": [)" +
         vms + "]" + extra + "}";
}

const char kOkVm[] = R"({"name": "a", "host": "h1", "vcpus": 1, "memory_mib": 512})";

INSTANTIATE_TEST_SUITE_P(
    All, MalformedSnapshotTest,
    ::testing::Values(
        Malformed{"negative memory", WithVms(std::string(kOkVm) + R"(, {"name": "b", "vcpus": 1, "memory_mib": -5})"),
                  "vms[1].memory_mib: expected a positive integer"},
        Malformed{"fractional memory", WithVms(R"({"name": "b", "vcpus": 1, "memory_mib": 1.5})"),
                  "vms[0].memory_mib: expected a positive integer"},
        Malformed{"string vcpus", WithVms(R"({"name": "b", "vcpus": "2", "memory_mib": 512})"),
                  "vms[0].vcpus: expected a positive integer"},
        Malformed{"missing hosts", R"({"vms": []})", "hosts: required array is missing"},
        Malformed{"hosts not array", R"({"hosts": 3})", "hosts: expected an array"},
        Malformed{"bad state", R"({"hosts": [{"name": "h1", "cpu_cores": 8, "memory_mib": 1, "state": "zombie"}]})",
                  "hosts[0].state: expected one of on | standby | maintenance | failed, got 'zombie'"},
        Malformed{"zero cores", R"({"hosts": [{"name": "h1", "cpu_cores": 0, "memory_mib": 1}]})",
                  "hosts[0].cpu_cores: expected a positive number"},
        Malformed{"unknown host", WithVms(R"({"name": "b", "host": "h9", "vcpus": 1, "memory_mib": 512})"),
                  "vms[0].host: unknown host 'h9'"},
        Malformed{"guest on standby host", WithVms(R"({"name": "b", "host": "h2", "vcpus": 1, "memory_mib": 512})"),
                  "vms[0].host: host 'h2' is in standby"},
        Malformed{"duplicate guest", WithVms(std::string(kOkVm) + "," + kOkVm), "vms[1].name: duplicate guest 'a'"},
        Malformed{"negative demand",
                  WithVms(R"({"name": "b", "vcpus": 1, "memory_mib": 512, "demand": {"cpu_cores": -1}})"),
                  "vms[0].demand.cpu_cores: expected a non-negative number"},
        Malformed{"reservation above size",
                  WithVms(R"({"name": "b", "vcpus": 1, "memory_mib": 512, "reservation": {"memory_mib": 1024}})"),
                  "vms[0].reservation.memory_mib: reservation exceeds"},
        Malformed{"bad kind", WithVms(R"({"name": "b", "vcpus": 1, "memory_mib": 512, "kind": "xen"})"),
                  "vms[0].kind: expected one of kvm | qemu | lxc"},
        Malformed{"bad restart priority",
                  WithVms(R"({"name": "a", "vcpus": 1, "memory_mib": 512, "restart_priority": "high"},
                             {"name": "b", "vcpus": 1, "memory_mib": 512, "restart_priority": null},
                             {"name": "c", "vcpus": 1, "memory_mib": 512, "restart_priority": "disabled"},
                             {"name": "d", "vcpus": 1, "memory_mib": 512, "restart_priority": "urgent"})"),
                  "vms[3].restart_priority: expected one of high, medium, low, disabled, got 'urgent'"},
        Malformed{"numeric restart priority",
                  WithVms(R"({"name": "b", "vcpus": 1, "memory_mib": 512, "restart_priority": 1})"),
                  "vms[0].restart_priority: expected a string"},
        Malformed{"unknown pool", WithVms(R"({"name": "b", "vcpus": 1, "memory_mib": 512, "pool": "nope"})"),
                  "vms[0].pool: unknown pool 'nope'"},
        Malformed{"rule unknown guest",
                  WithVms(kOkVm, R"(, "rules": [{"name": "r", "type": "vm-affinity", "vms": ["a", "zz"]}])"),
                  "rules[0].vms[1]: unknown guest 'zz'"},
        Malformed{"rule bad type", WithVms(kOkVm, R"(, "rules": [{"name": "r", "type": "vm-love", "vms": ["a"]}])"),
                  "rules[0].type: expected one of vm-affinity | vm-anti-affinity | vm-host"},
        Malformed{"vm-host without mode",
                  WithVms(kOkVm, R"(, "rules": [{"name": "r", "type": "vm-host", "vms": ["a"], "hosts": ["h1"]}])"),
                  "rules[0].mode: required"},
        Malformed{
            "vm-host unknown host",
            WithVms(kOkVm,
                    R"(, "rules": [{"name": "r", "type": "vm-host", "vms": ["a"], "hosts": ["hx"], "mode": "must"}])"),
            "rules[0].hosts[0]: unknown host 'hx'"},
        Malformed{"pool cycle",
                  R"({"hosts": [], "pools": [{"name": "a", "parent": "b"}, {"name": "b", "parent": "a"}]})",
                  "pools[0].parent: cycle"},
        Malformed{"pool limit below reservation",
                  R"({"hosts": [], "pools": [{"name": "a", "cpu": {"reservation_cores": 4, "limit_cores": 2}}]})",
                  "pools[0].cpu.limit_cores: must not be below reservation_cores"},
        Malformed{"threshold", R"({"hosts": [], "settings": {"drs": {"threshold": 9}}})",
                  "settings.drs.threshold: expected an integer from 1 to 5"},
        Malformed{"tolerance", R"({"hosts": [], "settings": {"dpm": {"tolerance": 0.9}}})", "settings.dpm.tolerance"},
        Malformed{"version", R"({"version": 2, "hosts": []})", "version: unsupported version 2"},
        Malformed{"not json", "{\"hosts\": [", "snapshot: line 1"},
        Malformed{"not an object", "[1, 2]", "expected a JSON object"}));

TEST(PlanJsonTest, RoundTrips) {
  Plan p;
  p.policy = "drs";
  p.placements.push_back({"vm1", "h1", "initial"});
  p.moves.push_back({"vm2", "h1", "h2", 2, "cpu imbalance", 0.013});
  p.power.push_back({"h3", PowerActionType::kPowerOff, "dpm"});
  p.unplaced.push_back({"vm3", "no host has 65536 MiB free"});
  p.unresolved.push_back({"r1", "cannot fix"});
  p.before.imbalance = 0.21;
  p.before.hosts_on = 3;
  p.after.imbalance = 0.04;
  p.elapsed_ms = 12.5;
  Json j = PlanToJson(p);
  EXPECT_EQ(j["moves"][0]["from"], "h1");
  EXPECT_EQ(j["power"][0]["action"], "power-off");
  auto back = ParsePlan(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, p);
}

TEST(PlanJsonTest, MalformedPlanNamesField) {
  auto r = ParsePlan(Json::parse(R"({"moves": [{"vm": "a", "from": "h1", "to": "h2", "priority": 7}]})"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("moves[0].priority"));
  r = ParsePlan(Json::parse(R"({"power": [{"host": "h1", "action": "explode"}]})"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("power[0].action"));
}

}  // namespace
}  // namespace uw::placement
