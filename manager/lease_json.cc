// The JSON forms of leases, notices and repossession records (lease_json.h).
#include "manager/lease_json.h"

#include <array>

namespace uw::manager::internal {
namespace {

// The enum value whose name is `name`, among `values` (names by `name_of`).
template <class E, size_t N, class NameOf>
Result<E> ByName(std::string_view name, const std::array<E, N>& values, NameOf name_of, std::string_view what) {
  std::string choices;
  for (E v : values) {
    if (name_of(v) == name) return v;
    choices += (choices.empty() ? "" : " | ") + std::string(name_of(v));
  }
  return InvalidArgumentError(std::string(what) + " '" + std::string(name) + "': expected one of " + choices);
}

constexpr std::array kLeaseStates = {lease::LeaseState::kNascent,   lease::LeaseState::kActive,
                                     lease::LeaseState::kExtending, lease::LeaseState::kClosing,
                                     lease::LeaseState::kClosed,    lease::LeaseState::kFailed};
constexpr std::array kNoticeStates = {lease::NoticeState::kPending,  lease::NoticeState::kAcked,
                                      lease::NoticeState::kReleased, lease::NoticeState::kCountered,
                                      lease::NoticeState::kActed,    lease::NoticeState::kWithdrawn};
constexpr std::array kActions = {lease::NoticeAction::kShrink, lease::NoticeAction::kMigrate,
                                 lease::NoticeAction::kEvict, lease::NoticeAction::kStop,
                                 lease::NoticeAction::kEvacuate};
constexpr std::array kReplyKinds = {lease::ReplyKind::kAck, lease::ReplyKind::kRelease, lease::ReplyKind::kCounter};

Json OptionalMs(const std::optional<int64_t>& ms) { return ms ? Json(*ms) : Json(nullptr); }

Result<std::optional<int64_t>> OptionalMsOf(const JsonView& v, std::string_view key) { return v.OptionalInt(key); }

Json ReplyJson(const lease::Reply& r) {
  return {{"kind", ReplyKindName(r.kind)},
          {"guest", r.guest},
          {"at_ms", r.at_ms},
          {"after", r.after ? ResourcesJson(*r.after) : Json(nullptr)},
          {"act_at_ms", OptionalMs(r.act_at_ms)}};
}

Result<std::optional<lease::Reply>> ReplyFromJson(const Json& j) {
  if (j.is_null()) return std::optional<lease::Reply>();
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(j, "reply"));
  lease::Reply r;
  UW_ASSIGN_OR_RETURN(std::string kind, v.String("kind"));
  UW_ASSIGN_OR_RETURN(r.kind, ParseReplyKind(kind));
  UW_ASSIGN_OR_RETURN(r.guest, v.String("guest"));
  UW_ASSIGN_OR_RETURN(r.at_ms, v.Int("at_ms"));
  if (v.Has("after")) {
    UW_ASSIGN_OR_RETURN(r.after, ResourcesFromJson(j["after"], "reply.after"));
  }
  UW_ASSIGN_OR_RETURN(r.act_at_ms, OptionalMsOf(v, "act_at_ms"));
  return std::optional<lease::Reply>(std::move(r));
}

}  // namespace

Json ResourcesJson(const lease::Resources& r) { return {{"vcpus", r.vcpus}, {"memory_mib", r.memory_mib}}; }

Result<lease::Resources> ResourcesFromJson(const Json& j, std::string_view where) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(j, std::string(where)));
  lease::Resources r;
  UW_ASSIGN_OR_RETURN(r.vcpus, v.Int("vcpus"));
  UW_ASSIGN_OR_RETURN(r.memory_mib, v.Int("memory_mib"));
  return r;
}

Json HistoryJson(const std::vector<lease::Transition>& history) {
  Json out = Json::array();
  for (const auto& t : history) {
    out.push_back({{"at_ms", t.at_ms},
                   {"from", lease::LeaseStateName(t.from)},
                   {"to", lease::LeaseStateName(t.to)},
                   {"granted", ResourcesJson(t.granted)},
                   {"why", t.why}});
  }
  return out;
}

