// Helpers shared by the files of AgentService (agent_*.cc). Private to vmm/.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

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

}  // namespace uw::vmm
