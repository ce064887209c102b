// Running an operator's or a tool's command with a deadline (power drivers, storage tools).
//
// Thread safety: RunCommand may be called from any thread at once (posix_spawn; no shared state).
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace uw {

struct CommandResult {
  int exit_code = -1;  // -1 when it was killed by a signal
  std::string out;     // stdout and stderr, each cut at 64 KiB
  std::string err;
};

// Runs argv[0] (searched on PATH) with `argv`, the caller's environment plus `env` (which wins),
// stdin from /dev/null, in its own process group. Errors: kInvalidArgument for an empty argv;
// kUnavailable when the program cannot be started (names it and why); kDeadlineExceeded when it
// ran past `timeout` (its whole process group is killed first). A non-zero exit is a result, not
// an error: the caller knows what the program's codes mean.
Result<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                 const std::vector<std::pair<std::string, std::string>>& env,
                                 std::chrono::milliseconds timeout);

}  // namespace uw
