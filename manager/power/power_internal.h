// Pieces shared by the power drivers' files (power.cc, redfish.cc, wol.cc). Private to power/.
#pragma once

#include <memory>
#include <string>

#include "common/json.h"
#include "common/status.h"
#include "manager/power/power.h"

namespace uw::power::internal {

// The last non-empty line of `text` (a program's output, a BMC's answer), with `secret` blanked
// and cut at 300 bytes; "(no output)" when there is none.
std::string LastLine(std::string text, const std::string& secret);

// Each driver's own fields of a request body (`c.driver` and the common fields are parsed);
// kInvalidArgument names the field.
Status ParseRedfishFields(const JsonView& v, PowerConfig& c);
Status ParseWolFields(const JsonView& v, PowerConfig& c);

std::unique_ptr<PowerDriver> MakeRedfishDriver(PowerConfig c, std::string host);
std::unique_ptr<PowerDriver> MakeWolDriver(PowerConfig c, std::string host, DriverContext context);

}  // namespace uw::power::internal
