// The body of GET /api/v1/guests, written from the store's rows without a JSON tree (see
// guest_listing.cc for how and why), with what it keeps between listings: the whole body until a
// guests row changes, each guest's text until its row changes, and what a guest's JSON takes from
// its stored spec until the spec text changes. Private to manager/ (Manager owns one).
//
//   GET /api/v1/guests --Body--> kept body? --> GuestTable::ScanListing --> text per row (kept)
//
// Thread safety: every method may be called from any thread (one listing at a time).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"

namespace uw::manager::internal {

class GuestTable;

class GuestListing {
 public:
  GuestListing(Store& store, GuestTable& guests) : store_(store), guests_(guests) {}

  // Byte for byte PageView("guests", Manager::ListGuests(p, page), GuestJson as p sees it).dump()
  // (views.h). Errors as ListGuests.
  Result<std::string> Body(const Principal& p, const PageQuery& page);

 private:
  // What a guest's listing takes from its stored spec, kept while the spec text is unchanged.
  struct SpecFacts {
    std::string spec;  // the text these were derived from
    bool paravirt = true;
    std::optional<int64_t> vcpus, memory_mib;
    int64_t created_ms = 0;
    std::string created;  // created_ms formatted (RFC 3339)
    uint64_t seen = 0;    // generation_ of the last listing that showed the guest
  };
  static SpecFacts DeriveSpecFacts(std::string_view spec_text);
  static void AppendGuest(std::string& out, const SqlCursor& c, const Principal& p, const SpecFacts& facts);

  Store& store_;
  GuestTable& guests_;
  std::mutex mu_;                                             // taken before the store's mutex, never after
  std::map<std::string, SpecFacts, std::less<>> spec_facts_;  // guarded by mu_: by guest name
  uint64_t generation_ = 0;                                   // guarded by mu_
  size_t bytes_hint_ = 0;                                     // guarded by mu_: the last full body's size
  struct CachedListing {
    uint64_t version = 0;  // Store::ChangeCount("guests") when it was built
    std::string body;
  };
  std::map<std::string, CachedListing> listings_;         // guarded by mu_: by "*" or "tenant:<name>"
  std::unordered_map<int64_t, std::string> guest_texts_;  // guarded by mu_: by guests rowid
};

}  // namespace uw::manager::internal
