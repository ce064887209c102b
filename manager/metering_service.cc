// Metering in the manager (metering_service.h).
#include "manager/metering_service.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "manager/billing_service.h"
#include "manager/internal.h"

namespace uw::manager::internal {
namespace {

using metering::kDayMs;
using metering::kHourMs;
using metering::kMinuteMs;
using metering::Meter;
using metering::Record;

// The columns of the meters, in Meter's order, with their units in their names.
constexpr std::array<const char*, metering::kMeters> kColumns = {
    "vcpu_granted_ms", "vcpu_used_ms", "memory_granted_mib_s", "memory_used_mib_s", "disk_mib_s",
    "net_bytes",       "disk_bytes"};
constexpr int64_t kClosedAfterMs = 5000;  // a minute is recorded once its samples are all in
constexpr int kMinutesPerPass = 60;

std::string SpanName(int64_t span_ms) {
  if (span_ms == kMinuteMs) return "minute";
  if (span_ms == kHourMs) return "hour";
  return "day";
}

std::string Columns() {
  std::string out;
  for (const char* c : kColumns) out += std::string(", ") + c;
  return out;
}

std::string Rfc3339(int64_t ms) { return FormatRfc3339(TimePoint(std::chrono::milliseconds(ms))); }

Record RecordOf(const SqlRow& r) {
  Record rec;
  rec.guest = r.Str("guest");
  rec.tenant = r.Str("tenant");
  rec.lease_class = lease::ParseLeaseClass(r.Str("lease_class")).value_or(lease::LeaseClass::kGuaranteed);
  rec.start_ms = r.Int("start_ms");
  rec.span_ms = r.Int("span_ms");
  for (size_t i = 0; i < metering::kMeters; ++i) rec.amount[i] = r.Int(kColumns[i]);
  rec.gap_ms = r.Int("gap_ms");
  rec.gap_cause = r.Str("gap_cause");
  rec.sources = r.Int("sources");
  return rec;
}

Status Insert(Store& store, const Record& r) {
  std::vector<SqlValue> args = {r.guest,     r.tenant,   std::string(lease::LeaseClassName(r.lease_class)),
                                r.span_ms,   r.start_ms, r.gap_ms,
                                r.gap_cause, r.sources};
  for (int64_t a : r.amount) args.emplace_back(a);
  return store.Exec(
      "INSERT OR IGNORE INTO usage_records(guest, tenant, lease_class, span_ms, start_ms, gap_ms, "
      "gap_cause, sources" +
          Columns() + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      args);
}

// The paging key of a record: start, class and guest, in the listing's order.
std::string KeyOf(const Record& r) {
  return std::to_string(r.start_ms) + "/" + std::string(lease::LeaseClassName(r.lease_class)) + "/" + r.guest;
}

}  // namespace

int64_t MeteringService::NowMs() const { return ToUnixMillis(clock_.Now()); }

int64_t MeteringService::KeptFrom(int64_t span_ms) const {
  const int64_t now = NowMs();
  if (span_ms == kMinuteMs) return now - int64_t{config_.usage_minute_retention_h} * kHourMs;
  return now - int64_t{config_.usage_retention_days} * kDayMs;
}

Result<std::optional<int64_t>> MeteringService::Watermark(const std::string& key) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT value FROM metering_state WHERE key = ?", {key}));
  if (rows.empty()) return std::optional<int64_t>();
  return std::optional<int64_t>(rows[0].Int("value"));
}

Status MeteringService::SetWatermark(const std::string& key, int64_t at) {
  return store_.Exec(
      "INSERT INTO metering_state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
      {key, at});
}

