#include "manager/store.h"

#include <spdlog/spdlog.h>

namespace uw::manager {
namespace internal {
// The forward migrations (store_schema.cc): kMigrations[i] takes the schema from version i to i + 1.
extern const char* const kMigrations[kSchemaVersion];
}  // namespace internal

const SqlValue* SqlRow::Find(std::string_view c) const {
  if (!names) return nullptr;
  for (size_t i = 0; i < names->size() && i < values.size(); ++i) {
    if ((*names)[i] == c) return &values[i];
  }
  return nullptr;
}
std::string SqlRow::Str(std::string_view c) const {
  const SqlValue* v = Find(c);
  if (!v) return "";
  if (auto* s = std::get_if<std::string>(v)) return *s;
  if (auto* i = std::get_if<int64_t>(v)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(v)) return std::to_string(*d);
  return "";
}
int64_t SqlRow::Int(std::string_view c) const {
  const SqlValue* v = Find(c);
  if (!v) return 0;
  if (auto* i = std::get_if<int64_t>(v)) return *i;
  if (auto* d = std::get_if<double>(v)) return static_cast<int64_t>(*d);
  return 0;
}
double SqlRow::Real(std::string_view c) const {
  const SqlValue* v = Find(c);
  if (!v) return 0;
  if (auto* d = std::get_if<double>(v)) return *d;
  if (auto* i = std::get_if<int64_t>(v)) return static_cast<double>(*i);
  return 0;
}
bool SqlRow::IsNull(std::string_view c) const {
  const SqlValue* v = Find(c);
  return !v || std::holds_alternative<std::nullptr_t>(*v);
}
Json SqlRow::JsonOf(std::string_view c) const {
  if (IsNull(c)) return nullptr;
  const std::string* text = std::get_if<std::string>(Find(c));
  Json j = text ? Json::parse(*text, nullptr, false) : Json::parse(Str(c), nullptr, false);
  return j.is_discarded() ? Json(nullptr) : j;
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    if (db) sqlite3_close(db);
    return UnavailableError("cannot open state store " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<Store> store(new Store(db));
  // Runs inside sqlite3_step, so under the store's mutex.
  sqlite3_update_hook(
      db,
      [](void* self, int, const char*, const char* table, sqlite3_int64 rowid) {
        auto* store = static_cast<Store*>(self);
        auto it = store->changes_.find(std::string_view(table));
        if (it == store->changes_.end()) it = store->changes_.emplace(table, 0).first;
        ++it->second;
        if (auto t = store->tracked_.find(std::string_view(table)); t != store->tracked_.end() && !t->second.all) {
          t->second.rowids.push_back(rowid);
          if (t->second.rowids.size() > kMaxTrackedRows) {
            t->second.all = true;
            t->second.rowids.clear();
          }
        }
      },
      store.get());
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL"}) {
    char* err = nullptr;
    if (sqlite3_exec(db, pragma, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "?";
      sqlite3_free(err);
      return UnavailableError("state store " + path + ": " + pragma + ": " + msg);
    }
  }
  UW_RETURN_IF_ERROR(store->Migrate().WithContext("state store " + path));
  return store;
}

Store::~Store() {
  for (auto& [sql, st] : stmts_) sqlite3_finalize(st);
  sqlite3_close(db_);
}

Status Store::Migrate() {
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(auto rows, Query("PRAGMA user_version"));
  int version = rows.empty() ? 0 : static_cast<int>(rows[0].Int("user_version"));
  if (version > kSchemaVersion) {
    return FailedPreconditionError("schema version " + std::to_string(version) + " is newer than this uw-manager (" +
                                   std::to_string(kSchemaVersion) + "); run a newer uw-manager");
  }
  for (int v = version; v < kSchemaVersion; ++v) {
    std::string sql = std::string("BEGIN IMMEDIATE;\n") + internal::kMigrations[v] +
                      "\nPRAGMA user_version = " + std::to_string(v + 1) + ";\nCOMMIT;";
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "?";
      sqlite3_free(err);
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return InternalError("migration " + std::to_string(v) + " -> " + std::to_string(v + 1) + " failed: " + msg);
    }
    spdlog::info("state store migrated to schema version {}", v + 1);
  }
  schema_version_ = kSchemaVersion;
  return Status::Ok();
}

Status Store::SqlError(int rc, std::string_view sql) {
  std::string msg = sqlite3_errmsg(db_);
  int ext = sqlite3_extended_errcode(db_);
  std::string where = std::string(sql.substr(0, 60));
  if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return AlreadyExistsError(msg);
  }
  if ((rc & 0xff) == SQLITE_CONSTRAINT) return FailedPreconditionError(msg);
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
    return UnavailableError("state store busy: " + msg);
  }
  return InternalError("state store: " + msg + " (in: " + where + ")");
}

Result<sqlite3_stmt*> Store::Prepare(std::string_view sql) {
  auto it = stmts_.find(sql);
  if (it != stmts_.end()) {
    sqlite3_reset(it->second);
    sqlite3_clear_bindings(it->second);
    return it->second;
  }
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &st, nullptr);
  if (rc != SQLITE_OK) return SqlError(rc, sql);
  stmts_.emplace(std::string(sql), st);
  return st;
}

