// Idempotency-Key for POSTs, a concern of the HTTP layer (http_api.cc): the answers it recorded,
// kept in the store's idempotency table for 24 hours. Private to manager/.
//
// Thread safety: every method may be called from any thread; mutex() serialises a lookup with
// the request it guards and the record of its answer.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "manager/store.h"

namespace uw::manager::internal {

class IdempotencyLog {
 public:
  // A recorded answer and what it answered.
  struct Entry {
    int status = 0;
    std::string body;
    std::string body_hash;
    std::string method, path;
  };
  static constexpr int64_t kKeepMs = 86'400'000;

  explicit IdempotencyLog(Clock& clock) : clock_(clock) {}
  // The answer recorded for (principal, key) within kKeepMs, if any.
  Result<std::optional<Entry>> Find(Store& store, const std::string& principal, const std::string& key);
  // Records an answer; records older than kKeepMs are removed now and then (at most every 10 minutes).
  Status Save(Store& store, const std::string& principal, const std::string& key, const Entry& e);
  std::mutex& mutex() { return mu_; }

 private:
  int64_t NowMs() const;

  Clock& clock_;
  std::mutex mu_;
  int64_t last_prune_ms_ = 0;  // guarded by mu_ (callers hold it around Find and Save)
};

}  // namespace uw::manager::internal