Status MeteringService::Pass() {
  std::lock_guard l(pass_mu_);
  const int64_t now = NowMs();
  const int64_t closed = (now - kClosedAfterMs) / kMinuteMs * kMinuteMs;  // minutes before this are closed
  UW_ASSIGN_OR_RETURN(std::optional<int64_t> through, Watermark("minutes_through"));
  if (!through) {
    // Metering starts now: the first minute recorded is the first that starts after this pass.
    const int64_t start = now / kMinuteMs * kMinuteMs + kMinuteMs;
    return store_.Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(SetWatermark("minutes_through", start));
      UW_RETURN_IF_ERROR(SetWatermark("hours_through", start / kHourMs * kHourMs));
      return SetWatermark("days_through", start / kDayMs * kDayMs);
    });
  }
  // Hosts that number their samples have delivered them through their newest sample's time. One
  // silent for kLateSamplesMs (since its last heartbeat or this manager's start) is waited for no
  // more, connected or not: a manager that restarts marks its hosts disconnected before they call.
  UW_ASSIGN_OR_RETURN(SqlRow waiting, store_.QueryOne("SELECT MIN(samples_at_ms) AS at FROM hosts WHERE "
                                                      "samples_at_ms IS NOT NULL AND MAX(last_heartbeat_ms, ?) >= ?",
                                                      {started_ms_, now - kLateSamplesMs}, "hosts"));
  const int64_t settled = waiting.IsNull("at") ? closed : waiting.Int("at");
  const int64_t before = *through;
  // A minute waits for late samples kLateSamplesMs at most (after its end, or this manager's start).
  auto ready = [&](int64_t end) {
    return end <= closed && (end <= settled || now >= std::max(end, started_ms_) + kLateSamplesMs);
  };
  for (int i = 0; i < kMinutesPerPass && ready(*through + kMinuteMs); ++i, *through += kMinuteMs) {
    UW_RETURN_IF_ERROR(RecordMinute(*through));
  }
  UW_RETURN_IF_ERROR(RollUp("hours_through", kHourMs, kMinuteMs, *through));
  UW_ASSIGN_OR_RETURN(std::optional<int64_t> hours, Watermark("hours_through"));
  UW_RETURN_IF_ERROR(RollUp("days_through", kDayMs, kHourMs, hours.value_or(0)));
  if (*through == before) return Status::Ok();  // retention moves on only when a minute was recorded
  UW_RETURN_IF_ERROR(store_.Exec("DELETE FROM usage_records WHERE span_ms = ? AND start_ms < ?",
                                 {kMinuteMs, KeptFrom(kMinuteMs) - kMinuteMs}));
  return store_.Exec("DELETE FROM usage_records WHERE span_ms > ? AND start_ms < ?",
                     {kMinuteMs, KeptFrom(kHourMs) - kDayMs});
}

// The part of a minute with samples that no sample counted, from the agent's numbered samples:
//  - before a baseline (its agent started counting again, what it had counted lost: an agent
//    killed and started again), back to the guest's previous sample if that came from the same host
//    (and from this guest, not an earlier one of its name);
//  - after the minute's last sample, when that host delivered nothing past the minute's end (its
//    agent is down or silent) or the guest's next sample is a baseline from the same host.
// A guest that moved is counted by its other host meanwhile: not a gap. Either part is recorded as
// a gap with its cause; what was counted stays as counted.
Status MeteringService::UncountedPart(const SqlRow& r, int64_t start_ms, metering::Record& rec) {
  const int64_t end_ms = start_ms + kMinuteMs;
  auto sample = [&](const char* where, int64_t at) -> Result<std::optional<SqlRow>> {
    UW_ASSIGN_OR_RETURN(auto rows, store_.Query(std::string("SELECT s.at_ms, s.host, s.baseline, h.samples_at_ms FROM "
                                                            "usage_samples s LEFT JOIN hosts h ON h.name = s.host "
                                                            "WHERE s.guest = ? AND ") +
                                                    where + " LIMIT 1",
                                                {rec.guest, at}));
    return rows.empty() ? std::nullopt : std::optional<SqlRow>(rows[0]);
  };
  int64_t head = 0, tail = 0;
  std::string cause;
  if (!r.IsNull("base_at")) {
    const int64_t base_at = r.Int("base_at");
    UW_ASSIGN_OR_RETURN(auto base, sample("s.at_ms = ? AND s.baseline <> 0", base_at));
    UW_ASSIGN_OR_RETURN(auto prev, sample("s.at_ms < ? ORDER BY s.at_ms DESC", base_at));
    // A sample from before this guest was created is another guest's that had its name.
    const bool same_guest = prev && (r.IsNull("guest_from") || prev->Int("at_ms") >= r.Int("guest_from"));
    if (base && same_guest && prev->Str("host") == base->Str("host")) {
      head = base_at - std::max(start_ms, prev->Int("at_ms"));
      cause = "the agent on host " + base->Str("host") + " started counting again at " + Rfc3339(base_at) +
              " (what it counted after " + Rfc3339(prev->Int("at_ms")) + " was lost with it)";
    }
  }
  UW_ASSIGN_OR_RETURN(auto last, sample("s.at_ms = ? ORDER BY s.baseline", r.Int("last_at")));
  UW_ASSIGN_OR_RETURN(auto next, sample("s.at_ms >= ? ORDER BY s.at_ms", end_ms));
  if (last) {
    const bool silent = !last->IsNull("samples_at_ms") && last->Int("samples_at_ms") < end_ms;
    const bool restarted = next && next->Int("baseline") != 0 && next->Str("host") == last->Str("host");
    if (silent || restarted) {
      tail = end_ms - last->Int("at_ms");
      cause += std::string(cause.empty() ? "" : "; ") + "no samples from host " + last->Str("host") + " after " +
               Rfc3339(last->Int("at_ms")) + (restarted ? " until its agent started counting again" : "");
    }
  }
  rec.gap_ms = std::clamp<int64_t>(head + tail, 0, kMinuteMs);
  if (rec.gap_ms > 0) rec.gap_cause = cause;
  return Status::Ok();
}

