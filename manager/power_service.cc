#include "manager/power_service.h"

#include <spdlog/spdlog.h>

#include "manager/event_log.h"
#include "manager/guest_table.h"
#include "manager/host_table.h"
#include "manager/task_journal.h"

namespace uw::manager::internal {

namespace {

constexpr auto kBmcPoll = std::chrono::milliseconds(500);
// A driver whose power-on may be lost (wol: a UDP packet, or one that reaches a host still shutting
// down, whose NIC is not listening yet) is asked again this often until the host is on.
constexpr auto kRepeatOnEvery = std::chrono::seconds(2);

std::string Quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

}  // namespace

int64_t PowerService::NowMs() const { return ToUnixMillis(d_.clock.Now()); }

Result<std::optional<PowerService::Row>> PowerService::Find(std::string_view host) {
  UW_RETURN_IF_ERROR(d_.hosts.Require(host));
  UW_ASSIGN_OR_RETURN(auto rows, d_.store.Query("SELECT config, phase, phase_since_ms, wake_tested_ms, last_error "
                                                "FROM host_power WHERE host = ?",
                                                {std::string(host)}));
  if (rows.empty()) return std::optional<Row>();
  const SqlRow& r = rows[0];
  Row row;
  auto config = power::ParsePowerConfig(r.JsonOf("config"));
  if (!config.ok())
    return InternalError("host " + Quoted(host) + ": stored power driver: " + config.status().message());
  row.config = std::move(*config);
  row.phase = r.Str("phase");
  row.phase_since_ms = r.Int("phase_since_ms");
  if (!r.IsNull("wake_tested_ms")) row.wake_tested_ms = r.Int("wake_tested_ms");
  row.last_error = r.Str("last_error");
  return std::optional<Row>(std::move(row));
}

Result<PowerService::Row> PowerService::Load(std::string_view host) {
  UW_ASSIGN_OR_RETURN(std::optional<Row> row, Find(host));
  if (!row) {
    return FailedPreconditionError("host " + Quoted(host) + " has no power driver: set one first (PUT /api/v1/hosts/" +
                                   std::string(host) + "/power-driver, uwctl host power-driver set)");
  }
  return std::move(*row);
}

power::DriverContext PowerService::Context(std::string_view host) const {
  power::DriverContext c;
  c.ipmitool = d_.config.ipmitool;
  if (d_.agent_of) {
    const std::string name(host);
    c.agent_ping = [this, name] { return d_.agent_of(name)->Ping(); };
    c.agent_shutdown = [this, name] { return d_.agent_of(name)->ShutdownHost(); };
  }
  return c;
}

Result<HostPower> PowerService::Get(std::string_view host, bool ask_bmc) {
  UW_ASSIGN_OR_RETURN(std::optional<Row> row, Find(host));
  HostPower p;
  p.host = std::string(host);
  if (!row) return p;
  p.driver = power::PowerConfigJson(row->config, power::Secrets::kRedacted);
  p.phase = row->phase;
  p.phase_since_ms = row->phase_since_ms;
  p.wake_tested_ms = row->wake_tested_ms;
  p.last_error = row->last_error;
  if (ask_bmc) {
    auto driver = power::MakePowerDriver(row->config, std::string(host), Context(host));
    auto state = driver.ok() ? (*driver)->Status() : Result<power::PowerState>(driver.status());
    if (state.ok()) {
      p.bmc = std::string(power::PowerStateName(*state));
    } else {
      p.bmc_error = state.status().message();
    }
  }
  return p;
}

Result<HostPower> PowerService::SetDriver(std::string_view host, const Json& body) {
  std::lock_guard l(act_mu_);
  UW_ASSIGN_OR_RETURN(std::optional<Row> old, Find(host));
  // An isolated host whose fence failed (wrong credentials...) needs its driver fixed: allowed.
  if (old && old->phase != "on" && old->phase != "standby" && old->phase != "isolated" && old->phase != "failed") {
    return FailedPreconditionError("host " + Quoted(host) + " is " + old->phase +
                                   ": change its power driver when the operation has ended");
  }
  UW_ASSIGN_OR_RETURN(power::PowerConfig config, power::ParsePowerConfig(body, old ? &old->config : nullptr));
  const int64_t now = NowMs();
  const Json stored = power::PowerConfigJson(config, power::Secrets::kIncluded);
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    // A new driver has not been shown to wake the host: its wake path is tested again.
    UW_RETURN_IF_ERROR(d_.store.Exec(
        "INSERT INTO host_power(host, config, phase, phase_since_ms, updated_ms) VALUES (?, ?, 'on', ?, ?) "
        "ON CONFLICT(host) DO UPDATE SET config = excluded.config, wake_tested_ms = NULL, last_error = NULL, "
        "updated_ms = excluded.updated_ms",
        {std::string(host), stored.dump(), now, now}));
    return d_.events.Add("host.power_driver_set", host, "", power::PowerConfigJson(config, power::Secrets::kRedacted));
  }));
  return Get(host, false);
}

