// uwctl: the operator's command line over the manager's REST API (CLI11).
//
//   argv -> CLI11 commands -> api::HttpClient -> /api/v1/... -> table (default) or JSON (-o json)
//
// Exit codes (stable, for scripts): 0 success; 1 a task or operation failed; 2 usage error;
// 3 unauthenticated or permission denied; 4 not found; 5 conflict (exists, busy, no capacity);
// 6 manager unreachable or unavailable; 7 timed out waiting (--wait); 8 not implemented yet.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace uw::cli {

// Runs uwctl with `args` (without the program name), writing results to `out` and errors to `err`.
// Reads UW_URL / UW_TOKEN from the environment when --url / --token are not given.
int Run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// Exit code for a failed call.
int ExitCodeFor(const Status& s);
// "what to do" for an error ("check --token or UW_TOKEN").
std::string HintFor(const Status& s);
// Left-aligned columns separated by two spaces; header row first.
std::string FormatTable(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

}  // namespace uw::cli
