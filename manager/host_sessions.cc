// Host sessions (host_sessions.h).
#include "manager/host_sessions.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/id.h"
#include "common/utc_time.h"
#include "manager/event_log.h"
#include "manager/guest_table.h"
#include "manager/host_table.h"
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/migration_table.h"
#include "manager/task_journal.h"

namespace uw::manager::internal {

namespace {

constexpr int64_t kMaxReportedMib = int64_t{1} << 40;
constexpr size_t kMaxSamplesPerBeat = 1000;
constexpr int64_t kMaxSampleAheadMs = int64_t{5} * 60'000;  // an agent's clock ahead of the manager's
constexpr int64_t kMaxCounted = int64_t{1} << 50;           // CPU µs or bytes between two samples

// stats.samples: the agent's numbered samples (vmm::SampleBook), checked field by field.
Result<std::vector<HostTable::Usage::Sample>> ParseSamples(const JsonView& stats, int64_t now_ms) {
  UW_ASSIGN_OR_RETURN(auto samples, stats.Objects("samples"));
  if (samples.size() > kMaxSamplesPerBeat) {
    return stats.FieldError("samples", "at most " + std::to_string(kMaxSamplesPerBeat) + " a heartbeat");
  }
  std::vector<HostTable::Usage::Sample> out;
  for (const JsonView& s : samples) {
    HostTable::Usage::Sample sample;
    UW_ASSIGN_OR_RETURN(sample.seq, s.PositiveInt("seq"));
    UW_ASSIGN_OR_RETURN(std::string at, s.String("sampled_at"));
    auto at_ms = ParseUtcMillis(at, s.PathOf("sampled_at"));
    if (!at_ms.ok()) return at_ms.status();
    if (*at_ms > now_ms + kMaxSampleAheadMs) {
      return s.FieldError("sampled_at", "more than 5 minutes ahead of the manager's clock; check the host's time");
    }
    sample.at_ms = *at_ms;
    UW_ASSIGN_OR_RETURN(auto guests, s.Objects("guests"));
    for (const JsonView& g : guests) {
      UW_ASSIGN_OR_RETURN(std::string gname, g.String("name"));
      HostTable::Usage::GuestSample u;
      UW_ASSIGN_OR_RETURN(u.cpu_cores, g.Number("cpu_cores", 0));
      UW_ASSIGN_OR_RETURN(u.memory_mib, g.Int("memory_used_mib", -1));
      if (!(u.cpu_cores >= 0 && u.cpu_cores <= 1e6)) return g.FieldError("cpu_cores", "expected 0..1000000");
      if (u.memory_mib < -1 || u.memory_mib > kMaxReportedMib) {
        return g.FieldError("memory_used_mib", "expected -1..2^40");
      }
      for (auto [key, field] : {std::pair{"cpu_us", &u.cpu_us}, std::pair{"net_bytes", &u.net_bytes},
                                std::pair{"disk_bytes", &u.disk_bytes}}) {
        UW_ASSIGN_OR_RETURN(*field, g.NonNegativeInt(key, 0));
        if (*field > kMaxCounted) return g.FieldError(key, "expected 0..2^50");
      }
      UW_ASSIGN_OR_RETURN(u.baseline, g.Bool("baseline", false));
      sample.guests[gname] = u;
    }
    out.push_back(std::move(sample));
  }
  return out;
}

// The fields of an agent's guest that Reconcile reads, type-checked before it runs (in a
// transaction): a wrong type there threw from nlohmann and left the store's transaction open.
Status CheckReportedGuest(const JsonView& g) {
  UW_RETURN_IF_ERROR(g.String("name").status());
  UW_RETURN_IF_ERROR(g.String("state").status());
  const Json& j = g.json();
  auto optional = [&](const char* key, bool (Json::*is)() const, const char* what) -> Status {
    auto it = j.find(key);
    if (it == j.end() || it->is_null() || ((*it).*is)()) return Status::Ok();
    return g.FieldError(key, std::string("expected ") + what);
  };
  for (const char* key : {"kind", "health"}) UW_RETURN_IF_ERROR(optional(key, &Json::is_string, "a string"));
  UW_RETURN_IF_ERROR(optional("unresponsive_since", &Json::is_number, "a number"));
  UW_RETURN_IF_ERROR(optional("asked_at_ms", &Json::is_number_integer, "an integer"));
  UW_RETURN_IF_ERROR(optional("crash", &Json::is_object, "an object"));
  for (const char* key : {"vcpus", "max_vcpus", "memory_mib", "max_memory_mib"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > kMaxReportedMib) {
      return g.FieldError(key, "expected an integer in 0..2^40");
    }
  }
  if (auto c = j.find("crash"); c != j.end() && c->is_object()) {
    UW_ASSIGN_OR_RETURN(JsonView crash, g.Object("crash"));
    if (crash.Has("at")) {
      // Milliseconds since the epoch, read as an integer below (1e300 would not fit).
      UW_ASSIGN_OR_RETURN(int64_t at, crash.Int("at"));
      if (at < 0) return crash.FieldError("at", "expected milliseconds since the epoch (a non-negative integer)");
    }
    if (crash.Has("console_tail")) UW_RETURN_IF_ERROR(crash.String("console_tail").status());
  }
  return Status::Ok();
}

}  // namespace

int64_t HostSessions::NowMs() const { return ToUnixMillis(d_.clock.Now()); }

Result<HostJoined> HostSessions::Join(std::string_view join_token, const HostJoin& join) {
  if (join_token.empty() || Sha256Hex(join_token) != Sha256Hex(d_.config.join_token)) {
    return UnauthenticatedError("wrong cluster join token: use the join_token from the manager's config");
  }
  std::string host_token = NewUuid() + NewUuid();
  bool rejoin = false;
  Status s = d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(rejoin, d_.hosts.Join(join, Sha256Hex(host_token), NowMs()));
    if (d_.power_heard) UW_RETURN_IF_ERROR(d_.power_heard(join.name, true));
    return d_.events.Add(
        rejoin ? "host.rejoined" : "host.joined", join.name, "",
        {{"agent_url", join.agent_url}, {"cpu_cores", join.cpu_cores}, {"memory_mib", join.memory_mib}});
  });
  UW_RETURN_IF_ERROR(s);
  spdlog::info("host {} {} ({} cores, {} MiB) at {}", join.name, rejoin ? "rejoined" : "joined", join.cpu_cores,
               join.memory_mib, join.agent_url);
  return HostJoined{join.name, host_token, d_.config.heartbeat_interval_ms};
}

