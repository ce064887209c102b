// GuestSpec, GuestInfo and friends: names, JSON and validation.
#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>

#include "common/id.h"
#include "netvirt/ipam.h"
#include "vmm/hypervisor.h"

namespace uw::vmm {
namespace {

// POOL/IMAGE with plain Ceph names (1-100 of [A-Za-z0-9._-] each): nothing that QEMU's rbd: option
// string, a shell or libvirt's XML would read as syntax.
bool IsRbdName(std::string_view s) {
  const size_t slash = s.find('/');
  if (slash == std::string_view::npos) return false;
  auto plain = [](std::string_view part) {
    if (part.empty() || part.size() > 100) return false;
    for (char c : part) {
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
            c == '-')) {
        return false;
      }
    }
    return true;
  };
  return plain(s.substr(0, slash)) && plain(s.substr(slash + 1));
}

}  // namespace

// It also names the file of a local disk the agent makes, so nothing else may pass.
bool IsDiskTarget(std::string_view t) {
  if (t.size() < 3 || t.size() > 4) return false;
  if (t.substr(0, 2) != "vd" && t.substr(0, 2) != "sd" && t.substr(0, 2) != "hd") return false;
  return std::all_of(t.begin() + 2, t.end(), [](char c) { return c >= 'a' && c <= 'z'; });
}

bool IsBaseImageRef(std::string_view ref) {
  const auto at = ref.find('@');
  if (at == std::string_view::npos || at == 0 || at + 1 == ref.size() || at + 21 < ref.size()) return false;
  const std::string_view name = ref.substr(0, at);
  const auto name_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  };
  if (name.size() > 63 || !std::all_of(name.begin(), name.end(), name_char)) return false;
  if (name[0] == '.' || name[0] == '_' || name[0] == '-') return false;
  return std::all_of(ref.begin() + static_cast<std::ptrdiff_t>(at) + 1, ref.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

namespace {

Result<DiskSpec> DiskSpecFromView(const JsonView& d, const std::string& default_target) {
  UW_RETURN_IF_ERROR(d.RejectUnknown({"path", "format", "target", "read_only", "size_mib", "rbd", "base_image"}));
  DiskSpec disk;
  UW_ASSIGN_OR_RETURN(disk.base_image, d.String("base_image", ""));
  if (d.Has("base_image")) {
    if (!IsBaseImageRef(disk.base_image)) return d.FieldError("base_image", "expected IMAGE@VERSION");
    UW_ASSIGN_OR_RETURN(std::string path, d.String("path", ""));
    if (!path.empty() || d.Has("rbd") || !d.Has("size_mib")) {
      return d.FieldError("base_image", "a disk made on an image has a size_mib and no path or rbd");
    }
  }
  UW_ASSIGN_OR_RETURN(disk.rbd, d.String("rbd", ""));
  UW_ASSIGN_OR_RETURN(disk.size_mib, d.NonNegativeInt("size_mib", 0));
  if (disk.size_mib > 16 << 20) return d.FieldError("size_mib", "expected at most 16 TiB");
  if (!disk.rbd.empty()) {
    if (!IsRbdName(disk.rbd)) return d.FieldError("rbd", "expected POOL/IMAGE");
    if (d.Has("path") || disk.size_mib > 0) return d.FieldError("rbd", "an rbd disk has no path or size_mib");
    UW_ASSIGN_OR_RETURN(disk.format, d.String("format", "raw"));
    if (disk.format != "raw") return d.FieldError("format", "an rbd disk is raw");
  } else {
    UW_ASSIGN_OR_RETURN(disk.path, disk.size_mib > 0 ? d.String("path", "") : d.String("path"));
    UW_ASSIGN_OR_RETURN(disk.format, d.String("format", "qcow2"));
  }
  if (disk.format != "qcow2" && disk.format != "raw") return d.FieldError("format", "expected qcow2 or raw");
  if (!disk.base_image.empty() && disk.format != "qcow2") {
    return d.FieldError("format", "a disk made on an image is qcow2");
  }
  UW_ASSIGN_OR_RETURN(disk.target, d.String("target", default_target));
  if ((d.Has("target") || !default_target.empty()) && !IsDiskTarget(disk.target)) {
    return d.FieldError("target", "expected vd, sd or hd and one or two letters (vdb), got '" + disk.target + "'");
  }
  UW_ASSIGN_OR_RETURN(disk.read_only, d.Bool("read_only", false));
  return disk;
}

// The largest guest: the largest host the manager accepts (64 TiB).
constexpr int64_t kMaxMemoryMib = int64_t{64} << 20;
constexpr std::array<std::string_view, 8> kStateNames = {"shutoff", "running", "paused",    "shutting-down",
                                                         "crashed", "blocked", "suspended", "unknown"};
}  // namespace

std::string_view GuestStateName(GuestState state) { return kStateNames[static_cast<size_t>(state)]; }

std::string DefaultDiskTarget(size_t index) {
  std::string t = "vd";
  if (index >= 26) t += static_cast<char>('a' + index / 26 - 1);
  t += static_cast<char>('a' + index % 26);
  return t;
}

Result<DiskSpec> DiskSpecFromJson(const Json& j, std::string_view path, const std::string& default_target) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(j, std::string(path)));
  return DiskSpecFromView(v, default_target);
}