Status MeteringService::RecordMinute(int64_t start_ms) {
  const int64_t end_ms = start_ms + kMinuteMs;
  return store_.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(std::optional<int64_t> through, Watermark("minutes_through"));
    if (through && *through > start_ms) return Status::Ok();  // another pass recorded it
    // Every live lease's grant; its guest's use from the samples in the minute; its volumes.
    UW_ASSIGN_OR_RETURN(
        auto rows,
        store_.Query(
            "SELECT l.guest, l.tenant, l.class, l.vcpus, l.memory_mib, g.host, COALESCE(s.n, 0) AS n, s.cpu, s.mem, "
            "s.cpu_us, COALESCE(s.net, 0) AS net, COALESCE(s.disk_bytes, 0) AS disk_bytes, s.last_at, s.base_at, "
            "g.created_ms AS guest_from, "
            "(SELECT COALESCE(SUM(size_gib), 0) FROM volumes v WHERE v.guest = l.guest) AS disk_gib FROM leases l "
            "LEFT JOIN guests g ON g.name = l.guest LEFT JOIN (SELECT guest, COUNT(*) AS n, AVG(cpu_cores) AS cpu, "
            "AVG(CASE WHEN memory_mib >= 0 THEN memory_mib END) AS mem, SUM(cpu_us) AS cpu_us, SUM(net_bytes) AS net, "
            "SUM(disk_bytes) AS disk_bytes, MAX(at_ms) AS last_at, MAX(CASE WHEN baseline <> 0 THEN at_ms END) AS "
            "base_at FROM usage_samples WHERE at_ms >= ?1 AND at_ms < ?2 AND guest IS NOT NULL GROUP BY guest) s ON "
            "s.guest = l.guest WHERE l.state IN ('active', 'extending', 'closing') ORDER BY l.guest",
            {start_ms, end_ms}));
    for (const SqlRow& r : rows) {
      Record rec;
      rec.guest = r.Str("guest");
      rec.tenant = r.Str("tenant");
      UW_ASSIGN_OR_RETURN(rec.lease_class, lease::ParseLeaseClass(r.Str("class")));
      rec.start_ms = start_ms;
      rec.span_ms = kMinuteMs;
      rec[Meter::kVcpuGranted] = r.Int("vcpus") * kMinuteMs;
      rec[Meter::kMemoryGranted] = r.Int("memory_mib") * 60;
      rec[Meter::kDisk] = r.Int("disk_gib") * 1024 * 60;
      if (r.Int("n") == 0) {
        rec.gap_ms = kMinuteMs;
        rec.gap_cause = r.IsNull("host") ? "the guest is on no host" : "no samples from host " + r.Str("host");
      } else {
        // Numbered samples carry the CPU time counted between them; an older agent's, its rate.
        rec[Meter::kVcpuUsed] = r.IsNull("cpu_us") ? std::llround(r.Real("cpu") * static_cast<double>(kMinuteMs))
                                                   : (r.Int("cpu_us") + 500) / 1000;
        rec[Meter::kNetBytes] = r.Int("net");
        rec[Meter::kDiskBytes] = r.Int("disk_bytes");
        rec[Meter::kMemoryUsed] = r.IsNull("mem") ? 0 : std::llround(r.Real("mem") * 60.0);
        UW_RETURN_IF_ERROR(UncountedPart(r, start_ms, rec));
      }
      UW_RETURN_IF_ERROR(Insert(store_, rec));
    }
    return SetWatermark("minutes_through", end_ms);
  });
}

