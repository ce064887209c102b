#include "common/command.h"

#include <gtest/gtest.h>

#include <chrono>

namespace uw {
namespace {

using namespace std::chrono_literals;

TEST(RunCommandTest, ReturnsTheExitCodeAndBothOutputs) {
  auto r = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"}, {}, 5s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
}

TEST(RunCommandTest, PassesTheExtraEnvironment) {
  auto r = RunCommand({"sh", "-c", "printf %s \"$UW_X\""}, {{"UW_X", "secret value"}}, 5s);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "secret value");
}

TEST(RunCommandTest, KillsAProgramPastItsDeadline) {
  const auto start = std::chrono::steady_clock::now();
  auto r = RunCommand({"sh", "-c", "sleep 30"}, {}, 200ms);
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(RunCommandTest, KillsAProgramThatClosedItsOutputButRunsOn) {
  auto r = RunCommand({"sh", "-c", "exec >/dev/null 2>&1; sleep 30"}, {}, 300ms);
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
}

TEST(RunCommandTest, AMissingProgramIsUnavailableAndNamed) {
  auto r = RunCommand({"/nonexistent/uw-ipmitool"}, {}, 1s);
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("/nonexistent/uw-ipmitool"), std::string::npos);
  EXPECT_EQ(RunCommand({}, {}, 1s).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace uw
