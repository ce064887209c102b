// DRS's tables: the recommendations of each pass and the stored settings (the DRS config). Private
// to manager/. Like MigrationTable they hold only a reference to the store, so each user (a DRS
// pass, StartMoves, MigrationRun, the API's reads) makes one over the store where it needs it.
//
//   RunDrs --ReplacePending--> recommendations <--Pending / List / Get-- apply, the API
//   StartMoves, MigrationRun --End (applied | superseded | failed, with a note)--^
//   Get/SetDrsConfig --Get / Put--> settings (key -> JSON value)
//
// No method opens a transaction: a caller that writes more than one statement wraps them in
// Store::Transact, which every method may be called inside.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"
#include "placement/placement.h"

namespace uw::manager::internal {

// The move a recommendation stands for, as the engine and migration::OrderMoves read it.
placement::Move MoveOf(const Recommendation& r);

class RecommendationTable {
 public:
  explicit RecommendationTable(Store& store) : store_(store) {}

  // The pending ones (a few per guest at most), in the order they are applied: by priority, then age.
  Result<std::vector<Recommendation>> Pending();
  // All of them, newest first.
  Result<Page<Recommendation>> List(const PageQuery& page);
  Result<Recommendation> Get(std::string_view id);  // kNotFound names it

  // A pass's result: every pending one is superseded and the plan's moves become the pending ones.
  // Returns their ids, in the plan's order.
  Result<std::vector<std::string>> ReplacePending(const placement::Plan& plan, int64_t now_ms);

  // How a recommendation ended: applied (its task started), superseded (stale or not schedulable) or
  // failed (its move failed), with a note saying which task or why.
  enum class End { kApplied, kSuperseded, kFailed };
  Status Close(std::string_view id, End end, std::string_view note);

 private:
  Store& store_;
};

// Named JSON values the manager keeps across restarts (today only 'drs', the DRS config).
class SettingsTable {
 public:
  explicit SettingsTable(Store& store) : store_(store) {}

  Result<std::optional<Json>> Get(std::string_view key);  // nullopt when never set
  Status Put(std::string_view key, const Json& value);    // inserts or replaces

 private:
  Store& store_;
};

}  // namespace uw::manager::internal
