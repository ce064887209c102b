// The lease loop (lease_service.h): term ends and renewals, deliveries through the guests'
// control channels, the broker's decisions on counter-offers, and the actions that fall due.
#include <spdlog/spdlog.h>

#include "manager/event_log.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/lease_json.h"
#include "manager/lease_service.h"
#include "manager/task_journal.h"

namespace uw::manager::internal {
namespace {

// The reason as a single shell word for the guest's command line: [A-Za-z0-9._,:=+/-], others '_'.
std::string ShellWord(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 200)) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      std::string_view("._,:=+/-").find(c) != std::string_view::npos;
    out += safe ? c : '_';
  }
  return out.empty() ? "-" : out;
}

// The command that hands the notice to the guest's daemon (guest/README.md, "Notices").
std::string NoticeCommand(const lease::Notice& n, int64_t now_ms) {
  auto secs = [&](int64_t at) { return std::to_string(std::max<int64_t>(0, (at - now_ms + 999) / 1000)); };
  return "uw-notice " + n.id + " " + std::string(lease::NoticeActionName(n.action)) + " " +
         std::to_string(n.before.vcpus) + " " + std::to_string(n.before.memory_mib) + " " +
         std::to_string(n.after.vcpus) + " " + std::to_string(n.after.memory_mib) + " " + secs(n.not_before_ms) + " " +
         secs(n.deadline_ms) + " " + ShellWord(n.reason);
}

}  // namespace

Status LeaseService::Tick() {
  std::lock_guard pass(pass_mu_);
  const int64_t now = NowMs();
  {
    std::lock_guard act(tick_mu_);
    UW_RETURN_IF_ERROR(TermEnds(now));
  }
  // Deliveries wait on guests (up to 10 s each): outside the act lock, so that a move's notice is
  // never held up behind them (DeliverOne keeps one notice from being delivered twice at once).
  UW_RETURN_IF_ERROR(Deliver(now));
  {
    std::lock_guard act(tick_mu_);
    UW_RETURN_IF_ERROR(DecideCounters(NowMs()));
    UW_RETURN_IF_ERROR(ActDue(NowMs()));
    UW_RETURN_IF_ERROR(AdmitWaiting());
    UW_RETURN_IF_ERROR(Enforce(NowMs()));
  }
  return Publish(NowMs());
}

// ---------------------------------------------------------------------------------------------
// Enforcement: a lease change whose resize failed is tried again until the guest converges.

namespace {
constexpr int64_t kFirstRetryMs = 5000, kMaxRetryMs = 300000;
}  // namespace

void LeaseService::Unenforced(const std::string& guest, const Status& why) {
  std::string tenant;
  if (auto owner = d_.guests.TenantOf(guest); owner.ok()) tenant = *owner;
  {
    std::lock_guard l(mu_);
    Retry& r = unenforced_[guest];
    r.delay_ms = r.delay_ms ? std::min(r.delay_ms * 2, kMaxRetryMs) : kFirstRetryMs;
    r.at_ms = NowMs() + r.delay_ms;
  }
  if (Status s = d_.events.Add("lease.unenforced", guest, tenant, {{"error", why.ToString()}}); !s.ok()) {
    spdlog::warn("lease.unenforced event of {}: {}", guest, s.ToString());
  }
}

