// The leases, notices and repossessions tables (lease_table.h).
#include "manager/lease_table.h"

#include "lease/broker.h"
#include "manager/internal.h"
#include "manager/lease_json.h"

namespace uw::manager::internal {
namespace {

SqlValue MsOrNull(const std::optional<int64_t>& ms) { return ms ? SqlValue(*ms) : SqlValue(nullptr); }
std::optional<int64_t> OptionalMs(const SqlRow& r, std::string_view c) {
  return r.IsNull(c) ? std::nullopt : std::optional<int64_t>(r.Int(c));
}

Result<LeaseRecord> LeaseOfRow(const SqlRow& r) {
  LeaseRecord out;
  lease::Lease& l = out.lease;
  l.id = r.Str("id");
  l.guest = r.Str("guest");
  l.tenant = r.Str("tenant");
  UW_ASSIGN_OR_RETURN(l.lease_class, lease::ParseLeaseClass(r.Str("class")));
  l.granted = {r.Int("vcpus"), r.Int("memory_mib")};
  l.floor = {r.Int("floor_vcpus"), r.Int("floor_memory_mib")};
  l.start_ms = r.Int("created_ms");
  l.term_end_ms = OptionalMs(r, "term_end_ms");
  l.bid = r.Int("bid");
  l.shares = r.IsNull("shares") ? 1024 : r.Int("shares");
  UW_ASSIGN_OR_RETURN(l.state, ParseLeaseState(r.Str("state")));
  UW_ASSIGN_OR_RETURN(l.history, HistoryFromJson(r.JsonOf("history")));
  out.term_ms = OptionalMs(r, "term_ms");
  if (!r.IsNull("renewal")) {
    UW_ASSIGN_OR_RETURN(out.renewal, RenewalFromJson(r.JsonOf("renewal")));
  }
  return out;
}

Result<std::vector<LeaseRecord>> LeasesOfRows(const std::vector<SqlRow>& rows) {
  std::vector<LeaseRecord> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    UW_ASSIGN_OR_RETURN(LeaseRecord l, LeaseOfRow(r));
    out.push_back(std::move(l));
  }
  return out;
}

Result<NoticeRecord> NoticeOfRow(const SqlRow& r) {
  NoticeRecord out;
  UW_ASSIGN_OR_RETURN(out.notice, NoticeFromJson(r.JsonOf("notice")));
  Json d = r.JsonOf("delivery");
  if (d.is_object()) {
    out.delivery.state = d.value("state", "pending");
    out.delivery.answer = d.value("answer", "");
    out.delivery.detail = d.value("detail", "");
    out.delivery.at_ms = d.value("at_ms", int64_t{0});
  }
  if (!r.IsNull("makes_room_for")) out.makes_room_for = r.Str("makes_room_for");
  return out;
}

Result<std::vector<NoticeRecord>> NoticesOfRows(const std::vector<SqlRow>& rows) {
  std::vector<NoticeRecord> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    UW_ASSIGN_OR_RETURN(NoticeRecord n, NoticeOfRow(r));
    out.push_back(std::move(n));
  }
  return out;
}

std::string DeliveryText(const NoticeDelivery& d) {
  return Json({{"state", d.state}, {"answer", d.answer}, {"detail", d.detail}, {"at_ms", d.at_ms}}).dump();
}

SqlFilter FilterOf(const LeaseScope& scope) {
  SqlFilter f;
  if (scope.tenant) f.And("tenant = ?", {*scope.tenant});
  if (!scope.guest.empty()) f.And("guest = ?", {scope.guest});
  return f;
}

}  // namespace

Status LeaseTable::Insert(const LeaseRecord& r, int64_t now_ms) {
  const lease::Lease& l = r.lease;
  Changed(l.guest);
  return store_.Exec(
      "INSERT INTO leases(id, guest, tenant, class, vcpus, memory_mib, floor_vcpus, floor_memory_mib, term_ms, "
      "term_end_ms, state, history, renewal, created_ms, updated_ms, bid, shares) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
      "?, ?, ?, ?, ?, ?, ?, ?)",
      {l.id, l.guest, l.tenant, std::string(lease::LeaseClassName(l.lease_class)), l.granted.vcpus,
       l.granted.memory_mib, l.floor.vcpus, l.floor.memory_mib, MsOrNull(r.term_ms), MsOrNull(l.term_end_ms),
       std::string(lease::LeaseStateName(l.state)), HistoryJson(l.history).dump(),
       r.renewal ? SqlValue(RenewalJson(*r.renewal).dump()) : SqlValue(nullptr), l.start_ms, now_ms, l.bid, l.shares});
}

