// The lease service (lease_service.h): leases, notices and repossessions driven by the store and
// the clock. Term ends and the notice loop are in lease_loop.cc.
#include "manager/lease_service.h"

#include <spdlog/spdlog.h>

#include "common/id.h"
#include "manager/event_log.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/lease_json.h"
#include "manager/task_journal.h"

namespace uw::manager::internal {

LeaseService::LeaseService(Deps deps)
    : d_(std::move(deps)), table_(d_.store, [this](std::string_view guest) { Changed(guest); }) {}

LeaseService::~LeaseService() { Stop(); }

int64_t LeaseService::NowMs() const { return ToUnixMillis(d_.clock.Now()); }

void LeaseService::Start() {
  {
    std::lock_guard l(mu_);
    stopping_ = false;
  }
  loop_ = std::thread([this] {
    std::unique_lock l(mu_);
    while (!stopping_) {
      woken_ = false;
      l.unlock();
      try {
        if (Status s = Tick(); !s.ok()) spdlog::warn("lease loop: {}", s.ToString());
      } catch (const std::exception& e) {
        spdlog::error("lease loop: {}", e.what());
      }
      l.lock();
      cv_.wait_for(l, std::chrono::milliseconds(d_.config.lease_tick_ms), [this] { return stopping_ || woken_; });
    }
  });
}

void LeaseService::Stop() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (loop_.joinable()) loop_.join();
}

