// High availability (ha_service.h).
#include "manager/ha_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/id.h"
#include "manager/event_log.h"
#include "manager/guest_table.h"
#include "manager/lease_service.h"
#include "manager/power_service.h"
#include "manager/task_journal.h"

namespace uw::manager::internal {

namespace {

constexpr int64_t kFenceRetryMs = 5'000;  // first retry of a failed fence; doubled up to kMaxRetryMs
constexpr int64_t kMaxRetryMs = 60'000;
constexpr int64_t kRestartRetryMs = 5'000;  // after a failed guest.recover, doubled each time
constexpr int64_t kRestartAttempts = 5;     // then the guest stays down with an alert
constexpr int64_t kBeatsRetryMs = 30'000;   // connecting to Ceph for storage heartbeats again

// Guest states in which HA restarts a guest (it was running, or meant to, when its host failed).
bool WasUp(const std::string& state) {
  return state == "running" || state == "paused" || state == "blocked" || state == "crashed" || state == "unknown" ||
         state == "shutting-down" || state == "suspended";
}

// The snapshot without the guests of `host` that HA does not restart (their room is not taken
// from the others); rules lose them too.
void KeepOnly(placement::Snapshot& snap, const std::string& host, const std::set<std::string>& restarting) {
  std::set<std::string> gone;
  std::erase_if(snap.vms, [&](const placement::Vm& v) {
    const bool drop = v.host == host && !restarting.count(v.name);
    if (drop) gone.insert(v.name);
    return drop;
  });
  if (gone.empty()) return;
  for (auto& r : snap.rules) std::erase_if(r.vms, [&](const std::string& n) { return gone.count(n) > 0; });
  std::erase_if(snap.rules, [](const placement::Rule& r) {
    return r.type == placement::RuleType::kVmHost ? r.vms.empty() : r.vms.size() < 2;
  });
}

}  // namespace

bool CanRunElsewhere(std::string_view kind, const Json& spec) {
  if (kind == "lxc") return false;
  if (!spec.is_object() || !spec.contains("disks") || !spec["disks"].is_array()) return true;
  // Read-only disks, and Ceph RBD volumes, which every host reaches (shared storage).
  return std::all_of(spec["disks"].begin(), spec["disks"].end(), [](const Json& d) {
    return d.is_object() && (d.value("read_only", false) || (d.contains("rbd") && d["rbd"].is_string()));
  });
}

int64_t HaService::NowMs() const { return ToUnixMillis(d_.clock.Now()); }

void HaService::Start() {
  {
    std::lock_guard l(mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { Loop(); });
}

void HaService::Stop() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void HaService::Wake() {
  {
    std::lock_guard l(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

void HaService::Loop() {
  const auto every = std::chrono::milliseconds(std::clamp(d_.config.heartbeat_interval_ms, 100, 1000));
  std::unique_lock l(mu_);
  while (!stopping_) {
    woken_ = false;
    l.unlock();
    try {
      if (Status s = Pass(); !s.ok()) spdlog::warn("HA pass: {}", s.ToString());
    } catch (const std::exception& e) {
      spdlog::error("HA pass aborted: {}", e.what());
    }
    l.lock();
    cv_.wait_for(l, every, [this] { return stopping_ || woken_; });
  }
}

Status HaService::Once(const std::string& subject, const std::string& tenant, const std::string& type,
                       const Json& data) {
  const std::string key = type + ": " + data.value("reason", "");
  auto it = alerted_.find(subject);
  if (it != alerted_.end() && it->second == key) return Status::Ok();
  alerted_[subject] = key;
  // Hosts are keyed "@NAME" here (a guest may share a host's name); the event names the host.
  const std::string shown = subject.rfind('@', 0) == 0 ? subject.substr(1) : subject;
  spdlog::warn("{} {}: {}", type, shown, data.value("reason", ""));
  return d_.events.Add(type, shown, tenant, data);
}

Status HaService::Pass() {
  std::lock_guard pass(pass_mu_);
  UW_ASSIGN_OR_RETURN(DrsConfig cfg, d_.drs_config());
  if (!cfg.ha.enabled) return Status::Ok();
  ReadStorageBeats();
  std::vector<Silent> silent;
  {
    UW_ASSIGN_OR_RETURN(auto rows,
                        d_.store.Query("SELECT h.name, h.last_heartbeat_ms, p.phase, p.phase_since_ms FROM hosts h "
                                       "LEFT JOIN host_power p ON p.host = h.name WHERE h.state = 'disconnected' AND "
                                       "COALESCE(p.phase, 'on') IN ('on', 'isolated', 'failed') ORDER BY h.name"));
    for (const SqlRow& r : rows) {
      silent.push_back({r.Str("name"), r.Int("last_heartbeat_ms"), r.IsNull("phase") ? "" : r.Str("phase"),
                        r.IsNull("phase_since_ms") ? 0 : r.Int("phase_since_ms")});
    }
  }
  // What was noted about hosts that are back is forgotten (a new silence is judged afresh).
  std::set<std::string> names;
  for (const auto& h : silent) names.insert(h.name);
  std::erase_if(alerted_,
                [&](const auto& kv) { return kv.first.rfind('@', 0) == 0 && !names.count(kv.first.substr(1)); });
  std::erase_if(fenced_beat_, [&](const auto& kv) { return !names.count(kv.first); });
  const int64_t now = NowMs();
  for (const Silent& h : silent) {
    Status s;
    if (h.phase.empty()) {
      s = Once("@" + h.name, "", "host.fence_failed",
               {{"host", h.name},
                {"reason",
                 "the host stopped heartbeating and has no power driver: it cannot be fenced, so none of "
                 "its guests is restarted elsewhere (set one: uwctl host power-driver set; or bring the "
                 "host back)"}});
    } else if (h.phase == "on") {
      s = Detect(h, cfg);
    } else if (h.phase == "isolated") {
      // A storage heartbeat that stopped too: down on both paths, no need to wait out the isolation.
      const bool both = BeatOf(h.name) == storage::BeatState::kStopped;
      if ((both || now - h.phase_since_ms >= cfg.ha.isolation_s * 1000) && now >= next_try_ms_[h.name]) {
        s = FenceNow(h.name,
                     "isolated for " + std::to_string((now - h.phase_since_ms) / 1000) +
                         " s: no heartbeat, its agent does not answer" + BeatNote(h.name),
                     cfg);
      }
    } else {
      auto held = FenceHeld(h.name);
      s = !held.ok() ? held.status() : *held ? Restart(h.name, h.phase_since_ms, cfg) : Status::Ok();
    }
    if (!s.ok()) spdlog::warn("HA: host {}: {}", h.name, s.ToString());
  }
  return Status::Ok();
}

Status HaService::Detect(const Silent& h, const DrsConfig& cfg) {
  const std::string silence = "no heartbeat for " + std::to_string((NowMs() - h.last_heartbeat_ms) / 1000) + " s";
  Status ping = d_.agent_of(h.name)->Ping();
  if (ping.ok()) {
    // The agent answers the manager: the host runs, only its heartbeats do not arrive.
    return Once(
        "@" + h.name, "", "host.heartbeat_path_failed",
        {{"host", h.name}, {"reason", silence + ", but its agent answers the manager: not failed; nothing is done"}});
  }
  UW_ASSIGN_OR_RETURN(HostPower p, d_.power.Get(h.name, false));
  if (p.driver.is_object() && p.driver.value("driver", "") == "wol") {
    return Once("@" + h.name, "", "host.fence_failed",
                {{"host", h.name},
                 {"reason", silence + " and its agent does not answer (" + ping.message() +
                                "), but its power driver is Wake-on-LAN, which cannot confirm that a host is off: "
                                "it cannot be fenced, so none of its guests is restarted elsewhere (set an ipmi, "
                                "redfish or exec driver for HA)"}});
  }
  UW_ASSIGN_OR_RETURN(p, d_.power.Get(h.name, true));
  if (!p.bmc) {
    UW_RETURN_IF_ERROR(d_.power.NoteError(h.name, "its BMC does not answer: " + p.bmc_error));
    return Once("@" + h.name, "", "host.fence_failed",
                {{"host", h.name},
                 {"reason", silence + ", its agent does not answer and its BMC does not answer either (" + p.bmc_error +
                                "): it cannot be fenced, so none of its guests is restarted elsewhere"}});
  }
  const std::string why =
      silence + ", its agent does not answer (" + ping.message() + "), its BMC says " + *p.bmc + BeatNote(h.name);
  const storage::BeatState beat = BeatOf(h.name);
  // Off already (the fence confirms it) unless its storage heartbeat says it runs.
  if (*p.bmc == "off" && beat != storage::BeatState::kLive) return FenceNow(h.name, why, cfg);
  if (*p.bmc == "on" && beat == storage::BeatState::kStopped)
    return FenceNow(h.name, why + ": down on both paths", cfg);
  UW_RETURN_IF_ERROR(d_.power.Isolate(
      h.name, why + ": isolated; fenced after " + std::to_string(cfg.ha.isolation_s) + " s unless it comes back"));
  if (cfg.ha.isolation_s == 0) return FenceNow(h.name, why, cfg);
  return Status::Ok();
}

Status HaService::FenceNow(const std::string& host, const std::string& why, const DrsConfig& cfg) {
  const int64_t fenced_from = NowMs();
  auto took = d_.power.Fence(host, why);
  if (!took.ok()) {
    int64_t& backoff = backoff_ms_[host];
    backoff = backoff == 0 ? kFenceRetryMs : std::min(kMaxRetryMs, backoff * 2);
    next_try_ms_[host] = NowMs() + backoff;
    return took.status();
  }
  backoff_ms_.erase(host);
  next_try_ms_.erase(host);
  if (watch_) {
    // What its storage heartbeat said once the BMC confirmed it off: a change after this is the
    // host still running.
    ReadStorageBeats();
    fenced_beat_[host] = watch_->Value(host);
  }
  UW_ASSIGN_OR_RETURN(bool held, FenceHeld(host));
  return held ? Restart(host, fenced_from, cfg) : Status::Ok();
}

void HaService::ReadStorageBeats() {
  if (d_.config.storage_backend != "rbd") return;
  const int64_t now = NowMs();
  auto note = [&](const Status& s) {
    if (s.message() != beats_error_) spdlog::warn("HA: storage heartbeats: {}", s.ToString());
    beats_error_ = s.message();
  };
  if (!beats_) {
    if (now < beats_retry_ms_) return;
    auto opened = storage::OpenStorageHeartbeats(d_.config.storage_rbd);
    if (!opened.ok()) {
      beats_retry_ms_ = now + kBeatsRetryMs;
      return note(opened.status());
    }
    beats_ = std::move(*opened);
  }
  auto read = beats_->ReadAll();
  if (!read.ok()) {
    if (read.status().code() != StatusCode::kUnavailable) beats_.reset();  // connect afresh
    return note(read.status());
  }
  beats_error_.clear();
  if (!watch_) watch_.emplace(d_.config.heartbeat_timeout_ms);
  watch_->Observe(*read, NowMs());
}

storage::BeatState HaService::BeatOf(const std::string& host) const {
  return watch_ ? watch_->State(host, NowMs()) : storage::BeatState::kUnknown;
}

std::string HaService::BeatNote(const std::string& host) const {
  if (!watch_) return "";
  switch (BeatOf(host)) {
    case storage::BeatState::kLive:
      return ", its storage heartbeat is live (the host still runs)";
    case storage::BeatState::kStopped:
      return ", its storage heartbeat stopped too (" + std::to_string(watch_->UnchangedMs(host, NowMs()) / 1000) +
             " s ago)";
    case storage::BeatState::kUnknown:
      break;
  }
  return ", no storage heartbeat is known for it";
}

Result<bool> HaService::FenceHeld(const std::string& host) {
  if (!watch_) return true;
  const std::string value = watch_->Value(host);
  auto [it, first] = fenced_beat_.try_emplace(host, value);  // a manager restarted since the fence
  if (!first && !value.empty() && value != it->second) {
    const std::string why =
        "its BMC confirmed it off, but its storage heartbeat changed since: the host still runs, so none of its "
        "guests is restarted elsewhere (check that its power driver reaches this host's BMC); isolated again";
    fenced_beat_.erase(it);
    UW_RETURN_IF_ERROR(Once("@" + host, "", "host.fence_suspect", {{"host", host}, {"reason", why}}));
    UW_RETURN_IF_ERROR(d_.power.Isolate(host, why));
    return false;
  }
  // Beating until the fence (a host cut off from the manager): its guests wait until the heartbeat
  // has stood still for the timeout, so that a fence that missed the host shows first.
  return BeatOf(host) != storage::BeatState::kLive;
}

Status HaService::Sort(const std::string& host, int64_t failed_since_ms, std::vector<Guest>& todo) {
  UW_ASSIGN_OR_RETURN(const std::set<std::string> busy, d_.tasks.SubjectsInFlight());
  UW_ASSIGN_OR_RETURN(std::vector<KnownGuest> known, d_.guests.OnHost(host));
  const int64_t now = NowMs();
  for (const KnownGuest& k : known) {
    if (busy.count(k.name) || !WasUp(k.state)) continue;
    UW_ASSIGN_OR_RETURN(Guest g, d_.guests.Get(k.name));
    UW_ASSIGN_OR_RETURN(Json spec, d_.guests.SpecOf(k.name));
    if (!CanRunElsewhere(g.kind, spec)) {
      const std::string why = std::string(g.kind == "lxc" ? "a container's root" : "its disk") + " is local to " +
                              host + ", which failed and was fenced: it comes back with its host";
      UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
        UW_RETURN_IF_ERROR(d_.guests.SetState(g.name, "lost", now));
        return d_.events.Add("guest.lost", g.name, g.tenant, {{"host", host}, {"was", g.state}, {"reason", why}});
      }));
      continue;
    }
    if (g.restart_priority == "disabled") {
      UW_RETURN_IF_ERROR(Once(g.name, g.tenant, "guest.not_restarted",
                              {{"host", host}, {"reason", "its host failed; its restart priority is disabled"}}));
      continue;
    }
    // Restarts that failed since the host was fenced: tried again with a backoff, then left.
    UW_ASSIGN_OR_RETURN(
        auto failed, d_.store.Query("SELECT COUNT(*) AS n, COALESCE(MAX(updated_ms), 0) AS last FROM tasks WHERE "
                                    "kind = 'guest.recover' AND subject = ? AND state = 'failed' AND updated_ms >= ?",
                                    {g.name, failed_since_ms}));
    const int64_t attempts = failed.empty() ? 0 : failed[0].Int("n");
    if (attempts >= kRestartAttempts) {
      UW_RETURN_IF_ERROR(Once(g.name, g.tenant, "guest.restart_failed",
                              {{"host", host},
                               {"reason", "restarting it elsewhere failed " + std::to_string(attempts) +
                                              " times (see its guest.recover tasks); HA leaves it down"}}));
      continue;
    }
    if (attempts > 0 && now < failed[0].Int("last") + (kRestartRetryMs << std::min<int64_t>(attempts - 1, 6))) continue;
    todo.push_back(std::move(g));
  }
  return Status::Ok();
}

Status HaService::Restart(const std::string& host, int64_t failed_since_ms, const DrsConfig& cfg) {
  std::vector<Guest> todo;
  UW_RETURN_IF_ERROR(Sort(host, failed_since_ms, todo));
  if (todo.empty()) return Status::Ok();
  std::vector<placement::PowerAction> wakes;
  {
    std::lock_guard placing(d_.placement_mu);
    UW_ASSIGN_OR_RETURN(placement::Snapshot snap, d_.snapshot());
    std::set<std::string> restarting;
    for (const auto& g : todo) restarting.insert(g.name);
    KeepOnly(snap, host, restarting);
    UW_ASSIGN_OR_RETURN(placement::Plan plan, placement::MakePlan(snap, cfg.policy));
    // Guests the engine puts on a standby host wait for it: it is powered on below, and a later
    // pass restarts them once its agent has joined.
    std::set<std::string> off;
    for (const placement::PowerAction& a : plan.power) {
      if (a.action != placement::PowerActionType::kPowerOn) continue;
      off.insert(a.host);
      wakes.push_back(a);
    }
    for (const placement::PlacementStep& step : plan.placements) {
      auto it = std::find_if(todo.begin(), todo.end(), [&](const Guest& g) { return g.name == step.vm; });
      if (it == todo.end() || off.count(step.host)) continue;
      if (Status s = Rehome(*it, host, step); !s.ok()) spdlog::warn("HA: restarting {}: {}", step.vm, s.ToString());
    }
    for (const placement::Unplaced& u : plan.unplaced) {
      auto it = std::find_if(todo.begin(), todo.end(), [&](const Guest& g) { return g.name == u.vm; });
      if (it == todo.end()) continue;
      UW_RETURN_IF_ERROR(Once(it->name, it->tenant, "guest.restart_failed",
                              {{"host", host}, {"reason", "no host can take it: " + u.reason + " (tried again)"}}));
    }
  }
  for (const placement::PowerAction& a : wakes) {
    UW_RETURN_IF_ERROR(PowerOnFor(a, host));
  }
  return Status::Ok();
}

Status HaService::PowerOnFor(const placement::PowerAction& a, const std::string& failed) {
  UW_ASSIGN_OR_RETURN(HostPower p, d_.power.Get(a.host, false));
  if (p.phase != "standby") return Status::Ok();  // waking already (or taken out of standby)
  const std::string why = "restarting the guests of " + failed + ": " + a.reason;
  auto on = d_.power.Act(a.host, "on");
  if (!on.ok()) {
    return Once("@" + a.host, "", "ha.power_on_failed",
                {{"host", a.host},
                 {"failed_host", failed},
                 {"reason", why + "; powering it on failed: " + on.status().message()}});
  }
  spdlog::info("HA: powering {} on: {}", a.host, why);
  return d_.events.Add("ha.power_on", a.host, "", {{"failed_host", failed}, {"reason", why}});
}

Status HaService::Rehome(const Guest& g, const std::string& from, const placement::PlacementStep& step) {
  const std::string id = NewId("task");
  const int64_t now = NowMs();
  bool journalled = false;
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(Guest current, d_.guests.Get(g.name));
    if (current.host != from) return Status::Ok();  // moved meanwhile
    UW_ASSIGN_OR_RETURN(Json spec, d_.guests.SpecOf(g.name));
    UW_RETURN_IF_ERROR(d_.guests.EndMove(g.name, step.host, "restarting", now));
    UW_RETURN_IF_ERROR(
        d_.leases.HostFailed(current, "its host " + from + " failed and was fenced: it is restarted on " + step.host));
    Json request = {{"guest", g.name}, {"from", from},   {"host", step.host},
                    {"spec", spec},    {"was", g.state}, {"restart_priority", g.restart_priority}};
    UW_RETURN_IF_ERROR(d_.tasks.Insert(id, "guest.recover", g.name, g.tenant, request,
                                       "restarting on " + step.host + " after its host " + from + " failed"));
    journalled = true;
    return d_.events.Add("guest.restarting_elsewhere", g.name, g.tenant,
                         {{"from", from},
                          {"to", step.host},
                          {"task", id},
                          {"restart_priority", g.restart_priority},
                          {"reason", step.reason}});
  }));
  if (journalled) d_.enqueue(id);
  alerted_.erase(g.name);
  return Status::Ok();
}

}  // namespace uw::manager::internal