Status MeteringService::RollUp(const std::string& key, int64_t span_ms, int64_t finer_ms, int64_t through_ms) {
  for (int i = 0; i < kMinutesPerPass; ++i) {
    UW_ASSIGN_OR_RETURN(std::optional<int64_t> at, Watermark(key));
    if (!at || *at + span_ms > through_ms) return Status::Ok();
    UW_RETURN_IF_ERROR(store_.Transact([&]() -> Status {
      UW_ASSIGN_OR_RETURN(std::vector<Record> finer, Read(finer_ms, *at, *at + span_ms));
      UW_ASSIGN_OR_RETURN(std::vector<Record> coarse, metering::Rollup(finer, span_ms));
      for (const Record& r : coarse) UW_RETURN_IF_ERROR(Insert(store_, r));
      return SetWatermark(key, *at + span_ms);
    }));
  }
  return Status::Ok();
}

Result<Page<Record>> MeteringService::List(const Principal& p, const UsageQuery& q) {
  if (q.span_ms != kMinuteMs && q.span_ms != kHourMs && q.span_ms != kDayMs) {
    return InvalidArgumentError("span: expected minute, hour or day");
  }
  if (q.to_ms <= q.from_ms) return InvalidArgumentError("to: the period ends at or before its start (from)");
  if (q.from_ms < KeptFrom(q.span_ms) - q.span_ms) {
    return InvalidArgumentError("from: " + SpanName(q.span_ms) + " records are kept for " +
                                (q.span_ms == kMinuteMs ? std::to_string(config_.usage_minute_retention_h) + " hours"
                                                        : std::to_string(config_.usage_retention_days) + " days") +
                                "; ask from " +
                                FormatRfc3339(TimePoint(std::chrono::milliseconds(KeptFrom(q.span_ms)))) + " on");
  }
  // The cursor's start is the scan's lower bound: with it as a second bound next to `from`,
  // SQLite scanned the whole span from `from` on every page (40 ms a page at 720,000 records).
  int64_t lower = q.from_ms;
  int64_t cursor_start = 0;
  std::string cursor_class, cursor_guest;
  if (!q.page.after.empty()) {
    const size_t a = q.page.after.find('/'), b = q.page.after.find('/', a == std::string::npos ? a : a + 1);
    char* end = nullptr;
    const long long start = a == std::string::npos ? 0 : std::strtoll(q.page.after.c_str(), &end, 10);
    if (b == std::string::npos || end != q.page.after.c_str() + a) {
      return InvalidArgumentError("after: not a usage page's `next`");
    }
    cursor_start = start;
    lower = std::max<int64_t>(lower, start);
    cursor_class = q.page.after.substr(a + 1, b - a - 1);
    cursor_guest = q.page.after.substr(b + 1);
  }
  std::string where = " WHERE span_ms = ? AND start_ms >= ? AND start_ms < ?";
  std::vector<SqlValue> args = {q.span_ms, lower, q.to_ms};
  std::string tenant = q.tenant;
  if (p.role == Role::kTenant) {
    // A tenant reads its own records: another tenant's name is not a filter it may use.
    if (!tenant.empty() && tenant != p.tenant) return PermissionDeniedError("a tenant reads only its own usage");
    tenant = p.tenant;
  }
  if (p.role == Role::kTenant || !tenant.empty()) {
    where += " AND tenant = ?";
    args.emplace_back(tenant);
  }
  if (!q.guest.empty()) {
    std::string key = q.guest;
    if (p.role == Role::kTenant) {
      std::optional<std::string> shortname = TenantShortName(p, q.guest);
      key = shortname ? GuestKey(p.tenant, *shortname) : std::string();
    }
    where += " AND guest = ?";
    args.emplace_back(key);
  }
  Page<Record> page;
  page.total = -1;  // counted on the first page only: a count is a scan of the whole period
  if (q.page.after.empty()) {
    UW_ASSIGN_OR_RETURN(SqlRow total,
                        store_.QueryOne("SELECT COUNT(*) AS n FROM usage_records" + where, args, "usage"));
    page.total = total.Int("n");
  }
  std::string sql = "SELECT guest, tenant, lease_class, span_ms, start_ms, gap_ms, gap_cause, sources" + Columns() +
                    " FROM usage_records" + where;
  if (!q.page.after.empty()) {
    sql += " AND (start_ms, lease_class, guest) > (?, ?, ?)";
    args.emplace_back(cursor_start);
    args.emplace_back(cursor_class);
    args.emplace_back(cursor_guest);
  }
  const int64_t limit = q.page.limit > 0 ? std::min(q.page.limit, kMaxPageLimit) : kMaxPageLimit;
  sql += " ORDER BY start_ms, lease_class, guest LIMIT " + std::to_string(limit + 1);
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query(sql, args));

  for (size_t i = 0; i < rows.size() && static_cast<int64_t>(i) < limit; ++i) page.items.push_back(RecordOf(rows[i]));
  if (static_cast<int64_t>(rows.size()) > limit) page.next = KeyOf(page.items.back());
  return page;
}