void LeaseService::Wake() {
  {
    std::lock_guard l(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

// ---------------------------------------------------------------------------------------------
// The guests' side

Status LeaseService::Open(const GuestCreate& req, std::string_view guest, std::string_view tenant, int64_t now_ms) {
  LeaseRecord r;
  lease::Lease& l = r.lease;
  l.id = NewId("lease");
  l.guest = std::string(guest);
  l.tenant = std::string(tenant);
  UW_ASSIGN_OR_RETURN(l.lease_class, lease::ParseLeaseClass(req.lease_class));
  l.granted = req.grant;
  switch (l.lease_class) {
    case lease::LeaseClass::kGuaranteed:
      l.floor = l.granted;
      break;
    case lease::LeaseClass::kElastic:
      l.floor = req.lease_floor.value_or(lease::Resources{1, std::min<int64_t>(l.granted.memory_mib, 128)});
      break;
    case lease::LeaseClass::kPreemptible:
      l.floor = {};
      break;
  }
  l.start_ms = now_ms;
  if (req.lease_term_s) {
    r.term_ms = *req.lease_term_s * 1000;
    l.term_end_ms = now_ms + *r.term_ms;
  }
  l.history.push_back({now_ms, lease::LeaseState::kNascent, lease::LeaseState::kNascent, l.granted, "granted"});
  l.bid = req.lease_bid;
  // Its cputune weight (cpu.shares, checked by the agent's spec parser when the request was read).
  if (auto cpu = req.agent_spec.find("cpu"); cpu != req.agent_spec.end() && cpu->is_object()) {
    if (auto shares = cpu->find("shares"); shares != cpu->end() && shares->is_number_integer()) {
      if (shares->get<int64_t>() > 0) l.shares = shares->get<int64_t>();
    }
  }
  if (l.bid > 0) UW_RETURN_IF_ERROR(CheckBids(tenant, l));
  return table_.Insert(r, now_ms);
}

Status LeaseService::Activate(std::string_view guest, int64_t now_ms) {
  UW_ASSIGN_OR_RETURN(std::optional<LeaseRecord> r, table_.LiveOf(guest));
  if (!r || r->lease.state != lease::LeaseState::kNascent) return Status::Ok();
  // The term runs from when the guest has what it was granted.
  if (r->term_ms) r->lease.term_end_ms = now_ms + *r->term_ms;
  UW_RETURN_IF_ERROR(lease::Advance(r->lease, lease::LeaseState::kActive, now_ms, "the guest was created"));
  UW_RETURN_IF_ERROR(table_.Save(*r, now_ms));
  return d_.events.Add("lease.active", r->lease.guest, r->lease.tenant, {{"lease", r->lease.id}});
}

Status LeaseService::Fail(std::string_view guest, int64_t now_ms, std::string_view why) {
  UW_ASSIGN_OR_RETURN(std::optional<LeaseRecord> r, table_.LiveOf(guest));
  if (!r) return Status::Ok();
  UW_RETURN_IF_ERROR(lease::Advance(r->lease, lease::LeaseState::kFailed, now_ms, why));
  UW_RETURN_IF_ERROR(table_.Save(*r, now_ms));
  return d_.events.Add("lease.failed", r->lease.guest, r->lease.tenant, {{"lease", r->lease.id}, {"why", why}});
}

Status LeaseService::WithdrawOpen(const lease::Lease& l, std::string_view why) {
  UW_ASSIGN_OR_RETURN(std::optional<NoticeRecord> open, table_.OpenNoticeOf(l.id));
  return open ? Withdraw(*open, why) : Status::Ok();
}

Status LeaseService::Withdraw(NoticeRecord& n, std::string_view why) {
  UW_RETURN_IF_ERROR(lease::Withdraw(n.notice));
  UW_RETURN_IF_ERROR(table_.SaveNotice(n, NowMs()));
  return d_.events.Add("notice.withdrawn", n.notice.guest, n.notice.tenant, {{"notice", n.notice.id}, {"why", why}});
}

Status LeaseService::Close(std::string_view guest, int64_t now_ms, std::string_view why) {
  UW_ASSIGN_OR_RETURN(std::optional<LeaseRecord> r, table_.LiveOf(guest));
  if (!r) return Status::Ok();
  lease::Lease& l = r->lease;
  // Nothing is taken from a guest that is gone: a notice still open against it is withdrawn.
  UW_RETURN_IF_ERROR(WithdrawOpen(l, "the guest was deleted"));
  if (l.state == lease::LeaseState::kNascent) {
    UW_RETURN_IF_ERROR(lease::Advance(l, lease::LeaseState::kFailed, now_ms, why));
  } else {
    if (l.state != lease::LeaseState::kClosing) {
      UW_RETURN_IF_ERROR(lease::Advance(l, lease::LeaseState::kClosing, now_ms, why));
    }
    UW_RETURN_IF_ERROR(lease::Advance(l, lease::LeaseState::kClosed, now_ms, why));
  }
  r->renewal.reset();
  UW_RETURN_IF_ERROR(table_.Save(*r, now_ms));
  return d_.events.Add("lease.closed", l.guest, l.tenant, {{"lease", l.id}, {"why", why}});
}

Status LeaseService::Regrant(std::string_view guest, std::optional<int64_t> vcpus, std::optional<int64_t> memory_mib,
                             int64_t now_ms, std::string_view why) {
  UW_ASSIGN_OR_RETURN(std::optional<LeaseRecord> r, table_.LiveOf(guest));
  if (!r) return Status::Ok();
  lease::Lease& l = r->lease;
  lease::Resources now{vcpus.value_or(l.granted.vcpus), memory_mib.value_or(l.granted.memory_mib)};
  if (now == l.granted) return Status::Ok();
  l.granted = now;
  // An owner who resizes below the floor lowers it; a guaranteed lease's floor is its grant.
  if (l.lease_class == lease::LeaseClass::kGuaranteed) {
    l.floor = now;
  } else {
    l.floor = {std::min(l.floor.vcpus, now.vcpus), std::min(l.floor.memory_mib, now.memory_mib)};
  }
  l.history.push_back({now_ms, l.state, l.state, now, std::string(why)});
  UW_RETURN_IF_ERROR(table_.Save(*r, now_ms));
  return d_.events.Add("lease.regranted", l.guest, l.tenant,
                       {{"lease", l.id}, {"granted", ResourcesJson(now)}, {"why", why}});
}

Status LeaseService::Reopen(std::string_view guest, int64_t now_ms, std::string_view why) {
  Changed(guest);  // a started guest's holdings file is gone with its last boot
  UW_RETURN_IF_ERROR(d_.guests.SetReleased(guest, false));
  UW_ASSIGN_OR_RETURN(std::optional<LeaseRecord> live, table_.LiveOf(guest));
  if (live) return Status::Ok();
  UW_ASSIGN_OR_RETURN(auto past, table_.OfGuest(guest));
  UW_ASSIGN_OR_RETURN(Guest g, d_.guests.Get(guest));
  LeaseRecord r;
  lease::Lease& l = r.lease;
  l.id = NewId("lease");
  l.guest = g.name;
  l.tenant = g.tenant;
  l.lease_class = past.empty() ? lease::LeaseClass::kGuaranteed : past.front().lease.lease_class;
  l.granted = {g.vcpus, g.memory_mib};
  l.floor = past.empty() ? l.granted : past.front().lease.floor;
  if (!past.empty()) l.shares = past.front().lease.shares;
  if (l.lease_class == lease::LeaseClass::kGuaranteed) l.floor = l.granted;
  l.floor = {std::min(l.floor.vcpus, l.granted.vcpus), std::min(l.floor.memory_mib, l.granted.memory_mib)};
  l.start_ms = now_ms;
  l.history.push_back({now_ms, lease::LeaseState::kNascent, lease::LeaseState::kNascent, l.granted,
                       (past.empty() ? "granted: " : "granted again: ") + std::string(why)});
  UW_RETURN_IF_ERROR(lease::Advance(l, lease::LeaseState::kActive, now_ms, std::string(why)));
  UW_RETURN_IF_ERROR(table_.Insert(r, now_ms));
  return d_.events.Add("lease.active", l.guest, l.tenant, {{"lease", l.id}, {"reopened", true}, {"why", why}});
}

// ---------------------------------------------------------------------------------------------
// The API's side

Result<LeaseScope> LeaseService::ScopeOf(const Principal& p, std::string_view guest) {
  LeaseScope scope;
  if (p.role == Role::kTenant) scope.tenant = p.tenant;
  if (!guest.empty()) {
    UW_ASSIGN_OR_RETURN(Guest g, d_.visible(p, guest));
    scope.guest = g.name;
  }
  return scope;
}

Result<LeaseRecord> LeaseService::VisibleLease(const Principal& p, std::string_view id) {
  auto r = table_.Get(id);
  if (r.ok() && p.role == Role::kTenant && r->lease.tenant != p.tenant) {
    return NotFoundError("lease '" + std::string(id) + "' not found");
  }
  return r;
}

Result<NoticeRecord> LeaseService::VisibleNotice(const Principal& p, std::string_view id) {
  auto r = table_.GetNotice(id);
  if (r.ok() && p.role == Role::kTenant && r->notice.tenant != p.tenant) {
    return NotFoundError("notice '" + std::string(id) + "' not found");
  }
  return r;
}

Result<Page<LeaseRecord>> LeaseService::List(const Principal& p, std::string_view guest, const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(LeaseScope scope, ScopeOf(p, guest));
  return table_.List(scope, page);
}

Result<LeaseRecord> LeaseService::Get(const Principal& p, std::string_view id) { return VisibleLease(p, id); }

Result<LeaseRecord> LeaseService::Extend(const Principal& p, std::string_view id, const LeaseExtend& req) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  std::optional<std::string> task;
  LeaseRecord out;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(LeaseRecord r, VisibleLease(p, id));
    lease::Lease& l = r.lease;
    const int64_t now = NowMs();
    UW_ASSIGN_OR_RETURN(Guest g, d_.guests.Get(l.guest));
    lease::Renewal renewal{
        l.id, {req.vcpus.value_or(l.granted.vcpus), req.memory_mib.value_or(l.granted.memory_mib)}, l.term_end_ms};
    if (renewal.amount.vcpus > g.reserved_vcpus) {
      return InvalidArgumentError("vcpus: " + std::to_string(renewal.amount.vcpus) +
                                  " is above the guest's maximum of " + std::to_string(g.reserved_vcpus));
    }
    if (renewal.amount.memory_mib > g.reserved_memory_mib) {
      return InvalidArgumentError("memory_mib: " + std::to_string(renewal.amount.memory_mib) +
                                  " is above the guest's maximum of " + std::to_string(g.reserved_memory_mib) + " MiB");
    }
    if (req.term_s) {
      renewal.term_end_ms = std::max(l.term_end_ms.value_or(now), now) + *req.term_s * 1000;
      r.term_ms = *req.term_s * 1000;
    }
    UW_RETURN_IF_ERROR(lease::CheckRenewal(l, renewal, now));
    if (req.bid && *req.bid != l.bid) {  // a bid is not a resource: it holds from now
      l.bid = *req.bid;
      UW_RETURN_IF_ERROR(CheckBids(l.tenant, l));
    }
    const bool changes_amount = !(renewal.amount == l.granted);
    const bool at_once = !changes_amount || !l.term_end_ms || *l.term_end_ms <= now;
    Json data = {{"lease", l.id},
                 {"amount", ResourcesJson(renewal.amount)},
                 {"term_end_ms", renewal.term_end_ms ? Json(*renewal.term_end_ms) : Json(nullptr)}};
    if (at_once) {
      UW_RETURN_IF_ERROR(RoomToGrow(hosts_, g, renewal.amount.memory_mib, "memory_mib"));
      const lease::Resources before = l.granted;
      UW_RETURN_IF_ERROR(lease::ApplyRenewal(l, renewal, now));
      r.renewal.reset();
      if (changes_amount) {
        UW_ASSIGN_OR_RETURN(task, JournalGuestTask(g, before, l.granted, GuestTask::kResize));
      }
      data["applied"] = true;
    } else {
      r.renewal = renewal;  // the new amount takes effect at the current term end
      data["applied"] = false;
      data["takes_effect_ms"] = *l.term_end_ms;
    }
    UW_RETURN_IF_ERROR(table_.Save(r, now));
    UW_RETURN_IF_ERROR(d_.events.Add("lease.extended", l.guest, l.tenant, data));
    out = std::move(r);
    return Status::Ok();
  }));
  if (task) d_.enqueue(*task);
  return out;
}

