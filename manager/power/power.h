// Power drivers: switching a host on and off through its BMC or an operator's commands, for DPM
// (standby and wake) and HA (fencing). The manager stores each host's PowerConfig (secrets
// included) and never returns or logs its secrets: PowerConfigJson(..., kRedacted) is the only
// view that leaves the manager.
//
//   PowerConfig --MakePowerDriver--> PowerDriver::{Status, On, Off, Cycle}
//       --> ipmitool | Redfish over HTTPS | magic packet + the agent's shutdown | commands
//
// Drivers:
//   ipmi     ipmitool over LAN+ / RMCP+, the password passed in its environment, never on a command line;
//   redfish  the BMC's Redfish service (libcurl, HTTP Basic): the ComputerSystem's PowerState and its
//            ComputerSystem.Reset action (On, ForceOff, PowerCycle), the BMC's certificate checked
//            against `ca_cert` or the system's CAs (redfish.cc);
//   wol      Wake-on-LAN: on is a magic packet to the host's NIC; off is the host's own clean shutdown
//            through its agent (POST /api/v1/host/shutdown); the state is inferred from the agent
//            (answers: on; unreachable: off). It cannot confirm that a host is off (ConfirmsOff):
//            fine for DPM's standby, never enough to fence for HA (wol.cc);
//   exec     the operator's own commands.
//
// Every call has the config's timeout. Errors say which host, which driver and BMC, and why:
//   kUnauthenticated     the BMC refused the credentials;
//   kUnavailable         the BMC did not answer (retry later) or the program could not be started;
//   kDeadlineExceeded    the call ran out of time (the power state may or may not have changed);
//   kInternal            an answer the driver does not understand (quoted).
// On and Off ask for the change; they do not wait for it (callers poll Status).
//
// Thread safety: a PowerDriver's methods may be called from any thread at once.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace uw::power {

enum class PowerState { kOn, kOff };
std::string_view PowerStateName(PowerState s);  // "on" | "off"

struct PowerConfig {
  std::string driver;  // ipmi | redfish | wol | exec
  // ipmi: address, port (623), username, password, cipher_suite. redfish: username, password.
  std::string address;
  int port = 623;  // wol: the UDP port of the magic packet (9)
  std::string username;
  std::string password;  // secret
  int cipher_suite = 3;  // IPMI 2.0 cipher suite (3: HMAC-SHA1 + AES-CBC-128; 17: HMAC-SHA256)
  // redfish: the service's base URL (https://BMC[:port]); PEM certificates the BMC's must chain to
  // (empty: the system's CAs); the ComputerSystem's path (empty: the only member of
  // /redfish/v1/Systems).
  std::string url, ca_cert, system;
  // wol: the host NIC's MAC (aa:bb:cc:dd:ee:ff) and where the packet goes (a broadcast address).
  std::string mac, broadcast = "255.255.255.255";
  // exec: argv of each command. Status prints "on" or "off" (its first word); the others exit 0
  // on success. Each gets UW_HOST (the host's name) and UW_POWER_SECRET (`password`) in its
  // environment.
  std::vector<std::string> status_command, on_command, off_command, cycle_command;
  int timeout_ms = 15000;
};

// A PowerConfig from a request body or the stored row. `driver` must be one that is built;
// kInvalidArgument names the field. `keep_secret_from` (may be null): the config being replaced,
// whose password is kept when `v` has none (so a client that read the redacted view can change
// the address alone).
Result<PowerConfig> ParsePowerConfig(const Json& v, const PowerConfig* keep_secret_from = nullptr);
enum class Secrets { kIncluded, kRedacted };
// kRedacted: `password` is left out and `password_set` says whether there is one.
Json PowerConfigJson(const PowerConfig& c, Secrets secrets);

class PowerDriver {
 public:
  virtual ~PowerDriver() = default;
  virtual Result<PowerState> Status() = 0;
  virtual uw::Status On() = 0;
  virtual uw::Status Off() = 0;  // immediate (a BMC's hard off)
  virtual uw::Status Cycle() = 0;
  // "ipmi 10.77.0.1:623" or "exec": what error messages and events call the BMC.
  virtual std::string Describe() const = 0;
  // Whether Status() == kOff proves the host is off (what fencing needs). False for wol, which
  // infers it from an agent that stopped answering.
  virtual bool ConfirmsOff() const { return true; }
  // Whether a power-on may be lost and is to be repeated until Status says on (wol).
  virtual bool RepeatsOn() const { return false; }
};

// What a driver may need from the manager besides its config.
struct DriverContext {
  std::string ipmitool = "ipmitool";  // the program the ipmi driver runs (tests give it another)
  // wol: asks the host's agent whether it answers (GET /api/v1/host) and to shut the host down
  // (POST /api/v1/host/shutdown). Unset: the driver's Status and Off fail with kInternal.
  std::function<uw::Status()> agent_ping{}, agent_shutdown{};
};

// The driver for `config` on host `host`. kInvalidArgument for a driver that is not built.
Result<std::unique_ptr<PowerDriver>> MakePowerDriver(const PowerConfig& config, std::string host,
                                                     DriverContext context = {});

}  // namespace uw::power