Status LeaseService::Enforce(int64_t now_ms) {
  if (!checked_all_) {
    UW_ASSIGN_OR_RETURN(auto all, d_.guests.ForPlacement());
    std::lock_guard l(mu_);
    for (const PlacementGuest& g : all) {
      unenforced_.try_emplace(g.name, Retry{now_ms, 0, 0});
      unpublished_.try_emplace(g.name, Retry{now_ms, 0, 0});  // a restarted manager's guests may hold stale files
    }
    checked_all_ = true;
  }
  std::vector<std::string> due;
  {
    std::lock_guard l(mu_);
    for (const auto& [guest, r] : unenforced_) {
      if (r.at_ms <= now_ms) due.push_back(guest);
    }
  }
  for (const std::string& guest : due) {
    std::optional<std::string> task;
    bool converged = false;
    UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
      UW_ASSIGN_OR_RETURN(std::optional<Guest> g, d_.guests.Find(guest));
      UW_ASSIGN_OR_RETURN(std::optional<LeaseRecord> live, table_.LiveOf(guest));
      if (!g || !live || live->lease.state != lease::LeaseState::kActive || !Running(*g)) {
        converged = true;  // nothing to hold to its lease while it is not running
        return Status::Ok();
      }
      const lease::Resources has{g->vcpus, g->memory_mib}, granted = live->lease.granted;
      if (has.vcpus <= granted.vcpus && has.memory_mib <= granted.memory_mib) {
        converged = true;
        return Status::Ok();
      }
      UW_ASSIGN_OR_RETURN(std::optional<Task> busy, d_.tasks.InFlightOf(guest));
      if (busy) return Status::Ok();  // its end is checked at a later tick
      const lease::Resources to{std::min(has.vcpus, granted.vcpus), std::min(has.memory_mib, granted.memory_mib)};
      UW_ASSIGN_OR_RETURN(task, JournalGuestTask(*g, has, to, GuestTask::kResize));
      return d_.events.Add("lease.enforcing", guest, g->tenant,
                           {{"lease", live->lease.id},
                            {"holds", ResourcesJson(has)},
                            {"granted", ResourcesJson(granted)},
                            {"task", task ? Json(*task) : Json(nullptr)}});
    }));
    if (task) d_.enqueue(*task);
    std::lock_guard l(mu_);
    auto it = unenforced_.find(guest);
    if (it == unenforced_.end()) continue;
    if (converged) {
      unenforced_.erase(it);
    } else if (task) {
      // Until its task ends: a failure reschedules (Unenforced), a success converges.
      it->second.at_ms = now_ms + std::max(it->second.delay_ms, kFirstRetryMs);
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Term ends

Status LeaseService::TermEnds(int64_t now_ms) {
  UW_ASSIGN_OR_RETURN(auto ending, table_.TermEndingBy(now_ms + d_.config.lease_notice_ms));
  // Renewals that fall due now, shrinks before grows (what one gives back is there for another).
  std::vector<lease::Renewal> due;
  std::vector<lease::Resources> current;
  std::map<std::string, LeaseRecord> by_id;
  for (auto& l : ending) {
    if (l.renewal && *l.lease.term_end_ms <= now_ms) {
      due.push_back(*l.renewal);
      current.push_back(l.lease.granted);
      by_id.emplace(l.lease.id, std::move(l));
    } else if (!l.renewal) {
      if (Status s = EndTerm(std::move(l), now_ms); !s.ok()) spdlog::warn("lease term end: {}", s.ToString());
    }
  }
  for (const lease::Renewal& r : lease::OrderRenewals(due, current)) {
    if (Status s = ApplyDueRenewal(std::move(by_id.at(r.lease_id)), now_ms); !s.ok()) {
      spdlog::warn("lease renewal of {}: {}", r.lease_id, s.ToString());
    }
  }
  return Status::Ok();
}

Status LeaseService::ApplyDueRenewal(LeaseRecord r, int64_t now_ms) {
  std::optional<std::string> task;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    lease::Lease& l = r.lease;
    lease::Renewal renewal = *r.renewal;
    // A manager that was down past the renewal's own term end starts the next term now.
    if (renewal.term_end_ms && *renewal.term_end_ms <= now_ms) {
      renewal.term_end_ms = r.term_ms ? std::optional<int64_t>(now_ms + *r.term_ms) : std::nullopt;
    }
    UW_ASSIGN_OR_RETURN(std::optional<Guest> g, d_.guests.Find(l.guest));
    if (g) {
      UW_ASSIGN_OR_RETURN(std::optional<Task> busy, d_.tasks.InFlightOf(g->name));
      if (busy) return Status::Ok();  // the next tick
    }
    const lease::Resources before = l.granted;
    // Flex: a renewal that grows is granted what the host has room for (never less than now).
    std::optional<int64_t> asked;
    if (g && g->host && renewal.amount.memory_mib > g->memory_mib) {
      UW_ASSIGN_OR_RETURN(int64_t free, hosts_.FreeMemoryMib(*g->host));
      const int64_t most = g->memory_mib + std::max<int64_t>(free, 0);
      if (renewal.amount.memory_mib > most) {
        asked = renewal.amount.memory_mib;
        renewal.amount.memory_mib = std::max(most, before.memory_mib);
      }
    }
    UW_RETURN_IF_ERROR(lease::ApplyRenewal(l, renewal, now_ms));
    r.renewal.reset();
    if (g) {
      UW_ASSIGN_OR_RETURN(task, JournalGuestTask(*g, before, l.granted, GuestTask::kResize));
    }
    UW_RETURN_IF_ERROR(table_.Save(r, now_ms));
    return d_.events.Add("lease.renewed", l.guest, l.tenant,
                         {{"lease", l.id},
                          {"granted", ResourcesJson(l.granted)},
                          {"term_end_ms", l.term_end_ms ? Json(*l.term_end_ms) : Json(nullptr)},
                          {"by", "extension"},
                          {"asked_memory_mib", asked ? Json(*asked) : Json(nullptr)},
                          {"task", task ? Json(*task) : Json(nullptr)}});
  }));
  if (task) d_.enqueue(*task);
  return Status::Ok();
}