Result<LeaseRecord> LeaseService::Release(const Principal& p, std::string_view id) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  std::optional<std::string> task;
  LeaseRecord out;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(LeaseRecord r, VisibleLease(p, id));
    lease::Lease& l = r.lease;
    const int64_t now = NowMs();
    if (l.state != lease::LeaseState::kActive) {
      return FailedPreconditionError("lease " + l.id + " is " + std::string(lease::LeaseStateName(l.state)) +
                                     "; only an active lease can be released");
    }
    UW_ASSIGN_OR_RETURN(std::optional<Guest> g, d_.guests.Find(l.guest));
    if (g) {
      UW_ASSIGN_OR_RETURN(std::optional<Task> busy, d_.tasks.InFlightOf(g->name));
      if (busy) {
        return FailedPreconditionError("guest '" + g->name + "' has task " + busy->id + " (" + busy->kind +
                                       ") in flight: release the lease when it has ended");
      }
      if (g->state == "running" || g->state == "paused") {
        UW_ASSIGN_OR_RETURN(task, JournalGuestTask(*g, l.granted, {}, GuestTask::kStop));
      }
      UW_RETURN_IF_ERROR(d_.guests.SetReleased(g->name, true));  // its room on the host is free
    }
    UW_RETURN_IF_ERROR(WithdrawOpen(l, "the lease was released by its holder"));
    UW_RETURN_IF_ERROR(lease::Advance(l, lease::LeaseState::kClosing, now, "released by its holder"));
    UW_RETURN_IF_ERROR(lease::Advance(l, lease::LeaseState::kClosed, now, "released by its holder"));
    r.renewal.reset();
    UW_RETURN_IF_ERROR(table_.Save(r, now));
    UW_RETURN_IF_ERROR(d_.events.Add("lease.released", l.guest, l.tenant,
                                     {{"lease", l.id}, {"stop_task", task ? Json(*task) : Json(nullptr)}}));
    out = std::move(r);
    return Status::Ok();
  }));
  if (task) d_.enqueue(*task);
  return out;
}