namespace {

// One element of "nics". A port NIC (the manager's) names its port, network and address; its tap
// is the agent's to name.
Result<NicSpec> NicSpecFromView(const JsonView& n) {
  UW_RETURN_IF_ERROR(n.RejectUnknown({"type", "source", "mac", "vlan", "port", "network", "address", "gateway"}));
  NicSpec nic;
  UW_ASSIGN_OR_RETURN(nic.type, n.String("type", "user"));
  if (nic.type != "user" && nic.type != "bridge" && nic.type != "ovs" && nic.type != "port") {
    return n.FieldError("type", "expected user, bridge, ovs or port");
  }
  UW_ASSIGN_OR_RETURN(nic.mac, n.String("mac", ""));
  if (nic.type == "port") {
    for (const char* host_side : {"vlan", "source"}) {
      if (n.Has(host_side)) return n.FieldError(host_side, "a port NIC's bridge and VLAN are its host's to choose");
    }
    UW_ASSIGN_OR_RETURN(nic.port, n.String("port"));
    if (!IsPortId(nic.port)) return n.FieldError("port", "expected a port id (port- and 16 hex digits)");
    UW_ASSIGN_OR_RETURN(nic.network, n.String("network"));
    if (nic.network.empty() || nic.network.size() > 200) return n.FieldError("network", "expected 1..200 characters");
    auto mac = netvirt::ParseMac(nic.mac);
    if (!mac.ok()) return n.FieldError("mac", mac.status().message());
    nic.mac = *mac;
    UW_ASSIGN_OR_RETURN(nic.address, n.String("address"));
    const size_t slash = nic.address.find('/');
    auto prefix = slash == std::string::npos ? -1 : std::atoi(nic.address.c_str() + slash + 1);
    if (slash == std::string::npos || !netvirt::ParseIpv4(nic.address.substr(0, slash)).ok() || prefix < 8 ||
        prefix > 30 || nic.address.substr(slash + 1) != std::to_string(prefix)) {
      return n.FieldError("address", "expected an IPv4 address and its subnet's prefix, 10.0.0.5/24");
    }
    UW_ASSIGN_OR_RETURN(nic.gateway, n.String("gateway", ""));
    if (!nic.gateway.empty() && !netvirt::ParseIpv4(nic.gateway).ok()) {
      return n.FieldError("gateway", "expected an IPv4 address");
    }
    nic.device = PortDevice(nic.port);
    return nic;
  }
  UW_ASSIGN_OR_RETURN(nic.source, n.String("source", ""));
  if (nic.type != "user" && nic.source.empty()) return n.FieldError("source", "a bridge name is required");
  UW_ASSIGN_OR_RETURN(int64_t vlan, n.NonNegativeInt("vlan", 0));
  if (vlan > 4094) return n.FieldError("vlan", "expected 0..4094");
  nic.vlan = static_cast<int>(vlan);
  return nic;
}

}  // namespace

