// Metering and billing arithmetic (metering.h).
#include "manager/metering.h"

#include <algorithm>
#include <map>
#include <tuple>

namespace uw::manager::metering {
namespace {

constexpr std::array<std::string_view, kMeters> kMeterNames = {
    "vcpu_granted", "vcpu_used", "memory_granted", "memory_used", "disk", "net_bytes", "disk_bytes"};
constexpr int64_t kMicros = 1'000'000;
constexpr int64_t kMibSecondsPerGibHour = int64_t{1024} * 3600;

using Key = std::tuple<std::string, lease::LeaseClass, int64_t>;  // guest, class, start

std::string Where(const Record& r) {
  return "record of guest '" + r.guest + "' (" + std::string(lease::LeaseClassName(r.lease_class)) + ") at " +
         std::to_string(r.start_ms) + " ms";
}

Status CheckRecord(const Record& r) {
  if (r.span_ms <= 0 || r.start_ms % r.span_ms != 0) {
    return InvalidArgumentError(Where(r) + ": not aligned to its span of " + std::to_string(r.span_ms) + " ms");
  }
  for (size_t i = 0; i < kMeters; ++i) {
    if (r.amount[i] < 0) return InvalidArgumentError(Where(r) + ": " + std::string(kMeterNames[i]) + " is negative");
  }
  if (r.gap_ms < 0 || r.gap_ms > r.span_ms) {
    return InvalidArgumentError(Where(r) + ": a gap of " + std::to_string(r.gap_ms) + " ms in a span of " +
                                std::to_string(r.span_ms) + " ms");
  }
  return Status::Ok();
}

// A line's amount: quantity base units at price_micros per billing unit, rounded half up.
int64_t AmountOf(int64_t quantity, int64_t price_micros, int64_t unit) {
  const __int128 num = static_cast<__int128>(quantity) * price_micros;
  const __int128 den = static_cast<__int128>(unit) * kMicros;
  return static_cast<int64_t>((num + den / 2) / den);
}

bool SameRecord(const Record& a, const Record& b) {
  return a.guest == b.guest && a.tenant == b.tenant && a.lease_class == b.lease_class && a.start_ms == b.start_ms &&
         a.span_ms == b.span_ms && a.amount == b.amount && a.gap_ms == b.gap_ms && a.sources == b.sources;
}

}  // namespace

std::string_view MeterName(Meter m) { return kMeterNames[static_cast<size_t>(m)]; }

Result<Meter> ParseMeter(std::string_view name) {
  for (size_t i = 0; i < kMeters; ++i) {
    if (kMeterNames[i] == name) return static_cast<Meter>(i);
  }
  return InvalidArgumentError("meter '" + std::string(name) +
                              "': expected vcpu_granted | vcpu_used | memory_granted | memory_used | disk | "
                              "net_bytes | disk_bytes");
}

int64_t BillingUnit(Meter m) {
  switch (m) {
    case Meter::kVcpuGranted:
    case Meter::kVcpuUsed:
      return kHourMs;  // vCPU-ms per vCPU-hour
    case Meter::kMemoryGranted:
    case Meter::kMemoryUsed:
    case Meter::kDisk:
      return kMibSecondsPerGibHour;
    case Meter::kNetBytes:
    case Meter::kDiskBytes:
      return int64_t{1} << 30;  // bytes per GiB
  }
  return 1;
}

std::string_view BillingUnitName(Meter m) {
  const int64_t unit = BillingUnit(m);
  if (unit == kHourMs) return "vCPU-hour";
  if (unit == kMibSecondsPerGibHour) return "GiB-hour";
  return "GiB";
}

Result<std::vector<Record>> Rollup(const std::vector<Record>& finer, int64_t span_ms) {
  if (span_ms <= 0) return InvalidArgumentError("a rollup's span must be positive");
  std::map<Key, Record> out;
  std::map<std::tuple<std::string, lease::LeaseClass, int64_t, int64_t>, bool> seen;
  for (const Record& r : finer) {
    UW_RETURN_IF_ERROR(CheckRecord(r));
    if (r.span_ms >= span_ms || span_ms % r.span_ms != 0) {
      return InvalidArgumentError(Where(r) + ": a span of " + std::to_string(r.span_ms) + " ms does not roll up to " +
                                  std::to_string(span_ms) + " ms");
    }
    if (!seen.emplace(std::make_tuple(r.guest, r.lease_class, r.start_ms, r.span_ms), true).second) {
      return InvalidArgumentError(Where(r) + ": given twice");
    }
    const int64_t start = r.start_ms - r.start_ms % span_ms;
    auto [it, fresh] = out.try_emplace(Key{r.guest, r.lease_class, start});
    Record& sum = it->second;
    if (fresh) {
      sum.guest = r.guest;
      sum.tenant = r.tenant;
      sum.lease_class = r.lease_class;
      sum.start_ms = start;
      sum.span_ms = span_ms;
      sum.sources = 0;
    }
    for (size_t i = 0; i < kMeters; ++i) sum.amount[i] += r.amount[i];
    sum.gap_ms += r.gap_ms;
    if (sum.gap_cause.empty()) sum.gap_cause = r.gap_cause;
    sum.sources += r.sources;
  }
  std::vector<Record> rows;
  rows.reserve(out.size());
  for (auto& [key, r] : out) rows.push_back(std::move(r));
  return rows;
}

Status CheckRollup(const std::vector<Record>& finer, const std::vector<Record>& coarse) {
  if (coarse.empty()) {
    if (finer.empty()) return Status::Ok();
    return FailedPreconditionError(Where(finer.front()) + " is in no rollup");
  }
  const int64_t span = coarse.front().span_ms;
  UW_ASSIGN_OR_RETURN(std::vector<Record> expected, Rollup(finer, span));
  std::map<Key, const Record*> want;
  for (const Record& r : expected) want[Key{r.guest, r.lease_class, r.start_ms}] = &r;
  for (const Record& c : coarse) {
    auto it = want.find(Key{c.guest, c.lease_class, c.start_ms});
    if (c.span_ms != span) return FailedPreconditionError(Where(c) + ": rollups of two spans mixed");
    if (it == want.end()) return FailedPreconditionError(Where(c) + ": no finer record lies in it");
    if (!SameRecord(c, *it->second)) {
      std::string what = "its count of records";
      for (size_t i = 0; i < kMeters; ++i) {
        if (c.amount[i] != it->second->amount[i]) {
          what = std::string(kMeterNames[i]) + " " + std::to_string(c.amount[i]) + " against " +
                 std::to_string(it->second->amount[i]);
          break;
        }
      }
      if (c.gap_ms != it->second->gap_ms) what = "its gap";
      return FailedPreconditionError(Where(c) + ": not the sum of its records (" + what + ")");
    }
    want.erase(it);
  }
  if (!want.empty()) return FailedPreconditionError(Where(*want.begin()->second) + ": missing from the rollup");
  return Status::Ok();
}

Status CheckCoverage(const std::vector<Record>& minutes, std::string_view guest, int64_t from_ms, int64_t to_ms) {
  std::map<int64_t, std::vector<lease::LeaseClass>> at;
  for (const Record& r : minutes) {
    if (r.guest != guest || r.start_ms < from_ms || r.start_ms >= to_ms) continue;
    if (r.span_ms != kMinuteMs) return FailedPreconditionError(Where(r) + ": not a minute record");
    auto& classes = at[r.start_ms];
    // A lease class that changed within the minute gives it one record per class, never two of one.
    if (std::find(classes.begin(), classes.end(), r.lease_class) != classes.end()) {
      return FailedPreconditionError(Where(r) + ": counted twice");
    }
    classes.push_back(r.lease_class);
  }
  const int64_t first = (std::max<int64_t>(from_ms, 0) + kMinuteMs - 1) / kMinuteMs * kMinuteMs;
  for (int64_t m = first; m < to_ms; m += kMinuteMs) {
    if (!at.contains(m)) {
      return FailedPreconditionError("guest '" + std::string(guest) + "': the minute at " + std::to_string(m) +
                                     " ms has no record and no recorded gap");
    }
  }
  return Status::Ok();
}

std::optional<int> MinorDigits(std::string_view currency) {
  static constexpr std::array<std::pair<std::string_view, int>, 24> kKnown = {{
      {"AUD", 2}, {"BHD", 3}, {"BRL", 2}, {"CAD", 2}, {"CHF", 2}, {"CNY", 2}, {"CZK", 2}, {"DKK", 2},
      {"EUR", 2}, {"GBP", 2}, {"HKD", 2}, {"INR", 2}, {"JPY", 0}, {"KRW", 0}, {"KWD", 3}, {"MXN", 2},
      {"NOK", 2}, {"NZD", 2}, {"PLN", 2}, {"SEK", 2}, {"SGD", 2}, {"TND", 3}, {"USD", 2}, {"ZAR", 2},
  }};
  for (const auto& [code, digits] : kKnown) {
    if (code == currency) return digits;
  }
  return std::nullopt;
}

Status ValidatePlan(const PricePlan& plan) {
  if (!MinorDigits(plan.currency)) {
    return InvalidArgumentError("currency: '" + plan.currency + "' is not a currency this manager knows (ISO 4217)");
  }
  std::vector<std::pair<Meter, lease::LeaseClass>> priced;
  for (size_t i = 0; i < plan.prices.size(); ++i) {
    const Price& p = plan.prices[i];
    const std::string where = "prices[" + std::to_string(i) + "] (" + std::string(MeterName(p.meter)) + ", " +
                              std::string(lease::LeaseClassName(p.lease_class)) + ")";
    if (std::find(priced.begin(), priced.end(), std::make_pair(p.meter, p.lease_class)) != priced.end()) {
      return InvalidArgumentError(where + ": priced twice");
    }
    priced.emplace_back(p.meter, p.lease_class);
    if (p.tiers.empty()) return InvalidArgumentError(where + ": no tiers");
    int64_t below = 0;
    for (size_t t = 0; t < p.tiers.size(); ++t) {
      const Tier& tier = p.tiers[t];
      const std::string at = where + ".tiers[" + std::to_string(t) + "]";
      if (tier.price_micros < 0) return InvalidArgumentError(at + ": a price is at least 0");
      const bool last = t + 1 == p.tiers.size();
      if (last && tier.up_to != 0) return InvalidArgumentError(at + ": the last tier has no bound (up_to 0)");
      if (!last && tier.up_to <= below) {
        return InvalidArgumentError(at + ": up_to " + std::to_string(tier.up_to) + " must exceed the tier below's " +
                                    std::to_string(below));
      }
      below = tier.up_to;
    }
  }
  return Status::Ok();
}

Result<Invoice> PriceUsage(const PricePlan& plan, const std::vector<Record>& records) {
  UW_RETURN_IF_ERROR(ValidatePlan(plan));
  Invoice inv;
  inv.currency = plan.currency;
  std::map<std::pair<Meter, lease::LeaseClass>, int64_t> totals;
  for (const Record& r : records) {
    UW_RETURN_IF_ERROR(CheckRecord(r));
    for (size_t i = 0; i < kMeters; ++i) totals[{static_cast<Meter>(i), r.lease_class}] += r.amount[i];
  }
  for (const Price& p : plan.prices) {
    auto it = totals.find({p.meter, p.lease_class});
    if (it == totals.end() || it->second == 0) continue;
    const int64_t unit = BillingUnit(p.meter);
    int64_t lower = 0;  // base units below this tier
    for (size_t t = 0; t < p.tiers.size(); ++t) {
      const bool bounded = p.tiers[t].up_to != 0;
      const __int128 upper = bounded ? static_cast<__int128>(p.tiers[t].up_to) * unit : it->second;
      const int64_t in_tier = static_cast<int64_t>(std::clamp<__int128>(it->second - lower, 0, upper - lower));
      if (in_tier > 0) {
        InvoiceLine line{p.meter, p.lease_class,           t,
                         in_tier, p.tiers[t].price_micros, AmountOf(in_tier, p.tiers[t].price_micros, unit)};
        inv.total_minor += line.amount_minor;
        inv.lines.push_back(line);
      }
      if (!bounded || upper >= it->second) break;
      lower = static_cast<int64_t>(upper);
    }
  }
  std::stable_sort(inv.lines.begin(), inv.lines.end(), [](const InvoiceLine& a, const InvoiceLine& b) {
    return std::tie(a.meter, a.lease_class, a.tier) < std::tie(b.meter, b.lease_class, b.tier);
  });
  return inv;
}

Status CheckInvoice(const Invoice& invoice) {
  int64_t sum = 0;
  for (const InvoiceLine& l : invoice.lines) {
    if (l.amount_minor != AmountOf(l.quantity, l.price_micros, BillingUnit(l.meter))) {
      return FailedPreconditionError("the line for " + std::string(MeterName(l.meter)) + " (" +
                                     std::string(lease::LeaseClassName(l.lease_class)) + ", tier " +
                                     std::to_string(l.tier) + ") is not its quantity at its price");
    }
    sum += l.amount_minor;
  }
  if (sum != invoice.total_minor) {
    return FailedPreconditionError("the total " + std::to_string(invoice.total_minor) +
                                   " is not the sum of the lines, " + std::to_string(sum));
  }
  return Status::Ok();
}

}  // namespace uw::manager::metering