Result<HeartbeatAck> HostSessions::Heartbeat(std::string_view name, std::string_view host_token, const Json& body) {
  // An unknown host and a wrong token get the same answer (and the same work): this route is
  // public, and must not tell anyone which host names exist.
  auto session = d_.hosts.SessionOf(name);
  if (!session.ok() && session.status().code() != StatusCode::kNotFound) return session.status();
  const std::string presented = Sha256Hex(host_token);
  if (!session.ok() || host_token.empty() || presented != session->host_token_hash) {
    return UnauthenticatedError("unknown host or wrong host token: join again");
  }
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"stats", "guests"}));
  HostTable::Usage usage;
  if (v.Has("stats")) {
    UW_ASSIGN_OR_RETURN(JsonView stats, v.Object("stats"));
    if (stats.Has("samples")) {
      UW_ASSIGN_OR_RETURN(usage.samples, ParseSamples(stats, NowMs()));
      // The host's current usage is its newest sample's.
      const auto newest = std::max_element(usage.samples.begin(), usage.samples.end(),
                                           [](const auto& a, const auto& b) { return a.at_ms < b.at_ms; });
      if (newest != usage.samples.end()) {
        for (const auto& [gname, u] : newest->guests) {
          usage.guests[gname] = {u.cpu_cores, u.memory_mib};
          usage.cpu_cores += u.cpu_cores;
          if (u.memory_mib > 0) usage.memory_mib += u.memory_mib;
        }
      }
    }
    if (stats.Has("guests")) {
      UW_ASSIGN_OR_RETURN(auto gs, stats.Objects("guests"));
      for (const auto& g : gs) {
        UW_ASSIGN_OR_RETURN(std::string gname, g.String("name"));
        UW_ASSIGN_OR_RETURN(double cores, g.Number("cpu_cores", 0));
        UW_ASSIGN_OR_RETURN(int64_t mib, g.Int("memory_used_mib", -1));
        if (!(cores >= 0 && cores <= 1e6)) return g.FieldError("cpu_cores", "expected 0..1000000");
        if (mib < -1 || mib > kMaxReportedMib) return g.FieldError("memory_used_mib", "expected -1..2^40");
        usage.guests[gname] = {cores, mib};
        usage.cpu_cores += cores;
        if (mib > 0) usage.memory_mib += mib;
      }
    }
  }
  Json guests = Json::array();
  if (v.Has("guests")) {
    UW_ASSIGN_OR_RETURN(auto gs, v.Objects("guests"));
    for (const auto& g : gs) {
      UW_RETURN_IF_ERROR(CheckReportedGuest(g));
      guests.push_back(g.json());
    }
  }
  const bool was_disconnected = session->state == "disconnected";
  // Reconcile first so that guests found now get their usage below.
  if (v.Has("guests")) Reconcile(std::string(name), guests);
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(d_.hosts.RecordHeartbeat(name, NowMs(), usage));
    if (was_disconnected) UW_RETURN_IF_ERROR(d_.events.Add("host.reconnected", name, "", Json::object()));
    // Every beat, not only the first after a silence: a host woken through its agent (Wake-on-LAN
    // infers "on" from the agent answering) may beat before the power operation has recorded
    // "waking", and its later beats are the ones that complete the wake.
    if (d_.power_heard) UW_RETURN_IF_ERROR(d_.power_heard(name, false));
    return Status::Ok();
  }));
  HeartbeatAck ack{std::string(name), "connected", d_.config.heartbeat_interval_ms};
  for (const auto& sample : usage.samples) ack.samples_through = std::max(ack.samples_through, sample.seq);
  return ack;
}