Status PowerService::DeleteDriver(std::string_view host) {
  std::lock_guard l(act_mu_);
  UW_ASSIGN_OR_RETURN(Row row, Load(host));
  if (row.phase != "on") {
    return FailedPreconditionError("host " + Quoted(host) + " is " + row.phase +
                                   ": its power driver is what brings it back; power it on first");
  }
  return d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(d_.store.Exec("DELETE FROM host_power WHERE host = ?", {std::string(host)}));
    return d_.events.Add("host.power_driver_removed", host, "", Json::object());
  });
}

Status PowerService::SetPhase(std::string_view host, std::string_view phase, std::string_view error) {
  const int64_t now = NowMs();
  return d_.store.Exec(
      "UPDATE host_power SET phase = ?, phase_since_ms = ?, last_error = ?, updated_ms = ? WHERE host = ?",
      {std::string(phase), now, error.empty() ? SqlValue(nullptr) : SqlValue(std::string(error)), now,
       std::string(host)});
}

Status PowerService::Failed(std::string_view host, std::string_view action, std::string_view back_to,
                            const Status& bmc_said) {
  // The BMC refusing the manager's credentials is the power driver's to fix, not the API caller's
  // token (which a 401 would blame).
  const Status why = bmc_said.code() == StatusCode::kUnauthenticated
                         ? FailedPreconditionError(bmc_said.message() + "; fix the host's power driver")
                         : bmc_said;
  spdlog::warn("power {} of host {}: {}", action, host, why.ToString());
  Status s = d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(SetPhase(host, back_to, why.message()));
    return d_.events.Add(
        "host.power_failed", host, "",
        {{"action", action}, {"error", why.message()}, {"code", StatusCodeName(why.code())}, {"phase", back_to}});
  });
  if (!s.ok()) spdlog::error("recording the failed power {} of {}: {}", action, host, s.ToString());
  return why;
}

Status PowerService::WaitFor(power::PowerDriver& driver, power::PowerState want, const std::string& host,
                             int timeout_ms) {
  const auto start = d_.clock.Monotonic();
  const auto budget = std::chrono::milliseconds(std::max(30000, 2 * timeout_ms));
  Status last = Status::Ok();
  auto asked = start;
  for (;;) {
    auto s = driver.Status();
    if (s.ok() && *s == want) return Status::Ok();
    last = s.ok() ? Status::Ok() : s.status();
    const auto now = d_.clock.Monotonic();
    if (now - start >= budget) break;
    if (want == power::PowerState::kOn && driver.RepeatsOn() && now - asked >= kRepeatOnEvery) {
      asked = now;
      if (Status again = driver.On(); !again.ok()) last = again;
    }
    if (!d_.sleep(kBmcPoll)) return UnavailableError("the manager is stopping");
  }
  std::string why = "host " + Quoted(host) + " (" + driver.Describe() + "): the BMC still does not report " +
                    std::string(power::PowerStateName(want)) + " after " +
                    std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(budget).count()) + " ms";
  if (!last.ok()) why += " (last answer: " + last.message() + ")";
  return DeadlineExceededError(why);
}

