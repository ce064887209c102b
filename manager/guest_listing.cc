// GET /api/v1/guests written straight from the store's rows into the response text (guest_listing.h).
//
// Listing 2,000 guests through a JSON tree (SqlRow copies, a parse of every stored spec, a
// std::map per guest, then dump) served 23-63 requests/s. Here each row is read in place
// (Store::Scan), the three facts a guest's JSON takes from its stored spec are cached per guest
// (re-derived only when the spec text changes), and the text is appended field by field in the
// order nlohmann's dump sorts keys, so that the body is byte for byte what ListGuests(p).dump()
// gives (listing_test.cc checks that on rows with every optional field). The body is kept until a
// row of guests changes (Store::ChangeCount), and each guest's text until its row changes
// (Store::TakeChangedRows): a listing after a heartbeat changed some guests' usage rewrites those.
#include "manager/guest_listing.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <iterator>

#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/manager.h"

namespace uw::manager::internal {
namespace {

// Appends `s` as a JSON string exactly as nlohmann's dump() writes it (UTF-8 passes through;
// control characters as \b \f \n \r \t or \u00xx).
void AppendString(std::string& out, std::string_view s) {
  size_t special = 0;
  while (special < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[special]);
    if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80) break;
    ++special;
  }
  if (special == s.size()) {  // the common case: nothing to escape
    out += '"';
    out += s;
    out += '"';
    return;
  }
  for (unsigned char c : s.substr(special)) {
    if (c >= 0x80) {
      out += Json(std::string(s)).dump();  // non-ASCII: nlohmann's own UTF-8 checks and errors
      return;
    }
  }
  out += '"';
  size_t plain = 0;  // start of the run of characters that need no escape
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + plain, i - plain);
    plain = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\u%04x", c);
        out += buf;
      }
    }
  }
  out.append(s.data() + plain, s.size() - plain);
  out += '"';
}

void AppendInt(std::string& out, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

void AppendDouble(std::string& out, double v) {
  // As nlohmann's serializer writes a number_float (its dump_float): null when not finite, else its
  // Grisu2 to_chars (shortest round trip, ".0" on integers).
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[64];
  char* end = nlohmann::detail::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, end);
}

// A TEXT column holding JSON, as SqlRow::JsonOf reads it: null when NULL or not JSON.
void AppendStoredJson(std::string& out, const SqlCursor& c, int col) {
  if (c.IsNull(col)) {
    out += "null";
    return;
  }
  Json j = Json::parse(c.Text(col), nullptr, false);
  out += j.is_discarded() ? "null" : j.dump();
}

void AppendTextOrNull(std::string& out, const SqlCursor& c, int col) {
  if (c.IsNull(col)) {
    out += "null";
  } else {
    AppendString(out, c.Text(col));
  }
}

// The listing's columns (GuestTable::ScanListing).
using Col = GuestTable::ListingColumn;

// Listings kept (one for everyone who sees all guests, one per tenant that listed lately).
constexpr size_t kMaxCachedListings = 64;

}  // namespace

GuestListing::SpecFacts GuestListing::DeriveSpecFacts(std::string_view spec_text) {
  // As GuestOfRow reads the spec (it throws where that would: a spec that is not an object).
  const Json spec = [&] {
    Json j = Json::parse(spec_text, nullptr, false);
    return j.is_discarded() ? Json(nullptr) : j;
  }();
  SpecFacts f;
  f.spec.assign(spec_text);
  f.paravirt = spec.value("paravirt", true);
  if (spec.contains("vcpus")) f.vcpus = spec.value("vcpus", int64_t{0});
  if (spec.contains("memory_mib")) f.memory_mib = spec.value("memory_mib", int64_t{0});
  return f;
}

// One guest's object (keys in sorted order, as nlohmann's std::map-backed object dumps them).
void GuestListing::AppendGuest(std::string& out, const SqlCursor& c, const Principal& p, const SpecFacts& facts) {
  const std::string_view name = c.Text(Col::kName);
  const std::string_view kind = c.Text(Col::kKind);
  // Keys in sorted order (nlohmann's object is a std::map).
  out += "{\"alert\":";
  AppendStoredJson(out, c, Col::kAlert);
  out += ",\"automation\":";
  AppendString(out, c.Text(Col::kAutomation));
  out += ",\"crash\":";
  AppendStoredJson(out, c, Col::kCrash);
  out += ",\"created\":";
  AppendString(out, facts.created);
  out += ",\"devices\":";
  out += kind == "lxc" ? "\"container\"" : facts.paravirt ? "\"virtio\"" : "\"emulated\"";
  out += ",\"health\":";
  AppendTextOrNull(out, c, Col::kHealth);
  out += ",\"host\":";
  AppendTextOrNull(out, c, Col::kHost);
  out += ",\"kind\":";
  AppendString(out, kind);
  out += ",\"memory_mib\":";
  AppendInt(out, facts.memory_mib.value_or(c.Int(Col::kMemoryMib)));
  out += ",\"migrating_to\":";
  AppendTextOrNull(out, c, Col::kMigratingTo);
  out += ",\"name\":";
  AppendString(out, ShownGuestName(p, name));
  out += ",\"on_crash\":";
  AppendString(out, c.Text(Col::kOnCrash));
  out += ",\"placement_reason\":";
  AppendString(out, c.Text(Col::kPlacementReason));
  out += ",\"pool\":";
  AppendTextOrNull(out, c, Col::kPool);
  out += ",\"reserved\":{\"memory_mib\":";
  AppendInt(out, c.Int(Col::kMemoryMib));
  out += ",\"vcpus\":";
  AppendInt(out, c.Int(Col::kVcpus));
  out += "},\"restart_priority\":";
  AppendString(out, c.Text(Col::kRestartPriority));
  out += ",\"state\":";
  AppendString(out, c.Text(Col::kState));
  out += ",\"tenant\":";
  AppendString(out, c.Text(Col::kTenant));
  out += ",\"usage\":{\"cpu_cores\":";
  AppendDouble(out, c.Real(Col::kCpuUsed));
  out += ",\"memory_mib\":";
  AppendInt(out, c.Int(Col::kMemoryUsedMib));
  out += "},\"vcpus\":";
  AppendInt(out, facts.vcpus.value_or(c.Int(Col::kVcpus)));
  out += '}';
}

