// Taps are made in a child process in a network namespace of its own, so nothing leaks into the
// machine's. Needs CAP_NET_ADMIN and /dev/net/tun: skipped without them.
#include "netvirt/tap.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

namespace uw::netvirt {
namespace {

// Runs `body` in a child process in a new network namespace; its exit code (0: all checks held),
// or 77 when the namespace cannot be made.
int InOwnNetns(const std::function<int()>& body) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (unshare(CLONE_NEWNET) != 0) _exit(77);
    _exit(body());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

TEST(TapTest, ATapIsMadeOnceUpAndRemoved) {
  if (access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/net/tun here";
  const int rc = InOwnNetns([] {
    if (!CreateTap("uwt-test0").ok()) return 1;
    if (!DeviceExists("uwt-test0")) return 2;
    if (!CreateTap("uwt-test0").ok()) return 3;  // again: fine
    if (!DeleteTap("uwt-test0").ok()) return 4;
    if (DeviceExists("uwt-test0")) return 5;
    if (!DeleteTap("uwt-test0").ok()) return 6;  // gone: fine
    // "lo" is no tap: not taken, not removed.
    if (CreateTap("lo").code() != StatusCode::kFailedPrecondition) return 7;
    if (DeleteTap("lo").ok() || !DeviceExists("lo")) return 8;
    if (CreateTap("a-name-longer-than-15").code() != StatusCode::kInvalidArgument) return 9;
    return 0;
  });
  if (rc == 77) GTEST_SKIP() << "cannot make a network namespace here (no CAP_SYS_ADMIN)";
  EXPECT_EQ(rc, 0) << "check " << rc << " failed";
}

}  // namespace
}  // namespace uw::netvirt