// An active lease within lease_notice_ms of its term end, with no extension: what its class says.
Status LeaseService::EndTerm(LeaseRecord r, int64_t now_ms) {
  lease::Lease& l = r.lease;
  const int64_t end = *l.term_end_ms;
  UW_ASSIGN_OR_RETURN(std::optional<NoticeRecord> open, table_.OpenNoticeOf(l.id));
  if (open) return Status::Ok();
  const lease::TermEndAction action = lease::AtTermEnd(l.lease_class);
  if (action == lease::TermEndAction::kStop) {
    return Send(r, lease::NoticeAction::kStop, {}, "the preemptible lease's term ends", end, end, false).status();
  }
  if (action == lease::TermEndAction::kFallToFloor && !(l.granted == l.floor)) {
    return Send(r, lease::NoticeAction::kShrink, l.floor, "the elastic lease's term ends: it falls to its floor", end,
                end, false)
        .status();
  }
  if (end > now_ms) return Status::Ok();
  // A guaranteed lease renews for another term; an elastic one at its floor goes on open-ended.
  return d_.store.Transact([&]() -> Status {
    std::optional<int64_t> next;
    std::string why = "the elastic lease is at its floor: open-ended from now";
    if (action == lease::TermEndAction::kRenew && r.term_ms) {
      next = end;
      while (*next <= now_ms) *next += *r.term_ms;
      why = "renewed for another term (the guaranteed class's policy)";
    } else {
      r.term_ms.reset();
    }
    UW_RETURN_IF_ERROR(lease::ApplyRenewal(l, {l.id, l.granted, next}, now_ms));
    UW_RETURN_IF_ERROR(table_.Save(r, now_ms));
    return d_.events.Add("lease.renewed", l.guest, l.tenant,
                         {{"lease", l.id},
                          {"granted", ResourcesJson(l.granted)},
                          {"term_end_ms", next ? Json(*next) : Json(nullptr)},
                          {"by", "policy"},
                          {"why", why}});
  });
}

// ---------------------------------------------------------------------------------------------
// Notices

Status LeaseService::Deliver(int64_t now_ms) {
  UW_ASSIGN_OR_RETURN(auto open, table_.OpenNotices());
  for (const auto& n : open) {
    if (n.delivery.state != "pending" || n.notice.state != lease::NoticeState::kPending) continue;
    if (Status s = DeliverOne(n, now_ms); !s.ok()) spdlog::warn("notice {}: {}", n.notice.id, s.ToString());
  }
  return Status::Ok();
}