Result<std::vector<lease::Transition>> HistoryFromJson(const Json& j) {
  if (!j.is_array()) return InvalidArgumentError("history: expected an array");
  std::vector<lease::Transition> out;
  out.reserve(j.size());
  for (const Json& e : j) {
    UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(e, "history[]"));
    lease::Transition t;
    UW_ASSIGN_OR_RETURN(t.at_ms, v.Int("at_ms"));
    UW_ASSIGN_OR_RETURN(std::string from, v.String("from"));
    UW_ASSIGN_OR_RETURN(std::string to, v.String("to"));
    UW_ASSIGN_OR_RETURN(t.from, ParseLeaseState(from));
    UW_ASSIGN_OR_RETURN(t.to, ParseLeaseState(to));
    UW_ASSIGN_OR_RETURN(t.granted, ResourcesFromJson(e["granted"], "history[].granted"));
    UW_ASSIGN_OR_RETURN(t.why, v.String("why", ""));
    out.push_back(std::move(t));
  }
  return out;
}

Json RenewalJson(const lease::Renewal& r) {
  return {{"lease_id", r.lease_id}, {"amount", ResourcesJson(r.amount)}, {"term_end_ms", OptionalMs(r.term_end_ms)}};
}

Result<lease::Renewal> RenewalFromJson(const Json& j) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(j, "renewal"));
  lease::Renewal r;
  UW_ASSIGN_OR_RETURN(r.lease_id, v.String("lease_id"));
  UW_ASSIGN_OR_RETURN(r.amount, ResourcesFromJson(j.value("amount", Json()), "renewal.amount"));
  UW_ASSIGN_OR_RETURN(r.term_end_ms, OptionalMsOf(v, "term_end_ms"));
  return r;
}

Json NoticeJson(const lease::Notice& n) {
  return {{"id", n.id},
          {"lease", n.lease_id},
          {"guest", n.guest},
          {"tenant", n.tenant},
          {"action", lease::NoticeActionName(n.action)},
          {"before", ResourcesJson(n.before)},
          {"after", ResourcesJson(n.after)},
          {"reason", n.reason},
          {"sent_ms", n.sent_ms},
          {"not_before_ms", n.not_before_ms},
          {"deadline_ms", n.deadline_ms},
          {"urgent", n.urgent},
          {"state", lease::NoticeStateName(n.state)},
          {"reply", n.reply ? ReplyJson(*n.reply) : Json(nullptr)},
          {"counter", n.counter ? ReplyJson(*n.counter) : Json(nullptr)},
          {"answered_act_at_ms", OptionalMs(n.act_at_ms)},
          {"act_at_ms", lease::ActAt(n)}};
}

Result<lease::Notice> NoticeFromJson(const Json& j) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(j, "notice"));
  lease::Notice n;
  UW_ASSIGN_OR_RETURN(n.id, v.String("id"));
  UW_ASSIGN_OR_RETURN(n.lease_id, v.String("lease"));
  UW_ASSIGN_OR_RETURN(n.guest, v.String("guest"));
  UW_ASSIGN_OR_RETURN(n.tenant, v.String("tenant", ""));
  UW_ASSIGN_OR_RETURN(std::string action, v.String("action"));
  UW_ASSIGN_OR_RETURN(n.action, ParseNoticeAction(action));
  UW_ASSIGN_OR_RETURN(n.before, ResourcesFromJson(j.value("before", Json()), "notice.before"));
  UW_ASSIGN_OR_RETURN(n.after, ResourcesFromJson(j.value("after", Json()), "notice.after"));
  UW_ASSIGN_OR_RETURN(n.reason, v.String("reason", ""));
  UW_ASSIGN_OR_RETURN(n.sent_ms, v.Int("sent_ms"));
  UW_ASSIGN_OR_RETURN(n.not_before_ms, v.Int("not_before_ms"));
  UW_ASSIGN_OR_RETURN(n.deadline_ms, v.Int("deadline_ms"));
  UW_ASSIGN_OR_RETURN(n.urgent, v.Bool("urgent", false));
  UW_ASSIGN_OR_RETURN(std::string state, v.String("state"));
  UW_ASSIGN_OR_RETURN(n.state, ByName(state, kNoticeStates, lease::NoticeStateName, "notice state"));
  UW_ASSIGN_OR_RETURN(n.reply, ReplyFromJson(j.value("reply", Json())));
  UW_ASSIGN_OR_RETURN(n.counter, ReplyFromJson(j.value("counter", Json())));
  // "act_at_ms" is derived (lease::ActAt); what an answer set is kept on its own.
  UW_ASSIGN_OR_RETURN(n.act_at_ms, OptionalMsOf(v, "answered_act_at_ms"));
  return n;
}

