#include "netvirt/ipam.h"

#include <array>
#include <charconv>
#include <cstdio>

namespace uw::netvirt {
namespace {

// Ranges no tenant subnet may touch: this-network, loopback, link-local, multicast and above.
struct Reserved {
  const char* text;
  Subnet range;
};
constexpr std::array<Reserved, 4> kReserved = {{
    {"0.0.0.0/8 (this network)", {0x00000000, 8}},
    {"127.0.0.0/8 (loopback)", {0x7f000000, 8}},
    {"169.254.0.0/16 (link-local)", {0xa9fe0000, 16}},
    {"224.0.0.0/3 (multicast and reserved)", {0xe0000000, 3}},
}};

}  // namespace

Result<Ipv4> ParseIpv4(std::string_view text) {
  auto bad = [&](std::string why) {
    return InvalidArgumentError("'" + std::string(text.substr(0, 64)) + "' is not an IPv4 address: " + why);
  };
  Ipv4 out = 0;
  size_t at = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (at >= text.size() || text[at] != '.') return bad("expected four numbers separated by '.'");
      ++at;
    }
    size_t end = at;
    while (end < text.size() && text[end] >= '0' && text[end] <= '9') ++end;
    if (end == at) return bad("expected four numbers separated by '.'");
    if (end - at > 1 && text[at] == '0') return bad("a number with a leading zero");
    unsigned v = 0;
    auto [p, ec] = std::from_chars(text.data() + at, text.data() + end, v);
    if (ec != std::errc() || p != text.data() + end || v > 255) return bad("each number is 0..255");
    out = (out << 8) | v;
    at = end;
  }
  if (at != text.size()) return bad("unexpected text after the fourth number");
  return out;
}

std::string FormatIpv4(Ipv4 a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." + std::to_string((a >> 8) & 255) + "." +
         std::to_string(a & 255);
}

Result<Subnet> ParseSubnet(std::string_view text) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    return InvalidArgumentError("'" + std::string(text.substr(0, 64)) + "' is not a subnet: expected a.b.c.d/N");
  }
  UW_ASSIGN_OR_RETURN(Ipv4 a, ParseIpv4(text.substr(0, slash)));
  std::string_view len = text.substr(slash + 1);
  int prefix = -1;
  auto [p, ec] = std::from_chars(len.data(), len.data() + len.size(), prefix);
  if (len.empty() || ec != std::errc() || p != len.data() + len.size() || (len.size() > 1 && len[0] == '0')) {
    return InvalidArgumentError("'" + std::string(text.substr(0, 64)) + "': the prefix length is not a number");
  }
  if (prefix < kMinPrefix || prefix > kMaxPrefix) {
    return InvalidArgumentError("'" + std::string(text) + "': expected a prefix length of /" +
                                std::to_string(kMinPrefix) + " to /" + std::to_string(kMaxPrefix));
  }
  Subnet s{a, prefix};
  if ((a & ~s.Mask()) != 0) {
    s.network = a & s.Mask();
    return InvalidArgumentError("'" + std::string(text) + "' has host bits set: the subnet is " + s.ToString());
  }
  for (const Reserved& r : kReserved) {
    if (Overlaps(s, r.range)) {
      return InvalidArgumentError("'" + std::string(text) + "' overlaps " + r.text + ", which no network may use");
    }
  }
  return s;
}

bool Overlaps(const Subnet& a, const Subnet& b) {
  const Subnet& wider = a.prefix <= b.prefix ? a : b;
  const Subnet& narrower = a.prefix <= b.prefix ? b : a;
  return wider.Contains(narrower.network);
}

Result<Ipv4> LowestFree(const Subnet& s, const std::set<Ipv4>& taken) {
  Ipv4 a = s.FirstHost();
  for (auto it = taken.lower_bound(a); it != taken.end() && *it == a && a <= s.LastHost(); ++it) ++a;
  if (a > s.LastHost()) {
    return ResourceExhaustedError("subnet " + s.ToString() + " has no free address (all " +
                                  std::to_string(s.HostCount()) + " are taken)");
  }
  return a;
}

std::string MacFromBits(uint64_t bits) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "02:%02x:%02x:%02x:%02x:%02x", unsigned((bits >> 32) & 255),
                unsigned((bits >> 24) & 255), unsigned((bits >> 16) & 255), unsigned((bits >> 8) & 255),
                unsigned(bits & 255));
  return buf;
}

Result<std::string> ParseMac(std::string_view text) {
  auto bad = [&](std::string why) {
    return InvalidArgumentError("'" + std::string(text.substr(0, 64)) + "' is not a MAC address: " + why);
  };
  if (text.size() != 17) return bad("expected six hexadecimal pairs separated by ':'");
  std::string out(text);
  bool all_zero = true;
  for (size_t i = 0; i < out.size(); ++i) {
    char& c = out[i];
    if (i % 3 == 2) {
      if (c != ':') return bad("expected six hexadecimal pairs separated by ':'");
      continue;
    }
    if (c >= 'A' && c <= 'F') c = char(c - 'A' + 'a');
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return bad("expected hexadecimal digits");
    if (c != '0') all_zero = false;
  }
  if (all_zero) return bad("all zeros");
  const int first = std::stoi(out.substr(0, 2), nullptr, 16);
  if (first & 1) return bad("a multicast address (the first byte is odd)");
  return out;
}

}  // namespace uw::netvirt