Result<NoticeRecord> LeaseService::Reclaim(const Principal& p, std::string_view id, const LeaseReclaim& req) {
  if (!p.IsOperator()) return PermissionDeniedError("reclaiming a lease needs an admin or operator token");
  UW_ASSIGN_OR_RETURN(LeaseRecord r, VisibleLease(p, id));
  const lease::Lease& l = r.lease;
  if (l.state != lease::LeaseState::kActive) {
    return FailedPreconditionError("lease " + l.id + " is " + std::string(lease::LeaseStateName(l.state)) +
                                   "; only an active lease can be reclaimed");
  }
  lease::Resources after{};
  if (req.action == lease::NoticeAction::kShrink) {
    after = {req.vcpus.value_or(l.granted.vcpus), req.memory_mib.value_or(l.granted.memory_mib)};
  }
  const int64_t now = NowMs();
  return Send(r, req.action, after, req.reason.empty() ? "reclaimed by an operator" : req.reason, now,
              now + req.notice_s * 1000, req.urgent);
}

Result<HostReclaim> LeaseService::ReclaimFromHost(const Principal& p, std::string_view host,
                                                  const HostReclaimRequest& req) {
  if (!p.IsOperator()) return PermissionDeniedError("reclaiming from a host needs an admin or operator token");
  UW_ASSIGN_OR_RETURN(std::vector<lease::Lease> leases, ReclaimableOn(host));
  const lease::BrokerPolicy policy = req.policy.value_or(d_.config.lease_reclaim_policy);
  const lease::ReclaimPlan plan = lease::PlanReclaim(leases, req.need, policy);
  HostReclaim out{policy, {}, plan.shortfall};
  const int64_t now = NowMs();
  const std::string reason = (req.reason.empty() ? "reclaimed from host " + std::string(host) : req.reason) + " (" +
                             std::string(lease::BrokerPolicyName(policy)) + ")";
  for (const lease::Take& t : plan.takes) {
    UW_ASSIGN_OR_RETURN(LeaseRecord r, table_.Get(t.lease_id));
    UW_ASSIGN_OR_RETURN(NoticeRecord n, Send(r, t.action, t.after, reason, now, now + req.notice_s * 1000, false));
    out.notices.push_back(std::move(n));
  }
  return out;
}