// A known guest as its host reports it now: health, state, and what a change of state sets off
// (events; a crash is recorded and its policy queued in `crashed`). Inside Reconcile's transaction.
Status HostSessions::UpdateReportedGuest(const std::string& host, const KnownGuest& r, const Json& g, int64_t now,
                                         std::vector<CrashedGuest>& crashed) {
  const std::string& name = r.name;
  std::string state = g.value("state", "unknown");
  const std::string health = g.value("health", "");
  // A running guest whose control channel stopped answering is not running for the operator.
  if (state == "running" && health == "unresponsive") state = "unresponsive";
  if (health != r.health) UW_RETURN_IF_ERROR(d_.guests.SetHealth(name, health));
  // The guest asked its daemon what it holds (uw-holdings --ask): it is sent its holdings again.
  if (auto asked = g.find("asked_at_ms"); asked != g.end() && asked->is_number_integer() && d_.asked) {
    d_.asked(name, asked->get<int64_t>());
  }
  if (state != r.state) {
    UW_RETURN_IF_ERROR(d_.guests.SetState(name, state, now));
    UW_RETURN_IF_ERROR(
        d_.events.Add("guest.changed", name, r.tenant, {{"host", host}, {"was", r.state}, {"now", state}}));
    if (state == "unresponsive") {
      UW_RETURN_IF_ERROR(d_.events.Add("guest.unresponsive", name, r.tenant,
                                       {{"host", host},
                                        {"since", g.value("unresponsive_since", Json())},
                                        {"reason", "its control channel has not answered"}}));
    } else if (r.state == "unresponsive" && state == "running") {
      UW_RETURN_IF_ERROR(d_.events.Add("guest.responsive", name, r.tenant, {{"host", host}}));
    }
    if (state == "crashed") {
      Json crash = r.crash.is_object() ? r.crash : Json::object();
      const Json reported_crash = g.value("crash", Json::object());
      crash["at"] = reported_crash.value("at", now);
      crash["console_tail"] = reported_crash.value("console_tail", "");
      crash["host"] = host;
      UW_RETURN_IF_ERROR(d_.guests.SetCrash(name, crash));
      UW_RETURN_IF_ERROR(
          d_.events.Add("guest.crashed", name, r.tenant,
                        {{"host", host}, {"on_crash", r.on_crash}, {"console_tail", crash["console_tail"]}}));
      crashed.push_back({name, host, r.tenant, r.on_crash});
    }
  }
  return Status::Ok();
}

