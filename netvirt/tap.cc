#include "netvirt/tap.h"

// net/if.h before linux/if_tun.h, and instead of linux/if.h (they clash).
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace uw::netvirt {
namespace {

Status CheckDeviceName(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name.find_first_of("/ \t\n:") != std::string::npos) {
    return InvalidArgumentError("device '" + name.substr(0, 64) + "': expected 1.." + std::to_string(IFNAMSIZ - 1) +
                                " characters, none of '/', ':' or blanks");
  }
  return Status::Ok();
}

Status Errno(const std::string& what, int err) {
  const std::string text = what + ": " + std::strerror(err);
  if (err == EPERM || err == EACCES) return PermissionDeniedError(text + " (needs CAP_NET_ADMIN)");
  return UnavailableError(text);
}

// Opens /dev/net/tun and attaches it to tap `name` (made when missing).
Result<int> OpenTap(const std::string& name) {
  const int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return Errno("opening /dev/net/tun", errno);
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::memcpy(ifr.ifr_name, name.c_str(), name.size());
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    const int err = errno;
    close(fd);
    // EINVAL: the name is taken by a device that is not a tap (or a tap with other flags).
    if (err == EINVAL || err == EBUSY) {
      return FailedPreconditionError("device '" + name + "' exists and is not a free tap (" + std::strerror(err) + ")");
    }
    return Errno("tap '" + name + "'", err);
  }
  return fd;
}

Status SetUp(const std::string& name) {
  const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return Errno("socket", errno);
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.c_str(), name.size());
  Status out = Status::Ok();
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
    out = Errno("reading the flags of '" + name + "'", errno);
  } else if (!(ifr.ifr_flags & IFF_UP)) {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) out = Errno("setting '" + name + "' up", errno);
  }
  close(s);
  return out;
}

}  // namespace

bool DeviceExists(const std::string& name) { return !name.empty() && if_nametoindex(name.c_str()) != 0; }

Status CreateTap(const std::string& name) {
  UW_RETURN_IF_ERROR(CheckDeviceName(name));
  UW_ASSIGN_OR_RETURN(int fd, OpenTap(name));
  Status s = Status::Ok();
  if (ioctl(fd, TUNSETPERSIST, 1) < 0) s = Errno("making tap '" + name + "' persistent", errno);
  close(fd);
  UW_RETURN_IF_ERROR(s);
  return SetUp(name);
}

Status DeleteTap(const std::string& name) {
  UW_RETURN_IF_ERROR(CheckDeviceName(name));
  if (!DeviceExists(name)) return Status::Ok();
  auto fd = OpenTap(name);
  // A device of that name that is not a tap is not ours to remove.
  if (!fd.ok()) return fd.status();
  Status s = Status::Ok();
  if (ioctl(*fd, TUNSETPERSIST, 0) < 0) s = Errno("removing tap '" + name + "'", errno);
  close(*fd);
  return s;
}

}  // namespace uw::netvirt
