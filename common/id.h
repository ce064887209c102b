// Identifiers and names.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace uw {

// A random RFC 4122 version-4 UUID ("3f2a...-...."). Thread-safe.
std::string NewUuid();
// Whether `s` is a UUID in its canonical text form (8-4-4-4-12 hexadecimal digits).
bool IsUuid(std::string_view s);
// A short random id with a prefix: "task-5f1c9a0b2d7e4c31".
std::string NewId(std::string_view prefix);

// Guest, host, pool and network names: 1–63 characters of [A-Za-z0-9._-], starting with a letter
// or digit. kInvalidArgument saying what is wrong, with `what` naming the field ("guest name").
Status ValidateName(std::string_view name, std::string_view what);

// A guest's cluster-wide name: NAME, or TENANT:NAME for a tenant's guest (guest names are unique
// per tenant). Each part is a ValidateName name, and the whole is at most 63 characters (it names
// the libvirt domain and the files and sockets the agent makes for it).
Status ValidateGuestName(std::string_view name, std::string_view what);

}  // namespace uw