Status Store::Bind(sqlite3_stmt* st, const std::vector<SqlValue>& args, std::string_view sql) {
  for (size_t i = 0; i < args.size(); ++i) {
    int idx = static_cast<int>(i + 1);
    int rc = std::visit(
        [&](const auto& v) -> int {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::nullptr_t>)
            return sqlite3_bind_null(st, idx);
          else if constexpr (std::is_same_v<T, int64_t>)
            return sqlite3_bind_int64(st, idx, v);
          else if constexpr (std::is_same_v<T, double>)
            return sqlite3_bind_double(st, idx, v);
          else
            return sqlite3_bind_text(st, idx, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
        },
        args[i]);
    if (rc != SQLITE_OK) return SqlError(rc, sql);
  }
  return Status::Ok();
}

Status Store::Exec(std::string_view sql, const std::vector<SqlValue>& args) {
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(sqlite3_stmt * st, Prepare(sql));
  UW_RETURN_IF_ERROR(Bind(st, args, sql));
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
  }
  Status s = rc == SQLITE_DONE ? Status::Ok() : SqlError(rc, sql);
  sqlite3_reset(st);
  return s;
}

Result<std::vector<SqlRow>> Store::Query(std::string_view sql, const std::vector<SqlValue>& args) {
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(sqlite3_stmt * st, Prepare(sql));
  UW_RETURN_IF_ERROR(Bind(st, args, sql));
  std::vector<SqlRow> rows;
  const int n = sqlite3_column_count(st);
  auto names = std::make_shared<std::vector<std::string>>();
  for (int i = 0; i < n; ++i) names->emplace_back(sqlite3_column_name(st, i));
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    SqlRow row;
    row.names = names;
    row.values.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER:
          row.values.emplace_back(static_cast<int64_t>(sqlite3_column_int64(st, i)));
          break;
        case SQLITE_FLOAT:
          row.values.emplace_back(sqlite3_column_double(st, i));
          break;
        case SQLITE_NULL:
          row.values.emplace_back(nullptr);
          break;
        default: {
          const unsigned char* t = sqlite3_column_text(st, i);
          row.values.emplace_back(std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(st, i)));
        }
      }
    }
    rows.push_back(std::move(row));
  }
  Status s = rc == SQLITE_DONE ? Status::Ok() : SqlError(rc, sql);
  sqlite3_reset(st);
  if (!s.ok()) return s;
  return rows;
}

Status Store::Scan(std::string_view sql, const std::vector<SqlValue>& args,
                   const std::function<Status(const SqlCursor&)>& fn) {
  std::lock_guard l(mu_);
  UW_ASSIGN_OR_RETURN(sqlite3_stmt * st, Prepare(sql));
  UW_RETURN_IF_ERROR(Bind(st, args, sql));
  const SqlCursor cursor(st);
  Status s = Status::Ok();
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    s = fn(cursor);
    if (!s.ok()) break;
  }
  if (s.ok() && rc != SQLITE_DONE) s = SqlError(rc, sql);
  sqlite3_reset(st);
  return s;
}

Result<SqlRow> Store::QueryOne(std::string_view sql, const std::vector<SqlValue>& args, std::string_view what) {
  UW_ASSIGN_OR_RETURN(auto rows, Query(sql, args));
  if (rows.empty()) return NotFoundError(std::string(what));
  return std::move(rows[0]);
}

uint64_t Store::ChangeCount(std::string_view table) {
  std::lock_guard l(mu_);
  auto it = changes_.find(table);
  return it == changes_.end() ? 0 : it->second;
}

Store::ChangedRows Store::TakeChangedRows(std::string_view table) {
  std::lock_guard l(mu_);
  auto it = tracked_.find(table);
  if (it == tracked_.end()) {
    tracked_.emplace(std::string(table), ChangedRows{});
    return ChangedRows{true, {}};  // not tracked until now: anything may have changed
  }
  ChangedRows out;
  std::swap(out, it->second);
  return out;
}

int64_t Store::LastInsertRowId() {
  std::lock_guard l(mu_);
  return sqlite3_last_insert_rowid(db_);
}

Status Store::Transact(const std::function<Status()>& fn) {
  std::lock_guard l(mu_);
  UW_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Status s;
  try {
    s = fn();
  } catch (const std::exception& e) {
    // A transaction left open would refuse every later BEGIN until restart ("cannot start a
    // transaction within a transaction"): roll back whatever `fn` throws, then report it.
    s = InternalError(std::string("state store transaction aborted by an exception: ") + e.what());
  }
  if (s.ok()) {
    s = Exec("COMMIT");
    if (s.ok()) return s;
  }
  Status r = Exec("ROLLBACK");
  if (!r.ok()) spdlog::error("state store rollback failed: {}", r.ToString());
  return s;
}

}  // namespace uw::manager
