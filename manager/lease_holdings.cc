// Visible allocation (lease_service.h): what a guest holds, kept in the guest. Whenever a write
// touches a guest's lease, notices or repossession records (LeaseTable tells Changed), and after
// each start, the loop sends the guest's daemon `uw-holdings BASE64` over its control channel;
// the test guest keeps the JSON in /run/uw/holdings.json, where a guest-side controller reads its
// lease, its term, the notices open against it and what was taken, before it is asked.
#include <spdlog/spdlog.h>

#include "common/base64.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/lease_json.h"
#include "manager/lease_service.h"

namespace uw::manager::internal {
namespace {

constexpr size_t kPublishesPerTick = 16;  // notices come first: a restart's catch-up is spread out
constexpr int64_t kFirstPublishRetryMs = 1000, kMaxPublishRetryMs = 60000;
constexpr int64_t kRecordsShown = 5;

}  // namespace

void LeaseService::Changed(std::string_view guest) {
  std::lock_guard l(mu_);
  auto it = unpublished_.try_emplace(std::string(guest)).first;
  it->second.at_ms = 0;  // at the next tick
  it->second.delay_ms = 0;
  ++it->second.generation;
}

void LeaseService::Asked(std::string_view guest, int64_t asked_at_ms) {
  {
    std::lock_guard l(mu_);
    auto [it, added] = asked_.try_emplace(std::string(guest), asked_at_ms);
    if (!added && it->second >= asked_at_ms) return;  // seen already
    it->second = asked_at_ms;
  }
  Changed(guest);
  Wake();
}

Result<Json> LeaseService::HoldingsOf(const Guest& g, int64_t now_ms) {
  // The guest knows itself by its short name, as its tenant does.
  const Principal owner{"", Role::kTenant, g.tenant, {}};
  Json h = {{"guest", ShownGuestName(owner, g.name)}, {"at_ms", now_ms}, {"lease", nullptr}};
  UW_ASSIGN_OR_RETURN(std::optional<LeaseRecord> live, table_.LiveOf(g.name));
  if (live) {
    const lease::Lease& l = live->lease;
    h["lease"] = {{"id", l.id},
                  {"class", lease::LeaseClassName(l.lease_class)},
                  {"state", lease::LeaseStateName(l.state)},
                  {"granted", ResourcesJson(l.granted)},
                  {"floor", ResourcesJson(l.floor)},
                  {"reclaimable", ResourcesJson(lease::Reclaimable(l))},
                  {"term_end_ms", l.term_end_ms ? Json(*l.term_end_ms) : Json(nullptr)},
                  {"renewal", live->renewal ? RenewalJson(*live->renewal) : Json(nullptr)}};
    Json open = Json::array();
    UW_ASSIGN_OR_RETURN(std::optional<NoticeRecord> n, table_.OpenNoticeOf(l.id));
    if (n) open.push_back(NoticeJson(n->notice));
    h["notices"] = std::move(open);
  } else {
    h["notices"] = Json::array();
  }
  UW_ASSIGN_OR_RETURN(auto taken, table_.ListRepossessions({std::nullopt, g.name}, {kRecordsShown, ""}));
  Json records = Json::array();
  for (const lease::Repossession& r : taken.items) records.push_back(RepossessionJson(r));
  h["repossessions"] = std::move(records);
  for (Json& x : h["notices"]) ShowShortNames(owner, x);
  for (Json& x : h["repossessions"]) ShowShortNames(owner, x);
  return h;
}

Status LeaseService::Publish(int64_t now_ms) {
  std::vector<std::pair<std::string, uint64_t>> due;
  {
    std::lock_guard l(mu_);
    for (const auto& [guest, r] : unpublished_) {
      if (r.at_ms <= now_ms) due.emplace_back(guest, r.generation);
      if (due.size() == kPublishesPerTick) break;
    }
  }
  for (const auto& [guest, generation] : due) {
    enum { kDone, kLater, kRetry } next = kDone;
    int64_t wait_ms = 0;
    UW_ASSIGN_OR_RETURN(std::optional<Guest> g, d_.guests.Find(guest));
    if (g && g->host && Running(*g) && g->health != "none") {
      if (g->health && *g->health != "ready") {
        next = kLater;  // its daemon is not up yet (an agent that reports no health is tried)
        wait_ms = 2000;
      } else {
        UW_ASSIGN_OR_RETURN(Json h, HoldingsOf(*g, now_ms));
        auto out = d_.agent_of(*g->host)->Exec(g->name, {"uw-holdings " + Base64Encode(h.dump()), 3});
        if (!out.ok() || out->exit_code != 0) {
          next = kRetry;
          spdlog::debug("holdings of {}: {}", guest,
                        out.ok() ? "exit " + std::to_string(out->exit_code) : out.status().ToString());
        }
      }
    }
    std::lock_guard l(mu_);
    auto it = unpublished_.find(guest);
    if (it == unpublished_.end() || it->second.generation != generation) continue;  // changed again meanwhile
    if (next == kDone) {
      unpublished_.erase(it);
    } else if (next == kLater) {
      it->second.at_ms = now_ms + wait_ms;
    } else {
      Retry& r = it->second;
      r.delay_ms = r.delay_ms ? std::min(r.delay_ms * 2, kMaxPublishRetryMs) : kFirstPublishRetryMs;
      r.at_ms = now_ms + r.delay_ms;
    }
  }
  return Status::Ok();
}

}  // namespace uw::manager::internal
