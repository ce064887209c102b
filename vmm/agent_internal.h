// Helpers shared by the files of AgentService (agent_*.cc). Private to vmm/.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "vmm/hypervisor.h"

namespace uw::vmm {

// The virtio-serial port of the guest's control channel (uw-guestd answers on it).
inline constexpr const char* kGuestChannel = "org.underware.guest.0";

inline bool FileExists(const std::string& p) {
  std::error_code ec;
  return std::filesystem::exists(p, ec);
}

// The last `bytes` bytes of a file ("" when it cannot be read).
std::string ReadTail(const std::string& path, size_t bytes);

// The host socket of a virtual machine's control channel; "" for containers and guests without one.
std::string ControlChannelOf(const GuestInfo& info);

// Runs a tool (qemu-img) and returns its standard output; kInternal with its error output when it
// fails, kDeadlineExceeded (the tool killed) after kToolTimeout.
inline constexpr std::chrono::seconds kToolTimeout{120};
Result<std::string> RunTool(const std::vector<std::string>& argv);

// Files that arrive in pieces (image copies, disks carried by a cold move; agent_images.cc):
// appends `bytes` to `part`, kUnavailable naming `what` when that fails.
Status AppendPiece(const std::filesystem::path& part, std::string_view bytes, const std::string& what);
// qemu-img info's JSON of an image that keeps its data in an external file (which could be any
// file on the host).
bool HasExternalDataFile(const Json& info);

}  // namespace uw::vmm
