#include "common/units.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace uw {

Result<int64_t> ParseMemoryMiB(std::string_view text) {
  std::string_view t = text;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
  double number = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), number);
  if (ec != std::errc() || number < 0 || !std::isfinite(number)) {
    return InvalidArgumentError("'" + std::string(text) + "' is not a memory size (try 512MiB or 2GiB)");
  }
  std::string_view unit(end, t.data() + t.size() - end);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  double factor;
  if (unit.empty() || unit == "MiB" || unit == "M" || unit == "m")
    factor = 1;
  else if (unit == "KiB" || unit == "K" || unit == "k")
    factor = 1.0 / 1024;
  else if (unit == "GiB" || unit == "G" || unit == "g")
    factor = 1024;
  else if (unit == "TiB" || unit == "T" || unit == "t")
    factor = 1024.0 * 1024;
  else
    return InvalidArgumentError("'" + std::string(text) + "': unknown memory unit '" + std::string(unit) +
                                "' (use KiB, MiB, GiB or TiB)");
  double mib = number * factor;
  if (mib != std::floor(mib)) {
    return InvalidArgumentError("'" + std::string(text) + "' is not a whole number of MiB");
  }
  return static_cast<int64_t>(mib);
}

std::string FormatMiB(int64_t mib) {
  char buf[48];
  if (mib >= 1024 && mib % 1024 == 0) {
    std::snprintf(buf, sizeof buf, "%lld GiB", static_cast<long long>(mib / 1024));
  } else if (mib >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(mib) / 1024);
  } else {
    std::snprintf(buf, sizeof buf, "%lld MiB", static_cast<long long>(mib));
  }
  return buf;
}

}  // namespace uw
