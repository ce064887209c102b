// Host power: each host's power driver (manager/power/power.h) and the power operations an
// operator (and later DPM and HA) carries out through it. Private to manager/ (Manager owns one,
// made by Start; its power calls are this class's).
//
//   PUT  /hosts/{name}/power-driver --> SetDriver --> host_power row (secrets stay in the store)
//   POST /hosts/{name}/power {off}  --> checks --> entering_standby --BMC off, confirmed--> standby
//   POST /hosts/{name}/power {on}   --> BMC on, confirmed --> waking --agent joins (Heard)--> on
//   monitor loop --> Check --> a host waking past power_wake_timeout_ms: host.wake_failed
//
// A host's phase is on | entering_standby | standby | waking, and for HA isolated | fencing |
// failed (ha_service.h: fenced, off, its guests restarted elsewhere); while it is not `on` the host lists
// with that phase as its state, and placement sees it as not usable. A power-on that ends with the
// agent back marks the host's wake path tested (what DPM requires before it picks a host).
//
// Thread safety: every method may be called from any thread; power operations are serialized
// (one at a time in the cluster, so that "the last host on" stays true while one is checked).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"
#include "manager/agent_client.h"
#include "manager/manager.h"
#include "manager/power/power.h"
#include "manager/store.h"

namespace uw::manager::internal {

class EventLog;
class GuestTable;
class HostTable;
class TaskJournal;

class PowerService {
 public:
  struct Deps {
    Store& store;
    EventLog& events;
    HostTable& hosts;
    GuestTable& guests;
    TaskJournal& tasks;
    Clock& clock;
    const ManagerConfig& config;  // power_wake_timeout_ms, ipmitool
    // Waits between polls of a BMC; false once the manager stops (Manager's poll sleeper).
    std::function<bool(Duration)> sleep;
    // The host's agent, for the wol driver (its state and its clean shutdown). May be unset.
    std::function<std::shared_ptr<AgentClient>(const std::string& host)> agent_of;
  };
  explicit PowerService(Deps deps) : d_(std::move(deps)) {}

  // Sets (replaces) the host's driver from a request body (power::ParsePowerConfig; a body without
  // a password keeps the stored one). kNotFound for an unknown host; kFailedPrecondition while the
  // host is in a power operation.
  Result<HostPower> SetDriver(std::string_view host, const Json& body);
  // kFailedPrecondition unless the host is on (a host in standby would be left with no way back).
  Status DeleteDriver(std::string_view host);
  // The host's power view; with `ask_bmc` the driver's status too (its error in bmc_error).
  Result<HostPower> Get(std::string_view host, bool ask_bmc);
  // action: on | off | cycle. Off and cycle need a host with no guests (on it or moving to it), no
  // move in flight, and another host on; off confirms through the BMC that the host is off and
  // leaves it in standby; on confirms that it is on and leaves it waking until its agent joins.
  // kFailedPrecondition names what is wrong; the driver's errors (power.h) are returned as they
  // are, with a host.power_failed event, and the host goes back to the phase it was in.
  Result<HostPower> Act(std::string_view host, std::string_view action);
  // Inside the transaction of a join (`joined`) or of a heartbeat after a silence: a waking host
  // (or, on a join, one in standby: powered on by someone else) is on again.
  Status Heard(std::string_view host, bool joined);
  // A waking host whose agent has not joined within power_wake_timeout_ms: one host.wake_failed.
  void Check();

  // HA (ha_service.h). A host that stopped heartbeating while its BMC says on: phase isolated,
  // with a host.isolated event saying why. kFailedPrecondition unless the host is on (phase), or
  // failed (fenced) but found still running by its storage heartbeat.
  Status Isolate(std::string_view host, std::string_view why);
  // Fencing: the host is powered off through its driver and the BMC is polled until it reports
  // off; the host is then `failed` (its guests may run elsewhere), with a host.fenced event. On
  // an error the host goes back to isolated with the error as its last_error and a
  // host.fence_failed event, and the error is returned. Returns how long it took (ms).
  Result<int64_t> Fence(std::string_view host, std::string_view why);
  // Inside a transaction: the error of a failed HA step kept with the host's power row.
  Status NoteError(std::string_view host, std::string_view error);

 private:
  // What the host's driver needs besides its config (ipmitool; the agent for wol).
  power::DriverContext Context(std::string_view host) const;
  struct Row {
    power::PowerConfig config;
    std::string phase;
    int64_t phase_since_ms = 0;
    std::optional<int64_t> wake_tested_ms;
    std::string last_error;
  };
  // kNotFound for an unknown host; nullopt when it has no driver.
  Result<std::optional<Row>> Find(std::string_view host);
  // Find, with kFailedPrecondition for a host with no driver.
  Result<Row> Load(std::string_view host);
  Status SetPhase(std::string_view host, std::string_view phase, std::string_view error);
  // Polls the BMC until it reports `want` for at most twice the driver's timeout (30 s at least).
  Status WaitFor(power::PowerDriver& driver, power::PowerState want, const std::string& host, int timeout_ms);
  // Why `host` may not be powered off now (FailedPrecondition), or OK.
  Status MayPowerOff(std::string_view host);
  Status Failed(std::string_view host, std::string_view action, std::string_view back_to, const Status& why);
  int64_t NowMs() const;

  Deps d_;
  std::mutex act_mu_;  // one power operation at a time
};

}  // namespace uw::manager::internal
