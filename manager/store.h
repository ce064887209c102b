// The manager's state store: one SQLite database (WAL, foreign keys, `PRAGMA user_version` schema
// versions upgraded by forward migrations on open).
//
//   handlers / task runner / loops --typed calls--> Store (one connection, one mutex) --> SQLite file
//
// Everything the manager knows lives here: hosts, guests (whose rows are also their capacity
// reservation: a guest row with a host counts against that host from the moment it is admitted),
// pools, rules, leases, tasks (the journal), events, DRS recommendations, usage samples, API tokens,
// idempotency records and settings. Statements are prepared once and cached.
//
// Thread safety: every method is safe to call from any thread; calls are serialized by one mutex
// (one writer). Transact() runs a function under that mutex inside BEGIN IMMEDIATE ... COMMIT.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace uw::manager {

// The current schema version (PRAGMA user_version after Open).
inline constexpr int kSchemaVersion = 16;

// One bound value of a statement.
using SqlValue = std::variant<std::nullptr_t, int64_t, double, std::string>;
// One result row, by column name.
// One result row. The column names are shared by every row of a query (listing 10,000 guests
// made 200,000 map nodes and key strings before).
struct SqlRow {
  std::shared_ptr<const std::vector<std::string>> names;
  std::vector<SqlValue> values;                    // in the order of `names`
  const SqlValue* Find(std::string_view c) const;  // nullptr for an unknown column
  std::string Str(std::string_view c) const;       // "" for NULL
  int64_t Int(std::string_view c) const;           // 0 for NULL
  double Real(std::string_view c) const;           // 0 for NULL
  bool IsNull(std::string_view c) const;
  Json JsonOf(std::string_view c) const;  // parses a TEXT column holding JSON (null when NULL/bad)
};

// One row of Store::Scan: the columns by index (in the SELECT's order), read straight from SQLite
// without copying. Valid only inside the Scan callback; text views die with it.
class SqlCursor {
 public:
  explicit SqlCursor(sqlite3_stmt* st) : st_(st) {}
  bool IsNull(int i) const { return sqlite3_column_type(st_, i) == SQLITE_NULL; }
  int64_t Int(int i) const { return sqlite3_column_int64(st_, i); }
  double Real(int i) const { return sqlite3_column_double(st_, i); }
  std::string_view Text(int i) const {
    const unsigned char* t = sqlite3_column_text(st_, i);
    return t ? std::string_view(reinterpret_cast<const char*>(t), static_cast<size_t>(sqlite3_column_bytes(st_, i)))
             : std::string_view();
  }

 private:
  sqlite3_stmt* st_;
};

class Store {
 public:
  // Opens (creating when missing) the database at `path` and migrates it to kSchemaVersion.
  // Errors: kUnavailable when the file cannot be opened, kFailedPrecondition when the file's schema
  // is newer than this binary knows, kInternal for a failed migration (nothing is changed then).
  static Result<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  int schema_version() const { return schema_version_; }

  // Runs one statement (prepared once, cached by its text) with `args` bound in order.
  // Errors: kAlreadyExists for a UNIQUE/PRIMARY KEY conflict, kFailedPrecondition for a foreign
  // key or CHECK violation, kInternal otherwise (the message names the statement).
  Status Exec(std::string_view sql, const std::vector<SqlValue>& args = {});
  Result<std::vector<SqlRow>> Query(std::string_view sql, const std::vector<SqlValue>& args = {});
  // Runs a query and calls `fn` on each row as SQLite steps to it (no row is copied: for listings
  // of thousands of rows). The store's mutex is held throughout: keep `fn` short and never call the
  // store from it. `fn`'s error stops the scan and is returned.
  Status Scan(std::string_view sql, const std::vector<SqlValue>& args,
              const std::function<Status(const SqlCursor&)>& fn);
  // The first row or kNotFound with `what` as the message.
  Result<SqlRow> QueryOne(std::string_view sql, const std::vector<SqlValue>& args, std::string_view what);
  // Row changes (inserts, updates, deletes) made to `table` since the store opened, as SQLite's
  // update hook reports them. Changes later rolled back count too: a different count means the
  // table may have changed, the same count that it has not (for caches of what is read from it).
  uint64_t ChangeCount(std::string_view table);
  // The rowids of `table` inserted, updated or deleted (rolled back or not) since the last call;
  // tracking starts with the first call. `all` when more than kMaxTrackedRows changed (treat every
  // row as changed). May be called from a Scan callback (it touches no statement): then no write
  // can come between it and the rows scanned.
  struct ChangedRows {
    bool all = false;
    std::vector<int64_t> rowids;
  };
  ChangedRows TakeChangedRows(std::string_view table);
  static constexpr size_t kMaxTrackedRows = 100'000;
  int64_t LastInsertRowId();

  // Runs `fn` inside one IMMEDIATE transaction while holding the store's mutex: committed when
  // `fn` returns OK, rolled back otherwise (its error is returned). Exec/Query may be called from
  // inside `fn` (the mutex is recursive).
  Status Transact(const std::function<Status()>& fn);

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  Status Migrate();
  Result<sqlite3_stmt*> Prepare(std::string_view sql);  // requires mu_
  Status Bind(sqlite3_stmt* st, const std::vector<SqlValue>& args, std::string_view sql);
  Status SqlError(int rc, std::string_view sql);

  std::recursive_mutex mu_;
  sqlite3* db_;                                              // guarded by mu_
  std::map<std::string, sqlite3_stmt*, std::less<>> stmts_;  // guarded by mu_
  std::map<std::string, uint64_t, std::less<>> changes_;     // guarded by mu_: by table
  std::map<std::string, ChangedRows, std::less<>> tracked_;  // guarded by mu_: by table
  int schema_version_ = 0;
};

}  // namespace uw::manager
