// Times as operators and agents write them (utc_time.h).
#include "common/utc_time.h"

#include <ctime>
#include <string>

namespace uw {

Result<int64_t> ParseUtcMillis(std::string_view text, std::string_view field) {
  const std::string v(text);
  auto bad = [&] {
    return InvalidArgumentError(std::string(field) +
                                ": expected epoch milliseconds or a UTC time like 2026-12-06T18:00:00Z");
  };
  if (!v.empty() && v.size() <= 15 && v.find_first_not_of("0123456789") == std::string::npos) return std::stoll(v);
  std::tm tm{};
  const char* end = strptime(v.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (end == nullptr) return bad();
  int64_t ms = 0;
  if (*end == '.') {
    // Up to nine digits of a second; milliseconds are kept.
    int digits = 0;
    int64_t scale = 100;
    for (++end; *end >= '0' && *end <= '9'; ++end, ++digits) {
      if (digits < 3) ms += (*end - '0') * scale;
      scale /= 10;
    }
    if (digits == 0 || digits > 9) return bad();
  }
  if (std::string_view(end) != "Z") return bad();
  return static_cast<int64_t>(timegm(&tm)) * 1000 + ms;
}

}  // namespace uw