Result<std::vector<lease::Lease>> LeaseService::ReclaimableOn(std::string_view host) {
  UW_ASSIGN_OR_RETURN(auto names, d_.guests.NamesOn(host));
  std::vector<lease::Lease> leases;
  for (const auto& name : names) {
    UW_ASSIGN_OR_RETURN(std::optional<LeaseRecord> l, table_.LiveOf(name));
    if (!l) continue;
    UW_ASSIGN_OR_RETURN(std::optional<NoticeRecord> open, table_.OpenNoticeOf(l->lease.id));
    if (!open) leases.push_back(std::move(l->lease));
  }
  return leases;
}

Result<NoticeRecord> LeaseService::Send(const LeaseRecord& r, lease::NoticeAction action, const lease::Resources& after,
                                        std::string reason, int64_t not_before_ms, int64_t deadline_ms, bool urgent) {
  NoticeRecord out;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(out, SendIn(r, action, after, std::move(reason), not_before_ms, deadline_ms, urgent));
    return Status::Ok();
  }));
  Wake();
  return out;
}

Result<NoticeRecord> LeaseService::SendIn(const LeaseRecord& r, lease::NoticeAction action,
                                          const lease::Resources& after, std::string reason, int64_t not_before_ms,
                                          int64_t deadline_ms, bool urgent, std::string makes_room_for) {
  UW_ASSIGN_OR_RETURN(std::optional<NoticeRecord> open, table_.OpenNoticeOf(r.lease.id));
  if (open) {
    return FailedPreconditionError("lease " + r.lease.id + " has notice " + open->notice.id +
                                   " open: wait for it to be acted on");
  }
  const int64_t now = NowMs();
  NoticeRecord out;
  UW_ASSIGN_OR_RETURN(out.notice, lease::MakeNotice(r.lease, NewId("notice"), action, after, std::move(reason), now,
                                                    std::max(now, not_before_ms), std::max(now, deadline_ms), urgent));
  if (urgent) out.delivery = {"skipped", "", "urgent: acted on at once", now};
  out.makes_room_for = std::move(makes_room_for);
  UW_RETURN_IF_ERROR(table_.InsertNotice(out, now));
  UW_RETURN_IF_ERROR(d_.events.Add("notice.sent", out.notice.guest, out.notice.tenant, NoticeJson(out.notice)));
  return out;
}

