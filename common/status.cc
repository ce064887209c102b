#include "common/status.h"

#include <array>

namespace uw {
namespace {
constexpr std::array<std::string_view, 13> kNames = {
    "ok",          "invalid_argument",  "not_found",          "already_exists",  "failed_precondition", "aborted",
    "unavailable", "deadline_exceeded", "resource_exhausted", "unauthenticated", "permission_denied",   "unimplemented",
    "internal"};
}  // namespace

std::string_view StatusCodeName(StatusCode code) {
  auto i = static_cast<size_t>(code);
  return i < kNames.size() ? kNames[i] : "internal";
}

StatusCode StatusCodeFromName(std::string_view name) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) return static_cast<StatusCode>(i);
  }
  return StatusCode::kInternal;
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string s(StatusCodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, std::string(context) + ": " + message_);
}

}  // namespace uw
