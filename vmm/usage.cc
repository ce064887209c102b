#include "vmm/usage.h"

#include <chrono>

namespace uw::vmm {
namespace {
double Rate(uint64_t now, uint64_t before, double seconds) {
  return now >= before && seconds > 0 ? static_cast<double>(now - before) / seconds : 0;
}
}  // namespace

std::vector<GuestUsage> UsageTracker::Update(const std::vector<GuestCounters>& samples) {
  std::map<std::string, GuestCounters> next;
  std::vector<GuestUsage> out;
  out.reserve(samples.size());
  for (const auto& c : samples) {
    const std::string key = c.uuid.empty() ? c.name : c.uuid;
    GuestUsage u;
    u.counters = c;
    auto it = previous_.find(key);
    if (it != previous_.end() && c.at > it->second.at && c.cpu_time_ns >= it->second.cpu_time_ns) {
      const auto& p = it->second;
      u.interval_s = std::chrono::duration<double>(c.at - p.at).count();
      u.cpu_cores = static_cast<double>(c.cpu_time_ns - p.cpu_time_ns) / 1e9 / u.interval_s;
      u.block_rd_bps = Rate(c.block_rd_bytes, p.block_rd_bytes, u.interval_s);
      u.block_wr_bps = Rate(c.block_wr_bytes, p.block_wr_bytes, u.interval_s);
      u.net_rx_bps = Rate(c.net_rx_bytes, p.net_rx_bytes, u.interval_s);
      u.net_tx_bps = Rate(c.net_tx_bytes, p.net_tx_bytes, u.interval_s);
    }
    if (c.balloon_available_kib > 0 && c.balloon_usable_kib >= 0 && c.balloon_usable_kib <= c.balloon_available_kib) {
      u.memory_used_mib = (c.balloon_available_kib - c.balloon_usable_kib) / 1024;
    } else if (c.rss_kib >= 0) {
      u.memory_used_mib = c.rss_kib / 1024;
    }
    next[key] = c;
    out.push_back(std::move(u));
  }
  previous_ = std::move(next);
  return out;
}

}  // namespace uw::vmm