bool IsPortId(std::string_view id) {
  if (id.size() != 21 || id.substr(0, 5) != "port-") return false;
  for (char c : id.substr(5)) {
    if (!std::isxdigit(static_cast<unsigned char>(c)) || std::isupper(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

std::string PortDevice(std::string_view port_id) { return "uwp" + std::string(port_id.substr(5, 12)); }

Result<GuestSpec> GuestSpecFromJson(const Json& j, std::string_view path) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(j, std::string(path)));
  UW_RETURN_IF_ERROR(
      v.RejectUnknown({"name", "uuid", "kind", "paravirt", "vcpus", "max_vcpus", "memory_mib", "max_memory_mib", "boot",
                       "image", "disks", "nics", "cpu", "lxc", "labels", "start", "disks_carried"}));
  GuestSpec s;
  UW_ASSIGN_OR_RETURN(s.name, v.String("name"));
  UW_ASSIGN_OR_RETURN(s.uuid, v.String("uuid", ""));
  UW_ASSIGN_OR_RETURN(std::string kind, v.String("kind", "qemu"));
  auto k = ParseGuestKind(kind);
  if (!k.ok()) return v.FieldError("kind", k.status().message());
  s.kind = *k;
  UW_ASSIGN_OR_RETURN(s.paravirt, v.Bool("paravirt", true));
  if (v.Has("vcpus")) {
    UW_ASSIGN_OR_RETURN(int64_t n, v.PositiveInt("vcpus"));
    s.vcpus = static_cast<int>(std::min<int64_t>(n, 4096));
  }
  s.max_vcpus = s.vcpus;
  if (v.Has("max_vcpus")) {
    UW_ASSIGN_OR_RETURN(int64_t n, v.PositiveInt("max_vcpus"));
    s.max_vcpus = static_cast<int>(std::min<int64_t>(n, 4096));
  }
  if (v.Has("memory_mib")) {
    UW_ASSIGN_OR_RETURN(s.memory_mib, v.PositiveInt("memory_mib"));
  }
  s.max_memory_mib = s.memory_mib;
  if (v.Has("max_memory_mib")) {
    UW_ASSIGN_OR_RETURN(s.max_memory_mib, v.PositiveInt("max_memory_mib"));
  }
  if (v.Has("boot")) {
    UW_ASSIGN_OR_RETURN(JsonView b, v.Object("boot"));
    UW_RETURN_IF_ERROR(b.RejectUnknown({"kernel", "initrd", "cmdline"}));
    UW_ASSIGN_OR_RETURN(s.kernel, b.String("kernel"));
    UW_ASSIGN_OR_RETURN(s.initrd, b.String("initrd", ""));
    UW_ASSIGN_OR_RETURN(s.cmdline, b.String("cmdline", ""));
  }
  if (v.Has("disks")) {
    UW_ASSIGN_OR_RETURN(auto disks, v.Objects("disks"));
    for (const auto& d : disks) {
      UW_ASSIGN_OR_RETURN(DiskSpec disk, DiskSpecFromView(d, DefaultDiskTarget(s.disks.size())));
      s.disks.push_back(disk);
    }
  }
  if (v.Has("nics")) {
    UW_ASSIGN_OR_RETURN(auto nics, v.Objects("nics"));
    for (const auto& n : nics) {
      UW_ASSIGN_OR_RETURN(NicSpec nic, NicSpecFromView(n));
      s.nics.push_back(nic);
    }
  }
  if (v.Has("cpu")) {
    UW_ASSIGN_OR_RETURN(JsonView c, v.Object("cpu"));
    UW_RETURN_IF_ERROR(c.RejectUnknown({"shares", "quota_us", "period_us"}));
    UW_ASSIGN_OR_RETURN(s.cpu_shares, c.NonNegativeInt("shares", 0));
    UW_ASSIGN_OR_RETURN(s.cpu_quota_us, c.Int("quota_us", 0));
    UW_ASSIGN_OR_RETURN(s.cpu_period_us, c.NonNegativeInt("period_us", 0));
  }
  if (v.Has("lxc")) {
    UW_ASSIGN_OR_RETURN(JsonView l, v.Object("lxc"));
    UW_RETURN_IF_ERROR(l.RejectUnknown({"root", "init", "args"}));
    UW_ASSIGN_OR_RETURN(s.lxc_root, l.String("root", ""));
    UW_ASSIGN_OR_RETURN(s.lxc_init, l.String("init", "/bin/sh"));
    UW_ASSIGN_OR_RETURN(s.lxc_init_args, l.Strings("args", {}));
  }
  if (v.Has("labels")) {
    UW_ASSIGN_OR_RETURN(JsonView l, v.Object("labels"));
    if (l.json().size() > 64) return v.FieldError("labels", "at most 64 labels");
    for (auto it = l.json().begin(); it != l.json().end(); ++it) {
      // Labels land in the domain XML's metadata: printable keys of a small alphabet and values
      // without control characters (XML cannot hold NUL at all).
      const std::string& key = it.key();
      if (key.empty() || key.size() > 63 ||
          key.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/") !=
              std::string::npos) {
        return v.FieldError("labels", "a label key has 1..63 characters of [A-Za-z0-9._/-]");
      }
      if (!it->is_string()) return l.FieldError(key, "expected a string");
      const std::string& value = it->get_ref<const std::string&>();
      if (value.size() > 256) return l.FieldError(key, "at most 256 characters");
      for (unsigned char c : value) {
        if (c < 0x20 || c == 0x7f) return l.FieldError(key, "control characters are not allowed");
      }
      s.labels.emplace_back(key, value);
    }
  }
  return s;
}

Json GuestSpecToJson(const GuestSpec& s) {
  Json j = {{"name", s.name},
            {"uuid", s.uuid},
            {"kind", GuestKindName(s.kind)},
            {"paravirt", s.paravirt},
            {"emulated", s.emulated},
            {"vcpus", s.vcpus},
            {"max_vcpus", s.max_vcpus},
            {"memory_mib", s.memory_mib},
            {"max_memory_mib", s.max_memory_mib}};
  if (!s.kernel.empty()) j["boot"] = {{"kernel", s.kernel}, {"initrd", s.initrd}, {"cmdline", s.cmdline}};
  j["disks"] = Json::array();
  for (const auto& d : s.disks) {
    Json disk = {{"format", d.format}, {"target", d.target}, {"read_only", d.read_only}};
    if (d.rbd.empty()) {
      disk["path"] = d.path;
    } else {
      disk["rbd"] = d.rbd;
    }
    if (d.size_mib > 0) disk["size_mib"] = d.size_mib;  // a local disk the agent makes
    if (!d.base_image.empty()) disk["base_image"] = d.base_image;
    j["disks"].push_back(std::move(disk));
  }
  j["nics"] = Json::array();
  for (const auto& n : s.nics) {
    if (n.type == "port") {
      j["nics"].push_back({{"type", n.type},
                           {"port", n.port},
                           {"network", n.network},
                           {"mac", n.mac},
                           {"address", n.address},
                           {"gateway", n.gateway}});  // what GuestSpecFromJson takes: the tap and bridge are the host's
    } else {
      j["nics"].push_back({{"type", n.type}, {"source", n.source}, {"mac", n.mac}, {"vlan", n.vlan}});
    }
  }
  j["cpu"] = {{"shares", s.cpu_shares}, {"quota_us", s.cpu_quota_us}, {"period_us", s.cpu_period_us}};
  if (s.kind == GuestKind::kLxc) j["lxc"] = {{"root", s.lxc_root}, {"init", s.lxc_init}, {"args", s.lxc_init_args}};
  j["labels"] = Json::object();
  for (const auto& [k, val] : s.labels) j["labels"][k] = val;
  return j;
}

Status ValidateGuestSpec(const GuestSpec& s, bool image_named) {
  UW_RETURN_IF_ERROR(ValidateGuestName(s.name, "guest name"));
  if (s.vcpus < 1 || s.max_vcpus < s.vcpus) {
    return InvalidArgumentError("guest '" + s.name + "': vcpus (" + std::to_string(s.vcpus) +
                                ") must be at least 1 and at most max_vcpus (" + std::to_string(s.max_vcpus) + ")");
  }
  if (s.memory_mib < 16 || s.max_memory_mib < s.memory_mib) {
    return InvalidArgumentError("guest '" + s.name + "': memory_mib (" + std::to_string(s.memory_mib) +
                                ") must be at least 16 and at most max_memory_mib (" +
                                std::to_string(s.max_memory_mib) + ")");
  }
  if (s.max_memory_mib > kMaxMemoryMib) {  // libvirt's KiB figure must fit in int64_t
    return InvalidArgumentError("guest '" + s.name + "': max_memory_mib must be at most 67108864 (64 TiB)");
  }
  if (s.kind == GuestKind::kLxc) {
    if ((s.lxc_root.empty() && !image_named) || (!s.lxc_root.empty() && s.lxc_root[0] != '/')) {
      return InvalidArgumentError("guest '" + s.name + "': a container needs lxc.root, an absolute directory");
    }
    if (s.max_vcpus != s.vcpus) return InvalidArgumentError("guest '" + s.name + "': containers cannot hot-plug vCPUs");
  } else if (s.kernel.empty() && s.disks.empty() && !image_named) {
    return InvalidArgumentError("guest '" + s.name + "': nothing to boot: give boot.kernel, an image or a disk");
  }
  if (s.cpu_shares > 262144) return InvalidArgumentError("guest '" + s.name + "': cpu.shares must be at most 262144");
  if (s.cpu_period_us != 0 && (s.cpu_period_us < 1000 || s.cpu_period_us > 1000000)) {
    return InvalidArgumentError("guest '" + s.name + "': cpu.period_us must be within 1000..1000000");
  }
  if (s.cpu_quota_us != 0 && s.cpu_quota_us != -1 && s.cpu_quota_us < 1000) {
    return InvalidArgumentError("guest '" + s.name + "': cpu.quota_us must be -1 (unlimited) or at least 1000");
  }
  return Status::Ok();
}

Json MigrationJobToJson(const MigrationJob& j) {
  return {{"active", j.active},
          {"elapsed_ms", j.elapsed_ms},
          {"downtime_ms", j.downtime_ms},
          {"memory_total_bytes", j.memory_total_bytes},
          {"memory_processed_bytes", j.memory_processed_bytes},
          {"memory_remaining_bytes", j.memory_remaining_bytes},
          {"dirty_rate_pages_s", j.dirty_rate_pages_s},
          {"memory_iteration", j.memory_iteration},
          {"expected_downtime_ms", j.expected_downtime_ms},
          {"disk_total_bytes", j.disk_total_bytes},
          {"disk_remaining_bytes", j.disk_remaining_bytes},
          {"bandwidth_mib_s", j.bandwidth_mib_s}};
}

Json GuestInfoToJson(const GuestInfo& i) {
  Json channels = Json::array();
  for (const auto& c : i.channels) channels.push_back({{"name", c.name}, {"socket", c.socket_path}});
  return {{"name", i.name},
          {"uuid", i.uuid},
          {"kind", GuestKindName(i.kind)},
          {"emulated", i.emulated},
          {"state", GuestStateName(i.state)},
          {"state_reason", i.state_reason},
          {"vcpus", i.vcpus},
          {"max_vcpus", i.max_vcpus},
          {"memory_mib", i.memory_mib},
          {"max_memory_mib", i.max_memory_mib},
          {"cpu_time_ns", i.cpu_time_ns},
          {"persistent", i.persistent},
          {"console_log", i.console_log},
          {"channels", channels}};
}

Json GuestUsageToJson(const GuestUsage& u) {
  const auto& c = u.counters;
  return {{"name", c.name},
          {"uuid", c.uuid},
          {"state", GuestStateName(c.state)},
          {"interval_s", u.interval_s},
          {"cpu_cores", u.cpu_cores},
          {"cpu_time_ns", c.cpu_time_ns},
          {"vcpus", c.vcpus},
          {"memory_used_mib", u.memory_used_mib},
          {"balloon_current_mib", c.balloon_current_kib < 0 ? -1 : c.balloon_current_kib / 1024},
          {"balloon_maximum_mib", c.balloon_maximum_kib < 0 ? -1 : c.balloon_maximum_kib / 1024},
          {"rss_mib", c.rss_kib < 0 ? -1 : c.rss_kib / 1024},
          {"block_rd_bytes", c.block_rd_bytes},
          {"block_wr_bytes", c.block_wr_bytes},
          {"net_rx_bytes", c.net_rx_bytes},
          {"net_tx_bytes", c.net_tx_bytes},
          {"block_rd_bps", u.block_rd_bps},
          {"block_wr_bps", u.block_wr_bps},
          {"net_rx_bps", u.net_rx_bps},
          {"net_tx_bps", u.net_tx_bps}};
}

Json HostInfoToJson(const HostInfo& h) {
  return {{"hostname", h.hostname},
          {"uri", h.uri},
          {"hypervisor", h.hypervisor},
          {"libvirt_version", h.libvirt_version},
          {"cpu_model", h.cpu_model},
          {"cpu_cores", h.cpu_cores},
          {"memory_mib", h.memory_mib},
          {"free_memory_mib", h.free_memory_mib},
          {"cpu_busy_fraction", h.cpu_busy_fraction},
          {"load1", h.load1}};
}

}  // namespace uw::vmm