Status PowerService::MayPowerOff(std::string_view host) {
  UW_ASSIGN_OR_RETURN(std::vector<std::string> guests, d_.guests.NamesOn(host));
  if (!guests.empty()) {
    std::string names;
    for (size_t i = 0; i < guests.size() && i < 5; ++i) names += (i ? ", " : "") + guests[i];
    if (guests.size() > 5) names += ", ...";
    return FailedPreconditionError("host " + Quoted(host) + " still has " + std::to_string(guests.size()) +
                                   " guest(s) (" + names + "): put it in maintenance to evacuate it first");
  }
  UW_ASSIGN_OR_RETURN(auto incoming,
                      d_.store.Query("SELECT name FROM guests WHERE migrating_to = ? LIMIT 1", {std::string(host)}));
  if (!incoming.empty()) {
    return FailedPreconditionError("host " + Quoted(host) + " is in another operation: guest '" +
                                   incoming[0].Str("name") + "' is moving to it");
  }
  UW_ASSIGN_OR_RETURN(std::vector<Task> moves, d_.tasks.Unfinished("guest.migrate"));
  for (const Task& t : moves) {
    if (t.request.value("from", "") == host || t.request.value("to", "") == host) {
      return FailedPreconditionError("host " + Quoted(host) + " is in another operation: task " + t.id +
                                     " moves guest '" + t.subject + "'");
    }
  }
  UW_ASSIGN_OR_RETURN(auto others,
                      d_.store.Query("SELECT COUNT(*) AS n FROM hosts h LEFT JOIN host_power p ON p.host = h.name "
                                     "WHERE h.state = 'connected' AND COALESCE(p.phase, 'on') = 'on' AND h.name != ?",
                                     {std::string(host)}));
  if (others.empty() || others[0].Int("n") == 0) {
    return FailedPreconditionError("host " + Quoted(host) + " is the last host on: the cluster would have none");
  }
  return Status::Ok();
}