Result<Json> MeteringService::Verify(const Principal& p, int64_t from_ms, int64_t to_ms) {
  if (p.role == Role::kTenant)
    return PermissionDeniedError("verifying usage needs an operator or billing-reader token");
  if (to_ms <= from_ms) return InvalidArgumentError("to: the period ends at or before its start (from)");
  Json problems = Json::array();
  Json checked = Json::object();
  // Closed hours whose minutes are all kept, closed days: each the sum of the records below it.
  UW_ASSIGN_OR_RETURN(std::optional<int64_t> hours_through, Watermark("hours_through"));
  UW_ASSIGN_OR_RETURN(std::optional<int64_t> days_through, Watermark("days_through"));
  const int64_t minutes_from = std::max(from_ms, KeptFrom(kMinuteMs));
  for (auto [span, finer, lo, hi] : {std::tuple{kHourMs, kMinuteMs, minutes_from, hours_through.value_or(0)},
                                     std::tuple{kDayMs, kHourMs, from_ms, days_through.value_or(0)}}) {
    const int64_t first = (lo + span - 1) / span * span;
    const int64_t last = std::min(to_ms, hi) / span * span;
    int64_t n = 0;
    for (int64_t at = first; at < last; at += span, ++n) {
      UW_ASSIGN_OR_RETURN(std::vector<Record> below, Read(finer, at, at + span));
      UW_ASSIGN_OR_RETURN(std::vector<Record> rolled, Read(span, at, at + span));
      if (Status s = metering::CheckRollup(below, rolled); !s.ok()) problems.push_back(s.message());
    }
    checked[SpanName(span) + "s"] = n;
  }
  // Every guest's kept minutes: none twice, none missing between its first and its last.
  UW_ASSIGN_OR_RETURN(std::vector<Record> minutes, Read(kMinuteMs, minutes_from, to_ms));
  std::map<std::string, std::pair<int64_t, int64_t>> span_of;
  for (const Record& r : minutes) {
    auto [it, fresh] = span_of.try_emplace(r.guest, r.start_ms, r.start_ms + kMinuteMs);
    it->second.first = std::min(it->second.first, r.start_ms);
    it->second.second = std::max(it->second.second, r.start_ms + kMinuteMs);
  }
  for (const auto& [guest, range] : span_of) {
    if (Status s = metering::CheckCoverage(minutes, guest, range.first, range.second); !s.ok()) {
      problems.push_back(s.message());
    }
  }
  checked["minutes"] = minutes.size();
  checked["guests"] = span_of.size();
  // Issued invoices whose periods start in [from, to): each total the sum of its lines.
  BillingService billing(store_, clock_, config_);
  UW_ASSIGN_OR_RETURN(checked["invoices"], billing.CheckInvoices(from_ms, to_ms, problems));
  return Json{{"ok", problems.empty()}, {"checked", checked}, {"problems", problems}};
}

