// Worked examples of the divvy: every number below is computed by hand in the comments.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "placement/placement.h"
#include "placement/test_util.h"

namespace uw::placement {
namespace {

using testing::Builder;
using ::testing::HasSubstr;

constexpr double kEps = 1e-6;

TEST(EntitlementTest, NoContentionGivesDemandCappedByLimitAndRaisedToReservation) {
  Builder b;
  b.AddHost("h1", 16, 65536);
  b.AddVm("a", "h1", 4, 8192, 1.5, 2000);
  b.AddVm("b", "h1", 4, 8192, 3.0, 8000);
  b.LastVm().limit_cpu_cores = 2;      // demand 3 capped to 2
  b.LastVm().limit_memory_mib = 4096;  // demand 8000 capped to 4096
  b.AddVm("c", "h1", 4, 8192, 0.1, 100);
  b.LastVm().reservation = {1.0, 2048};    // raised to the reservation
  b.AddVm("d", "h1", 2, 4096, 7.0, 9999);  // demand above size: capped by vcpus / memory_mib
  Entitlements e = ComputeEntitlements(b.Build());
  EXPECT_NEAR(e.vms[0].cpu_cores, 1.5, kEps);
  EXPECT_NEAR(e.vms[0].memory_mib, 2000, kEps);
  EXPECT_NEAR(e.vms[1].cpu_cores, 2.0, kEps);
  EXPECT_NEAR(e.vms[1].memory_mib, 4096, kEps);
  EXPECT_NEAR(e.vms[2].cpu_cores, 1.0, kEps);
  EXPECT_NEAR(e.vms[2].memory_mib, 2048, kEps);
  EXPECT_NEAR(e.vms[3].cpu_cores, 2.0, kEps);
  EXPECT_NEAR(e.vms[3].memory_mib, 4096, kEps);
}

TEST(EntitlementTest, ContentionIsSharedByShares) {
  // 8 cores; a (2000 shares) and b (1000 shares) both want 8: x*2000 + x*1000 = 8
  // -> a = 16/3 = 5.333, b = 8/3 = 2.667.
  Builder b;
  b.AddHost("h1", 8, 65536);
  b.AddVm("a", "h1", 8, 1024, 8);
  b.LastVm().cpu_shares = 2000;
  b.AddVm("b", "h1", 8, 1024, 8);
  Entitlements e = ComputeEntitlements(b.Build());
  EXPECT_NEAR(e.vms[0].cpu_cores, 16.0 / 3, 1e-6);
  EXPECT_NEAR(e.vms[1].cpu_cores, 8.0 / 3, 1e-6);
}

TEST(EntitlementTest, ReservationIsAFloorUnderContention) {
  // As above but b reserves 4: b = max(4, 2.667) = 4, a gets the remaining 4.
  Builder b;
  b.AddHost("h1", 8, 65536);
  b.AddVm("a", "h1", 8, 1024, 8);
  b.LastVm().cpu_shares = 2000;
  b.AddVm("b", "h1", 8, 1024, 8);
  b.LastVm().reservation.cpu_cores = 4;
  Entitlements e = ComputeEntitlements(b.Build());
  EXPECT_NEAR(e.vms[0].cpu_cores, 4, 1e-6);
  EXPECT_NEAR(e.vms[1].cpu_cores, 4, 1e-6);
}

TEST(EntitlementTest, UnusedShareGoesToOthers) {
  // a wants only 1 of its fair 5.333: b gets 8 - 1 = 7 (max-min fairness).
  Builder b;
  b.AddHost("h1", 8, 65536);
  b.AddVm("a", "h1", 8, 1024, 1);
  b.LastVm().cpu_shares = 2000;
  b.AddVm("b", "h1", 8, 1024, 8);
  Entitlements e = ComputeEntitlements(b.Build());
  EXPECT_NEAR(e.vms[0].cpu_cores, 1, 1e-6);
  EXPECT_NEAR(e.vms[1].cpu_cores, 7, 1e-6);
}

Snapshot PoolCluster() {
  // 12 cores. prod (4000 shares) holds p1, p2 (8 cores each wanted);
  // dev (2000 shares) holds d1 (8 wanted).
  Builder b;
  b.AddHost("h1", 12, 262144);
  b.AddVm("p1", "h1", 8, 1024, 8);
  b.LastVm().pool = "prod";
  b.AddVm("p2", "h1", 8, 1024, 8);
  b.LastVm().pool = "prod";
  b.AddVm("d1", "h1", 8, 1024, 8);
  b.LastVm().pool = "dev";
  Snapshot s = b.Build();
  Pool prod;
  prod.name = "prod";
  prod.cpu.shares = 4000;
  Pool dev;
  dev.name = "dev";
  dev.cpu.shares = 2000;
  s.pools = {prod, dev};
  return testing::Reparse(s);
}

TEST(EntitlementTest, PoolsDivideByPoolSharesThenByGuestShares) {
  // Root: prod wants 16, dev 8; x*4000 + x*2000 = 12 -> prod 8, dev 4. Inside prod: 4 and 4.
  Entitlements e = ComputeEntitlements(PoolCluster());
  EXPECT_NEAR(e.pools[0].cpu_cores, 8, 1e-6);
  EXPECT_NEAR(e.pools[1].cpu_cores, 4, 1e-6);
  EXPECT_NEAR(e.vms[0].cpu_cores, 4, 1e-6);
  EXPECT_NEAR(e.vms[1].cpu_cores, 4, 1e-6);
  EXPECT_NEAR(e.vms[2].cpu_cores, 4, 1e-6);
}

TEST(EntitlementTest, PoolLimitCapsAndFreesCapacity) {
  // dev limited to 2 cores: dev = 2, prod = 12 - 2 = 10, p1 = p2 = 5.
  Snapshot s = PoolCluster();
  s.pools[1].cpu.limit = 2;
  Entitlements e = ComputeEntitlements(s);
  EXPECT_NEAR(e.pools[1].cpu_cores, 2, 1e-6);
  EXPECT_NEAR(e.vms[2].cpu_cores, 2, 1e-6);
  EXPECT_NEAR(e.pools[0].cpu_cores, 10, 1e-6);
  EXPECT_NEAR(e.vms[0].cpu_cores, 5, 1e-6);
}

TEST(EntitlementTest, PoolReservationAndNestedPool) {
  // dev reserves 6: dev = max(6, 4) = 6, prod = 6. prod has a child pool "web" (1000 shares) with
  // p2 moved into it; prod's children: p1 (1000 shares) and web (1000 shares) -> 3 and 3.
  Snapshot s = PoolCluster();
  s.pools[1].cpu.reservation = 6;
  Pool web;
  web.name = "web";
  web.parent = "prod";
  web.cpu.shares = 1000;
  s.pools.push_back(web);
  s.vms[1].pool = "web";
  Entitlements e = ComputeEntitlements(testing::Reparse(s));
  EXPECT_NEAR(e.pools[1].cpu_cores, 6, 1e-6);
  EXPECT_NEAR(e.pools[0].cpu_cores, 6, 1e-6);
  EXPECT_NEAR(e.vms[0].cpu_cores, 3, 1e-6);
  EXPECT_NEAR(e.pools[2].cpu_cores, 3, 1e-6);
  EXPECT_NEAR(e.vms[1].cpu_cores, 3, 1e-6);
}

TEST(EntitlementTest, MemoryUsesTheSameDivvy) {
  // 10240 MiB on the one host; a (3000 shares) and b (1000) each want 8192:
  // x*3000 + x*1000 = 10240 -> a = 7680, b = 2560.
  Builder b;
  b.AddHost("h1", 8, 10240);
  b.AddVm("a", "h1", 1, 8192, 0.5, 8192);
  b.LastVm().memory_shares = 3000;
  b.AddVm("b", "", 1, 8192, 0.5, 8192);
  Entitlements e = ComputeEntitlements(b.Build());
  EXPECT_NEAR(e.vms[0].memory_mib, 7680, 1e-3);
  EXPECT_NEAR(e.vms[1].memory_mib, 2560, 1e-3);
}

TEST(AdmissionTest, NonExpandablePoolRefusesChildReservations) {
  Snapshot s = PoolCluster();
  s.pools[0].expandable = false;
  s.pools[0].cpu.reservation = 2;
  s.vms[0].reservation.cpu_cores = 2;
  EXPECT_TRUE(CheckAdmission(s).empty());
  Vm extra = s.vms[1];
  extra.name = "p3";
  extra.reservation.cpu_cores = 1;
  Status st = AdmitVm(s, extra);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("pool 'prod' is not expandable"));
  // An expandable pool borrows from the cluster instead.
  s.pools[0].expandable = true;
  EXPECT_TRUE(AdmitVm(s, extra).ok());
}

TEST(AdmissionTest, ClusterCapacityBoundsReservations) {
  Snapshot s = PoolCluster();  // 12 cores
  s.vms[0].reservation.cpu_cores = 8;
  s.vms[2].reservation.cpu_cores = 4;
  EXPECT_TRUE(CheckAdmission(s).empty());
  Vm extra = s.vms[1];
  extra.name = "p3";
  extra.reservation.cpu_cores = 0.5;
  Status st = AdmitVm(s, extra);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("exceed the powered-on capacity"));
  extra.reservation.cpu_cores = 0;
  EXPECT_TRUE(AdmitVm(s, extra).ok());
}

