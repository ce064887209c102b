// Standard base64 (RFC 4648, with padding): the guest control channel's answers come back in it,
// and what the manager hands a guest's daemon as one shell word goes out in it.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace uw {

std::string Base64Encode(std::string_view in);
// Whitespace is skipped and decoding stops at the first '='. kInvalidArgument on any other
// character outside the alphabet.
Result<std::string> Base64Decode(std::string_view in);

}  // namespace uw
