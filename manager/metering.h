// Metering and billing arithmetic (issue 18), pure like lease/: usage records per guest per
// interval and their rollups, price plans with graduated tiers, invoices in integer minor units,
// and the checks that the numbers reconcile. Nothing here reads a clock, a file or the database.
//
//   minute records ──Rollup──▶ hour records ──Rollup──▶ day records
//        │                          │
//        └──────CheckRollup─────────┘   (an hour is the sum of its minutes, nothing lost or doubled)
//   records of a tenant's period ──PriceUsage(plan)──▶ invoice lines ──CheckInvoice──▶ total
//
// Amounts are integers in each meter's base unit (Meter below); money is in integer minor units of
// the plan's currency (cents for USD, yen for JPY) and prices in millionths of a minor unit per
// billing unit, so that a price below a cent per vCPU-hour is still exact. No floating point.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "lease/lease.h"

namespace uw::manager::metering {

// What is metered, each in its base unit; a plan prices it per billing unit (BillingUnit).
enum class Meter : size_t {
  kVcpuGranted,    // vCPU-milliseconds its lease granted          billed per vCPU-hour
  kVcpuUsed,       // CPU-milliseconds the guest used              billed per vCPU-hour
  kMemoryGranted,  // MiB-seconds its lease granted                billed per GiB-hour
  kMemoryUsed,     // MiB-seconds the guest used                   billed per GiB-hour
  kDisk,           // MiB-seconds of its volumes' provisioned size billed per GiB-hour
  kNetBytes,       // bytes its NICs sent and received             billed per GiB
  kDiskBytes,      // bytes its disks read and wrote               billed per GiB
};
inline constexpr size_t kMeters = 7;
std::string_view MeterName(Meter m);              // "vcpu_granted", "memory_used", ...
Result<Meter> ParseMeter(std::string_view name);  // kInvalidArgument naming the choices
// How many base units make one billing unit (3,600,000 vCPU-ms per vCPU-hour, ...).
int64_t BillingUnit(Meter m);
std::string_view BillingUnitName(Meter m);  // "vCPU-hour", "GiB-hour", "GiB"

inline constexpr int64_t kMinuteMs = 60'000;
inline constexpr int64_t kHourMs = 3'600'000;
inline constexpr int64_t kDayMs = 86'400'000;

// One guest's usage over [start_ms, start_ms + span_ms), under one lease class. A span with no
// samples for part of it carries that part as gap_ms with its cause; a rollup sums gaps too.
struct Record {
  std::string guest;
  std::string tenant;
  lease::LeaseClass lease_class = lease::LeaseClass::kGuaranteed;
  int64_t start_ms = 0;
  int64_t span_ms = kMinuteMs;
  std::array<int64_t, kMeters> amount{};
  int64_t gap_ms = 0;
  std::string gap_cause;  // the first cause when a rollup sums several
  int64_t sources = 1;    // the finer records a rollup sums (1 for a minute)

  int64_t& operator[](Meter m) { return amount[static_cast<size_t>(m)]; }
  int64_t operator[](Meter m) const { return amount[static_cast<size_t>(m)]; }
};

// Sums `finer` records into records of `span_ms` (an hour or a day), one per guest, lease class
// and aligned span, in (guest, class, start) order. kInvalidArgument, naming the record, for one
// not aligned to its own span, not finer than `span_ms`, with a negative amount, or whose gap is
// longer than its span; kInvalidArgument also for the same guest, class and start twice.
Result<std::vector<Record>> Rollup(const std::vector<Record>& finer, int64_t span_ms);

// kFailedPrecondition naming the first coarse record that is not exactly the sum of the `finer`
// records it spans (a meter, the gap or the count differs), or a finer record no coarse one holds.
Status CheckRollup(const std::vector<Record>& finer, const std::vector<Record>& coarse);

// One guest's minute records over [from_ms, to_ms): kFailedPrecondition naming the first minute that
// appears twice or not at all (a minute with no samples is a record whose gap is the whole minute).
Status CheckCoverage(const std::vector<Record>& minutes, std::string_view guest, int64_t from_ms, int64_t to_ms);

// A graduated tier: billing units up to `up_to` (cumulative over the period; 0 on the last tier:
// no bound) cost `price_micros` millionths of a minor unit each.
struct Tier {
  int64_t up_to = 0;
  int64_t price_micros = 0;
};
// What one meter costs for one lease class; a class or meter without a price costs nothing.
struct Price {
  Meter meter = Meter::kVcpuGranted;
  lease::LeaseClass lease_class = lease::LeaseClass::kGuaranteed;
  std::vector<Tier> tiers;
};
struct PricePlan {
  std::string name;
  std::string currency;  // ISO 4217
  std::vector<Price> prices;
};

// The digits after the point of a known ISO 4217 currency (USD 2, JPY 0, BHD 3); nullopt otherwise.
std::optional<int> MinorDigits(std::string_view currency);
// kInvalidArgument naming the field: an unknown currency, a negative price, tiers whose bounds do
// not rise or whose last tier is bounded, the same meter and class priced twice.
Status ValidatePlan(const PricePlan& plan);

struct InvoiceLine {
  Meter meter = Meter::kVcpuGranted;
  lease::LeaseClass lease_class = lease::LeaseClass::kGuaranteed;
  size_t tier = 0;       // index in the price's tiers
  int64_t quantity = 0;  // base units in this tier (Meter)
  int64_t price_micros = 0;
  int64_t amount_minor = 0;  // quantity / BillingUnit x price, rounded half up to a minor unit
};
struct Invoice {
  std::string currency;
  std::vector<InvoiceLine> lines;  // by meter, class, tier; only lines with a quantity
  int64_t total_minor = 0;         // the sum of the lines
};

// Prices a tenant's records for one period under `plan` (ValidatePlan first). Tiers count billing
// units over the whole period per meter and class. kInvalidArgument when ValidatePlan fails.
Result<Invoice> PriceUsage(const PricePlan& plan, const std::vector<Record>& records);

// kFailedPrecondition when the total is not the sum of the lines or a line's amount is not its
// quantity at its price.
Status CheckInvoice(const Invoice& invoice);

}  // namespace uw::manager::metering
