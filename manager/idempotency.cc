#include "manager/idempotency.h"

namespace uw::manager::internal {

int64_t IdempotencyLog::NowMs() const { return ToUnixMillis(clock_.Now()); }

Result<std::optional<IdempotencyLog::Entry>> IdempotencyLog::Find(Store& store, const std::string& principal,
                                                                  const std::string& key) {
  UW_ASSIGN_OR_RETURN(auto rows, store.Query("SELECT * FROM idempotency WHERE principal = ? AND key = ? AND "
                                             "created_ms >= ?",
                                             {principal, key, NowMs() - kKeepMs}));
  if (rows.empty()) return std::optional<Entry>();
  const SqlRow& r = rows[0];
  return std::optional<Entry>(
      Entry{static_cast<int>(r.Int("status")), r.Str("response"), r.Str("body_hash"), r.Str("method"), r.Str("path")});
}

Status IdempotencyLog::Save(Store& store, const std::string& principal, const std::string& key, const Entry& e) {
  const int64_t now = NowMs();
  if (now - last_prune_ms_ >= 600'000) {
    last_prune_ms_ = now;
    UW_RETURN_IF_ERROR(store.Exec("DELETE FROM idempotency WHERE created_ms < ?", {now - kKeepMs}));
  }
  // An expired record of the same key is replaced.
  return store.Exec(
      "INSERT OR REPLACE INTO idempotency(principal, key, method, path, body_hash, status, response, created_ms) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      {principal, key, e.method, e.path, e.body_hash, int64_t{e.status}, e.body, now});
}

}  // namespace uw::manager::internal
