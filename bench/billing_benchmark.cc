// Metering and billing at scale (issue 18): N guests x 30 days of hourly usage records in the
// manager's SQLite store, 100 guests per tenant, three lease classes.
//   BM_LoadHours/N       writing the records as metering's rollups do (one transaction an hour of
//                        the cluster): records/s, and the database's size with them
//   BM_InvoiceAll/N      an invoice for every tenant for the whole 30 days (BillingService, the
//                        plan's tiers and classes): invoices/s, ms per tenant
//   BM_CsvMonth/N        the month's hourly records as CSV through GET /api/v1/usage's paging
//                        (MeteringService::List, 1,000 a page, UsageCsv): records/s, MB/s
//   BM_VerifyDay/N       /api/v1/usage/verify over one day of it (the days against their hours)
// Each runs once per N (the invoices of a period can be issued once). CI's short mode runs N=1,000;
// the closing note's figures are N=10,000 (7.2 million records): `billing_benchmark`.
#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "common/clock.h"
#include "manager/billing_service.h"
#include "manager/metering_service.h"
#include "manager/store.h"

namespace uw::manager {
namespace {

using metering::kDayMs;
using metering::kHourMs;

constexpr int kDays = 30;
constexpr int kGuestsPerTenant = 100;
const int64_t kStart = int64_t{1'764'547'200'000};  // 2025-12-01T00:00:00Z

struct Bed {
  std::filesystem::path dir;
  std::unique_ptr<Store> store;
  FakeClock clock{TimePoint(std::chrono::milliseconds(kStart + int64_t{kDays + 1} * kDayMs))};
  ManagerConfig config;
  int guests = 0;
  double load_s = 0;

  explicit Bed(int n) : guests(n) {
    dir = std::filesystem::temp_directory_path() /
          ("uw-billing-bench-" + std::to_string(::getpid()) + "-" + std::to_string(n));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    auto s = Store::Open((dir / "state.db").string());
    if (!s.ok()) std::abort();
    store = std::move(*s);
  }
  ~Bed() { std::filesystem::remove_all(dir); }

  int64_t DbBytes() {
    auto r = store->Query("SELECT page_count * page_size AS n FROM pragma_page_count(), pragma_page_size()");
    int64_t wal = 0;
    std::error_code ec;
    const auto w = std::filesystem::file_size(dir / "state.db-wal", ec);
    if (!ec) wal = static_cast<int64_t>(w);
    return (r.ok() ? (*r)[0].Int("n") : 0) + wal;
  }