Status LeaseService::DeliverOne(const NoticeRecord& n, int64_t now_ms) {
  {
    std::lock_guard l(mu_);
    if (!delivering_.insert(n.notice.id).second) return Status::Ok();  // on its way already
  }
  struct Done {
    LeaseService* s;
    std::string id;
    ~Done() {
      std::lock_guard l(s->mu_);
      s->delivering_.erase(id);
    }
  } done{this, n.notice.id};
  {
    // The loop may have listed the notice before another delivery of it (a move's) ended: what it
    // read is stale, and a notice is delivered once.
    UW_ASSIGN_OR_RETURN(NoticeRecord now, table_.GetNotice(n.notice.id));
    if (now.delivery.state != "pending" || now.notice.state != lease::NoticeState::kPending) return Status::Ok();
  }
  NoticeDelivery d{"silent", "", "", now_ms};
  std::optional<NoticeAnswer> answer;
  UW_ASSIGN_OR_RETURN(std::optional<Guest> g, d_.guests.Find(n.notice.guest));
  if (!g || !g->host) {
    d.detail = "the guest is not on a host";
  } else if (!Running(*g)) {
    d.detail = "the guest is " + g->state;
  } else {
    auto agent = d_.agent_of(*g->host);
    auto info = agent->Get(g->name);
    if (!info.ok()) {
      d.detail = "its host's agent: " + info.status().ToString();
    } else if (!info->has_channel) {
      d.detail = "the guest has no control channel";
    } else {
      const int64_t left_s = (n.notice.deadline_ms - now_ms) / 1000;
      ExecRequest req{NoticeCommand(n.notice, now_ms), std::clamp<int64_t>(left_s, 1, 10)};
      auto out = agent->Exec(g->name, req);
      if (!out.ok()) {
        d.detail = "no answer on the control channel: " + out.status().ToString();
      } else if (out->exit_code != 0) {
        d.detail = "the guest's notice handler failed (exit " + std::to_string(out->exit_code) + ")";
      } else {
        answer = ParseChannelAnswer(out->output);
        d.state = "delivered";
        d.answer = answer ? std::string(ReplyKindName(answer->kind)) : "none";
        d.detail = out->output.substr(0, 256);
      }
    }
  }
  return d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(NoticeRecord cur, table_.GetNotice(n.notice.id));
    if (cur.delivery.state != "pending") return Status::Ok();
    cur.delivery = d;
    const int64_t at = NowMs();
    Json data = {{"notice", cur.notice.id}, {"delivery", d.state}, {"answer", d.answer}, {"detail", d.detail}};
    if (answer && cur.notice.state == lease::NoticeState::kPending) {
      UW_ASSIGN_OR_RETURN(LeaseRecord l, table_.Get(cur.notice.lease_id));
      if (Status s = lease::ApplyReply(cur.notice, l.lease, ReplyOf(*answer, cur.notice, at)); !s.ok()) {
        data["refused"] = s.ToString();  // recorded; the notice goes on as if the guest were silent
      }
    }
    UW_RETURN_IF_ERROR(table_.SaveNotice(cur, at));
    return d_.events.Add("notice.delivered", cur.notice.guest, cur.notice.tenant, data);
  });
}

Status LeaseService::DecideCounters(int64_t now_ms) {
  UW_ASSIGN_OR_RETURN(auto open, table_.OpenNotices());
  for (const auto& n : open) {
    if (n.notice.state != lease::NoticeState::kCountered) continue;
    UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
      UW_ASSIGN_OR_RETURN(NoticeRecord cur, table_.GetNotice(n.notice.id));
      if (cur.notice.state != lease::NoticeState::kCountered) return Status::Ok();
      // Room owed to an admitted guest is not bargained down: only a later time is weighed.
      const std::optional<lease::Resources>& keeps = cur.notice.counter ? cur.notice.counter->after : std::nullopt;
      const bool owed = !cur.makes_room_for.empty() && keeps && !(*keeps == cur.notice.after);
      lease::CounterVerdict verdict;
      if (owed) {
        verdict.why = "the room is owed to a guest admitted on this host";
      } else if (d_.config.lease_broker == "policy") {
        UW_ASSIGN_OR_RETURN(verdict, JudgeByPolicy(cur));
      } else {
        verdict.accept = d_.config.lease_broker == "accept";
      }
      const bool accept = verdict.accept;
      UW_RETURN_IF_ERROR(lease::DecideCounter(cur.notice, accept));
      UW_RETURN_IF_ERROR(table_.SaveNotice(cur, now_ms));
      Json data = {{"notice", cur.notice.id},
                   {"after", ResourcesJson(cur.notice.after)},
                   {"act_at_ms", lease::ActAt(cur.notice)},
                   {"broker", d_.config.lease_broker}};
      if (!verdict.why.empty()) data["why"] = verdict.why;
      // What the counter keeps is taken from the leases that cover it, each with a notice of its own.
      const std::string cover_reason = "to cover what lease " + cur.notice.lease_id +
                                       " keeps by its counter to notice " + cur.notice.id + " (" +
                                       std::string(lease::BrokerPolicyName(d_.config.lease_reclaim_policy)) + ")";
      for (const lease::Take& t : verdict.cover) {  // empty unless accepted
        UW_ASSIGN_OR_RETURN(LeaseRecord r, table_.Get(t.lease_id));
        UW_ASSIGN_OR_RETURN(NoticeRecord sent, SendIn(r, t.action, t.after, cover_reason, now_ms,
                                                      now_ms + d_.config.lease_notice_ms, false));
        data["cover"].push_back(sent.notice.id);
      }
      return d_.events.Add(accept ? "notice.counter_accepted" : "notice.counter_declined", cur.notice.guest,
                           cur.notice.tenant, data);
    }));
  }
  return Status::Ok();
}

