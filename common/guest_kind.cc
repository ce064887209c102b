#include "common/guest_kind.h"

#include <array>
#include <string>

namespace uw {
namespace {
constexpr std::array<std::string_view, 3> kKindNames = {"kvm", "qemu", "lxc"};
}  // namespace

std::string_view GuestKindName(GuestKind kind) { return kKindNames[static_cast<size_t>(kind)]; }

Result<GuestKind> ParseGuestKind(std::string_view name) {
  for (size_t i = 0; i < kKindNames.size(); ++i) {
    if (kKindNames[i] == name) return static_cast<GuestKind>(i);
  }
  return InvalidArgumentError("guest kind '" + std::string(name) + "' is not one of kvm, qemu, lxc");
}

}  // namespace uw
