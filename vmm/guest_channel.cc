#include "vmm/guest_channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "common/base64.h"

namespace uw::vmm {

GuestChannel::~GuestChannel() {
  std::lock_guard l(mu_);
  Disconnect();
}

void GuestChannel::Disconnect() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  buffer_.clear();
}

Status GuestChannel::EnsureConnected() {
  if (fd_ >= 0) return Status::Ok();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.size() >= sizeof(addr.sun_path)) return InvalidArgumentError("channel socket path too long: " + path_);
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return InternalError(std::string("socket: ") + std::strerror(errno));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    int e = errno;
    close(fd);
    return UnavailableError("guest channel " + path_ + ": " + std::strerror(e));
  }
  fd_ = fd;
  return Status::Ok();
}

Result<ExecResult> GuestChannel::Call(const std::string& command, Duration timeout) {
  std::lock_guard l(mu_);
  return CallLocked(command, timeout);
}

Result<ExecResult> GuestChannel::CallIfIdle(const std::string& command, Duration timeout) {
  std::unique_lock l(mu_, std::try_to_lock);
  if (!l.owns_lock()) return AbortedError("guest channel " + path_ + " is busy with another command");
  return CallLocked(command, timeout);
}

Result<ExecResult> GuestChannel::CallLocked(const std::string& command, Duration timeout) {
  if (command.find('\n') != std::string::npos || command.find('\r') != std::string::npos) {
    return InvalidArgumentError("guest command must be a single line");
  }
  const uint64_t id = next_id_++;
  std::string line = std::to_string(id) + " " + command + "\n";
  // A connection kept from before the guest's QEMU restarted (stopped and started, or migrated
  // away and back) is dead: the first send fails; connect again once.
  for (int attempt = 0;; ++attempt) {
    UW_RETURN_IF_ERROR(EnsureConnected());
    size_t sent = 0;
    int error = 0;
    while (sent < line.size()) {
      ssize_t n = send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = errno;
        break;
      }
      sent += static_cast<size_t>(n);
    }
    if (sent == line.size()) break;
    Disconnect();
    if (attempt > 0 || sent > 0) return UnavailableError("guest channel " + path_ + ": " + std::strerror(error));
  }
  const Duration deadline = clock_.Monotonic() + timeout;
  const std::string prefix = std::to_string(id) + " ";
  while (true) {
    // Replies to earlier, timed-out calls may still arrive: skip lines with other ids.
    for (size_t nl; (nl = buffer_.find('\n')) != std::string::npos;) {
      std::string reply = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (!reply.empty() && reply.back() == '\r') reply.pop_back();
      if (reply.rfind(prefix, 0) != 0) continue;
      std::istringstream in(reply.substr(prefix.size()));
      ExecResult r;
      std::string encoded;
      if (!(in >> r.exit_code)) return InternalError("guest channel: malformed reply '" + reply + "'");
      in >> encoded;
      UW_ASSIGN_OR_RETURN(r.output, Base64Decode(encoded));
      return r;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_.Monotonic()).count();
    if (left <= 0) return DeadlineExceededError("guest did not answer '" + command + "' in time");
    pollfd p{fd_, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno != EINTR) return InternalError(std::string("poll: ") + std::strerror(errno));
    if (r <= 0) continue;
    char buf[4096];
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      Disconnect();
      return UnavailableError("guest channel " + path_ + " closed (guest stopped?)");
    }
    buffer_.append(buf, static_cast<size_t>(n));
    if (buffer_.size() > (4u << 20)) {
      Disconnect();
      return InternalError("guest channel: reply larger than 4 MiB");
    }
  }
}

}  // namespace uw::vmm
