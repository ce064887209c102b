#include "common/id.h"

#include <cctype>
#include <cstdio>
#include <mutex>
#include <random>

namespace uw {
namespace {
uint64_t Random64() {
  static std::mutex mu;
  static std::mt19937_64 gen([] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }());
  std::lock_guard l(mu);
  return gen();
}
}  // namespace

std::string NewUuid() {
  uint64_t a = Random64(), b = Random64();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
                static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

bool IsUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

std::string NewId(std::string_view prefix) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(Random64()));
  return std::string(prefix) + "-" + buf;
}

Status ValidateName(std::string_view name, std::string_view what) {
  std::string w(what);
  if (name.empty()) return InvalidArgumentError(w + " is empty");
  if (name.size() > 63) return InvalidArgumentError(w + " '" + std::string(name) + "' is longer than 63 characters");
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) {
    return InvalidArgumentError(w + " '" + std::string(name) + "' must start with a letter or digit");
  }
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return InvalidArgumentError(w + " '" + std::string(name) +
                                  "' may only contain letters, digits, '.', '_' and '-'");
    }
  }
  return Status::Ok();
}

Status ValidateGuestName(std::string_view name, std::string_view what) {
  const size_t colon = name.find(':');
  if (colon == std::string_view::npos) return ValidateName(name, what);
  std::string w(what);
  UW_RETURN_IF_ERROR(ValidateName(name.substr(0, colon), w + " (tenant part)"));
  UW_RETURN_IF_ERROR(ValidateName(name.substr(colon + 1), w));
  if (name.size() > 63) {
    return InvalidArgumentError(w + " '" + std::string(name) + "' is longer than 63 characters with its tenant: " +
                                "the name may have at most " + std::to_string(62 - colon) + " characters");
  }
  return Status::Ok();
}

}  // namespace uw
