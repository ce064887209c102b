// The kinds of guest, one type for the agent (vmm/), the placement engine and the manager.
#pragma once

#include <string_view>

#include "common/json.h"
#include "common/status.h"

namespace uw {

// kKvm: full virtualization on hardware KVM; kQemu: emulated (QEMU TCG); kLxc: a container.
// Paravirtual (virtio) devices are a property of a VM, not a kind.
enum class GuestKind { kKvm, kQemu, kLxc };

std::string_view GuestKindName(GuestKind kind);           // "kvm", "qemu", "lxc"
Result<GuestKind> ParseGuestKind(std::string_view name);  // kInvalidArgument otherwise

// In JSON a kind is its name ("qemu"), never a number.
NLOHMANN_JSON_SERIALIZE_ENUM(GuestKind,
                             {{GuestKind::kKvm, "kvm"}, {GuestKind::kQemu, "qemu"}, {GuestKind::kLxc, "lxc"}})

}  // namespace uw
