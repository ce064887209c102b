// DRS's tables (drs_tables.h).
#include "manager/drs_tables.h"

#include <utility>

#include "common/id.h"
#include "manager/internal.h"

namespace uw::manager::internal {

namespace {

Recommendation RecommendationOfRow(const SqlRow& r) {
  return {r.Str("id"),     r.Str("guest"),     r.Str("from_host"),         r.Str("to_host"),          r.Int("priority"),
          r.Str("reason"), r.Real("gain"),     r.Real("imbalance_before"), r.Real("imbalance_after"), r.Str("state"),
          r.Str("note"),   r.Int("created_ms")};
}

std::vector<Recommendation> RecommendationsOfRows(const std::vector<SqlRow>& rows) {
  std::vector<Recommendation> out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(RecommendationOfRow(r));
  return out;
}

const char* EndName(RecommendationTable::End end) {
  switch (end) {
    case RecommendationTable::End::kApplied:
      return "applied";
    case RecommendationTable::End::kSuperseded:
      return "superseded";
    case RecommendationTable::End::kFailed:
      return "failed";
  }
  return "failed";
}

}  // namespace

placement::Move MoveOf(const Recommendation& r) {
  return {r.guest, r.from, r.to, static_cast<int>(r.priority), r.reason, r.gain};
}

Result<std::vector<Recommendation>> RecommendationTable::Pending() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT * FROM recommendations WHERE state = 'pending' "
                                              "ORDER BY priority, created_ms, rowid"));
  return RecommendationsOfRows(rows);
}

Result<Page<Recommendation>> RecommendationTable::List(const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(RowPage rows, PageNewestFirst(store_, "recommendations", {}, page));
  return Page<Recommendation>{RecommendationsOfRows(rows.rows), rows.total, rows.next};
}

Result<Recommendation> RecommendationTable::Get(std::string_view id) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT * FROM recommendations WHERE id = ?", {std::string(id)},
                                                "recommendation '" + std::string(id) + "' not found"));
  return RecommendationOfRow(r);
}

Result<std::vector<std::string>> RecommendationTable::ReplacePending(const placement::Plan& plan, int64_t now_ms) {
  UW_RETURN_IF_ERROR(store_.Exec("UPDATE recommendations SET state = 'superseded' WHERE state = 'pending'"));
  std::vector<std::string> ids;
  ids.reserve(plan.moves.size());
  for (const auto& m : plan.moves) {
    std::string id = NewId("rec");
    UW_RETURN_IF_ERROR(
        store_.Exec("INSERT INTO recommendations(id, created_ms, guest, from_host, to_host, priority, reason, gain, "
                    "imbalance_before, imbalance_after, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                    {id, now_ms, m.vm, m.from, m.to, int64_t{m.priority}, m.reason, m.gain, plan.before.imbalance,
                     plan.after.imbalance}));
    ids.push_back(std::move(id));
  }
  return ids;
}

Status RecommendationTable::Close(std::string_view id, End end, std::string_view note) {
  return store_.Exec("UPDATE recommendations SET state = ?, note = ? WHERE id = ?",
                     {std::string(EndName(end)), std::string(note), std::string(id)});
}

Result<std::optional<Json>> SettingsTable::Get(std::string_view key) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT value FROM settings WHERE key = ?", {std::string(key)}));
  if (rows.empty()) return std::optional<Json>();
  return std::optional<Json>(rows[0].JsonOf("value"));
}

Status SettingsTable::Put(std::string_view key, const Json& value) {
  return store_.Exec(
      "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
      {std::string(key), Dump(value)});
}

}  // namespace uw::manager::internal