Result<std::optional<std::string>> LeaseService::ForceStop(const Guest& g, std::string reason) {
  if (!Running(g)) return std::optional<std::string>();  // nothing is taken from a guest already stopped
  std::optional<std::string> task;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(std::optional<LeaseRecord> live, table_.LiveOf(g.name));
    if (!live || live->lease.state != lease::LeaseState::kActive) return Status::Ok();
    // A notice still open is overtaken: the stop takes everything it would have taken.
    UW_RETURN_IF_ERROR(WithdrawOpen(live->lease, "overtaken by an operator's forced stop"));
    UW_ASSIGN_OR_RETURN(NoticeRecord n, SendIn(*live, lease::NoticeAction::kStop, {}, std::move(reason), 0, 0, true));
    UW_ASSIGN_OR_RETURN(task, ActIn(std::move(n), NowMs(), GuestTask::kPowerOff));
    return Status::Ok();
  }));
  if (task) d_.enqueue(*task);
  return task;
}

Status LeaseService::HostFailed(const Guest& g, std::string reason) {
  UW_ASSIGN_OR_RETURN(std::optional<LeaseRecord> live, table_.LiveOf(g.name));
  if (!live || live->lease.state != lease::LeaseState::kActive) return Status::Ok();
  UW_RETURN_IF_ERROR(WithdrawOpen(live->lease, "overtaken by the failure of the guest's host"));
  UW_ASSIGN_OR_RETURN(NoticeRecord n, SendIn(*live, lease::NoticeAction::kEvacuate, live->lease.granted,
                                             std::move(reason), 0, 0, true));
  // An evacuation keeps the amounts: no guest task comes of it (the restart is HA's own task).
  return ActIn(std::move(n), NowMs(), GuestTask::kResize).status();
}

Result<Page<NoticeRecord>> LeaseService::ListNotices(const Principal& p, std::string_view guest,
                                                     const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(LeaseScope scope, ScopeOf(p, guest));
  return table_.ListNotices(scope, page);
}

Result<NoticeRecord> LeaseService::GetNotice(const Principal& p, std::string_view id) { return VisibleNotice(p, id); }

Status LeaseService::TakeReplyToken(const Principal& p) {
  const std::string who = p.tenant.empty() ? "token " + p.token_id : "tenant " + p.tenant;
  const int64_t now = NowMs();
  std::lock_guard l(mu_);
  ReplyBucket& b = reply_buckets_.try_emplace(who, ReplyBucket{kReplyBurst, now}).first->second;
  b.tokens = std::min(kReplyBurst, b.tokens + static_cast<double>(now - b.at_ms) * kRepliesPerSecond / 1000.0);
  b.at_ms = now;
  if (b.tokens < 1.0) {
    return ResourceExhaustedError("too many notice replies from " + who + ": at most " +
                                  std::to_string(static_cast<int>(kRepliesPerSecond)) + " a second (bursts of " +
                                  std::to_string(static_cast<int>(kReplyBurst)) + "); nothing was recorded");
  }
  b.tokens -= 1.0;
  return Status::Ok();
}

Status LeaseService::CheckBids(std::string_view tenant, const lease::Lease& changed) {
  UW_ASSIGN_OR_RETURN(std::optional<int64_t> budget, table_.BudgetOf(tenant));
  if (!budget) {
    return FailedPreconditionError("lease bids need a budget: tenant '" + std::string(tenant) +
                                   "' has none (PUT /api/v1/budgets/" + std::string(tenant) + ", uwctl budget set)");
  }
  UW_ASSIGN_OR_RETURN(std::vector<lease::Lease> live, table_.LiveOfTenant(tenant));
  std::erase_if(live, [&](const lease::Lease& l) { return l.id == changed.id; });
  live.push_back(changed);
  // Over budget is a conflict with the tenant's other bids (409), not a rate limit.
  Status s = lease::CheckBudget(live, *budget);
  if (s.ok()) return s;
  return Status(s.code() == StatusCode::kResourceExhausted ? StatusCode::kFailedPrecondition : s.code(),
                "tenant '" + std::string(tenant) + "': " + s.message());
}

Result<std::vector<Budget>> LeaseService::ListBudgets(const Principal& p) {
  if (p.role == Role::kTenant) return table_.Budgets(p.tenant);
  return table_.Budgets(std::nullopt);
}