Result<std::string> GuestListing::Body(const Principal& p, const PageQuery& page) {
  std::lock_guard l(mu_);
  // The whole list depends on the guests table alone (and on who asks): kept until a row of it
  // changes. Read before the rows, so that a change made meanwhile makes the next call build it again.
  const bool whole = page.limit == 0 && page.after.empty();
  const uint64_t version = store_.ChangeCount("guests");
  const std::string key = p.role == Role::kTenant ? "tenant:" + p.tenant : "*";
  if (whole) {
    if (auto hit = listings_.find(key); hit != listings_.end() && hit->second.version == version) {
      return hit->second.body;
    }
  }
  int64_t total = 0;
  if (!whole) {
    UW_ASSIGN_OR_RETURN(total, guests_.Count(ListingTenant(p)));
  }
  std::string out;
  out.reserve((whole ? bytes_hint_ : 0) + 64);
  const bool everyone = p.role != Role::kTenant;
  ++generation_;
  out += "{\"guests\":[";
  int64_t written = 0;
  bool more = false;
  std::string last;  // the name of the last guest written
  bool took_changes = false;
  auto hint = spec_facts_.begin();
  // Appends one guest's object to `out`.
  auto write_guest = [&](std::string& out, const SqlCursor& c) {
    const std::string_view name = c.Text(Col::kName);
    const std::string_view spec_text = c.Text(Col::kSpec);
    // Rows come in name order, as the cache is kept: the next entry is usually the one.
    auto it = hint != spec_facts_.end() && hint->first == name ? hint : spec_facts_.find(name);
    if (it == spec_facts_.end()) {
      it = spec_facts_.emplace(std::string(name), DeriveSpecFacts(spec_text)).first;
    } else if (it->second.spec != spec_text) {
      it->second = DeriveSpecFacts(spec_text);
    }
    hint = std::next(it);
    SpecFacts& facts = it->second;
    const int64_t created_ms = c.Int(Col::kCreatedMs);
    if (facts.created.empty() || facts.created_ms != created_ms) {
      facts.created_ms = created_ms;
      facts.created = FormatRfc3339(TimePoint(std::chrono::milliseconds(created_ms)));
    }
    facts.seen = generation_;
    AppendGuest(out, c, p, facts);
  };
  auto row = [&](const SqlCursor& c) -> Status {
    if (page.limit > 0 && written == page.limit) {  // the row past the page: there is a next one
      more = true;
      return Status::Ok();
    }
    if (written++ > 0) out += ',';
    if (!whole) last.assign(c.Text(Col::kName));
    if (!everyone) {
      write_guest(out, c);
      return Status::Ok();
    }
    // Everyone's listing keeps each guest's text until SQLite reports a change of its row (taken
    // here, under the store's mutex, so that no write comes between it and these rows). Rowids
    // are stable: nothing VACUUMs the store.
    if (!took_changes) {
      took_changes = true;
      Store::ChangedRows changed = store_.TakeChangedRows("guests");
      if (changed.all) {
        guest_texts_.clear();
      } else {
        for (int64_t rowid : changed.rowids) guest_texts_.erase(rowid);
      }
    }
    const int64_t rowid = c.Int(Col::kRowid);
    auto text = guest_texts_.find(rowid);
    if (text == guest_texts_.end()) {
      std::string fresh;
      write_guest(fresh, c);  // may throw (a stored spec that is not an object): nothing kept then
      text = guest_texts_.emplace(rowid, std::move(fresh)).first;
    }
    out += text->second;
    return Status::Ok();
  };
  UW_RETURN_IF_ERROR(guests_.ScanListing(ListingTenant(p), StoredCursor(p, page.after), FetchLimit(page), row));
  if (whole && everyone) {
    // Forget the guests that are gone (only a full listing knows; a guest whose kept text served
    // this listing has its spec read again when it changes).
    for (auto it = spec_facts_.begin(); it != spec_facts_.end();) {
      it = it->second.seen == generation_ ? std::next(it) : spec_facts_.erase(it);
    }
  }
  out += "],\"next\":";
  if (more) {
    AppendString(out, ShownGuestName(p, last));
  } else {
    out += "null";
  }
  out += ",\"total\":";
  AppendInt(out, whole ? written : total);
  out += '}';
  if (!whole) return out;
  if (everyone) bytes_hint_ = out.size();
  if (listings_.size() >= kMaxCachedListings) listings_.clear();
  listings_[key] = CachedListing{version, out};
  return out;
}

}  // namespace uw::manager::internal
