// The migrations table (migration_table.h).
#include "manager/migration_table.h"

#include <utility>

#include "manager/internal.h"

namespace uw::manager::internal {

namespace mg = migration;

namespace {

Result<Migration> MigrationOfRow(const SqlRow& r) {
  Migration m;
  auto record = mg::ParseRecord(r.JsonOf("record"));
  if (!record.ok()) {
    return InternalError("migration " + r.Str("id") + ": stored record unreadable: " + record.status().message());
  }
  m.record = std::move(*record);
  m.task = r.Str("task");
  m.created_ms = r.Int("created_ms");
  m.updated_ms = r.Int("updated_ms");
  return m;
}

}  // namespace

Status MigrationTable::Insert(const mg::Record& rec, std::string_view task, int64_t now_ms) {
  return store_.Exec(
      "INSERT INTO migrations(id, task, guest, source, destination, mode, phase, record, created_ms, updated_ms) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      {rec.id, std::string(task), rec.guest, rec.source, rec.destination, std::string(mg::ModeName(rec.mode)),
       std::string(mg::PhaseName(rec.phase)), Dump(mg::RecordToJson(rec)), now_ms, now_ms});
}

Status MigrationTable::Save(const mg::Record& rec, int64_t now_ms) {
  return store_.Exec("UPDATE migrations SET phase = ?, record = ?, updated_ms = ? WHERE id = ?",
                     {std::string(mg::PhaseName(rec.phase)), Dump(mg::RecordToJson(rec)), now_ms, rec.id});
}

Result<std::optional<mg::Record>> MigrationTable::OfTask(std::string_view task) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT * FROM migrations WHERE task = ?", {std::string(task)}));
  if (rows.empty()) return std::optional<mg::Record>();
  UW_ASSIGN_OR_RETURN(Migration m, MigrationOfRow(rows[0]));
  return std::optional<mg::Record>(std::move(m.record));
}

Result<Migration> MigrationTable::Get(std::string_view id) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT * FROM migrations WHERE id = ?", {std::string(id)},
                                                "migration '" + std::string(id) + "' not found"));
  return MigrationOfRow(r);
}

Result<Page<Migration>> MigrationTable::List(std::string_view guest, const PageQuery& page) {
  SqlFilter scope;
  if (!guest.empty()) scope.And("guest = ?", {std::string(guest)});
  UW_ASSIGN_OR_RETURN(RowPage rows, PageNewestFirst(store_, "migrations", scope, page));
  Page<Migration> out;
  out.items.reserve(rows.rows.size());
  for (const auto& r : rows.rows) {
    UW_ASSIGN_OR_RETURN(Migration m, MigrationOfRow(r));
    out.items.push_back(std::move(m));
  }
  out.total = rows.total;
  out.next = rows.next;
  return out;
}

Result<std::optional<std::string>> MigrationTable::LastDoneFrom(std::string_view guest, std::string_view source) {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT id FROM migrations WHERE guest = ? AND source = ? AND "
                                              "phase = 'done' ORDER BY updated_ms DESC LIMIT 1",
                                              {std::string(guest), std::string(source)}));
  if (rows.empty()) return std::optional<std::string>();
  return std::optional<std::string>(rows[0].Str("id"));
}

Result<std::map<std::string, int64_t>> MigrationTable::LastDoneAt() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT guest, MAX(updated_ms) AS at FROM migrations WHERE phase = "
                                              "'done' GROUP BY guest"));
  std::map<std::string, int64_t> out;
  for (const auto& r : rows) out[r.Str("guest")] = r.Int("at");
  return out;
}

}  // namespace uw::manager::internal