Result<Budget> LeaseService::SetBudget(const Principal& p, std::string_view tenant, int64_t per_hour) {
  if (!p.IsOperator()) return PermissionDeniedError("setting a budget needs an operator or admin token");
  if (per_hour < 0) return InvalidArgumentError("per_hour: a budget is at least 0 credits per hour");
  Budget out;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(std::vector<lease::Lease> live, table_.LiveOfTenant(tenant));
    if (Status s = lease::CheckBudget(live, per_hour); !s.ok()) {
      return FailedPreconditionError("tenant '" + std::string(tenant) + "' at a budget of " + std::to_string(per_hour) +
                                     ": " + s.message() + "; lower its bids first");
    }
    UW_RETURN_IF_ERROR(table_.SetBudget(tenant, per_hour, NowMs()));
    UW_RETURN_IF_ERROR(d_.events.Add("budget.set", std::string(tenant), std::string(tenant), {{"per_hour", per_hour}}));
    UW_ASSIGN_OR_RETURN(auto rows, table_.Budgets(std::string(tenant)));
    if (!rows.empty()) out = rows[0];
    return Status::Ok();
  }));
  return out;
}

Result<NoticeRecord> LeaseService::Answer(const Principal& p, std::string_view id, const NoticeAnswer& answer) {
  UW_RETURN_IF_ERROR(NeedWrite(p));
  // A flood of replies (each refused one is an event) is cut off before it reaches the store.
  UW_RETURN_IF_ERROR(TakeReplyToken(p));
  NoticeRecord out;
  Status refused = Status::Ok();
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(NoticeRecord n, VisibleNotice(p, id));
    UW_ASSIGN_OR_RETURN(LeaseRecord l, table_.Get(n.notice.lease_id));
    const int64_t now = NowMs();
    Status applied = lease::ApplyReply(n.notice, l.lease, ReplyOf(answer, n.notice, now));
    if (!applied.ok()) {
      // Recorded, and nothing changes.
      refused = applied;
      return d_.events.Add(
          "notice.answer_refused", n.notice.guest, n.notice.tenant,
          {{"notice", n.notice.id}, {"reply", ReplyKindName(answer.kind)}, {"error", applied.ToString()}});
    }
    UW_RETURN_IF_ERROR(table_.SaveNotice(n, now));
    UW_RETURN_IF_ERROR(d_.events.Add("notice.answered", n.notice.guest, n.notice.tenant,
                                     {{"notice", n.notice.id}, {"reply", ReplyKindName(answer.kind)}, {"via", "api"}}));
    out = std::move(n);
    return Status::Ok();
  }));
  if (!refused.ok()) return refused;
  Wake();
  return out;
}

Result<Page<lease::Repossession>> LeaseService::ListRepossessions(const Principal& p, std::string_view guest,
                                                                  const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(LeaseScope scope, ScopeOf(p, guest));
  return table_.ListRepossessions(scope, page);
}

Result<std::optional<std::string>> LeaseService::JournalGuestTask(const Guest& g, const lease::Resources& before,
                                                                  const lease::Resources& after, GuestTask how) {
  if (!g.host) return std::optional<std::string>();
  Json args = Json::object();
  std::string kind = "guest.resize";
  if (how == GuestTask::kStop) {
    kind = "guest.stop";
    args["force"] = false;
    args["timeout_s"] = 30;
  } else if (how == GuestTask::kPowerOff) {
    kind = "guest.stop";
    args["force"] = true;
  } else {
    auto changed = [](int64_t a, int64_t b) { return a != b ? std::optional<int64_t>(a) : std::nullopt; };
    args = ResizeArgs(g.kind, changed(after.vcpus, before.vcpus), changed(after.memory_mib, before.memory_mib));
    if (args.empty()) return std::optional<std::string>();
  }
  Json request = {{"guest", g.name}, {"host", *g.host}, {"args", args}, {"by", "lease"}};
  // Inside the caller's transaction (TaskJournal::Add would open its own).
  std::string id = NewId("task");
  UW_RETURN_IF_ERROR(d_.tasks.Insert(id, kind, g.name, g.tenant, request, "carrying out a lease change"));
  UW_RETURN_IF_ERROR(d_.events.Add("task.created", id, g.tenant, {{"kind", kind}, {"subject", g.name}}));
  return std::optional<std::string>(std::move(id));
}

}  // namespace uw::manager::internal
