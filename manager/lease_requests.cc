// Parsing the lease routes' bodies and a guest daemon's answer to a notice (manager.h).
#include <sstream>

#include "manager/lease_json.h"
#include "manager/manager.h"

namespace uw::manager {
namespace {

constexpr int64_t kMaxVcpus = 4096;
constexpr int64_t kMaxMemoryMib = int64_t{16} << 20;
constexpr int64_t kMaxBid = 1'000'000'000;  // credits per GiB-hour

Status Amounts(const JsonView& v, std::optional<int64_t>& vcpus, std::optional<int64_t>& memory_mib) {
  UW_ASSIGN_OR_RETURN(vcpus, v.OptionalInt("vcpus"));
  if (vcpus && (*vcpus < 0 || *vcpus > kMaxVcpus)) return v.FieldError("vcpus", "expected 0..4096");
  UW_ASSIGN_OR_RETURN(memory_mib, v.OptionalInt("memory_mib"));
  if (memory_mib && (*memory_mib < 0 || *memory_mib > kMaxMemoryMib)) {
    return v.FieldError("memory_mib", "expected 0..16777216");
  }
  return Status::Ok();
}

}  // namespace

Result<HostReclaimRequest> ParseHostReclaim(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"vcpus", "memory_mib", "notice_s", "reason", "policy"}));
  HostReclaimRequest r;
  std::optional<int64_t> vcpus, memory_mib;
  UW_RETURN_IF_ERROR(Amounts(v, vcpus, memory_mib));
  if (!vcpus && !memory_mib) return InvalidArgumentError("give vcpus and/or memory_mib: what to take back");
  r.need = {vcpus.value_or(0), memory_mib.value_or(0)};
  UW_ASSIGN_OR_RETURN(r.notice_s, v.Int("notice_s", r.notice_s));
  if (r.notice_s < 0 || r.notice_s > 86400) return v.FieldError("notice_s", "expected 0..86400 seconds");
  UW_ASSIGN_OR_RETURN(r.reason, v.String("reason", ""));
  if (r.reason.size() > 256) return v.FieldError("reason", "at most 256 characters");
  if (v.Has("policy")) {
    UW_ASSIGN_OR_RETURN(std::string policy, v.String("policy"));
    auto parsed = lease::ParseBrokerPolicy(policy);
    if (!parsed.ok()) return v.FieldError("policy", parsed.status().message());
    r.policy = *parsed;
  }
  return r;
}

Result<int64_t> ParseBudget(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"per_hour"}));
  UW_ASSIGN_OR_RETURN(int64_t per_hour, v.Int("per_hour"));
  if (per_hour < 0 || per_hour > kMaxBid * 1000) {
    return v.FieldError("per_hour", "expected 0..1000000000000 credits per hour");
  }
  return per_hour;
}

Result<LeaseExtend> ParseLeaseExtend(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"term_s", "vcpus", "memory_mib", "bid"}));
  LeaseExtend e;
  UW_ASSIGN_OR_RETURN(e.bid, v.OptionalInt("bid"));
  if (e.bid && (*e.bid < 0 || *e.bid > kMaxBid))
    return v.FieldError("bid", "expected 0..1000000000 credits per GiB-hour");
  UW_ASSIGN_OR_RETURN(e.term_s, v.OptionalInt("term_s"));
  if (e.term_s && (*e.term_s < 1 || *e.term_s > 10LL * 365 * 86400)) {
    return v.FieldError("term_s", "expected 1..315360000 seconds");
  }
  UW_RETURN_IF_ERROR(Amounts(v, e.vcpus, e.memory_mib));
  if (!e.term_s && !e.vcpus && !e.memory_mib && !e.bid) {
    return InvalidArgumentError("nothing to extend: give term_s, vcpus, memory_mib and/or bid");
  }
  return e;
}

