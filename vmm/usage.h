// Turns successive cumulative counters into per-interval usage. Not thread-safe (one sampler
// thread owns it).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "vmm/hypervisor.h"

namespace uw::vmm {

class UsageTracker {
 public:
  // Returns one GuestUsage per counter set, with rates against the previous sample of the same
  // guest (by uuid, else name). Guests not in `samples` are forgotten. Counters that went
  // backwards (guest restarted) restart the interval: rates are 0 for that sample.
  std::vector<GuestUsage> Update(const std::vector<GuestCounters>& samples);

 private:
  std::map<std::string, GuestCounters> previous_;
};

}  // namespace uw::vmm
