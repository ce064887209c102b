// Leases and notices (lease.h).
#include "lease/lease.h"

#include <algorithm>
#include <array>
#include <utility>

namespace uw::lease {

namespace {

std::string Amount(const Resources& r) {
  return std::to_string(r.vcpus) + " vCPUs, " + std::to_string(r.memory_mib) + " MiB";
}

bool Allowed(LeaseState from, LeaseState to) {
  switch (from) {
    case LeaseState::kNascent:
      return to == LeaseState::kActive || to == LeaseState::kFailed;
    case LeaseState::kActive:
      return to == LeaseState::kExtending || to == LeaseState::kClosing;
    case LeaseState::kExtending:
      return to == LeaseState::kActive || to == LeaseState::kClosing || to == LeaseState::kFailed;
    case LeaseState::kClosing:
      return to == LeaseState::kClosed || to == LeaseState::kFailed;
    case LeaseState::kClosed:
    case LeaseState::kFailed:
      return false;
  }
  return false;
}

// 0: only shrinks, 1: no change, 2: mixed, 3: only grows.
int RenewalGroup(const Resources& now, const Resources& next) {
  const bool less = next.vcpus < now.vcpus || next.memory_mib < now.memory_mib;
  const bool more = next.vcpus > now.vcpus || next.memory_mib > now.memory_mib;
  if (less && !more) return 0;
  if (!less && !more) return 1;
  return less ? 2 : 3;
}

}  // namespace

std::string_view LeaseClassName(LeaseClass c) {
  switch (c) {
    case LeaseClass::kGuaranteed:
      return "guaranteed";
    case LeaseClass::kElastic:
      return "elastic";
    case LeaseClass::kPreemptible:
      return "preemptible";
  }
  return "guaranteed";
}

Result<LeaseClass> ParseLeaseClass(std::string_view name) {
  for (LeaseClass c : {LeaseClass::kGuaranteed, LeaseClass::kElastic, LeaseClass::kPreemptible}) {
    if (LeaseClassName(c) == name) return c;
  }
  return InvalidArgumentError("lease class '" + std::string(name) +
                              "': expected one of guaranteed | elastic | preemptible");
}

std::string_view LeaseStateName(LeaseState s) {
  static constexpr std::array<std::string_view, 6> kNames = {"nascent", "active", "extending",
                                                             "closing", "closed", "failed"};
  return kNames[static_cast<size_t>(s)];
}

bool Covers(const Resources& a, const Resources& b) { return a.vcpus >= b.vcpus && a.memory_mib >= b.memory_mib; }

Status Advance(Lease& lease, LeaseState to, int64_t now_ms, std::string_view why) {
  if (!Allowed(lease.state, to)) {
    return FailedPreconditionError("lease " + lease.id + " is " + std::string(LeaseStateName(lease.state)) +
                                   "; it cannot become " + std::string(LeaseStateName(to)));
  }
  lease.history.push_back({now_ms, lease.state, to, lease.granted, std::string(why)});
  lease.state = to;
  return Status::Ok();
}

bool Expired(const Lease& lease, int64_t now_ms) {
  return lease.state == LeaseState::kActive && lease.term_end_ms && now_ms >= *lease.term_end_ms;
}

Resources Reclaimable(const Lease& lease) {
  switch (lease.lease_class) {
    case LeaseClass::kGuaranteed:
      return {};
    case LeaseClass::kElastic:
      return {std::max<int64_t>(0, lease.granted.vcpus - lease.floor.vcpus),
              std::max<int64_t>(0, lease.granted.memory_mib - lease.floor.memory_mib)};
    case LeaseClass::kPreemptible:
      return lease.granted;
  }
  return {};
}

TermEndAction AtTermEnd(LeaseClass c, GuaranteedTermEnd policy) {
  switch (c) {
    case LeaseClass::kGuaranteed:
      return policy == GuaranteedTermEnd::kRenew ? TermEndAction::kRenew : TermEndAction::kClose;
    case LeaseClass::kElastic:
      return TermEndAction::kFallToFloor;
    case LeaseClass::kPreemptible:
      return TermEndAction::kStop;
  }
  return TermEndAction::kRenew;
}

Status CheckRenewal(const Lease& lease, const Renewal& r, int64_t now_ms) {
  if (lease.state != LeaseState::kActive) {
    return FailedPreconditionError("lease " + lease.id + " is " + std::string(LeaseStateName(lease.state)) +
                                   "; only an active lease is renewed");
  }
  if (r.amount.vcpus <= 0 || r.amount.memory_mib <= 0) {
    return InvalidArgumentError("amount: a renewal grants at least 1 vCPU and 1 MiB (got " + Amount(r.amount) + ")");
  }
  if (lease.lease_class == LeaseClass::kElastic && !Covers(r.amount, lease.floor)) {
    return InvalidArgumentError("amount: " + Amount(r.amount) + " is below the lease's floor of " +
                                Amount(lease.floor));
  }
  if (r.term_end_ms && *r.term_end_ms <= now_ms) {
    return InvalidArgumentError("term_end: it must be in the future");
  }
  return Status::Ok();
}

Status ApplyRenewal(Lease& lease, const Renewal& r, int64_t now_ms) {
  UW_RETURN_IF_ERROR(CheckRenewal(lease, r, now_ms));
  UW_RETURN_IF_ERROR(Advance(lease, LeaseState::kExtending, now_ms, "renewal requested"));
  lease.granted = r.amount;
  lease.term_end_ms = r.term_end_ms;
  if (lease.lease_class != LeaseClass::kElastic) lease.floor = r.amount;
  return Advance(lease, LeaseState::kActive, now_ms, "renewed: " + Amount(r.amount));
}

std::vector<Renewal> OrderRenewals(const std::vector<Renewal>& rs, const std::vector<Resources>& current) {
  std::vector<size_t> order(rs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto group = [&](size_t i) { return i < current.size() ? RenewalGroup(current[i], rs[i].amount) : 3; };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return group(a) < group(b); });
  std::vector<Renewal> out;
  out.reserve(rs.size());
  for (size_t i : order) out.push_back(rs[i]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Notices

std::string_view NoticeActionName(NoticeAction a) {
  static constexpr std::array<std::string_view, 5> kNames = {"shrink", "migrate", "evict", "stop", "evacuate"};
  return kNames[static_cast<size_t>(a)];
}

std::string_view NoticeStateName(NoticeState s) {
  static constexpr std::array<std::string_view, 6> kNames = {"pending",   "acked", "released",
                                                             "countered", "acted", "withdrawn"};
  return kNames[static_cast<size_t>(s)];
}

Result<Notice> MakeNotice(const Lease& lease, std::string id, NoticeAction action, const Resources& after,
                          std::string reason, int64_t sent_ms, int64_t not_before_ms, int64_t deadline_ms,
                          bool urgent) {
  if (!(sent_ms <= not_before_ms && not_before_ms <= deadline_ms)) {
    return InvalidArgumentError("notice times out of order: sent <= not_before <= deadline");
  }
  if (action == NoticeAction::kShrink) {
    if (!Covers(lease.granted, after) || after == lease.granted) {
      return InvalidArgumentError("after: " + Amount(after) + " is no shrink of the grant of " + Amount(lease.granted));
    }
    if (!urgent && lease.lease_class != LeaseClass::kPreemptible && !Covers(after, lease.floor)) {
      return InvalidArgumentError("after: " + Amount(after) + " is below the " +
                                  std::string(LeaseClassName(lease.lease_class)) + " lease's floor of " +
                                  Amount(lease.floor));
    }
  }
  if ((action == NoticeAction::kStop || action == NoticeAction::kEvict) && !urgent &&
      lease.lease_class != LeaseClass::kPreemptible) {
    return InvalidArgumentError("a " + std::string(LeaseClassName(lease.lease_class)) +
                                " lease is not stopped or evicted to make room (only a preemptible one is, or an "
                                "urgent action)");
  }
  Notice n;
  n.id = std::move(id);
  n.lease_id = lease.id;
  n.guest = lease.guest;
  n.tenant = lease.tenant;
  n.action = action;
  n.before = lease.granted;
  n.after = after;
  n.reason = std::move(reason);
  n.sent_ms = sent_ms;
  n.not_before_ms = not_before_ms;
  n.deadline_ms = deadline_ms;
  n.urgent = urgent;
  return n;
}

namespace {

Status CheckCounter(const Notice& notice, const Lease& lease, const Reply& reply) {
  if (!reply.after && !reply.act_at_ms) return InvalidArgumentError("counter: give after and/or act_at");
  if (reply.after) {
    if (notice.action != NoticeAction::kShrink) {
      return InvalidArgumentError("counter.after: only a shrink can be made smaller");
    }
    if (!Covers(*reply.after, notice.after) || !Covers(notice.before, *reply.after) || *reply.after == notice.before) {
      return InvalidArgumentError("counter.after: " + Amount(*reply.after) + " is not a smaller shrink (between " +
                                  Amount(notice.after) + " and " + Amount(notice.before) + ")");
    }
    if (lease.lease_class != LeaseClass::kPreemptible && !Covers(*reply.after, lease.floor)) {
      return InvalidArgumentError("counter.after: below the lease's floor of " + Amount(lease.floor));
    }
  }
  if (reply.act_at_ms && (*reply.act_at_ms > notice.deadline_ms || *reply.act_at_ms < reply.at_ms)) {
    return InvalidArgumentError("counter.act_at: it must be between now and the deadline");
  }
  return Status::Ok();
}

}  // namespace

Status ApplyReply(Notice& notice, const Lease& lease, const Reply& reply) {
  if (reply.guest != notice.guest) {
    return PermissionDeniedError("notice " + notice.id + " is not addressed to guest '" + reply.guest + "'");
  }
  if (notice.state != NoticeState::kPending) {
    return FailedPreconditionError("notice " + notice.id + " is " + std::string(NoticeStateName(notice.state)) +
                                   "; only a pending notice takes an answer");
  }
  if (reply.at_ms > notice.deadline_ms) {
    return FailedPreconditionError("notice " + notice.id + ": the answer came after the deadline; it is ignored");
  }
  switch (reply.kind) {
    case ReplyKind::kAck:
    case ReplyKind::kRelease:
      notice.state = reply.kind == ReplyKind::kAck ? NoticeState::kAcked : NoticeState::kReleased;
      notice.reply = reply;
      notice.act_at_ms = reply.at_ms;
      return Status::Ok();
    case ReplyKind::kCounter:
      UW_RETURN_IF_ERROR(CheckCounter(notice, lease, reply));
      notice.state = NoticeState::kCountered;
      notice.counter = reply;
      return Status::Ok();
  }
  return InvalidArgumentError("unknown answer");
}

Status DecideCounter(Notice& notice, bool accept) {
  if (notice.state != NoticeState::kCountered || !notice.counter) {
    return FailedPreconditionError("notice " + notice.id + " has no counter to decide");
  }
  if (accept) {
    if (notice.counter->after) notice.after = *notice.counter->after;
    notice.act_at_ms = notice.counter->act_at_ms.value_or(notice.counter->at_ms);
    notice.reply = notice.counter;
    notice.state = NoticeState::kAcked;
  } else {
    notice.state = NoticeState::kPending;
  }
  notice.counter.reset();
  return Status::Ok();
}

int64_t ActAt(const Notice& notice) {
  if (notice.urgent) return notice.sent_ms;
  if (notice.act_at_ms && (notice.state == NoticeState::kAcked || notice.state == NoticeState::kReleased)) {
    return std::clamp(*notice.act_at_ms, notice.not_before_ms, notice.deadline_ms);
  }
  return notice.deadline_ms;
}

Result<Repossession> Act(Notice& notice, int64_t now_ms) {
  if (notice.state == NoticeState::kActed || notice.state == NoticeState::kWithdrawn) {
    return FailedPreconditionError("notice " + notice.id + " was " + std::string(NoticeStateName(notice.state)) +
                                   " already");
  }
  if (now_ms < ActAt(notice)) {
    return FailedPreconditionError("notice " + notice.id + " is not due until " + std::to_string(ActAt(notice)));
  }
  Repossession r;
  r.notice_id = notice.id;
  r.lease_id = notice.lease_id;
  r.guest = notice.guest;
  r.tenant = notice.tenant;
  r.action = notice.action;
  r.before = notice.before;
  r.after = notice.after;
  r.reason = notice.reason;
  r.at_ms = now_ms;
  r.urgent = notice.urgent;
  if (notice.reply) r.answer = notice.reply->kind;
  notice.state = NoticeState::kActed;
  notice.counter.reset();
  return r;
}

Status Withdraw(Notice& notice) {
  if (notice.state == NoticeState::kActed || notice.state == NoticeState::kWithdrawn) {
    return FailedPreconditionError("notice " + notice.id + " was " + std::string(NoticeStateName(notice.state)) +
                                   " already");
  }
  notice.state = NoticeState::kWithdrawn;
  notice.counter.reset();
  return Status::Ok();
}

}  // namespace uw::lease