Result<std::optional<std::string>> HostSessions::RecoveredFrom(const std::string& guest, const std::string& host) {
  UW_ASSIGN_OR_RETURN(auto rows, d_.store.Query("SELECT id FROM tasks WHERE kind = 'guest.recover' AND subject = ? AND "
                                                "state = 'succeeded' AND json_extract(request, '$.from') = ? "
                                                "ORDER BY updated_ms DESC LIMIT 1",
                                                {guest, host}));
  if (rows.empty()) return std::optional<std::string>();
  return std::optional<std::string>(rows[0].Str("id"));
}

void HostSessions::Reconcile(const std::string& host, const Json& reported) {
  std::map<std::string, Json> seen;
  for (const auto& g : reported) seen[g["name"].get<std::string>()] = g;
  std::vector<CrashedGuest> crashed;  // newly crashed: their on_crash policy runs after the transaction
  struct Leftover {
    std::string guest, migration, recovery;  // the move or the HA restart (guest.recover task) that left it
  };
  std::vector<Leftover> leftovers;  // removed after the transaction
  Status s = d_.store.Transact([&]() -> Status {
    // Guests with a task in flight are the task's business.
    UW_ASSIGN_OR_RETURN(const std::set<std::string> busy, d_.tasks.SubjectsInFlight());
    // A heartbeat's guest list may have been read before a task that just ended changed the guest
    // (a create saw "paused" while libvirt was still starting it): the task's word stands until the
    // next heartbeats have had time to see it.
    UW_ASSIGN_OR_RETURN(const std::set<std::string> recent,
                        d_.tasks.SubjectsEndedSince(NowMs() - 2 * int64_t{d_.config.heartbeat_interval_ms}));
    UW_ASSIGN_OR_RETURN(std::vector<KnownGuest> known, d_.guests.OnHost(host));
    int64_t now = NowMs();
    for (const auto& r : known) {
      const std::string& name = r.name;
      if (busy.count(name) || recent.count(name)) {
        seen.erase(name);
        continue;
      }
      auto it = seen.find(name);
      if (it == seen.end()) {
        if (r.state != "lost") {
          UW_RETURN_IF_ERROR(d_.guests.SetState(name, "lost", now));
          UW_RETURN_IF_ERROR(d_.events.Add(
              "guest.lost", name, r.tenant,
              {{"host", host}, {"was", r.state}, {"reason", "the host's agent no longer reports this guest"}}));
        }
        continue;
      }
      UW_RETURN_IF_ERROR(UpdateReportedGuest(host, r, it->second, now, crashed));
      seen.erase(it);
    }
    for (const auto& [name, g] : seen) {
      if (busy.count(name)) continue;
      // A guest the manager does not know on this host: record it (unowned) so capacity is counted.
      UW_ASSIGN_OR_RETURN(std::optional<Guest> other, d_.guests.Find(name));
      if (other) {
        const std::string other_host = other->host.value_or("");
        // The shut-off definition libvirt leaves on the source of a move that nobody confirmed there
        // (its agent was down when the move ended) is a leftover, not a second guest.
        UW_ASSIGN_OR_RETURN(std::optional<std::string> moved_away, MigrationTable(d_.store).LastDoneFrom(name, host));
        // Likewise the definition a fenced host kept of a guest HA restarted elsewhere.
        std::optional<std::string> recovered;
        if (!moved_away) {
          UW_ASSIGN_OR_RETURN(recovered, RecoveredFrom(name, host));
        }
        if (g.value("state", "") == "shutoff" && (moved_away || recovered) && other_host != host) {
          leftovers.push_back({name, moved_away.value_or(""), recovered.value_or("")});
          continue;
        }
        UW_RETURN_IF_ERROR(RaiseDuplicate(name, host, other_host));
        continue;
      }
      // A heartbeat read before a delete that just ended still lists the guest: it is gone, not
      // found (adopting it made a ghost that took the name).
      if (recent.count(name)) continue;
      // A tenant's guest is named TENANT:NAME on its host: found again, it is still the tenant's.
      const std::string owner = name.find(':') == std::string::npos ? "" : name.substr(0, name.find(':'));
      int64_t vcpus = std::max<int64_t>(1, g.value("max_vcpus", g.value("vcpus", 1)));
      int64_t mem = std::max<int64_t>(1, g.value("max_memory_mib", g.value("memory_mib", 1)));
      Json spec = {{"name", name},       {"kind", g.value("kind", "qemu")},          {"vcpus", g.value("vcpus", 1)},
                   {"max_vcpus", vcpus}, {"memory_mib", g.value("memory_mib", mem)}, {"max_memory_mib", mem}};
      UW_RETURN_IF_ERROR(d_.guests.AddFound({.name = name,
                                             .tenant = owner,
                                             .host = host,
                                             .kind = g.value("kind", "qemu"),
                                             .state = g.value("state", "unknown"),
                                             .vcpus = vcpus,
                                             .memory_mib = mem,
                                             .spec = spec,
                                             .now_ms = now}));
      UW_RETURN_IF_ERROR(
          d_.events.Add("guest.found", name, owner, {{"host", host}, {"state", g.value("state", "unknown")}}));
      UW_RETURN_IF_ERROR(d_.open_lease(name, now, "found on host " + host + " (not created through Underware)"));
    }
    return ClearDuplicates(host, reported);
  });
  if (!s.ok()) {
    spdlog::warn("reconciling host {}: {}", host, s.ToString());
    return;
  }
  for (const auto& c : crashed) {
    if (Status h = HandleCrash(c); !h.ok()) spdlog::warn("guest {} crashed on {}: {}", c.name, c.host, h.ToString());
  }
  for (const auto& [guest, migration, recovery] : leftovers) {
    const std::string by = recovery.empty() ? "migration " + migration : "HA restart " + recovery;
    Status del = d_.agent_of(host)->Delete(guest, false);
    if (!del.ok() && del.code() != StatusCode::kNotFound) {
      spdlog::warn("removing the shut-off copy of {} that {} left on {}: {}", guest, by, host, del.ToString());
      continue;
    }
    Status recorded =
        recovery.empty()
            ? d_.events.Add("migration.leftover_removed", guest, "",
                            {{"host", host},
                             {"migration", migration},
                             {"reason", "the source kept a shut-off definition after the move (its agent was down)"}})
            : d_.events.Add("ha.leftover_removed", guest, "",
                            {{"host", host},
                             {"task", recovery},
                             {"reason",
                              "the fenced host kept a shut-off definition of a guest HA restarted "
                              "elsewhere"}});
    if (!recorded.ok())
      spdlog::warn("recording the removal of {}'s leftover on {}: {}", guest, host, recorded.ToString());
  }
}

