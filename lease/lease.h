// Leases and notices: the exokernel interface's pure logic (no I/O, no clock, no threads), like
// placement/ and migration/. Every grant to a guest is a lease with a term; before the system takes
// anything from a guest it sends a notice, waits for the guest's answer or the deadline, then acts
// and writes a repossession record. The manager drives this with facts from its store and clock.
//
//   lease:  nascent ──▶ active ──▶ extending ──▶ active ...
//                 │        └──────────┴──▶ closing ──▶ closed
//                 └──▶ failed ◀── (extending, closing)
//   notice: pending ──ack / release──▶ acked | released ──▶ acted (early)
//              ├──counter──▶ countered ──broker accepts──▶ acked (the counter's terms) ──▶ acted
//              │                        └──broker declines──▶ pending
//              └──deadline (or urgent at once)──▶ acted (silent)
//
// The manager drives it: manager/lease_service.h.
//
// Everything here is a value type; thread safety is the caller's.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace uw::lease {

// ---------------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------------

enum class LeaseClass {
  kGuaranteed,   // never shrunk or preempted to make room; a term end needs a policy (default renew)
  kElastic,      // may be shrunk to its floor; falls to its floor at an unrenewed term end
  kPreemptible,  // may be reclaimed whole; the guest stops at an unrenewed term end
};
enum class LeaseState { kNascent, kActive, kExtending, kClosing, kClosed, kFailed };

std::string_view LeaseClassName(LeaseClass c);
Result<LeaseClass> ParseLeaseClass(std::string_view name);  // kInvalidArgument naming the choices
std::string_view LeaseStateName(LeaseState s);

// What a lease grants. Units: vCPUs and MiB.
struct Resources {
  int64_t vcpus = 0;
  int64_t memory_mib = 0;

  friend bool operator==(const Resources&, const Resources&) = default;
};
// True when every amount of `a` is at least `b`'s.
bool Covers(const Resources& a, const Resources& b);

struct Transition {
  int64_t at_ms = 0;
  LeaseState from = LeaseState::kNascent, to = LeaseState::kNascent;
  Resources granted;  // after the transition
  std::string why;
};

struct Lease {
  std::string id, guest, tenant;
  LeaseClass lease_class = LeaseClass::kGuaranteed;
  Resources granted;
  Resources floor;  // elastic: what it may be shrunk to; others: equal to granted
  int64_t start_ms = 0;
  std::optional<int64_t> term_end_ms;  // nullopt: open-ended
  LeaseState state = LeaseState::kNascent;
  std::vector<Transition> history;
  // What its tenant bids for it, in credits per GiB-hour of its memory grant (Shirako's currency):
  // the market broker takes from the lowest bid first. 0: no bid.
  int64_t bid = 0;
  // Its CPU shares (libvirt cputune; 1024 is the default weight): how much of a contended host's CPU
  // its guest gets, and in the proportional broker how much it keeps — the more shares, the less
  // it gives.
  int64_t shares = 1024;
};

// Moves `lease` to `to`, recording why. kFailedPrecondition for a transition the state machine does
// not have (closed and failed are final), naming both states.
Status Advance(Lease& lease, LeaseState to, int64_t now_ms, std::string_view why);

// Whether an active lease has reached its term end unrenewed.
bool Expired(const Lease& lease, int64_t now_ms);

// What a broker may take back from the lease without breaking it: nothing from a guaranteed one,
// the part above the floor of an elastic one, all of a preemptible one.
Resources Reclaimable(const Lease& lease);

// What happens at an unrenewed term end.
enum class TermEndAction { kRenew, kFallToFloor, kStop, kClose };
enum class GuaranteedTermEnd { kRenew, kClose };  // the policy for guaranteed leases
TermEndAction AtTermEnd(LeaseClass c, GuaranteedTermEnd policy = GuaranteedTermEnd::kRenew);

