// The JSON forms of leases, notices and repossession records (lease/lease.h): one form, used by
// the store's rows (lease_table.cc) and by the REST views (views.cc). Times are Unix milliseconds
// in fields ending in _ms; amounts are {"vcpus", "memory_mib"}. Private to manager/.
#pragma once

#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "lease/lease.h"
#include "manager/manager.h"

namespace uw::manager::internal {

Json ResourcesJson(const lease::Resources& r);
// kInvalidArgument naming `where` and the field.
Result<lease::Resources> ResourcesFromJson(const Json& j, std::string_view where);

// [{"at_ms", "from", "to", "granted", "why"}...]
Json HistoryJson(const std::vector<lease::Transition>& history);
Result<std::vector<lease::Transition>> HistoryFromJson(const Json& j);

// {"lease_id", "amount", "term_end_ms" (null: open-ended)}
Json RenewalJson(const lease::Renewal& r);
Result<lease::Renewal> RenewalFromJson(const Json& j);

// {"id", "lease", "guest", "tenant", "action", "before", "after", "reason", "sent_ms",
//  "not_before_ms", "deadline_ms", "urgent", "state", "reply", "counter", "answered_act_at_ms" (what an answer set),
//  "act_at_ms" (when the system acts, lease::ActAt)}; a reply
// is {"kind", "guest", "at_ms", "after", "act_at_ms"}.
Json NoticeJson(const lease::Notice& n);
Result<lease::Notice> NoticeFromJson(const Json& j);

// {"notice", "lease", "guest", "tenant", "action", "before", "after", "reason", "at_ms", "urgent",
//  "answer" (ack | release | counter, or null: the guest was silent)}
Json RepossessionJson(const lease::Repossession& r);
Result<lease::Repossession> RepossessionFromJson(const Json& j);

// The guest's answer to `notice` at `at_ms` as lease::ApplyReply takes it: a counter's amounts not
// given stay the notice's, its delay becomes a time.
lease::Reply ReplyOf(const NoticeAnswer& answer, const lease::Notice& notice, int64_t at_ms);

Result<lease::LeaseState> ParseLeaseState(std::string_view name);
Result<lease::NoticeAction> ParseNoticeAction(std::string_view name);
Result<lease::ReplyKind> ParseReplyKind(std::string_view name);
std::string_view ReplyKindName(lease::ReplyKind k);

}  // namespace uw::manager::internal