Result<std::vector<Record>> MeteringService::Read(int64_t span_ms, int64_t from_ms, int64_t to_ms) {
  UW_ASSIGN_OR_RETURN(auto rows,
                      store_.Query("SELECT guest, tenant, lease_class, span_ms, start_ms, gap_ms, gap_cause, "
                                   "sources" +
                                       Columns() +
                                       " FROM usage_records WHERE span_ms = ? AND start_ms >= ? AND "
                                       "start_ms < ? ORDER BY guest, lease_class, start_ms",
                                   {span_ms, from_ms, to_ms}));
  std::vector<Record> out;
  out.reserve(rows.size());
  for (const SqlRow& r : rows) out.push_back(RecordOf(r));
  return out;
}

Result<std::vector<ClassUsage>> SumUsage(Store& store, const std::string& tenant, int64_t span_ms, int64_t from_ms,
                                         int64_t to_ms) {
  std::string sums;
  for (const char* c : kColumns) sums += std::string(", SUM(") + c + ") AS " + c;
  UW_ASSIGN_OR_RETURN(auto rows, store.Query("SELECT lease_class, COUNT(*) AS n, SUM(gap_ms) AS gap_ms" + sums +
                                                 " FROM usage_records WHERE tenant = ? AND span_ms = ? AND start_ms "
                                                 ">= ? AND start_ms < ? GROUP BY lease_class ORDER BY lease_class",
                                             {tenant, span_ms, from_ms, to_ms}));
  std::vector<ClassUsage> out;
  for (const SqlRow& r : rows) {
    ClassUsage u;
    u.sum.tenant = tenant;
    UW_ASSIGN_OR_RETURN(u.sum.lease_class, lease::ParseLeaseClass(r.Str("lease_class")));
    u.sum.start_ms = from_ms;
    u.sum.span_ms = span_ms;
    for (size_t i = 0; i < metering::kMeters; ++i) u.sum.amount[i] = r.Int(kColumns[i]);
    u.records = r.Int("n");
    u.gap_ms = r.Int("gap_ms");
    out.push_back(std::move(u));
  }
  return out;
}

Json UsageRecordJson(const Record& r, const Principal& p) {
  Json j = {{"guest", std::string(ShownGuestName(p, r.guest))},
            {"tenant", r.tenant},
            {"lease_class", lease::LeaseClassName(r.lease_class)},
            {"span", SpanName(r.span_ms)},
            {"start", FormatRfc3339(TimePoint(std::chrono::milliseconds(r.start_ms)))},
            {"start_ms", r.start_ms},
            {"gap_ms", r.gap_ms},
            {"gap_cause", r.gap_cause},
            {"records", r.sources}};
  for (size_t i = 0; i < metering::kMeters; ++i) j[kColumns[i]] = r.amount[i];
  return j;
}

std::string UsageCsv(const std::vector<Record>& records, const Principal& p) {
  std::string out = "guest,tenant,lease_class,span,start,start_ms,gap_ms,gap_cause,records";
  for (const char* c : kColumns) out += std::string(",") + c;
  out += "\n";
  // Names are [A-Za-z0-9._-] (ValidateName) and causes are the manager's own words; a quote is
  // doubled all the same, and every text field is quoted.
  auto quoted = [](std::string_view s) {
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  for (const Record& r : records) {
    out += quoted(ShownGuestName(p, r.guest)) + "," + quoted(r.tenant) + "," +
           quoted(lease::LeaseClassName(r.lease_class)) + "," + SpanName(r.span_ms) + "," +
           FormatRfc3339(TimePoint(std::chrono::milliseconds(r.start_ms))) + "," + std::to_string(r.start_ms) + "," +
           std::to_string(r.gap_ms) + "," + quoted(r.gap_cause) + "," + std::to_string(r.sources);
    for (int64_t a : r.amount) out += "," + std::to_string(a);
    out += "\n";
  }
  return out;
}

}  // namespace uw::manager::internal
