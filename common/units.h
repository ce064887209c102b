// Resource quantities with their units: CPU in cores (fractional), memory in MiB.
// Plain values; no hidden conversions. Parse helpers accept "512MiB", "2GiB", "1.5" (cores).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace uw {

struct Resources {
  double cpu_cores = 0;
  int64_t memory_mib = 0;

  Resources& operator+=(const Resources& o) {
    cpu_cores += o.cpu_cores;
    memory_mib += o.memory_mib;
    return *this;
  }
  Resources& operator-=(const Resources& o) {
    cpu_cores -= o.cpu_cores;
    memory_mib -= o.memory_mib;
    return *this;
  }
  friend Resources operator+(Resources a, const Resources& b) { return a += b; }
  friend Resources operator-(Resources a, const Resources& b) { return a -= b; }
  friend bool operator==(const Resources&, const Resources&) = default;
  // True when every component of this fits within `capacity`.
  bool FitsIn(const Resources& capacity) const {
    return cpu_cores <= capacity.cpu_cores + 1e-9 && memory_mib <= capacity.memory_mib;
  }
};

constexpr int64_t kKiBPerMiB = 1024;
constexpr int64_t kBytesPerMiB = int64_t{1024} * 1024;

// Parses a memory size: a bare number is MiB; suffixes KiB, MiB, GiB, TiB (also K, M, G, T).
// Errors: kInvalidArgument naming the text.
Result<int64_t> ParseMemoryMiB(std::string_view text);

// "512 MiB", "2 GiB" (exact GiB only), "1.5 GiB" otherwise.
std::string FormatMiB(int64_t mib);

}  // namespace uw