// A renewal (extend) with flex: the new amount and term end.
struct Renewal {
  std::string lease_id;
  Resources amount;
  std::optional<int64_t> term_end_ms;  // nullopt: open-ended
};
// kFailedPrecondition unless the lease is active; kInvalidArgument for an amount below an elastic
// lease's floor, an empty amount, or a term end not after `now_ms`.
Status CheckRenewal(const Lease& lease, const Renewal& r, int64_t now_ms);
// Applies a checked renewal: active -> extending -> active, with the new amount and term (a
// shrinking elastic renewal keeps the floor at most the new amount).
Status ApplyRenewal(Lease& lease, const Renewal& r, int64_t now_ms);
// The order renewals are applied in: those that only shrink first, then those that change nothing,
// then mixed ones, then those that only grow (so that what one gives back is there for another);
// stable within each group. `current` gives each renewal's lease amount now (same order as `rs`).
std::vector<Renewal> OrderRenewals(const std::vector<Renewal>& rs, const std::vector<Resources>& current);

// ---------------------------------------------------------------------------------------------
// Notices
// ---------------------------------------------------------------------------------------------

enum class NoticeAction { kShrink, kMigrate, kEvict, kStop, kEvacuate };
// withdrawn: overtaken before it was acted on (an urgent action took the lease first); no record.
enum class NoticeState { kPending, kAcked, kReleased, kCountered, kActed, kWithdrawn };
std::string_view NoticeActionName(NoticeAction a);
std::string_view NoticeStateName(NoticeState s);

enum class ReplyKind { kAck, kRelease, kCounter };
struct Reply {
  ReplyKind kind = ReplyKind::kAck;
  std::string guest;  // who answers: must be the notice's guest
  int64_t at_ms = 0;
  // A counter: a smaller shrink (an `after` between the notice's `after` and `before`) and/or a
  // later time (by the deadline).
  std::optional<Resources> after;
  std::optional<int64_t> act_at_ms;
};

struct Notice {
  std::string id, lease_id, guest, tenant;
  NoticeAction action = NoticeAction::kShrink;
  Resources before, after;  // the lease's grant now and once the action is done
  std::string reason;
  int64_t sent_ms = 0, not_before_ms = 0, deadline_ms = 0;
  bool urgent = false;  // host failure, an operator's forced stop: acted on at once
  NoticeState state = NoticeState::kPending;
  std::optional<Reply> reply;        // the answer that counts
  std::optional<Reply> counter;      // a counter awaiting the broker
  std::optional<int64_t> act_at_ms;  // when an answer moved the action (ack: at once; counter: later)
};

// A notice for `lease`, taking it to `after`. kInvalidArgument when `after` is not below the grant
// for a shrink, below a guaranteed or elastic lease's floor (unless urgent), for a stop or eviction
// of a lease that is not preemptible (unless urgent), or when the times are out of order
// (sent <= not_before <= deadline).
Result<Notice> MakeNotice(const Lease& lease, std::string id, NoticeAction action, const Resources& after,
                          std::string reason, int64_t sent_ms, int64_t not_before_ms, int64_t deadline_ms, bool urgent);

// A guest's answer. kPermissionDenied when `reply.guest` is not the notice's guest; kFailedPrecondition
// when the notice is no longer pending or the deadline has passed (the reply is ignored, nothing
// changes); kInvalidArgument for a counter below the lease's floor, past the deadline, or not a
// smaller shrink / later time.
Status ApplyReply(Notice& notice, const Lease& lease, const Reply& reply);
// The broker's decision on a pending counter: accepted, its terms replace the notice's; declined,
// the notice is pending again with its own terms.
Status DecideCounter(Notice& notice, bool accept);

// When the system acts on the notice: at once when urgent; at the answer's time once acked or
// released (never before not_before, unless urgent); else at the deadline.
int64_t ActAt(const Notice& notice);

// What was taken, when and why, and whether the guest had answered: readable by the guest and its
// tenant.
struct Repossession {
  std::string notice_id, lease_id, guest, tenant;
  NoticeAction action = NoticeAction::kShrink;
  Resources before, after;
  std::string reason;
  int64_t at_ms = 0;
  bool urgent = false;
  std::optional<ReplyKind> answer;  // nullopt: the guest was silent
};
// Acts: the notice ends `acted` and the record is returned. kFailedPrecondition when it acted
// already or was withdrawn, or when `now_ms` is before ActAt (too early).
Result<Repossession> Act(Notice& notice, int64_t now_ms);
// An open notice is overtaken (an urgent action takes the lease first): it ends `withdrawn`, with
// no record of its own. kFailedPrecondition when it was acted on or withdrawn already.
Status Withdraw(Notice& notice);

}  // namespace uw::lease
