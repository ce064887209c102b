// The wol power driver: Wake-on-LAN. On sends the magic packet (6 bytes 0xff, then the NIC's MAC
// 16 times) as a UDP datagram to `broadcast`:`port`, three times (UDP may drop one). Off is the
// host's own clean shutdown through its agent. The power state is inferred from the agent: it
// answers, on; it cannot be reached, off. That is no proof (a hung host does not answer either), so
// ConfirmsOff is false and HA never fences through this driver. A packet may be lost, or reach a
// host that is still shutting down (its NIC not armed yet): RepeatsOn, the manager sends it again
// until the host answers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <utility>

#include "manager/power/power_internal.h"

namespace uw::power::internal {
namespace {

constexpr int kCopies = 3;

// "aa:bb:cc:dd:ee:ff" or "AA-BB-..." as six bytes; false when it is not a MAC.
bool ParseMac(const std::string& text, std::array<unsigned char, 6>& out) {
  if (text.size() != 17) return false;
  for (size_t i = 0; i < 6; ++i) {
    const char hi = text[i * 3], lo = text[i * 3 + 1];
    if (!std::isxdigit(static_cast<unsigned char>(hi)) || !std::isxdigit(static_cast<unsigned char>(lo))) return false;
    if (i < 5 && text[i * 3 + 2] != ':' && text[i * 3 + 2] != '-') return false;
    out[i] = static_cast<unsigned char>(std::stoi(text.substr(i * 3, 2), nullptr, 16));
  }
  return true;
}

class WolDriver final : public PowerDriver {
 public:
  WolDriver(PowerConfig c, std::string host, DriverContext context)
      : c_(std::move(c)), host_(std::move(host)), context_(std::move(context)) {}

  Result<PowerState> Status() override {
    if (!context_.agent_ping) return InternalError(Prefix() + "no way to reach the host's agent");
    const uw::Status ping = context_.agent_ping();
    if (ping.ok()) return PowerState::kOn;
    // Refused or unreachable: taken as off. An agent that took the call and did not answer may
    // be on a hung host: not known.
    if (ping.code() == StatusCode::kUnavailable) return PowerState::kOff;
    return uw::Status(ping.code(), Prefix() + "cannot tell whether the host is on: " + ping.message());
  }
  uw::Status On() override {
    std::array<unsigned char, 6> mac{};
    if (!ParseMac(c_.mac, mac)) return InternalError(Prefix() + "bad MAC '" + c_.mac + "'");
    std::string packet(6, '\xff');
    for (int i = 0; i < 16; ++i) packet.append(reinterpret_cast<const char*>(mac.data()), mac.size());
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<uint16_t>(c_.port));
    if (inet_pton(AF_INET, c_.broadcast.c_str(), &to.sin_addr) != 1) {
      return InternalError(Prefix() + "bad broadcast address '" + c_.broadcast + "'");
    }
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return UnavailableError(Prefix() + "socket: " + std::strerror(errno));
    const int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &yes, sizeof(yes));
    uw::Status result = uw::Status::Ok();
    for (int i = 0; i < kCopies && result.ok(); ++i) {
      if (sendto(fd, packet.data(), packet.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) < 0) {
        result = UnavailableError(Prefix() + "sending the magic packet: " + std::strerror(errno));
      }
    }
    close(fd);
    return result;
  }
  uw::Status Off() override {
    if (!context_.agent_shutdown) return InternalError(Prefix() + "no way to reach the host's agent");
    const uw::Status s = context_.agent_shutdown();
    if (s.ok()) return s;
    return uw::Status(s.code(), Prefix() + "the agent's clean shutdown: " + s.message());
  }
  uw::Status Cycle() override {
    return UnimplementedError(Prefix() +
                              "Wake-on-LAN cannot power-cycle a host (off goes through the host's own agent)");
  }
  std::string Describe() const override {
    return "wol " + c_.mac + " via " + c_.broadcast + ":" + std::to_string(c_.port);
  }
  bool ConfirmsOff() const override { return false; }
  bool RepeatsOn() const override { return true; }

 private:
  std::string Prefix() const { return "host '" + host_ + "' (" + Describe() + "): "; }

  const PowerConfig c_;
  const std::string host_;
  const DriverContext context_;
};

}  // namespace

Status ParseWolFields(const JsonView& v, PowerConfig& c) {
  UW_ASSIGN_OR_RETURN(c.mac, v.String("mac"));
  std::array<unsigned char, 6> mac{};
  if (!ParseMac(c.mac, mac)) return v.FieldError("mac", "expected the NIC's MAC address, aa:bb:cc:dd:ee:ff");
  std::transform(c.mac.begin(), c.mac.end(), c.mac.begin(),
                 [](unsigned char ch) { return ch == '-' ? ':' : static_cast<char>(std::tolower(ch)); });
  UW_ASSIGN_OR_RETURN(c.broadcast, v.String("broadcast", c.broadcast));
  in_addr addr{};
  if (inet_pton(AF_INET, c.broadcast.c_str(), &addr) != 1) {
    return v.FieldError("broadcast", "expected an IPv4 address (the LAN's broadcast address)");
  }
  UW_ASSIGN_OR_RETURN(int64_t port, v.Int("port", 9));
  if (port < 1 || port > 65535) return v.FieldError("port", "expected 1..65535");
  c.port = static_cast<int>(port);
  return Status::Ok();
}

std::unique_ptr<PowerDriver> MakeWolDriver(PowerConfig c, std::string host, DriverContext context) {
  return std::make_unique<WolDriver>(std::move(c), std::move(host), std::move(context));
}

}  // namespace uw::power::internal