// The guest's on_crash policy: restart (where it was, at most kCrashRestarts times in
// kCrashWindowMs; then it stays crashed with a guest.crash_loop event), stop (power it off, keep
// the definition) or keep (leave the crashed domain for inspection).
Status HostSessions::HandleCrash(const CrashedGuest& c) {
  constexpr int kCrashRestarts = 3;
  constexpr int64_t kCrashWindowMs = int64_t{10} * 60 * 1000;
  if (c.on_crash == "keep") return Status::Ok();
  if (c.on_crash == "stop") {
    return d_
        .new_task(
            "guest.stop", c.name, c.tenant,
            {{"guest", c.name}, {"host", c.host}, {"args", {{"force", true}}}, {"reason", "crashed (on_crash: stop)"}})
        .status();
  }
  const int64_t now = NowMs();
  int attempt = 0;
  Status s = d_.store.Transact([&]() -> Status {
    UW_ASSIGN_OR_RETURN(Json crash, d_.guests.CrashOf(c.name));
    if (!crash.is_object()) crash = Json::object();
    Json recent = Json::array();
    for (const auto& t : crash.value("restarts", Json::array())) {
      if (t.is_number_integer() && now - t.get<int64_t>() < kCrashWindowMs) recent.push_back(t);
    }
    if (static_cast<int>(recent.size()) >= kCrashRestarts) {
      crash["restarts"] = recent;
      UW_RETURN_IF_ERROR(d_.guests.SetCrash(c.name, crash));
      return d_.events.Add("guest.crash_loop", c.name, c.tenant,
                           {{"host", c.host},
                            {"reason", "crashed " + std::to_string(recent.size() + 1) +
                                           " times in 10 minutes; left crashed "
                                           "for inspection (restart it by hand: uwctl guest start)"}});
    }
    recent.push_back(now);
    crash["restarts"] = recent;
    attempt = static_cast<int>(recent.size());
    UW_RETURN_IF_ERROR(d_.guests.SetCrash(c.name, crash));
    return d_.events.Add(
        "guest.restarting", c.name, c.tenant,
        {{"host", c.host}, {"attempt", attempt}, {"of", kCrashRestarts}, {"reason", "crashed (on_crash: restart)"}});
  });
  UW_RETURN_IF_ERROR(s);
  if (attempt == 0) return Status::Ok();
  return d_.new_task("guest.restart", c.name, c.tenant, {{"guest", c.name}, {"host", c.host}, {"reason", "crashed"}})
      .status();
}

