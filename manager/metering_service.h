// Metering in the manager (issue 18): every closed minute becomes one usage record per guest that
// held a live lease, its grant from the lease and its use from the agents' heartbeat samples; a
// minute without samples is recorded as a gap with its cause, never filled in. Closed hours and
// days are rolled up from the records below them (metering::Rollup). Three watermarks in
// `metering_state` say what is recorded; each step writes its records and moves its watermark in
// one transaction, and records are keyed (guest, class, span, start), so a killed manager neither
// loses nor doubles a minute. GET /api/v1/usage reads the records; /api/v1/usage/verify checks
// that they reconcile.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/json.h"
#include "common/status.h"
#include "manager/auth.h"
#include "manager/manager.h"
#include "manager/metering.h"
#include "manager/store.h"

namespace uw::manager::internal {

struct UsageQuery {
  int64_t span_ms = metering::kHourMs;
  std::string tenant;  // "": all the caller may see
  std::string guest;   // as the caller names it; "": all
  int64_t from_ms = 0, to_ms = 0;
  PageQuery page;
};

// How long metering waits for a connected host's late samples.
inline constexpr int64_t kLateSamplesMs = 30'000;

class MeteringService {
 public:
  MeteringService(Store& store, Clock& clock, const ManagerConfig& config)
      : store_(store), clock_(clock), config_(config), started_ms_(ToUnixMillis(clock.Now())) {}

  // Records the minutes closed since the last pass (at most an hour of them per pass), rolls up
  // the hours and days they close, and prunes what is past retention. A minute waits for the
  // numbered samples of every host that sends them, kLateSamplesMs at most after its end or this
  // manager's start (a host silent that long is not waited for): after a manager restart or a
  // lost heartbeat, an agent delivers what it kept before the minute is recorded.
  Status Pass();

  // Usage records the caller may read: operators, read-only and billing-reader tokens all tenants'
  // (or one's), a tenant its own. kInvalidArgument for a span or period that cannot be answered
  // (a start before the records of that span are kept, an end before the start).
  Result<Page<metering::Record>> List(const Principal& p, const UsageQuery& q);
  // Checks [from, to): minutes against their hours, hours against their days (closed ones whose
  // records are all kept), and every guest's minutes for gaps or doubles.
  Result<Json> Verify(const Principal& p, int64_t from_ms, int64_t to_ms);

  // The oldest start a record of `span_ms` may have now (retention).
  int64_t KeptFrom(int64_t span_ms) const;

 private:
  int64_t NowMs() const;
  Result<std::optional<int64_t>> Watermark(const std::string& key);
  Status SetWatermark(const std::string& key, int64_t at);
  Status UncountedPart(const SqlRow& r, int64_t start_ms, metering::Record& rec);
  Status RecordMinute(int64_t start_ms);
  Status RollUp(const std::string& key, int64_t span_ms, int64_t finer_ms, int64_t through_ms);
  Result<std::vector<metering::Record>> Read(int64_t span_ms, int64_t from_ms, int64_t to_ms);

  Store& store_;
  Clock& clock_;
  const ManagerConfig& config_;
  const int64_t started_ms_;
  std::mutex pass_mu_;
};

// A tenant's records of `span_ms` that start in [from_ms, to_ms), summed per lease class by the
// store (a year of a large tenant is millions of records; this holds one per class): `sum` has the
// amounts (and the period's first span), `records` how many were summed, `gap_ms` their gaps.
struct ClassUsage {
  metering::Record sum;
  int64_t records = 0;
  int64_t gap_ms = 0;
};
Result<std::vector<ClassUsage>> SumUsage(Store& store, const std::string& tenant, int64_t span_ms, int64_t from_ms,
                                         int64_t to_ms);

// One record as the API shows it, with `guest` as `p` knows it; and the CSV of a page.
Json UsageRecordJson(const metering::Record& r, const Principal& p);
std::string UsageCsv(const std::vector<metering::Record>& records, const Principal& p);

}  // namespace uw::manager::internal
