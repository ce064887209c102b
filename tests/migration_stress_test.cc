// Live migration under load on the namespace test bed: one emulated guest that burns a CPU, keeps
// rewriting 64 MiB of its memory and ticks on its console is moved back and forth between two
// hosts 20 times. After every move it must answer on its control channel and its console must
// show no panic. (On QEMU 7.2 this guest panicked on the destination within one to seven moves:
// TCG's dirty tracking lost pages; see docs/migration.md.) The figures of each move are printed
// as JSON lines and, with UW_STRESS_JSON=FILE, written to FILE.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "tests/testbed_client.h"

namespace uw::testing {
namespace {

constexpr const char* kGuest = "it-stress1";

TEST(MigrationStress, ABusyMemoryWritingGuestSurvivesTwentyMovesBackAndForth) {
  auto bed = Testbed::Load();
  ASSERT_TRUE(bed.ok()) << bed.status().ToString();
  ASSERT_GE(bed->hosts.size(), 2u);
  for (size_t h = 0; h < 2; ++h)
    (void)bed->Agent(h).Do("DELETE", std::string("/api/v1/guests/") + kGuest + "?force=true");
  Json spec = {{"name", kGuest}, {"kind", "qemu"}, {"image", "tiny"}, {"vcpus", 1}, {"memory_mib", 256}};
  auto made = bed->Agent(0).Call("POST", "/api/v1/guests", &spec);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  ASSERT_TRUE(WaitFor(
      [&] {
        std::ifstream in(ConsoleLogOf(*bed, 0, kGuest));
        std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        return all.find("UW-GUEST-READY") != std::string::npos;
      },
      std::chrono::seconds(180)))
      << "the guest did not boot";

  const int moves = 20;
  Json figures = Json::array();
  auto run = RunPingPong(*bed, kGuest, moves, 64, [&](const PingPongMove& m) {
    Json j = PingPongMoveToJson(m);
    figures.push_back(j);
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
    EXPECT_TRUE(m.answered) << "move " << m.number << " " << m.from << " -> " << m.to
                            << ": the guest did not answer on its control channel; console:\n"
                            << m.console_tail;
    EXPECT_FALSE(m.panicked) << "move " << m.number << " " << m.from << " -> " << m.to
                             << ": the guest's console shows a panic:\n"
                             << m.console_tail;
  });
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->size(), static_cast<size_t>(moves)) << "stopped at the first failed move";
  if (const char* out = std::getenv("UW_STRESS_JSON"); out && *out) {
    std::ofstream(out) << Json({{"moves", figures}}).dump(2) << "\n";
  }
  for (size_t h = 0; h < 2; ++h)
    (void)bed->Agent(h).Do("DELETE", std::string("/api/v1/guests/") + kGuest + "?force=true");
}

}  // namespace
}  // namespace uw::testing
