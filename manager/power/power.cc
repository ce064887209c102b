#include "manager/power/power.h"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

#include "common/command.h"
#include "manager/power/power_internal.h"

namespace uw::power {
namespace internal {

std::string LastLine(std::string text, const std::string& secret) {
  if (!secret.empty()) {
    for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at)) {
      text.replace(at, secret.size(), "***");
    }
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  const size_t nl = text.rfind('\n');
  std::string line = nl == std::string::npos ? text : text.substr(nl + 1);
  if (line.size() > 300) line = line.substr(0, 300) + "...";
  return line.empty() ? "(no output)" : line;
}

}  // namespace internal

namespace {

using internal::LastLine;

constexpr int kMaxTimeoutMs = 300000;

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

Status CheckArgv(const JsonView& v, std::string_view key, const std::vector<std::string>& argv, bool required) {
  if (argv.empty() && required) return v.FieldError(key, "expected the command as an array of strings (argv)");
  if (argv.size() > 64) return v.FieldError(key, "at most 64 arguments");
  for (const auto& a : argv) {
    if (a.size() > 4096 || a.find('\0') != std::string::npos)
      return v.FieldError(key, "arguments of at most 4096 bytes");
  }
  if (!argv.empty() && argv[0].empty()) return v.FieldError(key, "the program (first element) is empty");
  return Status::Ok();
}

Status ParseIpmiFields(const JsonView& v, PowerConfig& c) {
  UW_ASSIGN_OR_RETURN(c.address, v.String("address"));
  const bool address_ok = !c.address.empty() && c.address.size() <= 253 && c.address[0] != '-' &&
                          std::all_of(c.address.begin(), c.address.end(), [](unsigned char ch) {
                            return std::isalnum(ch) || ch == '.' || ch == '-' || ch == ':' || ch == '_';
                          });
  if (!address_ok) return v.FieldError("address", "expected a host name or an IP address");
  UW_ASSIGN_OR_RETURN(int64_t port, v.Int("port", c.port));
  if (port < 1 || port > 65535) return v.FieldError("port", "expected 1..65535");
  c.port = static_cast<int>(port);
  UW_ASSIGN_OR_RETURN(int64_t suite, v.Int("cipher_suite", c.cipher_suite));
  if (suite < 0 || suite > 17) return v.FieldError("cipher_suite", "expected 0..17");
  c.cipher_suite = static_cast<int>(suite);
  UW_ASSIGN_OR_RETURN(c.username, v.String("username"));
  if (c.username.empty() || c.username.size() > 16 || c.username[0] == '-') {
    return v.FieldError("username", "expected 1..16 characters (IPMI user names), not starting with '-'");
  }
  if (c.password.empty()) return v.FieldError("password", "required for ipmi");
  if (c.password.size() > 20) return v.FieldError("password", "at most 20 bytes for IPMI 2.0");
  return Status::Ok();
}

// ipmitool over LAN+ (IPMI 2.0 / RMCP+).
class IpmiDriver final : public PowerDriver {
 public:
  IpmiDriver(PowerConfig c, std::string host, std::string program)
      : c_(std::move(c)), host_(std::move(host)), program_(std::move(program)) {}

  Result<PowerState> Status() override {
    auto out = Chassis("status");
    if (!out.ok()) return out.status();
    const std::string s = Lower(*out);
    if (s.find("chassis power is on") != std::string::npos) return PowerState::kOn;
    if (s.find("chassis power is off") != std::string::npos) return PowerState::kOff;
    return InternalError(Prefix() + "unexpected answer to 'chassis power status': " + LastLine(*out, c_.password));
  }
  uw::Status On() override { return Chassis("on").status(); }
  uw::Status Off() override { return Chassis("off").status(); }
  uw::Status Cycle() override { return Chassis("cycle").status(); }
  std::string Describe() const override { return "ipmi " + c_.address + ":" + std::to_string(c_.port); }

 private:
  std::string Prefix() const { return "host '" + host_ + "' (" + Describe() + "): "; }

