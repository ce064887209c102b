// Metering arithmetic: rollups and their checks, coverage, plans, pricing; property tests over
// random records (totals preserved, every unit counted once, invoices the sum of their lines).
#include "manager/metering.h"

#include <gtest/gtest.h>

#include <random>

namespace uw::manager::metering {
namespace {

using lease::LeaseClass;

Record Minute(const std::string& guest, int64_t start_ms, int64_t vcpu_ms, LeaseClass c = LeaseClass::kGuaranteed) {
  Record r;
  r.guest = guest;
  r.tenant = "acme";
  r.lease_class = c;
  r.start_ms = start_ms;
  r[Meter::kVcpuGranted] = vcpu_ms;
  r[Meter::kMemoryGranted] = int64_t{256} * 60;
  return r;
}

PricePlan Plan(std::vector<Price> prices, std::string currency = "USD") {
  return PricePlan{"standard", std::move(currency), std::move(prices)};
}

TEST(MeteringTest, MinutesRollUpToHoursAndDaysPerGuestAndClass) {
  std::vector<Record> minutes;
  for (int m = 0; m < 90; ++m) minutes.push_back(Minute("a", int64_t{m} * kMinuteMs, 60'000));
  minutes.push_back(Minute("b", 0, 30'000, LeaseClass::kElastic));
  Record gap = Minute("b", kMinuteMs, 0, LeaseClass::kElastic);
  gap.gap_ms = kMinuteMs;
  gap.gap_cause = "agent down";
  minutes.push_back(gap);
  auto hours = Rollup(minutes, kHourMs);
  ASSERT_TRUE(hours.ok()) << hours.status().ToString();
  ASSERT_EQ(hours->size(), 3u);  // a's two hours, b's one
  EXPECT_EQ((*hours)[0].guest, "a");
  EXPECT_EQ((*hours)[0][Meter::kVcpuGranted], 60 * 60'000);
  EXPECT_EQ((*hours)[0].sources, 60);
  EXPECT_EQ((*hours)[1].start_ms, kHourMs);
  EXPECT_EQ((*hours)[1].sources, 30);
  EXPECT_EQ((*hours)[2].gap_ms, kMinuteMs);
  EXPECT_EQ((*hours)[2].gap_cause, "agent down");
  EXPECT_TRUE(CheckRollup(minutes, *hours).ok());
  auto days = Rollup(*hours, kDayMs);
  ASSERT_TRUE(days.ok());
  ASSERT_EQ(days->size(), 2u);
  EXPECT_EQ((*days)[0].sources, 90);  // a day counts the minutes under it
  EXPECT_TRUE(CheckRollup(*hours, *days).ok());
}

TEST(MeteringTest, RollupsRefuseRecordsTheyCannotSumAndTheCheckNamesWhatDiffers) {
  Record dup = Minute("a", 0, 1);
  auto twice = Rollup({dup, dup}, kHourMs);
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().message(), "record of guest 'a' (guaranteed) at 0 ms: given twice");
  EXPECT_FALSE(Rollup({Minute("a", 5, 1)}, kHourMs).ok());             // not aligned
  EXPECT_FALSE(Rollup({Minute("a", 0, -1)}, kHourMs).ok());            // negative
  EXPECT_FALSE(Rollup({Minute("a", 0, 1)}, kMinuteMs).ok());           // not finer
  EXPECT_FALSE(Rollup({Minute("a", 0, 1)}, int64_t{90} * 1000).ok());  // not a multiple
  Record long_gap = Minute("a", 0, 0);
  long_gap.gap_ms = 2 * kMinuteMs;
  EXPECT_FALSE(Rollup({long_gap}, kHourMs).ok());
  std::vector<Record> minutes = {Minute("a", 0, 10), Minute("a", kMinuteMs, 20)};
  auto hours = *Rollup(minutes, kHourMs);
  hours[0][Meter::kVcpuGranted] += 1;
  Status s = CheckRollup(minutes, hours);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("vcpu_granted 31 against 30"), std::string::npos) << s.ToString();
  minutes.push_back(Minute("b", 0, 1));
  EXPECT_NE(CheckRollup(minutes, *Rollup({minutes[0], minutes[1]}, kHourMs)).message().find("missing from the rollup"),
            std::string::npos);
  EXPECT_FALSE(CheckRollup(minutes, {}).ok());
}

TEST(MeteringTest, CoverageNamesAMinuteMissingOrCountedTwice) {
  std::vector<Record> minutes = {Minute("a", 0, 1), Minute("a", kMinuteMs, 1), Minute("a", 3 * kMinuteMs, 1)};
  Status missing = CheckCoverage(minutes, "a", 0, 4 * kMinuteMs);
  EXPECT_EQ(missing.message(), "guest 'a': the minute at 120000 ms has no record and no recorded gap");
  Record gap = Minute("a", 2 * kMinuteMs, 0);
  gap.gap_ms = kMinuteMs;
  minutes.push_back(gap);
  EXPECT_TRUE(CheckCoverage(minutes, "a", 0, 4 * kMinuteMs).ok());
  // A class change within a minute: one record per class is not a double count; two of one class is.
  minutes.push_back(Minute("a", 0, 1, LeaseClass::kElastic));
  EXPECT_TRUE(CheckCoverage(minutes, "a", 0, 4 * kMinuteMs).ok());
  minutes.push_back(Minute("a", 0, 1));
  EXPECT_NE(CheckCoverage(minutes, "a", 0, 4 * kMinuteMs).message().find("counted twice"), std::string::npos);
  EXPECT_TRUE(CheckCoverage(minutes, "b", 0, 0).ok());
}

TEST(MeteringTest, PlansAreCheckedFieldByField) {
  Price vcpu{Meter::kVcpuGranted, LeaseClass::kGuaranteed, {{100, 5'000'000}, {0, 4'000'000}}};
  EXPECT_TRUE(ValidatePlan(Plan({vcpu})).ok());
  EXPECT_EQ(ValidatePlan(Plan({vcpu}, "XXX")).message(),
            "currency: 'XXX' is not a currency this manager knows (ISO 4217)");
  EXPECT_EQ(*MinorDigits("JPY"), 0);
  EXPECT_EQ(*MinorDigits("BHD"), 3);
  Price negative = vcpu;
  negative.tiers[1].price_micros = -1;
  EXPECT_EQ(ValidatePlan(Plan({negative})).message(),
            "prices[0] (vcpu_granted, guaranteed).tiers[1]: a price is at least 0");
  Price bounded_last = vcpu;
  bounded_last.tiers[1].up_to = 200;
  EXPECT_FALSE(ValidatePlan(Plan({bounded_last})).ok());
  Price falling{Meter::kDisk, LeaseClass::kElastic, {{100, 1}, {50, 1}, {0, 1}}};
  EXPECT_NE(ValidatePlan(Plan({falling})).message().find("must exceed the tier below's 100"), std::string::npos);
  EXPECT_NE(ValidatePlan(Plan({vcpu, vcpu})).message().find("priced twice"), std::string::npos);
  EXPECT_FALSE(ValidatePlan(Plan({Price{Meter::kDisk, LeaseClass::kElastic, {}}})).ok());
  EXPECT_EQ(*ParseMeter("memory_used"), Meter::kMemoryUsed);
  EXPECT_FALSE(ParseMeter("bogus").ok());
}

TEST(MeteringTest, AnInvoicePricesTiersOverThePeriodInMinorUnits) {
  // 150 vCPU-hours granted: 100 at 5 cents, 50 at 4 cents; 0.5 GiB-hour at a tenth of a cent rounds to 0.
  Price vcpu{Meter::kVcpuGranted, LeaseClass::kGuaranteed, {{100, 5'000'000}, {0, 4'000'000}}};
  Price mem{Meter::kMemoryGranted, LeaseClass::kGuaranteed, {{0, 100'000}}};
  std::vector<Record> records;
  for (int h = 0; h < 150; ++h) {
    Record r = Minute("a", int64_t{h} * kHourMs, kHourMs);
    r.span_ms = kHourMs;
    r[Meter::kMemoryGranted] = h == 0 ? 512 * 3600 : 0;
    records.push_back(r);
  }
  auto inv = PriceUsage(Plan({vcpu, mem}), records);
  ASSERT_TRUE(inv.ok()) << inv.status().ToString();
  ASSERT_EQ(inv->lines.size(), 3u);
  EXPECT_EQ(inv->lines[0].quantity, 100 * kHourMs);
  EXPECT_EQ(inv->lines[0].amount_minor, 500);
  EXPECT_EQ(inv->lines[1].tier, 1u);
  EXPECT_EQ(inv->lines[1].amount_minor, 200);
  EXPECT_EQ(inv->lines[2].meter, Meter::kMemoryGranted);
  EXPECT_EQ(inv->lines[2].amount_minor, 0);  // 0.05 cents rounds down
  EXPECT_EQ(inv->total_minor, 700);
  EXPECT_TRUE(CheckInvoice(*inv).ok());
  // An unpriced class costs nothing; a doctored line is caught.
  auto elastic = PriceUsage(Plan({vcpu}), {Minute("e", 0, kHourMs, LeaseClass::kElastic)});
  EXPECT_TRUE(elastic->lines.empty());
  Invoice bad = *inv;
  bad.lines[0].amount_minor += 1;
  bad.total_minor += 1;
  EXPECT_NE(CheckInvoice(bad).message().find("is not its quantity at its price"), std::string::npos);
  bad = *inv;
  bad.total_minor += 1;
  EXPECT_NE(CheckInvoice(bad).message().find("is not the sum of the lines"), std::string::npos);
}

// Random minute records for a few guests over a day and a half, with gaps and class changes.
std::vector<Record> RandomMinutes(std::mt19937_64& rng) {
  std::uniform_int_distribution<int64_t> amount(0, 1'000'000'000);
  std::uniform_int_distribution<int> pct(0, 99);
  std::vector<Record> out;
  const int guests = 1 + pct(rng) % 4;
  for (int g = 0; g < guests; ++g) {
    for (int64_t m = 0; m < int64_t{36} * 60; m += 1 + pct(rng) % 7) {
      Record r = Minute("g" + std::to_string(g), m * kMinuteMs, amount(rng),
                        pct(rng) < 20 ? LeaseClass::kPreemptible : LeaseClass::kGuaranteed);
      for (int64_t& a : r.amount) a = amount(rng);
      if (pct(rng) < 10) {
        r.gap_ms = kMinuteMs;
        r.gap_cause = "agent down";
      }
      out.push_back(r);
    }
  }
  std::shuffle(out.begin(), out.end(), rng);
  return out;
}

TEST(MeteringPropertyTest, RollupsPreserveEveryTotalAndCountEachMinuteOnce) {
  std::mt19937_64 rng(20261206);
  for (int round = 0; round < 50; ++round) {
    const std::vector<Record> minutes = RandomMinutes(rng);
    auto hours = Rollup(minutes, kHourMs);
    ASSERT_TRUE(hours.ok()) << hours.status().ToString();
    auto days = Rollup(*hours, kDayMs);
    ASSERT_TRUE(days.ok());
    auto direct = Rollup(minutes, kDayMs);
    ASSERT_TRUE(direct.ok());
    ASSERT_TRUE(CheckRollup(minutes, *hours).ok());
    ASSERT_TRUE(CheckRollup(*hours, *days).ok());
    ASSERT_TRUE(CheckRollup(minutes, *days).ok());  // days from hours equal days from minutes
    std::array<__int128, kMeters> in{}, out{};
    int64_t gaps_in = 0, gaps_out = 0, sources = 0;
    for (const Record& r : minutes) {
      for (size_t i = 0; i < kMeters; ++i) in[i] += r.amount[i];
      gaps_in += r.gap_ms;
    }
    for (const Record& r : *days) {
      for (size_t i = 0; i < kMeters; ++i) out[i] += r.amount[i];
      gaps_out += r.gap_ms;
      sources += r.sources;
    }
    ASSERT_TRUE(in == out) << "round " << round;
    ASSERT_EQ(gaps_in, gaps_out);
    ASSERT_EQ(sources, static_cast<int64_t>(minutes.size()));
    // Any one record changed by one unit is caught.
    std::vector<Record> doctored = *hours;
    doctored[rng() % doctored.size()].amount[rng() % kMeters] += 1;
    ASSERT_FALSE(CheckRollup(minutes, doctored).ok());
  }
}

TEST(MeteringPropertyTest, InvoicesAreTheSumOfTheirLinesAndTiersSplitTheQuantityExactly) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> price(0, 50'000'000);
  for (int round = 0; round < 50; ++round) {
    const std::vector<Record> minutes = RandomMinutes(rng);
    std::vector<Price> prices;
    for (size_t m = 0; m < kMeters; ++m) {
      for (LeaseClass c : {LeaseClass::kGuaranteed, LeaseClass::kPreemptible}) {
        const int64_t first = 1 + static_cast<int64_t>(rng() % 200);
        prices.push_back({static_cast<Meter>(m), c, {{first, price(rng)}, {first * 3, price(rng)}, {0, price(rng)}}});
      }
    }
    auto inv = PriceUsage(Plan(prices), minutes);
    ASSERT_TRUE(inv.ok()) << inv.status().ToString();
    ASSERT_TRUE(CheckInvoice(*inv).ok());
    // The tiers of each meter and class add up to what was used: nothing priced twice or left out.
    std::map<std::pair<Meter, LeaseClass>, int64_t> used, billed;
    for (const Record& r : minutes) {
      for (size_t i = 0; i < kMeters; ++i) used[{static_cast<Meter>(i), r.lease_class}] += r.amount[i];
    }
    for (const InvoiceLine& l : inv->lines) billed[{l.meter, l.lease_class}] += l.quantity;
    std::erase_if(used, [](const auto& kv) { return kv.second == 0; });
    ASSERT_EQ(used, billed) << "round " << round;
    // Pricing hours instead of minutes gives the same invoice: a rollup changes no money.
    auto by_hour = PriceUsage(Plan(prices), *Rollup(minutes, kHourMs));
    ASSERT_EQ(by_hour->total_minor, inv->total_minor);
  }
}

}  // namespace
}  // namespace uw::manager::metering
