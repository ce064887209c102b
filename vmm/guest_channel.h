// The host side of the guest control channel: a virtio-serial port that libvirt exposes as a unix
// socket, spoken to by the test guest's init (and later uw-guestd). Line protocol (guest/README.md):
//   host -> guest:  "<id> <command>\n"
//   guest -> host:  "<id> <exit_code> <base64 of the command's output>\n"
// Thread safety: one GuestChannel per socket, calls serialized by an internal mutex.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "vmm/hypervisor.h"

namespace uw::vmm {

class GuestChannel {
 public:
  explicit GuestChannel(std::string socket_path, Clock& clock = Clock::Real())
      : path_(std::move(socket_path)), clock_(clock) {}
  ~GuestChannel();
  GuestChannel(const GuestChannel&) = delete;
  GuestChannel& operator=(const GuestChannel&) = delete;

  // Sends `command` (one line, no newline) and waits for its reply. Errors: kInvalidArgument for a
  // command with a newline; kUnavailable when the socket cannot be opened (guest not running);
  // kDeadlineExceeded when the guest does not answer within `timeout` (not booted yet, or no
  // agent in the guest) — the call can be retried.
  Result<ExecResult> Call(const std::string& command, Duration timeout);
  // Call unless another call is in flight; then kAborted ("busy") at once. The health watch
  // pings this way so that it never queues behind, or delays, a command.
  Result<ExecResult> CallIfIdle(const std::string& command, Duration timeout);

 private:
  Result<ExecResult> CallLocked(const std::string& command, Duration timeout);  // requires mu_
  Status EnsureConnected();                                                     // requires mu_
  void Disconnect();                                                            // requires mu_

  const std::string path_;
  Clock& clock_;
  std::mutex mu_;
  int fd_ = -1;           // guarded by mu_
  uint64_t next_id_ = 1;  // guarded by mu_
  std::string buffer_;    // guarded by mu_; bytes read past the last reply
};

}  // namespace uw::vmm