  // Hour by hour, as metering's rollups write them; the days rolled up from them at the end.
  Status Load() {
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<int64_t> used(0, 7'200'000);
    const char* classes[] = {"guaranteed", "elastic", "preemptible"};
    for (int h = 0; h < kDays * 24; ++h) {
      const int64_t at = kStart + int64_t{h} * kHourMs;
      UW_RETURN_IF_ERROR(store->Transact([&]() -> Status {
        for (int g = 0; g < guests; ++g) {
          char name[32], tenant[16];
          std::snprintf(tenant, sizeof tenant, "t%03d", g / kGuestsPerTenant);
          std::snprintf(name, sizeof name, "%s:g%05d", tenant, g);
          UW_RETURN_IF_ERROR(store->Exec(
              "INSERT INTO usage_records(guest, tenant, lease_class, span_ms, start_ms, gap_ms, gap_cause, sources, "
              "vcpu_granted_ms, vcpu_used_ms, memory_granted_mib_s, memory_used_mib_s, disk_mib_s, net_bytes, "
              "disk_bytes) VALUES (?, ?, ?, ?, ?, 0, '', 60, 7200000, ?, 7372800, ?, 36864000, ?, ?)",
              {std::string(name), std::string(tenant), std::string(classes[g % 3]), kHourMs, at, used(rng), used(rng),
               used(rng) * 100, used(rng) * 10}));
        }
        return Status::Ok();
      }));
    }
    // The days, each the sum of its hours, as metering rolls them up.
    UW_RETURN_IF_ERROR(store->Exec(
        "INSERT INTO usage_records(guest, tenant, lease_class, span_ms, start_ms, gap_ms, gap_cause, sources, "
        "vcpu_granted_ms, vcpu_used_ms, memory_granted_mib_s, memory_used_mib_s, disk_mib_s, net_bytes, disk_bytes) "
        "SELECT guest, tenant, lease_class, ?1, start_ms - start_ms % ?1, SUM(gap_ms), '', SUM(sources), "
        "SUM(vcpu_granted_ms), SUM(vcpu_used_ms), SUM(memory_granted_mib_s), SUM(memory_used_mib_s), "
        "SUM(disk_mib_s), SUM(net_bytes), SUM(disk_bytes) FROM usage_records WHERE span_ms = ?2 GROUP BY guest, "
        "lease_class, start_ms / ?1",
        {kDayMs, kHourMs}));
    for (const char* key : {"hours_through", "days_through"}) {
      UW_RETURN_IF_ERROR(store->Exec("INSERT OR REPLACE INTO metering_state(key, value) VALUES (?, ?)",
                                     {std::string(key), kStart + int64_t{kDays} * kDayMs}));
    }
    return Status::Ok();
  }
};

Principal Operator() {
  Principal p;
  p.role = Role::kAdmin;
  p.token_id = "bench";
  return p;
}

// One bed per N, loaded by BM_LoadHours and used by the others (they run in order, once each).
std::map<int, std::unique_ptr<Bed>>& Beds() {
  static std::map<int, std::unique_ptr<Bed>> beds;
  return beds;
}

Bed& BedOf(int n) {
  auto& b = Beds()[n];
  if (!b) {
    b = std::make_unique<Bed>(n);
    const auto t0 = std::chrono::steady_clock::now();
    if (Status s = b->Load(); !s.ok()) {
      std::fprintf(stderr, "load: %s\n", s.ToString().c_str());
      std::abort();
    }
    b->load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return *b;
}

void BM_LoadHours(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(&BedOf(n));
  Bed& bed = BedOf(n);
  const double records = static_cast<double>(n) * kDays * 24;
  state.counters["records"] = records;
  state.counters["records_per_s"] = records / bed.load_s;
  state.counters["db_mib"] = static_cast<double>(bed.DbBytes()) / (1 << 20);
  state.counters["db_bytes_per_record"] = static_cast<double>(bed.DbBytes()) / records;
}

void BM_InvoiceAll(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Bed& bed = BedOf(n);
  internal::BillingService billing(*bed.store, bed.clock, bed.config);
  metering::PricePlan plan{"std", "EUR", {}};
  for (auto cls : {lease::LeaseClass::kGuaranteed, lease::LeaseClass::kElastic, lease::LeaseClass::kPreemptible}) {
    for (auto meter : {metering::Meter::kVcpuGranted, metering::Meter::kMemoryGranted, metering::Meter::kDisk,
                       metering::Meter::kNetBytes}) {
      plan.prices.push_back({meter, cls, {{1000, 40'000'000}, {10000, 30'000'000}, {0, 20'000'000}}});
    }
  }
  const int tenants = (n + kGuestsPerTenant - 1) / kGuestsPerTenant;
  if (!billing.PutPlan(Operator(), plan).ok()) std::abort();
  for (int t = 0; t < tenants; ++t) {
    char tenant[16];
    std::snprintf(tenant, sizeof tenant, "t%03d", t);
    if (!billing.SetTenantPlan(Operator(), tenant, "std").ok()) std::abort();
  }
  int64_t lines = 0, issued = 0;
  for (auto _ : state) {
    for (int t = 0; t < tenants; ++t) {
      char tenant[16];
      std::snprintf(tenant, sizeof tenant, "t%03d", t);
      auto inv = billing.CreateInvoice(Operator(), {tenant, kStart, kStart + int64_t{kDays} * kDayMs});
      if (!inv.ok()) {
        state.SkipWithError(inv.status().ToString().c_str());
        return;
      }
      lines += static_cast<int64_t>(inv->invoice.lines.size());
      ++issued;
    }
  }
  state.counters["invoices"] = static_cast<double>(issued);
  state.counters["lines"] = static_cast<double>(lines);
  state.counters["invoices_per_s"] = benchmark::Counter(static_cast<double>(issued), benchmark::Counter::kIsRate);
}

void BM_CsvMonth(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Bed& bed = BedOf(n);
  internal::MeteringService metering(*bed.store, bed.clock, bed.config);
  int64_t rows = 0, bytes = 0;
  for (auto _ : state) {
    internal::UsageQuery q;
    q.span_ms = kHourMs;
    q.from_ms = kStart;
    q.to_ms = kStart + int64_t{kDays} * kDayMs;
    q.page.limit = 1000;
    for (;;) {
      auto page = metering.List(Operator(), q);
      if (!page.ok()) {
        state.SkipWithError(page.status().ToString().c_str());
        return;
      }
      rows += static_cast<int64_t>(page->items.size());
      bytes += static_cast<int64_t>(internal::UsageCsv(page->items, Operator()).size());
      if (!page->next) break;
      q.page.after = *page->next;
    }
  }
  state.counters["records"] = static_cast<double>(rows);
  state.counters["csv_mib"] = static_cast<double>(bytes) / (1 << 20);
  state.counters["records_per_s"] = benchmark::Counter(static_cast<double>(rows), benchmark::Counter::kIsRate);
  state.counters["bytes_per_s"] = benchmark::Counter(static_cast<double>(bytes), benchmark::Counter::kIsRate);
}

void BM_VerifyDay(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Bed& bed = BedOf(n);
  internal::MeteringService metering(*bed.store, bed.clock, bed.config);
  for (auto _ : state) {
    auto r = metering.Verify(Operator(), kStart, kStart + kDayMs);
    if (!r.ok() || (*r)["ok"] != true || (*r)["checked"]["days"] != 1) {
      state.SkipWithError(r.ok() ? r->dump().substr(0, 300).c_str() : r.status().ToString().c_str());
      return;
    }
  }
  state.counters["hour_records_checked"] = static_cast<double>(n) * 24;
}

BENCHMARK(BM_LoadHours)->Arg(1000)->Arg(10000)->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(BM_InvoiceAll)->Arg(1000)->Arg(10000)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CsvMonth)->Arg(1000)->Arg(10000)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VerifyDay)->Arg(1000)->Arg(10000)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace uw::manager

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  uw::manager::Beds().clear();
  return 0;
}
