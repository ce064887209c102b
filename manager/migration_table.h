// The migrations table: one row per migration, its record (migration::Record, the phases and
// history) kept as it advances. Private to manager/. It holds only a reference to the store, so
// each user (MigrationRun, the dispatcher, the snapshot builder, reconcile, the API's reads) makes
// one over the store where it needs it.
//
//   MigrationRun --Insert / Save--> migrations <--Get / List / OfTask / moves done-- readers
//
// No method opens a transaction: a caller that writes more than one statement wraps them in
// Store::Transact, which every method may be called inside.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"
#include "migration/migration.h"

namespace uw::manager::internal {

class MigrationTable {
 public:
  explicit MigrationTable(Store& store) : store_(store) {}

  // A new migration for `task`, in the record's phase.
  Status Insert(const migration::Record& rec, std::string_view task, int64_t now_ms);
  // The record as it is now (phase, history, stats).
  Status Save(const migration::Record& rec, int64_t now_ms);

  // The migration of a task; nullopt when the task recorded none yet. kInternal for a stored record
  // that does not parse.
  Result<std::optional<migration::Record>> OfTask(std::string_view task);
  Result<Migration> Get(std::string_view id);  // kNotFound names it
  // Newest first; of one guest when `guest` is given.
  Result<Page<Migration>> List(std::string_view guest, const PageQuery& page);

  // The last migration of `guest` off `source` that is done; nullopt when none.
  Result<std::optional<std::string>> LastDoneFrom(std::string_view guest, std::string_view source);
  // When each guest last finished a move (its last `done` migration), by guest.
  Result<std::map<std::string, int64_t>> LastDoneAt();

 private:
  Store& store_;
};

}  // namespace uw::manager::internal