  Result<std::string> Chassis(const std::string& verb) {
    // -N/-R: ipmitool's own per-try timeout and retries, inside the overall deadline.
    const int per_try_s = std::max(1, c_.timeout_ms / 3000);
    // -v: only then does ipmitool say why a session failed (RAKP 2 HMAC is invalid: wrong
    // password; Get Auth Capabilities error: nothing answered). -C: without it ipmitool 1.8.19
    // first asks for the cipher suites, which some BMCs (ipmi_sim) never answer: ~10 s per call.
    std::vector<std::string> argv = {program_, "-v", "-I", "lanplus", "-C", std::to_string(c_.cipher_suite)};
    for (const std::string& a :
         {std::string("-H"), c_.address, std::string("-p"), std::to_string(c_.port), std::string("-U"), c_.username,
          std::string("-E"), std::string("-N"), std::to_string(per_try_s), std::string("-R"), std::string("2"),
          std::string("chassis"), std::string("power"), verb}) {
      argv.push_back(a);
    }
    auto r = RunCommand(argv, {{"IPMI_PASSWORD", c_.password}}, std::chrono::milliseconds(c_.timeout_ms));
    if (!r.ok()) {
      return uw::Status(r.status().code(), Prefix() + "chassis power " + verb + ": " + r.status().message());
    }
    if (r->exit_code == 0) return r->out;
    const std::string why = LastLine(r->err.empty() ? r->out : r->err, c_.password);
    const std::string all = Lower(r->err + r->out);
    for (const char* refusal : {"rakp 2 hmac is invalid", "unauthorized name", "invalid user",
                                "rakp 2 message indicates", "insufficient privilege", "invalid session id"}) {
      if (all.find(refusal) != std::string::npos) {
        return UnauthenticatedError(Prefix() + "the BMC refused the credentials (" + refusal + "): " + why);
      }
    }
    if (all.find("get auth capabilities error") != std::string::npos) {
      return UnavailableError(Prefix() + "the BMC did not answer: " + why);
    }
    return UnavailableError(Prefix() + "chassis power " + verb + " failed: " + why);
  }

  PowerConfig c_;
  std::string host_, program_;
};

// The operator's own commands.
class ExecDriver final : public PowerDriver {
 public:
  ExecDriver(PowerConfig c, std::string host) : c_(std::move(c)), host_(std::move(host)) {}

  Result<PowerState> Status() override {
    auto out = Run("status", c_.status_command);
    if (!out.ok()) return out.status();
    std::string word = Lower(*out);
    word.erase(0, std::min(word.size(), word.find_first_not_of(" \t\r\n")));
    word = word.substr(0, word.find_first_of(" \t\r\n"));
    if (word == "on") return PowerState::kOn;
    if (word == "off") return PowerState::kOff;
    return InternalError(Prefix() + "the status command printed '" + LastLine(*out, c_.password) +
                         "', expected 'on' or 'off'");
  }
  uw::Status On() override { return Run("on", c_.on_command).status(); }
  uw::Status Off() override { return Run("off", c_.off_command).status(); }
  uw::Status Cycle() override {
    if (c_.cycle_command.empty()) return UnimplementedError(Prefix() + "no cycle_command is configured");
    return Run("cycle", c_.cycle_command).status();
  }
  std::string Describe() const override { return "exec"; }

 private:
  std::string Prefix() const { return "host '" + host_ + "' (exec): "; }

  Result<std::string> Run(const std::string& what, const std::vector<std::string>& argv) {
    auto r = RunCommand(argv, {{"UW_HOST", host_}, {"UW_POWER_SECRET", c_.password}},
                        std::chrono::milliseconds(c_.timeout_ms));
    if (!r.ok()) return uw::Status(r.status().code(), Prefix() + what + "_command: " + r.status().message());
    if (r->exit_code != 0) {
      return UnavailableError(Prefix() + what + "_command exited with " + std::to_string(r->exit_code) + ": " +
                              LastLine(r->err.empty() ? r->out : r->err, c_.password));
    }
    return r->out;
  }

  PowerConfig c_;
  std::string host_;
};

}  // namespace

std::string_view PowerStateName(PowerState s) { return s == PowerState::kOn ? "on" : "off"; }

