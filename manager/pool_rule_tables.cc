// The pools and rules tables (pool_rule_tables.h).
#include "manager/pool_rule_tables.h"

#include <map>
#include <utility>

#include "manager/internal.h"

namespace uw::manager::internal {

namespace {

Result<placement::Pool> PoolOfRow(const SqlRow& r) {
  return placement::ParsePoolJson(r.JsonOf("spec"), "stored pool '" + r.Str("name") + "'");
}

Result<placement::Rule> RuleOfRow(const SqlRow& r) {
  return placement::ParseRuleJson(r.JsonOf("spec"), "stored rule '" + r.Str("name") + "'", true);
}

template <class T, class Parse>
Result<std::vector<T>> AllOf(const std::vector<SqlRow>& rows, Parse parse) {
  std::vector<T> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    UW_ASSIGN_OR_RETURN(T item, parse(r));
    out.push_back(std::move(item));
  }
  return out;
}

}  // namespace

Result<std::vector<placement::Pool>> PoolTable::List() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT name, spec FROM pools ORDER BY name"));
  return AllOf<placement::Pool>(rows, PoolOfRow);
}

Result<placement::Pool> PoolTable::Get(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT name, spec FROM pools WHERE name = ?", {std::string(name)},
                                                "pool '" + std::string(name) + "' not found"));
  return PoolOfRow(r);
}

Result<std::vector<placement::Pool>> PoolChain(const std::vector<placement::Pool>& pools, std::string_view name) {
  std::map<std::string, const placement::Pool*, std::less<>> by_name;
  for (const auto& p : pools) by_name[p.name] = &p;
  std::vector<placement::Pool> chain;
  // At most every pool once: a cycle (which the engine's checks refuse) cannot loop here.
  for (std::string cur(name); !cur.empty() && chain.size() <= pools.size();) {
    auto it = by_name.find(cur);
    if (it == by_name.end()) return NotFoundError("pool '" + cur + "' not found");
    chain.push_back(*it->second);
    cur = it->second->parent;
  }
  return chain;
}

std::set<std::string> PoolSubtree(const std::vector<placement::Pool>& pools, std::string_view name) {
  std::set<std::string> subtree = {std::string(name)};
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& p : pools) {
      if (!p.parent.empty() && subtree.count(p.parent) && subtree.insert(p.name).second) grew = true;
    }
  }
  return subtree;
}

Status PoolTable::Insert(const placement::Pool& pool) {
  Status s = store_.Exec(
      "INSERT INTO pools(name, parent, spec) VALUES (?, ?, ?)",
      {pool.name, pool.parent.empty() ? SqlValue(nullptr) : SqlValue(pool.parent), Dump(placement::PoolToJson(pool))});
  if (s.code() == StatusCode::kAlreadyExists) return AlreadyExistsError("pool '" + pool.name + "' already exists");
  return s;
}

Status PoolTable::Delete(std::string_view name) {
  UW_RETURN_IF_ERROR(store_
                         .QueryOne("SELECT name FROM pools WHERE name = ?", {std::string(name)},
                                   "pool '" + std::string(name) + "' not found")
                         .status());
  Status s = store_.Exec("DELETE FROM pools WHERE name = ?", {std::string(name)});
  if (s.code() == StatusCode::kFailedPrecondition) {
    return FailedPreconditionError("pool '" + std::string(name) + "' still has guests or child pools");
  }
  return s;
}

Result<std::vector<placement::Rule>> RuleTable::List() {
  UW_ASSIGN_OR_RETURN(auto rows, store_.Query("SELECT name, spec FROM rules ORDER BY name"));
  return AllOf<placement::Rule>(rows, RuleOfRow);
}

Result<placement::Rule> RuleTable::Get(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_.QueryOne("SELECT name, spec FROM rules WHERE name = ?", {std::string(name)},
                                                "rule '" + std::string(name) + "' not found"));
  return RuleOfRow(r);
}

Status RuleTable::Insert(const placement::Rule& rule) {
  Status s = store_.Exec("INSERT INTO rules(name, spec) VALUES (?, ?)", {rule.name, Dump(placement::RuleToJson(rule))});
  if (s.code() == StatusCode::kAlreadyExists) return AlreadyExistsError("rule '" + rule.name + "' already exists");
  return s;
}

Status RuleTable::Save(const placement::Rule& rule) {
  return store_.Exec("UPDATE rules SET spec = ? WHERE name = ?", {Dump(placement::RuleToJson(rule)), rule.name});
}

Status RuleTable::Delete(std::string_view name) {
  UW_RETURN_IF_ERROR(store_
                         .QueryOne("SELECT name FROM rules WHERE name = ?", {std::string(name)},
                                   "rule '" + std::string(name) + "' not found")
                         .status());
  return store_.Exec("DELETE FROM rules WHERE name = ?", {std::string(name)});
}

}  // namespace uw::manager::internal