Result<LeaseReclaim> ParseLeaseReclaim(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"action", "vcpus", "memory_mib", "notice_s", "reason", "urgent"}));
  LeaseReclaim r;
  UW_ASSIGN_OR_RETURN(std::string action, v.String("action", "shrink"));
  if (action != "shrink" && action != "stop" && action != "evict") {
    return v.FieldError("action", "expected shrink, stop or evict");
  }
  UW_ASSIGN_OR_RETURN(r.action, internal::ParseNoticeAction(action));
  UW_RETURN_IF_ERROR(Amounts(v, r.vcpus, r.memory_mib));
  if (r.action == lease::NoticeAction::kShrink && !r.vcpus && !r.memory_mib) {
    return InvalidArgumentError("a shrink needs vcpus and/or memory_mib (the amounts after it)");
  }
  if (r.action != lease::NoticeAction::kShrink && (r.vcpus || r.memory_mib)) {
    return InvalidArgumentError("only a shrink takes vcpus or memory_mib");
  }
  UW_ASSIGN_OR_RETURN(r.notice_s, v.Int("notice_s", r.notice_s));
  if (r.notice_s < 0 || r.notice_s > 86400) return v.FieldError("notice_s", "expected 0..86400 seconds");
  UW_ASSIGN_OR_RETURN(r.reason, v.String("reason", ""));
  if (r.reason.size() > 256) return v.FieldError("reason", "at most 256 characters");
  UW_ASSIGN_OR_RETURN(r.urgent, v.Bool("urgent", false));
  return r;
}

Result<NoticeAnswer> ParseNoticeAnswer(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"reply", "vcpus", "memory_mib", "delay_s"}));
  NoticeAnswer a;
  UW_ASSIGN_OR_RETURN(std::string kind, v.String("reply"));
  auto parsed = internal::ParseReplyKind(kind);
  if (!parsed.ok()) return v.FieldError("reply", "expected ack, release or counter");
  a.kind = *parsed;
  UW_RETURN_IF_ERROR(Amounts(v, a.vcpus, a.memory_mib));
  UW_ASSIGN_OR_RETURN(a.delay_s, v.OptionalInt("delay_s"));
  if (a.delay_s && (*a.delay_s < 0 || *a.delay_s > 86400)) return v.FieldError("delay_s", "expected 0..86400");
  if (a.kind != lease::ReplyKind::kCounter && (a.vcpus || a.memory_mib || a.delay_s)) {
    return InvalidArgumentError("only a counter takes vcpus, memory_mib or delay_s");
  }
  if (a.kind == lease::ReplyKind::kCounter && !a.vcpus && !a.memory_mib && !a.delay_s) {
    return InvalidArgumentError("a counter needs vcpus, memory_mib and/or delay_s");
  }
  return a;
}

std::optional<NoticeAnswer> ParseChannelAnswer(std::string_view output) {
  // The last non-empty line counts (a hook may print what it did before answering); only the
  // output's tail is read.
  std::string last;
  std::istringstream in{std::string(output.substr(output.size() > 4096 ? output.size() - 4096 : 0))};
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) last = line;
  }
  std::istringstream words(last);
  std::string kind;
  words >> kind;
  NoticeAnswer a;
  if (kind == "ack") {
    a.kind = lease::ReplyKind::kAck;
  } else if (kind == "release") {
    a.kind = lease::ReplyKind::kRelease;
  } else if (kind == "counter") {
    a.kind = lease::ReplyKind::kCounter;
    for (std::string w; words >> w;) {
      const size_t eq = w.find('=');
      if (eq == std::string::npos) return std::nullopt;
      int64_t n = 0;
      try {
        size_t used = 0;
        n = std::stoll(w.substr(eq + 1), &used);
        if (used != w.size() - eq - 1 || n < 0 || n > kMaxMemoryMib) return std::nullopt;
      } catch (...) {
        return std::nullopt;
      }
      const std::string key = w.substr(0, eq);
      if (key == "vcpus") {
        a.vcpus = n;
      } else if (key == "memory_mib") {
        a.memory_mib = n;
      } else if (key == "delay_s") {
        a.delay_s = n;
      } else {
        return std::nullopt;
      }
    }
    if (!a.vcpus && !a.memory_mib && !a.delay_s) return std::nullopt;
  } else {
    return std::nullopt;
  }
  std::string extra;
  if (a.kind != lease::ReplyKind::kCounter && (words >> extra)) return std::nullopt;
  return a;
}

}  // namespace uw::manager
