// Private to storage/: what the two backends share.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace uw::storage::internal {

// Runs `argv` (a qemu-img command) with `timeout`. A non-zero exit becomes an error whose message
// is `what` and the tool's output on one line; its code is kFailedPrecondition when the tool says
// another process holds the image's lock ("in use"), kNotFound when it says the file is missing,
// else kInternal. kUnavailable when the tool ran past its deadline or could not be started.
Result<std::string> RunTool(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                            const std::string& what);

// The fields of `qemu-img info --output=json` the backends use.
struct ToolImageInfo {
  std::string format;
  int64_t virtual_bytes = 0;
  int64_t actual_bytes = 0;
  std::string backing_file;  // as written in the image
  std::vector<std::string> snapshots;
};
Result<ToolImageInfo> ParseToolImageInfo(const std::string& json_text, const std::string& what);

// A tool's output on one line: its non-empty lines joined by spaces, without "qemu-img: " prefixes.
std::string OneLine(const std::string& out);

}  // namespace uw::storage::internal
