// What integration tests know of the namespace test bed (scripts/testbed): its hosts and their
// agents, read from $UW_TESTBED_DIR/testbed.json, plus polling helpers that wait on conditions
// (markers, states) instead of sleeping for fixed times.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/http.h"
#include "common/json.h"

namespace uw::testing {

struct TestbedHost {
  std::string name, address, libvirt_uri, lxc_uri, agent_url, agent_token, dir;
  std::string ovsdb;  // the host's ovsdb-server socket, as seen from here ("" without Open vSwitch)
};

struct Testbed {
  std::string dir;
  std::vector<TestbedHost> hosts;
  Json guest;  // the test guest's files (kernel, initrd, lxc_rootfs, ...)
  Json ceph;   // the test bed's Ceph (scripts/ceph's ceph.json: conf, client.keyring, ...); null without

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

// Watches a guest's console log files (one per host) for the "UW-TICK TAG n" lines of the guest's
// `tick` command and notes when each n first appears. The longest wait between consecutive n is
// the pause the guest's own output saw: a live migration's downtime as the guest lives it (plus
// the file polling, every 0.2 ms). A file re-created by the destination's QEMU is read afresh.
// Lines are stamped when read, so the reader runs as a real-time thread (SCHED_FIFO; the test runs
// as root): on two busy cores an ordinary thread was late by up to 100 ms, hiding the gap.
class TickWatcher {
 public:
  TickWatcher(std::vector<std::string> files, std::string tag);
  ~TickWatcher() { Stop(); }
  TickWatcher(const TickWatcher&) = delete;
  TickWatcher& operator=(const TickWatcher&) = delete;
  void Stop();
  size_t Seen(size_t i);  // ticks seen in file i
  bool realtime() const { return realtime_; }
  int64_t Missing();  // values between the first and last tick seen that never appeared
  double MaxGapMs();  // the longest gap between consecutive ticks (0 with fewer than two)

 private:
  void Run();
  const std::vector<std::string> files_;
  const std::string prefix_;
  std::atomic<bool> realtime_{false};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<int64_t, std::chrono::steady_clock::time_point> first_;  // guarded by mu_
  std::vector<size_t> per_file_;                                    // guarded by mu_
  std::thread thread_;
};

// The console log of `guest` on test-bed host `i` (the agent's state directory).
std::string ConsoleLogOf(const Testbed& bed, size_t i, const std::string& guest);

// One live move of the ping-pong stress run.
struct PingPongMove {
  int number = 0;  // 1-based
  std::string from, to;
  double total_ms = 0;        // libvirt's migration time
  double downtime_ms = 0;     // QEMU's downtime figure
  double guest_pause_ms = 0;  // the longest gap in the guest's console ticks across the move
  bool answered = false;      // the guest answered its control channel on the destination
  bool panicked = false;      // "Kernel panic", "BUG:" or "Oops" on the destination console
  std::string console_tail;   // the destination console's last 3 KiB when something went wrong
};
Json PingPongMoveToJson(const PingPongMove& m);

// Moves running `guest` (on host 0, with a control channel) live between test-bed hosts 0 and 1
// `moves` times through the agents (prepare, migrate, poll), while the guest burns a CPU,
// rewrites `dirty_mib` MiB of its memory in a loop and ticks on its console. After each move the
// guest must answer on its control channel and its console must show no panic. Calls `each`
// after every move; stops at the first failed move (returned with the others) or agent error.
Result<std::vector<PingPongMove>> RunPingPong(const Testbed& bed, const std::string& guest, int moves, int dirty_mib,
                                              const std::function<void(const PingPongMove&)>& each);

}  // namespace uw::testing