Result<PowerConfig> ParsePowerConfig(const Json& body, const PowerConfig* keep_secret_from) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_RETURN_IF_ERROR(v.RejectUnknown({"driver", "address", "port", "username", "password", "cipher_suite",
                                      "status_command", "on_command", "off_command", "cycle_command", "timeout_ms",
                                      "url", "ca_cert", "system", "mac", "broadcast"}));
  PowerConfig c;
  UW_ASSIGN_OR_RETURN(c.driver, v.String("driver"));
  if (c.driver != "ipmi" && c.driver != "redfish" && c.driver != "wol" && c.driver != "exec") {
    return v.FieldError("driver", "expected ipmi, redfish, wol or exec");
  }
  UW_ASSIGN_OR_RETURN(int64_t timeout, v.Int("timeout_ms", c.timeout_ms));
  if (timeout < 100 || timeout > kMaxTimeoutMs) return v.FieldError("timeout_ms", "expected 100..300000");
  c.timeout_ms = static_cast<int>(timeout);
  UW_ASSIGN_OR_RETURN(c.password, v.String("password", ""));
  if (!v.Has("password") && keep_secret_from && keep_secret_from->driver == c.driver) {
    c.password = keep_secret_from->password;
  }
  if (c.password.size() > 256) return v.FieldError("password", "at most 256 bytes");
  // Each field belongs to the drivers named here; any other driver refuses it.
  const std::vector<std::pair<const char*, std::vector<std::string>>> owners = {
      {"address", {"ipmi"}},
      {"port", {"ipmi", "wol"}},
      {"username", {"ipmi", "redfish"}},
      {"cipher_suite", {"ipmi"}},
      {"url", {"redfish"}},
      {"ca_cert", {"redfish"}},
      {"system", {"redfish"}},
      {"mac", {"wol"}},
      {"broadcast", {"wol"}},
      {"status_command", {"exec"}},
      {"on_command", {"exec"}},
      {"off_command", {"exec"}},
      {"cycle_command", {"exec"}},
      {"password", {"ipmi", "redfish", "exec"}}};
  for (const auto& [key, drivers] : owners) {
    if (v.Has(key) && std::find(drivers.begin(), drivers.end(), c.driver) == drivers.end()) {
      std::string names;
      for (const auto& d : drivers) names += (names.empty() ? "" : " and ") + d;
      return v.FieldError(key, "only for the " + names + " driver" + (drivers.size() > 1 ? "s" : ""));
    }
  }
  if (c.driver == "ipmi") {
    UW_RETURN_IF_ERROR(ParseIpmiFields(v, c));
  } else if (c.driver == "redfish") {
    UW_RETURN_IF_ERROR(internal::ParseRedfishFields(v, c));
  } else if (c.driver == "wol") {
    UW_RETURN_IF_ERROR(internal::ParseWolFields(v, c));
  } else {
    UW_ASSIGN_OR_RETURN(c.status_command, v.Strings("status_command"));
    UW_ASSIGN_OR_RETURN(c.on_command, v.Strings("on_command"));
    UW_ASSIGN_OR_RETURN(c.off_command, v.Strings("off_command"));
    UW_ASSIGN_OR_RETURN(c.cycle_command, v.Strings("cycle_command", {}));
    UW_RETURN_IF_ERROR(CheckArgv(v, "status_command", c.status_command, true));
    UW_RETURN_IF_ERROR(CheckArgv(v, "on_command", c.on_command, true));
    UW_RETURN_IF_ERROR(CheckArgv(v, "off_command", c.off_command, true));
    UW_RETURN_IF_ERROR(CheckArgv(v, "cycle_command", c.cycle_command, false));
  }
  return c;
}

Json PowerConfigJson(const PowerConfig& c, Secrets secrets) {
  Json j = {{"driver", c.driver}, {"timeout_ms", c.timeout_ms}};
  if (c.driver == "ipmi") {
    j["address"] = c.address;
    j["port"] = c.port;
    j["username"] = c.username;
    j["cipher_suite"] = c.cipher_suite;
  } else if (c.driver == "redfish") {
    j["url"] = c.url;
    j["username"] = c.username;
    if (!c.ca_cert.empty()) j["ca_cert"] = c.ca_cert;
    if (!c.system.empty()) j["system"] = c.system;
  } else if (c.driver == "wol") {
    j["mac"] = c.mac;
    j["broadcast"] = c.broadcast;
    j["port"] = c.port;
  } else {
    j["status_command"] = c.status_command;
    j["on_command"] = c.on_command;
    j["off_command"] = c.off_command;
    if (!c.cycle_command.empty()) j["cycle_command"] = c.cycle_command;
  }
  if (c.driver == "wol") return j;  // no secret
  if (secrets == Secrets::kIncluded) {
    if (!c.password.empty()) j["password"] = c.password;
  } else {
    j["password_set"] = !c.password.empty();
  }
  return j;
}

Result<std::unique_ptr<PowerDriver>> MakePowerDriver(const PowerConfig& config, std::string host,
                                                     DriverContext context) {
  if (config.driver == "ipmi") {
    return std::unique_ptr<PowerDriver>(new IpmiDriver(config, std::move(host), std::move(context.ipmitool)));
  }
  if (config.driver == "redfish") return internal::MakeRedfishDriver(config, std::move(host));
  if (config.driver == "wol") return internal::MakeWolDriver(config, std::move(host), std::move(context));
  if (config.driver == "exec") return std::unique_ptr<PowerDriver>(new ExecDriver(config, std::move(host)));
  return InvalidArgumentError("power driver '" + config.driver + "' is not built (ipmi, redfish, wol, exec)");
}

}  // namespace uw::power