Status HostSessions::RaiseDuplicate(const std::string& guest, const std::string& host, const std::string& known_on) {
  UW_ASSIGN_OR_RETURN(GuestTable::Alerted g, d_.guests.AlertOf(guest));
  Json alert = std::move(g.alert);
  if (!alert.is_object() || alert.value("type", "") != "duplicate") {
    alert = {{"type", "duplicate"},
             {"known_on", known_on},
             {"also_on", Json::array()},
             {"since", FormatRfc3339(d_.clock.Now())},
             {"reason", "a guest of this name runs on two hosts"}};
  }
  for (const auto& h : alert["also_on"]) {
    if (h == host) return Status::Ok();  // raised already: one event, not one per heartbeat
  }
  alert["also_on"].push_back(host);
  UW_RETURN_IF_ERROR(d_.guests.SetAlert(guest, alert));
  return d_.events.Add("guest.duplicate", guest, g.tenant,
                       {{"host", host}, {"known_on", known_on}, {"reason", "a guest of this name runs on two hosts"}});
}

Status HostSessions::ClearDuplicates(const std::string& host, const Json& reported) {
  std::set<std::string> here;
  for (const auto& g : reported) here.insert(g.value("name", ""));
  UW_ASSIGN_OR_RETURN(auto alerted, d_.guests.WithAlerts());
  for (auto& r : alerted) {
    Json& alert = r.alert;
    if (!alert.is_object() || alert.value("type", "") != "duplicate" || here.count(r.name)) continue;
    Json& also = alert["also_on"];
    const size_t before = also.size();
    also.erase(std::remove(also.begin(), also.end(), Json(host)), also.end());
    if (also.size() == before) continue;
    if (also.empty()) {
      UW_RETURN_IF_ERROR(d_.guests.SetAlert(r.name, Json()));
      UW_RETURN_IF_ERROR(d_.events.Add("guest.duplicate_cleared", r.name, r.tenant,
                                       {{"host", host}, {"reason", "the second copy is gone; the guest runs once"}}));
    } else {
      UW_RETURN_IF_ERROR(d_.guests.SetAlert(r.name, alert));
    }
  }
  return Status::Ok();
}

void HostSessions::CheckHeartbeats() {
  auto overdue = d_.hosts.OverdueSince(NowMs() - d_.config.heartbeat_timeout_ms);
  if (!overdue.ok()) return;
  for (const auto& h : *overdue) {
    bool disconnected = false;
    Status s = d_.store.Transact([&]() -> Status {
      UW_ASSIGN_OR_RETURN(disconnected, d_.hosts.Disconnect(h.name));
      if (!disconnected) return Status::Ok();  // it heartbeat in between
      return d_.events.Add("host.disconnected", h.name, "",
                           {{"reason", "no heartbeat for " + std::to_string(NowMs() - h.last_heartbeat_ms) + " ms"}});
    });
    if (s.ok() && disconnected) spdlog::warn("host {} disconnected (missed heartbeats)", h.name);
  }
}

}  // namespace uw::manager::internal