Json RepossessionJson(const lease::Repossession& r) {
  return {{"notice", r.notice_id},
          {"lease", r.lease_id},
          {"guest", r.guest},
          {"tenant", r.tenant},
          {"action", lease::NoticeActionName(r.action)},
          {"before", ResourcesJson(r.before)},
          {"after", ResourcesJson(r.after)},
          {"reason", r.reason},
          {"at_ms", r.at_ms},
          {"urgent", r.urgent},
          {"answer", r.answer ? Json(ReplyKindName(*r.answer)) : Json(nullptr)}};
}

Result<lease::Repossession> RepossessionFromJson(const Json& j) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(j, "repossession"));
  lease::Repossession r;
  UW_ASSIGN_OR_RETURN(r.notice_id, v.String("notice"));
  UW_ASSIGN_OR_RETURN(r.lease_id, v.String("lease"));
  UW_ASSIGN_OR_RETURN(r.guest, v.String("guest"));
  UW_ASSIGN_OR_RETURN(r.tenant, v.String("tenant", ""));
  UW_ASSIGN_OR_RETURN(std::string action, v.String("action"));
  UW_ASSIGN_OR_RETURN(r.action, ParseNoticeAction(action));
  UW_ASSIGN_OR_RETURN(r.before, ResourcesFromJson(j.value("before", Json()), "repossession.before"));
  UW_ASSIGN_OR_RETURN(r.after, ResourcesFromJson(j.value("after", Json()), "repossession.after"));
  UW_ASSIGN_OR_RETURN(r.reason, v.String("reason", ""));
  UW_ASSIGN_OR_RETURN(r.at_ms, v.Int("at_ms"));
  UW_ASSIGN_OR_RETURN(r.urgent, v.Bool("urgent", false));
  if (v.Has("answer")) {
    UW_ASSIGN_OR_RETURN(std::string answer, v.String("answer"));
    UW_ASSIGN_OR_RETURN(r.answer, ParseReplyKind(answer));
  }
  return r;
}

lease::Reply ReplyOf(const NoticeAnswer& answer, const lease::Notice& notice, int64_t at_ms) {
  lease::Reply reply{answer.kind, notice.guest, at_ms, std::nullopt, std::nullopt};
  if (answer.kind == lease::ReplyKind::kCounter) {
    if (answer.vcpus || answer.memory_mib) {
      reply.after = lease::Resources{answer.vcpus.value_or(notice.after.vcpus),
                                     answer.memory_mib.value_or(notice.after.memory_mib)};
    }
    if (answer.delay_s) reply.act_at_ms = at_ms + *answer.delay_s * 1000;
  }
  return reply;
}

Result<lease::LeaseState> ParseLeaseState(std::string_view name) {
  return ByName(name, kLeaseStates, lease::LeaseStateName, "lease state");
}

Result<lease::NoticeAction> ParseNoticeAction(std::string_view name) {
  return ByName(name, kActions, lease::NoticeActionName, "action");
}

Result<lease::ReplyKind> ParseReplyKind(std::string_view name) {
  return ByName(name, kReplyKinds, ReplyKindName, "reply");
}

std::string_view ReplyKindName(lease::ReplyKind k) {
  static constexpr std::array<std::string_view, 3> kNames = {"ack", "release", "counter"};
  return kNames[static_cast<size_t>(k)];
}

}  // namespace uw::manager::internal