TEST(AdmissionTest, UnplacedGuestRefusedByAdmissionIsReported) {
  Snapshot s = PoolCluster();
  s.pools[1].expandable = false;
  s.vms[2].host = "";
  s.vms[2].reservation.memory_mib = 1024;  // dev reserves no memory
  Plan p = testing::PlanAndCheck(s);
  ASSERT_EQ(p.unplaced.size(), 1u);
  EXPECT_EQ(p.unplaced[0].vm, "d1");
  EXPECT_THAT(p.unplaced[0].reason, HasSubstr("admission control"));
}

// HA admission control. Three hosts of 16 cores / 64 GiB; seven guests of 16 GiB using 1 core
// each (112 GiB, 7 cores). After the largest host fails 128 GiB and 32 cores are left, so a new
// guest of up to 16 GiB fits the reserve.
Snapshot HaCluster() {
  Builder b;
  for (int h = 0; h < 3; ++h) b.AddHost("h" + std::to_string(h), 16, 65536);
  for (int i = 0; i < 7; ++i) b.AddVm("v" + std::to_string(i), "h" + std::to_string(i % 3), 1, 16384, 1.0);
  Snapshot s = b.Build();
  s.settings.ha.enabled = true;
  s.settings.ha.host_failures = 1;
  return s;
}

