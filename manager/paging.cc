// Cursor paging over a table's rows (internal.h): by a unique key (names) or newest first (ids),
// with the count of rows in scope. The typed tables page through these.
#include "manager/internal.h"

namespace uw::manager::internal {

Status UnknownCursor(const std::string& after) {
  return InvalidArgumentError("after: '" + after +
                              "' is not in this list (it may have been removed); list again "
                              "from the start");
}

namespace {

// Cuts the rows (fetched with FetchLimit: one more than the page) to the page; `next` is the last
// kept row's `key_name` when a row was cut. The whole list (no limit, no cursor) is its own total.
void FinishPage(RowPage& out, const PageQuery& page, std::string_view key_name) {
  if (page.limit <= 0 && page.after.empty()) out.total = static_cast<int64_t>(out.rows.size());
  if (page.limit > 0 && static_cast<int64_t>(out.rows.size()) > page.limit) {
    out.rows.resize(page.limit);
    out.next = out.rows.back().Str(key_name);
  }
}

// The count of all rows in scope, needed only when the rows fetched may not be all of them.
Status CountInScope(Store& store, std::string_view table, const SqlFilter& scope, const PageQuery& page, RowPage& out) {
  if (page.limit <= 0 && page.after.empty()) return Status::Ok();  // FinishPage counts the rows
  UW_ASSIGN_OR_RETURN(
      SqlRow n, store.QueryOne("SELECT COUNT(*) AS n FROM " + std::string(table) + scope.where, scope.params, "count"));
  out.total = n.Int("n");
  return Status::Ok();
}

}  // namespace

Json PageJson(const char* key, Json items, int64_t total, const std::optional<std::string>& next) {
  Json out = Json::object();
  out[key] = std::move(items);
  out["next"] = next ? Json(*next) : Json(nullptr);
  out["total"] = total;
  return out;
}

Result<RowPage> PageByKey(Store& store, std::string_view select, std::string_view table, std::string_view key,
                          std::string_view key_name, const SqlFilter& scope, const PageQuery& page) {
  RowPage out;
  UW_RETURN_IF_ERROR(CountInScope(store, table, scope, page, out));
  SqlFilter filter = scope;
  if (!page.after.empty()) filter.And(std::string(key) + " > ?", {page.after});
  filter.params.emplace_back(FetchLimit(page));
  UW_ASSIGN_OR_RETURN(
      out.rows,
      store.Query(std::string(select) + filter.where + " ORDER BY " + std::string(key) + " LIMIT ?", filter.params));
  FinishPage(out, page, key_name);
  return out;
}

Result<RowPage> PageNewestFirst(Store& store, std::string_view table, const SqlFilter& scope, const PageQuery& page) {
  RowPage out;
  const std::string from = " FROM " + std::string(table);
  UW_RETURN_IF_ERROR(CountInScope(store, table, scope, page, out));
  SqlFilter filter = scope;
  if (!page.after.empty()) {
    SqlFilter at = scope;
    at.And("id = ?", {page.after});
    UW_ASSIGN_OR_RETURN(auto cursor, store.Query("SELECT created_ms, rowid AS r" + from + at.where, at.params));
    if (cursor.empty()) {
      return UnknownCursor(page.after);
    }
    const int64_t created = cursor[0].Int("created_ms");
    filter.And("(created_ms < ? OR (created_ms = ? AND rowid < ?))", {created, created, cursor[0].Int("r")});
  }
  filter.params.emplace_back(FetchLimit(page));
  UW_ASSIGN_OR_RETURN(out.rows, store.Query("SELECT *" + from + filter.where +
                                                " ORDER BY created_ms DESC, rowid DESC "
                                                "LIMIT ?",
                                            filter.params));
  FinishPage(out, page, "id");
  return out;
}

Result<SqlRow> FindTenantObject(Store& store, const Principal& p, std::string_view name, std::string_view select,
                                std::string_view key, std::string_view name_column, std::string_view what) {
  const std::string missing = std::string(what) + " '" + std::string(name.substr(0, 200)) + "' not found";
  std::string n(name);
  if (p.role == Role::kTenant) {
    std::optional<std::string> own = TenantShortName(p, name);
    if (!own) return NotFoundError(missing);
    n = GuestKey(p.tenant, *own);
  }
  const std::string from(select);
  UW_ASSIGN_OR_RETURN(auto rows, store.Query(from + " WHERE " + std::string(key) + " = ?", {n}));
  if (!rows.empty()) return std::move(rows[0]);
  if (p.role != Role::kTenant && n.find(':') == std::string::npos) {
    UW_ASSIGN_OR_RETURN(rows, store.Query(from + " WHERE " + std::string(name_column) + " = ? ORDER BY " +
                                              std::string(key) + " LIMIT 10",
                                          {n}));
    if (rows.size() == 1) return std::move(rows[0]);
    if (rows.size() > 1) {
      std::string all;
      for (const SqlRow& r : rows) all += (all.empty() ? "" : ", ") + r.Str("key");
      return FailedPreconditionError(std::string(what) + " name '" + n + "' names " + std::string(what) +
                                     "s of several tenants (" + all + "): give the full name");
    }
  }
  return NotFoundError(missing);
}

}  // namespace uw::manager::internal