Result<lease::CounterVerdict> LeaseService::JudgeByPolicy(const NoticeRecord& n) {
  UW_ASSIGN_OR_RETURN(LeaseRecord own, table_.Get(n.notice.lease_id));
  lease::Resources more{};
  if (n.notice.counter && n.notice.counter->after) {
    more = {n.notice.counter->after->vcpus - n.notice.after.vcpus,
            n.notice.counter->after->memory_mib - n.notice.after.memory_mib};
  }
  std::vector<lease::Lease> others;
  UW_ASSIGN_OR_RETURN(std::optional<Guest> g, d_.guests.Find(n.notice.guest));
  if (g && g->host) {
    UW_ASSIGN_OR_RETURN(others, ReclaimableOn(*g->host));
  }
  return lease::JudgeCounter(own.lease, more, others, d_.config.lease_reclaim_policy);
}

Status LeaseService::ActDue(int64_t now_ms) {
  UW_ASSIGN_OR_RETURN(auto open, table_.OpenNotices());
  for (const auto& n : open) {
    if (n.notice.state == lease::NoticeState::kCountered || lease::ActAt(n.notice) > now_ms) continue;
    // An urgent notice is not waited on; the others wait for their delivery to be tried.
    if (!n.notice.urgent && n.delivery.state == "pending") continue;
    if (Status s = ActOne(n.notice.id, now_ms); !s.ok()) spdlog::warn("notice {}: {}", n.notice.id, s.ToString());
  }
  return Status::Ok();
}

void LeaseService::BeforeMove(const std::string& guest, const std::string& from, const std::string& to,
                              const std::string& reason, const std::function<bool(Duration)>& sleep) {
  std::optional<NoticeRecord> sent;
  const int64_t sent_ms = NowMs();
  {
    std::lock_guard act(tick_mu_);  // no term end or act comes between the check and the notice
    auto live = table_.LiveOf(guest);
    if (!live.ok() || !*live || (*live)->lease.state != lease::LeaseState::kActive) return;
    auto n = Send(**live, lease::NoticeAction::kMigrate, (*live)->lease.granted,
                  "moving from " + from + " to " + to + (reason.empty() ? "" : ": " + reason), sent_ms,
                  sent_ms + d_.config.lease_move_notice_ms, false);
    if (!n.ok()) {
      spdlog::warn("move of {}: no notice: {}", guest, n.status().ToString());
      return;
    }
    sent = std::move(*n);
  }
  // Delivered at once, outside the act lock (the loop, which may pick it up too, does not deliver
  // it a second time): it is not acted on before its delivery was tried.
  const std::string id = sent->notice.id;
  if (Status s = DeliverOne(*sent, sent_ms); !s.ok()) spdlog::warn("notice {}: {}", id, s.ToString());
  int64_t due = NowMs();  // when the notice may be acted on, as last read
  while (true) {
    auto n = table_.GetNotice(id);
    if (!n.ok()) break;
    // A guest that cannot be reached cannot answer: the move does not wait for it.
    const bool unreachable = n->delivery.state == "silent";
    due = lease::ActAt(n->notice);
    const int64_t now = NowMs();
    if (n->notice.state == lease::NoticeState::kActed || n->notice.state == lease::NoticeState::kWithdrawn ||
        unreachable || now >= due)
      break;
    if (!sleep(std::chrono::milliseconds(std::min<int64_t>(due - now, 200)))) break;
  }
  std::lock_guard tick(tick_mu_);
  if (Status s = ActOne(id, std::max(NowMs(), due)); !s.ok()) {
    spdlog::warn("notice {}: {}", id, s.ToString());
  }
}