Result<HostPower> PowerService::Act(std::string_view host, std::string_view action) {
  if (action != "on" && action != "off" && action != "cycle") {
    return InvalidArgumentError("action: expected on, off or cycle, got '" + std::string(action) + "'");
  }
  std::lock_guard l(act_mu_);
  UW_ASSIGN_OR_RETURN(Row row, Load(host));
  UW_ASSIGN_OR_RETURN(std::unique_ptr<power::PowerDriver> driver,
                      power::MakePowerDriver(row.config, std::string(host), Context(host)));
  const std::string name(host);
  if (row.phase == "entering_standby" || row.phase == "waking" || row.phase == "fencing") {
    return FailedPreconditionError("host " + Quoted(host) + " is in another power operation (" + row.phase + ")");
  }
  if (row.phase == "isolated" && action != "on") {
    return FailedPreconditionError("host " + Quoted(host) +
                                   " is isolated (silent, its BMC says on): HA fences it (powers it off) once "
                                   "its isolation time has passed");
  }
  const auto start = d_.clock.Monotonic();
  auto took_ms = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d_.clock.Monotonic() - start).count();
  };
  if (action == "on") {
    if (row.phase == "on") {
      UW_ASSIGN_OR_RETURN(HostTable::Session session, d_.hosts.SessionOf(host));
      if (session.state == "connected") return FailedPreconditionError("host " + Quoted(host) + " is on already");
    }
    if (Status s = driver->On(); !s.ok()) return Failed(host, action, row.phase, s);
    if (Status s = WaitFor(*driver, power::PowerState::kOn, name, row.config.timeout_ms); !s.ok())
      return Failed(host, action, row.phase, s);
    UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(SetPhase(host, "waking", ""));
      return d_.events.Add("host.waking", host, "", {{"bmc", driver->Describe()}, {"took_ms", took_ms()}});
    }));
    spdlog::info("host {} powered on through {} in {} ms; waiting for its agent", host, driver->Describe(), took_ms());
    return Get(host, false);
  }
  if (row.phase == "standby" || row.phase == "failed") {
    return FailedPreconditionError("host " + Quoted(host) + " is " +
                                   (row.phase == "failed" ? "failed (fenced" : "in standby (") + ": off) already");
  }
  UW_RETURN_IF_ERROR(MayPowerOff(host));
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(SetPhase(host, action == "off" ? "entering_standby" : "waking", ""));
    return d_.events.Add(action == "off" ? "host.entering_standby" : "host.power_cycling", host, "",
                         {{"bmc", driver->Describe()}});
  }));
  if (action == "cycle") {
    if (Status s = driver->Cycle(); !s.ok()) return Failed(host, action, "on", s);
    return Get(host, false);
  }
  if (Status s = driver->Off(); !s.ok()) return Failed(host, action, "on", s);
  if (Status s = WaitFor(*driver, power::PowerState::kOff, name, row.config.timeout_ms); !s.ok())
    return Failed(host, action, "on", s);
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(SetPhase(host, "standby", ""));
    UW_RETURN_IF_ERROR(d_.hosts.PoweredOff(host));  // no heartbeat is due from a host that is off
    return d_.events.Add("host.standby", host, "", {{"bmc", driver->Describe()}, {"took_ms", took_ms()}});
  }));
  spdlog::info("host {} is in standby (powered off through {} in {} ms)", host, driver->Describe(), took_ms());
  return Get(host, false);
}

Status PowerService::Heard(std::string_view host, bool joined) {
  UW_ASSIGN_OR_RETURN(
      auto rows, d_.store.Query("SELECT phase, phase_since_ms FROM host_power WHERE host = ?", {std::string(host)}));
  if (rows.empty()) return Status::Ok();
  const std::string phase = rows[0].Str("phase");
  if (phase == "isolated" || phase == "failed") {
    // Back before it was fenced (nothing was restarted), or a fenced host powered on again.
    UW_RETURN_IF_ERROR(SetPhase(host, "on", ""));
    return d_.events.Add(
        phase == "isolated" ? "host.recovered" : "host.back", host, "",
        {{"reason", phase == "isolated" ? "it heartbeats again before it was fenced; none of its guests was restarted "
                                          "elsewhere"
                                        : "the fenced host is back; guests restarted elsewhere stay there (their "
                                          "copies here are removed)"}});
  }
  if (phase != "waking" && !(joined && phase == "standby")) return Status::Ok();
  const int64_t now = NowMs();
  if (phase == "waking") {
    UW_RETURN_IF_ERROR(
        d_.store.Exec("UPDATE host_power SET phase = 'on', phase_since_ms = ?, wake_tested_ms = ?, "
                      "last_error = NULL, updated_ms = ? WHERE host = ?",
                      {now, now, now, std::string(host)}));
    return d_.events.Add("host.woken", host, "", {{"wake_ms", now - rows[0].Int("phase_since_ms")}});
  }
  UW_RETURN_IF_ERROR(SetPhase(host, "on", ""));
  return d_.events.Add("host.power_on_detected", host, "",
                       {{"reason",
                         "the host's agent joined while the host was in standby (powered on outside the "
                         "manager)"}});
}

Status PowerService::Isolate(std::string_view host, std::string_view why) {
  std::lock_guard l(act_mu_);
  UW_ASSIGN_OR_RETURN(Row row, Load(host));
  if (row.phase != "on" && row.phase != "failed") {
    return FailedPreconditionError("host " + Quoted(host) + " is " + row.phase + ", not on: it cannot be isolated");
  }
  return d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(SetPhase(host, "isolated", ""));
    return d_.events.Add("host.isolated", host, "", {{"reason", why}});
  });
}

