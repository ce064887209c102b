// Times as operators and agents write them: epoch milliseconds, or RFC 3339 in UTC with optional
// fractional seconds (2026-12-06T18:00:00Z, 2026-12-06T18:00:00.250Z), as FormatRfc3339 writes.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace uw {

// Epoch milliseconds of `text`; kInvalidArgument naming `field` for anything else (a zone other
// than Z, a month 13, trailing text).
Result<int64_t> ParseUtcMillis(std::string_view text, std::string_view field);

}  // namespace uw