void LeaseService::AfterMove(const std::string& guest, const std::string& from, const std::string& host,
                             int64_t pause_ms, int64_t total_ms) {
  auto live = table_.LiveOf(guest);
  if (!live.ok() || !*live) return;
  const lease::Lease& l = (*live)->lease;
  const std::string word = "from=" + from + ",to=" + host + ",pause_ms=" + std::to_string(pause_ms) +
                           ",total_ms=" + std::to_string(total_ms);
  std::string delivery = "not running";
  auto g = d_.guests.Find(guest);
  if (g.ok() && *g && Running(**g)) {
    const std::string amounts = std::to_string(l.granted.vcpus) + " " + std::to_string(l.granted.memory_mib);
    auto out = d_.agent_of(host)->Exec(guest, {"uw-notice " + l.id + "-moved-" + std::to_string(NowMs()) + " moved " +
                                                   amounts + " " + amounts + " 0 0 " + ShellWord(word),
                                               5});
    delivery = out.ok() ? "delivered" : "silent: " + out.status().ToString();
  }
  if (Status s = d_.events.Add("lease.moved", guest, l.tenant,
                               {{"lease", l.id},
                                {"from", from},
                                {"to", host},
                                {"pause_ms", pause_ms},
                                {"total_ms", total_ms},
                                {"delivery", delivery}});
      !s.ok()) {
    spdlog::warn("lease.moved event of {}: {}", guest, s.ToString());
  }
}

Status LeaseService::ActOne(const std::string& notice_id, int64_t now_ms) {
  std::optional<std::string> task;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(NoticeRecord n, table_.GetNotice(notice_id));
    // Acted on already, or withdrawn since it was read (its guest deleted, the create it made room
    // for cancelled).
    if (n.notice.state == lease::NoticeState::kActed || n.notice.state == lease::NoticeState::kWithdrawn) {
      return Status::Ok();
    }
    // A move's notice is acted on by the move itself (its task is the one in flight).
    if (n.notice.action != lease::NoticeAction::kMigrate) {
      UW_ASSIGN_OR_RETURN(std::optional<Task> busy, d_.tasks.InFlightOf(n.notice.guest));
      if (busy) return Status::Ok();  // acted on at the next tick, once the guest's task has ended
    }
    UW_ASSIGN_OR_RETURN(task, ActIn(std::move(n), now_ms, GuestTask::kStop));
    return Status::Ok();
  }));
  if (task) d_.enqueue(*task);
  return Status::Ok();
}

Result<std::optional<std::string>> LeaseService::ActIn(NoticeRecord n, int64_t now_ms, GuestTask stop_how) {
  std::optional<std::string> task;
  UW_ASSIGN_OR_RETURN(LeaseRecord r, table_.Get(n.notice.lease_id));
  UW_ASSIGN_OR_RETURN(std::optional<Guest> g, d_.guests.Find(n.notice.guest));
  UW_ASSIGN_OR_RETURN(lease::Repossession rec, lease::Act(n.notice, now_ms));
  lease::Lease& l = r.lease;
  const bool ends = n.notice.action == lease::NoticeAction::kStop || n.notice.action == lease::NoticeAction::kEvict;
  const std::string why = "repossessed: " + n.notice.reason;
  if (l.state == lease::LeaseState::kActive) {
    if (ends) {
      UW_RETURN_IF_ERROR(lease::Advance(l, lease::LeaseState::kClosing, now_ms, why));
      UW_RETURN_IF_ERROR(lease::Advance(l, lease::LeaseState::kClosed, now_ms, "the guest is stopped"));
      r.renewal.reset();
    } else if (!(l.granted == n.notice.after)) {
      l.granted = n.notice.after;
      l.history.push_back({now_ms, l.state, l.state, l.granted, why});
    }
    UW_RETURN_IF_ERROR(table_.Save(r, now_ms));
  }
  if (g && ends) UW_RETURN_IF_ERROR(d_.guests.SetReleased(g->name, true));  // its room is free from now
  if (g && n.notice.action != lease::NoticeAction::kMigrate && (!ends || Running(*g))) {
    UW_ASSIGN_OR_RETURN(task,
                        JournalGuestTask(*g, n.notice.before, n.notice.after, ends ? stop_how : GuestTask::kResize));
  }
  UW_RETURN_IF_ERROR(table_.SaveNotice(n, now_ms));
  UW_RETURN_IF_ERROR(table_.InsertRepossession(rec));
  Json data = RepossessionJson(rec);
  data["task"] = task ? Json(*task) : Json(nullptr);
  UW_RETURN_IF_ERROR(d_.events.Add("notice.acted", rec.guest, rec.tenant, data));
  return task;
}

}  // namespace uw::manager::internal
