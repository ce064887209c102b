// The pools and rules tables: resource pools and placement rules, stored in the snapshot format
// (placement::PoolToJson / RuleToJson) and read back with the engine's parsers, so what the store
// holds is always what the engine accepts. Private to manager/. Like MigrationTable they hold only
// a reference to the store; each user (the pool and rule routes, admission, the snapshot builder)
// makes one where it needs it.
//
//   CreatePool / CreateRule --Insert--> pools, rules <--List / Get-- admission, snapshot
//   guest delete --Save / Delete (a rule loses the guest)--^
//
// The store's triggers refuse to delete a pool that still has guests or child pools.
// No method opens a transaction: a caller that writes more than one statement (a change and its
// event) wraps them in Store::Transact, which every method may be called inside.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "manager/store.h"
#include "placement/placement.h"

namespace uw::manager::internal {

class PoolTable {
 public:
  explicit PoolTable(Store& store) : store_(store) {}

  Result<std::vector<placement::Pool>> List();         // by name
  Result<placement::Pool> Get(std::string_view name);  // kNotFound names it

  Status Insert(const placement::Pool& pool);  // kAlreadyExists names it
  // kNotFound; kFailedPrecondition while it has guests or child pools.
  Status Delete(std::string_view name);

 private:
  Store& store_;
};

// Over the pools as List read them (one read serves both):
// the pool and its ancestors, nearest first. kNotFound names the first pool that is missing.
Result<std::vector<placement::Pool>> PoolChain(const std::vector<placement::Pool>& pools, std::string_view name);
// The pool and every pool below it.
std::set<std::string> PoolSubtree(const std::vector<placement::Pool>& pools, std::string_view name);

class RuleTable {
 public:
  explicit RuleTable(Store& store) : store_(store) {}

  // By name, as stored: a vm-vm rule may have been left with one guest by deletes.
  Result<std::vector<placement::Rule>> List();
  Result<placement::Rule> Get(std::string_view name);  // kNotFound names it

  Status Insert(const placement::Rule& rule);  // kAlreadyExists names it
  Status Save(const placement::Rule& rule);    // a stored rule, changed
  Status Delete(std::string_view name);        // kNotFound names it

 private:
  Store& store_;
};

}  // namespace uw::manager::internal