Status PowerService::NoteError(std::string_view host, std::string_view error) {
  return d_.store.Exec("UPDATE host_power SET last_error = ?, updated_ms = ? WHERE host = ?",
                       {std::string(error), NowMs(), std::string(host)});
}

Result<int64_t> PowerService::Fence(std::string_view host, std::string_view why) {
  std::lock_guard l(act_mu_);
  UW_ASSIGN_OR_RETURN(Row row, Load(host));
  if (row.phase != "on" && row.phase != "isolated") {
    return FailedPreconditionError("host " + Quoted(host) + " is " + row.phase +
                                   ": only a host that is on or isolated is fenced");
  }
  UW_ASSIGN_OR_RETURN(std::unique_ptr<power::PowerDriver> driver,
                      power::MakePowerDriver(row.config, std::string(host), Context(host)));
  if (!driver->ConfirmsOff()) {
    return FailedPreconditionError("host " + Quoted(host) + "'s power driver (" + driver->Describe() +
                                   ") cannot confirm that the host is off, which fencing needs: set an ipmi, "
                                   "redfish or exec driver");
  }
  const auto start = d_.clock.Monotonic();
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(SetPhase(host, "fencing", ""));
    return d_.events.Add("host.fencing", host, "", {{"bmc", driver->Describe()}, {"reason", why}});
  }));
  Status s = driver->Off();
  if (s.ok()) s = WaitFor(*driver, power::PowerState::kOff, std::string(host), row.config.timeout_ms);
  const int64_t took = std::chrono::duration_cast<std::chrono::milliseconds>(d_.clock.Monotonic() - start).count();
  if (!s.ok()) {
    const std::string error = "fencing failed: " + s.message() + "; none of its guests is restarted elsewhere";
    spdlog::error("host {}: {}", host, error);
    UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(SetPhase(host, "isolated", error));
      return d_.events.Add("host.fence_failed", host, "",
                           {{"bmc", driver->Describe()},
                            {"error", s.message()},
                            {"code", StatusCodeName(s.code())},
                            {"reason", "none of its guests is restarted elsewhere until it is fenced"}});
    }));
    return s;
  }
  UW_RETURN_IF_ERROR(d_.store.Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(SetPhase(host, "failed", ""));
    UW_RETURN_IF_ERROR(d_.hosts.PoweredOff(host));
    return d_.events.Add("host.fenced", host, "", {{"bmc", driver->Describe()}, {"took_ms", took}, {"reason", why}});
  }));
  spdlog::warn("host {} fenced (powered off through {} in {} ms): {}", host, driver->Describe(), took, why);
  return took;
}

void PowerService::Check() {
  const int64_t now = NowMs();
  auto rows = d_.store.Query(
      "SELECT host, phase_since_ms FROM host_power WHERE phase = 'waking' AND last_error IS NULL AND phase_since_ms < "
      "?",
      {now - d_.config.power_wake_timeout_ms});
  if (!rows.ok()) return;
  for (const SqlRow& r : *rows) {
    const std::string host = r.Str("host");
    const std::string why = "the BMC reported the host on " + std::to_string((now - r.Int("phase_since_ms")) / 1000) +
                            " s ago but its agent has not joined";
    Status s = d_.store.Transact([&]() -> Status {
      UW_RETURN_IF_ERROR(
          d_.store.Exec("UPDATE host_power SET last_error = ?, updated_ms = ? WHERE host = ?", {why, now, host}));
      return d_.events.Add("host.wake_failed", host, "", {{"reason", why}});
    });
    if (s.ok()) spdlog::warn("host {}: {}", host, why);
  }
}

}  // namespace uw::manager::internal