Status LeaseTable::Save(const LeaseRecord& r, int64_t now_ms) {
  const lease::Lease& l = r.lease;
  Changed(l.guest);
  return store_.Exec(
      "UPDATE leases SET class = ?, vcpus = ?, memory_mib = ?, floor_vcpus = ?, floor_memory_mib = ?, term_ms = ?, "
      "term_end_ms = ?, state = ?, history = ?, renewal = ?, updated_ms = ?, bid = ? WHERE id = ?",
      {std::string(lease::LeaseClassName(l.lease_class)), l.granted.vcpus, l.granted.memory_mib, l.floor.vcpus,
       l.floor.memory_mib, MsOrNull(r.term_ms), MsOrNull(l.term_end_ms), std::string(lease::LeaseStateName(l.state)),
       HistoryJson(l.history).dump(), r.renewal ? SqlValue(RenewalJson(*r.renewal).dump()) : SqlValue(nullptr), now_ms,
       l.bid, l.id});
}

Result<LeaseRecord> LeaseTable::Get(std::string_view id) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT * FROM leases WHERE id = ?", {std::string(id)},
                                                "lease '" + std::string(id) + "' not found"));
  return LeaseOfRow(r);
}

Result<std::optional<LeaseRecord>> LeaseTable::LiveOf(std::string_view guest) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT * FROM leases WHERE guest = ? AND state NOT IN ('closed', "
                                              "'failed') ORDER BY created_ms DESC, rowid DESC LIMIT 1",
                                              {std::string(guest)}));
  if (rows.empty()) return std::optional<LeaseRecord>();
  UW_ASSIGN_OR_RETURN(LeaseRecord l, LeaseOfRow(rows[0]));
  return std::optional<LeaseRecord>(std::move(l));
}

Result<std::vector<LeaseRecord>> LeaseTable::OfGuest(std::string_view guest) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT * FROM leases WHERE guest = ? ORDER BY created_ms DESC, rowid "
                                              "DESC",
                                              {std::string(guest)}));
  return LeasesOfRows(rows);
}

Result<Page<LeaseRecord>> LeaseTable::List(const LeaseScope& scope, const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(RowPage rows, PageNewestFirst(store_, "leases", FilterOf(scope), page));
  UW_ASSIGN_OR_RETURN(auto items, LeasesOfRows(rows.rows));
  return Page<LeaseRecord>{std::move(items), rows.total, rows.next};
}

Result<std::vector<LeaseRecord>> LeaseTable::TermEndingBy(int64_t by_ms) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT * FROM leases WHERE state = 'active' AND term_end_ms IS NOT "
                                              "NULL AND term_end_ms <= ? ORDER BY term_end_ms, id",
                                              {by_ms}));
  return LeasesOfRows(rows);
}

Result<std::vector<LeaseRecord>> LeaseTable::Reclaimable() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT * FROM leases WHERE state = 'active' AND class <> 'guaranteed' "
                                              "AND id NOT IN (SELECT lease FROM notices WHERE state <> 'acted' AND "
                                              "state <> 'withdrawn') ORDER BY id"));
  return LeasesOfRows(rows);
}

Status LeaseTable::InsertNotice(const NoticeRecord& n, int64_t now_ms) {
  const lease::Notice& x = n.notice;
  Changed(x.guest);
  return store_.Exec(
      "INSERT INTO notices(id, lease, guest, tenant, state, act_at_ms, notice, delivery, created_ms, updated_ms, "
      "makes_room_for) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      {x.id, x.lease_id, x.guest, x.tenant, std::string(lease::NoticeStateName(x.state)), lease::ActAt(x),
       NoticeJson(x).dump(), DeliveryText(n.delivery), x.sent_ms, now_ms,
       n.makes_room_for.empty() ? SqlValue(nullptr) : SqlValue(n.makes_room_for)});
}

Status LeaseTable::SaveNotice(const NoticeRecord& n, int64_t now_ms) {
  const lease::Notice& x = n.notice;
  Changed(x.guest);
  return store_.Exec(
      "UPDATE notices SET state = ?, act_at_ms = ?, notice = ?, delivery = ?, updated_ms = ? WHERE id = ?",
      {std::string(lease::NoticeStateName(x.state)), lease::ActAt(x), NoticeJson(x).dump(), DeliveryText(n.delivery),
       now_ms, x.id});
}

