// Power drivers: switching a host on and off through its BMC or an operator's commands, for DPM
// (standby and wake) and HA (fencing). The manager stores each host's PowerConfig (secrets
// included) and never returns or logs its secrets: PowerConfigJson(..., kRedacted) is the only
// view that leaves the manager.
//
//   PowerConfig --MakePowerDriver--> PowerDriver::{Status, On, Off, Cycle} --> ipmitool | commands
//
// Drivers: `ipmi` (ipmitool over LAN+ / RMCP+, the password passed in its environment, never on
// a command line) and `exec` (the operator's own commands). Redfish and Wake-on-LAN are not built.
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
  std::string driver;  // ipmi | exec
  // ipmi
  std::string address;
  int port = 623;
  std::string username;
  std::string password;  // secret
  int cipher_suite = 3;  // IPMI 2.0 cipher suite (3: HMAC-SHA1 + AES-CBC-128; 17: HMAC-SHA256)
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
};

// The driver for `config` on host `host`. `ipmitool` is the program the ipmi driver runs (tests
// give it another). kInvalidArgument for a driver that is not built.
Result<std::unique_ptr<PowerDriver>> MakePowerDriver(const PowerConfig& config, std::string host,
                                                     std::string ipmitool = "ipmitool");

}  // namespace uw::power