Vm NewGuest(int64_t memory_mib, int64_t vcpus = 1) {
  Vm v;
  v.name = "new";
  v.vcpus = vcpus;
  v.memory_mib = memory_mib;
  v.demand = {static_cast<double>(vcpus), memory_mib};
  return v;
}

TEST(HaAdmissionTest, RefusesAGuestThatBreaksTheReserve) {
  Snapshot s = HaCluster();
  EXPECT_TRUE(AdmitVm(s, NewGuest(16384)).ok());  // 131072 MiB needed, 131072 left
  Status st = AdmitVm(s, NewGuest(16385));
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(st.message(),
            "HA admission control: with 'new' the running guests need 131073 MiB and 8.00 cores, but after losing "
            "the 1 largest of the 3 powered-on hosts (settings.ha.host_failures 1) 131072 MiB and 32.00 cores are "
            "left");
  // The same guest already placed on a host counts once.
  Vm placed = NewGuest(16385);
  placed.host = "h2";
  EXPECT_EQ(AdmitVm(s, placed).code(), StatusCode::kResourceExhausted);
  placed.memory_mib = placed.demand.memory_mib = 16384;
  EXPECT_TRUE(AdmitVm(s, placed).ok());
}

TEST(HaAdmissionTest, CountsTheGuestsCpu) {
  // 7 + 25 = 32 cores fit the 32 left; 7 + 26 do not (the cluster's 48 cores are not contended).
  Snapshot s = HaCluster();
  EXPECT_TRUE(AdmitVm(s, NewGuest(1024, 25)).ok());
  Status st = AdmitVm(s, NewGuest(1024, 26));
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("need 115712 MiB and 33.00 cores"));
  EXPECT_THAT(st.message(), HasSubstr("131072 MiB and 32.00 cores are left"));
}

TEST(HaAdmissionTest, MoreFailuresNeedMoreRoom) {
  Snapshot s = HaCluster();
  s.settings.ha.host_failures = 2;  // 64 GiB left: even the guests running now do not fit
  Status st = AdmitVm(s, NewGuest(1024));
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("after losing the 2 largest of the 3 powered-on hosts"));
  s.settings.ha.host_failures = 5;  // more failures than hosts: nothing is left
  EXPECT_THAT(AdmitVm(s, NewGuest(1024)).message(), HasSubstr("losing the 3 largest of the 3 powered-on hosts"));
}

TEST(HaAdmissionTest, OnlyPoweredOnHostsCount) {
  Snapshot s = HaCluster();
  Host spare;
  spare.name = "spare";
  spare.cpu_cores = 16;
  spare.memory_mib = 65536;
  spare.state = HostState::kStandby;
  s.hosts.push_back(spare);
  EXPECT_EQ(AdmitVm(s, NewGuest(16385)).code(), StatusCode::kResourceExhausted);
  s.hosts.back().state = HostState::kOn;  // 192 GiB left after one failure
  EXPECT_TRUE(AdmitVm(s, NewGuest(16385)).ok());
}

TEST(HaAdmissionTest, AdmittedWhenHaIsOffOrToleratesNoFailure) {
  Snapshot s = HaCluster();
  const Vm big = NewGuest(32768);
  EXPECT_EQ(AdmitVm(s, big).code(), StatusCode::kResourceExhausted);
  s.settings.ha.host_failures = 0;
  EXPECT_TRUE(AdmitVm(s, big).ok());
  s.settings.ha.host_failures = 1;
  s.settings.ha.enabled = false;
  EXPECT_TRUE(AdmitVm(s, big).ok());
}

TEST(HaAdmissionTest, ReservationChecksComeFirst) {
  // A guest both checks refuse is refused for the cluster's reservations (47.5 + 1 > 48 cores).
  Snapshot s = HaCluster();
  for (int i = 0; i < 3; ++i) s.vms[i].vcpus = 16;
  s.vms[0].reservation.cpu_cores = s.vms[1].reservation.cpu_cores = 16;
  s.vms[2].reservation.cpu_cores = 15.5;
  Vm v = NewGuest(32768);
  v.reservation.cpu_cores = 1;
  Status st = AdmitVm(s, v);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("exceed the powered-on capacity"));
}

}  // namespace
}  // namespace uw::placement
