// Logging through spdlog. Call InitLogging once in main(); libraries just use spdlog::info etc.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

#include "common/status.h"

namespace uw {

// Sets the default logger: to stderr, or to `file` when non-empty, at `level`
// ("trace", "debug", "info", "warn", "error"). kInvalidArgument for an unknown level.
Status InitLogging(std::string_view program, std::string_view level, std::string_view file = "");

}  // namespace uw