Result<NoticeRecord> LeaseTable::GetNotice(std::string_view id) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT * FROM notices WHERE id = ?", {std::string(id)},
                                                "notice '" + std::string(id) + "' not found"));
  return NoticeOfRow(r);
}

Result<Page<NoticeRecord>> LeaseTable::ListNotices(const LeaseScope& scope, const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(RowPage rows, PageNewestFirst(store_, "notices", FilterOf(scope), page));
  UW_ASSIGN_OR_RETURN(auto items, NoticesOfRows(rows.rows));
  return Page<NoticeRecord>{std::move(items), rows.total, rows.next};
}

Result<std::optional<NoticeRecord>> LeaseTable::OpenNoticeOf(std::string_view lease_id) {
  UW_ASSIGN_OR_RETURN(
      auto rows,
      store_.Query("SELECT * FROM notices WHERE lease = ? AND state <> 'acted' AND state <> 'withdrawn' ORDER BY "
                   "created_ms LIMIT 1",
                   {std::string(lease_id)}));
  if (rows.empty()) return std::optional<NoticeRecord>();
  UW_ASSIGN_OR_RETURN(NoticeRecord n, NoticeOfRow(rows[0]));
  return std::optional<NoticeRecord>(std::move(n));
}

Result<std::vector<NoticeRecord>> LeaseTable::OpenNotices() {
  UW_ASSIGN_OR_RETURN(
      auto rows,
      store_.Query(
          "SELECT * FROM notices WHERE state <> 'acted' AND state <> 'withdrawn' ORDER BY act_at_ms, created_ms, id"));
  return NoticesOfRows(rows);
}

Status LeaseTable::InsertRepossession(const lease::Repossession& r) {
  Changed(r.guest);
  return store_.Exec(
      "INSERT INTO repossessions(id, lease, guest, tenant, record, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
      {r.notice_id, r.lease_id, r.guest, r.tenant, RepossessionJson(r).dump(), r.at_ms});
}

Result<Page<lease::Repossession>> LeaseTable::ListRepossessions(const LeaseScope& scope, const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(RowPage rows, PageNewestFirst(store_, "repossessions", FilterOf(scope), page));
  Page<lease::Repossession> out{{}, rows.total, rows.next};
  out.items.reserve(rows.rows.size());
  for (const auto& r : rows.rows) {
    UW_ASSIGN_OR_RETURN(lease::Repossession x, RepossessionFromJson(r.JsonOf("record")));
    out.items.push_back(std::move(x));
  }
  return out;
}

Result<std::optional<int64_t>> LeaseTable::BudgetOf(std::string_view tenant) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT per_hour FROM budgets WHERE tenant = ?", {std::string(tenant)}));
  if (rows.empty()) return std::optional<int64_t>();
  return std::optional<int64_t>(rows[0].Int("per_hour"));
}

Status LeaseTable::SetBudget(std::string_view tenant, int64_t per_hour, int64_t now_ms) {
  return store_.Exec(
      "INSERT INTO budgets(tenant, per_hour, updated_ms) VALUES (?, ?, ?) ON CONFLICT(tenant) DO UPDATE SET "
      "per_hour = excluded.per_hour, updated_ms = excluded.updated_ms",
      {std::string(tenant), per_hour, now_ms});
}

Result<std::vector<Budget>> LeaseTable::Budgets(const std::optional<std::string>& tenant) {
  std::string sql = "SELECT tenant, per_hour FROM budgets";
  std::vector<SqlValue> args;
  if (tenant) {
    sql += " WHERE tenant = ?";
    args.emplace_back(*tenant);
  }
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query(sql + " ORDER BY tenant", args));
  std::vector<Budget> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    Budget b{r.Str("tenant"), r.Int("per_hour"), 0};
    UW_ASSIGN_OR_RETURN(std::vector<lease::Lease> live, LiveOfTenant(b.tenant));
    for (const lease::Lease& l : live) b.committed += lease::BidCost(l);
    out.push_back(std::move(b));
  }
  return out;
}

Result<std::vector<lease::Lease>> LeaseTable::LiveOfTenant(std::string_view tenant) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT * FROM leases WHERE tenant = ? AND state NOT IN ('closed', "
                                              "'failed')",
                                              {std::string(tenant)}));
  UW_ASSIGN_OR_RETURN(auto records, LeasesOfRows(rows));
  std::vector<lease::Lease> out;
  out.reserve(records.size());
  for (auto& r : records) out.push_back(std::move(r.lease));
  return out;
}

}  // namespace uw::manager::internal
