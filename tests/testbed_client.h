// What integration tests know of the namespace test bed (scripts/testbed): its hosts and their
// agents, read from $UW_TESTBED_DIR/testbed.json, plus polling helpers that wait on conditions
// (markers, states) instead of sleeping for fixed times.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "common/json.h"

namespace uw::testing {

struct TestbedHost {
  std::string name, address, libvirt_uri, lxc_uri, agent_url, agent_token, dir;
};

struct Testbed {
  std::string dir;
  std::vector<TestbedHost> hosts;
  Json guest;  // the test guest's files (kernel, initrd, lxc_rootfs, ...)

  // Reads $UW_TESTBED_DIR/testbed.json (default /var/tmp/uw-testbed). Fails the calling test
  // with a clear message when the test bed is not up.
  static Result<Testbed> Load();
  api::HttpClient Agent(size_t host_index) const;
};

// Polls `done` every `every` until it returns true or `timeout` passes; returns whether it did.
inline bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout,
                    std::chrono::milliseconds every = std::chrono::milliseconds(100)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(every);
  }
}

// Runs a shell command and returns its exit code and stdout.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
CommandResult RunCommand(const std::string& command);

// Signals host `i`'s agent and waits for it to exit (its guests keep running).
Status StopAgent(const Testbed& bed, size_t i, int signal);
// Starts every stopped agent again (scripts/testbed up with $UW_AGENT_BIN; needs $UW_SOURCE_DIR)
// and reloads `bed`.
Status RestartAgents(Testbed& bed);

}  // namespace uw::testing
