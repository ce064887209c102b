#include "vmm/domain_xml.h"

#include <optional>
#include <pugixml.hpp>
#include <sstream>

#include "storage/storage.h"

namespace uw::vmm {
namespace {

std::string Str(int64_t v) { return std::to_string(v); }

void AddText(pugi::xml_node parent, const char* name, const std::string& text) {
  parent.append_child(name).text().set(text.c_str());
}

// A Ceph RBD disk: storage/'s <disk type='network'> element (one writer of that XML).
void AppendRbdDisk(pugi::xml_node devices, const DiskSpec& d, const char* bus) {
  storage::DiskSource source;
  source.type = "network";
  source.format = "raw";
  source.protocol = "rbd";
  source.name = d.rbd;
  source.config_file = d.rbd_config_file;
  source.auth_user = d.rbd_user;
  source.secret_uuid = d.rbd_secret_uuid;
  pugi::xml_document fragment;
  fragment.load_string(storage::DiskXml(source, d.target, bus).c_str());
  auto disk = devices.append_copy(fragment.first_child());
  if (d.read_only) disk.append_child("readonly");
}

// One <disk> of a guest: a file or block device on the host, or an RBD image.
void AppendDisk(pugi::xml_node devices, const DiskSpec& d, bool paravirt) {
  const char* bus = paravirt ? "virtio" : "sata";
  if (!d.rbd.empty()) {
    AppendRbdDisk(devices, d, bus);
    return;
  }
  auto disk = devices.append_child("disk");
  disk.append_attribute("type") = d.path.rfind("/dev/", 0) == 0 ? "block" : "file";
  disk.append_attribute("device") = "disk";
  auto drv = disk.append_child("driver");
  drv.append_attribute("name") = "qemu";
  drv.append_attribute("type") = d.format.c_str();
  drv.append_attribute("cache") = "none";
  auto src = disk.append_child("source");
  src.append_attribute(d.path.rfind("/dev/", 0) == 0 ? "dev" : "file") = d.path.c_str();
  auto tgt = disk.append_child("target");
  tgt.append_attribute("dev") = d.target.c_str();
  tgt.append_attribute("bus") = bus;
  if (d.read_only) disk.append_child("readonly");
}

// A port NIC: the tap the agent made and plugged into its integration bridge, opened by QEMU as it
// is (managed='no': libvirt neither makes nor removes it). No checksum or segmentation offload in
// either direction: Open vSwitch's userspace datapath passes a frame's partial checksum on as it
// is, and TCP between guests would fail while ping works.
void AppendPortNic(pugi::xml_node nic, const NicSpec& n, bool paravirt) {
  nic.append_attribute("type") = "ethernet";
  nic.append_child("mac").append_attribute("address") = n.mac.c_str();
  auto target = nic.append_child("target");
  target.append_attribute("dev") = n.device.c_str();
  target.append_attribute("managed") = "no";
  nic.append_child("model").append_attribute("type") = paravirt ? "virtio" : "e1000e";
  if (paravirt) {
    auto driver = nic.append_child("driver");
    auto host = driver.append_child("host");
    for (const char* a : {"csum", "gso", "tso4", "tso6", "ecn", "ufo"}) host.append_attribute(a) = "off";
    auto guest = driver.append_child("guest");
    for (const char* a : {"csum", "tso4", "tso6", "ecn", "ufo"}) guest.append_attribute(a) = "off";
  }
}

void BuildMetadata(pugi::xml_node domain, const GuestSpec& spec) {
  auto guest = domain.append_child("metadata").append_child("uw:guest");
  guest.append_attribute("xmlns:uw") = kUwXmlNamespace;
  guest.append_attribute("kind") = std::string(GuestKindName(spec.kind)).c_str();
  guest.append_attribute("paravirt") = spec.paravirt ? "yes" : "no";
  if (spec.emulated) guest.append_attribute("emulated") = "yes";
  for (const auto& n : spec.nics) {
    if (n.type != "port") continue;
    auto p = guest.append_child("uw:port");
    p.append_attribute("id") = n.port.c_str();
    p.append_attribute("network") = n.network.c_str();
    p.append_attribute("address") = n.address.c_str();
    p.append_attribute("gateway") = n.gateway.c_str();
    p.append_attribute("device") = n.device.c_str();
    p.append_attribute("bridge") = n.source.c_str();
  }
  for (const auto& [k, v] : spec.labels) {
    auto l = guest.append_child("uw:label");
    l.append_attribute("key") = k.c_str();
    l.append_attribute("value") = v.c_str();
  }
}

void BuildCpuTune(pugi::xml_node domain, const GuestSpec& spec) {
  if (spec.cpu_shares <= 0 && spec.cpu_quota_us == 0 && spec.cpu_period_us <= 0) return;
  auto tune = domain.append_child("cputune");
  if (spec.cpu_shares > 0) AddText(tune, "shares", Str(spec.cpu_shares));
  if (spec.cpu_period_us > 0) AddText(tune, "period", Str(spec.cpu_period_us));
  if (spec.cpu_quota_us != 0) AddText(tune, "quota", Str(spec.cpu_quota_us));
}

void BuildMemory(pugi::xml_node domain, const GuestSpec& spec) {
  auto mem = domain.append_child("memory");
  mem.append_attribute("unit") = "KiB";
  mem.text().set(Str(spec.max_memory_mib * 1024).c_str());
  auto cur = domain.append_child("currentMemory");
  cur.append_attribute("unit") = "KiB";
  cur.text().set(Str(spec.memory_mib * 1024).c_str());
}

void BuildVm(pugi::xml_node domain, const GuestSpec& spec) {
  const bool hw = spec.kind == GuestKind::kKvm && !spec.emulated;
  auto vcpu = domain.append_child("vcpu");
  vcpu.append_attribute("placement") = "static";
  if (spec.vcpus != spec.max_vcpus) vcpu.append_attribute("current") = spec.vcpus;
  vcpu.text().set(spec.max_vcpus);
  BuildCpuTune(domain, spec);

  auto os = domain.append_child("os");
  auto type = os.append_child("type");
  type.append_attribute("arch") = "x86_64";
  type.append_attribute("machine") = "q35";
  type.text().set("hvm");
  if (!spec.kernel.empty()) AddText(os, "kernel", spec.kernel);
  if (!spec.initrd.empty()) AddText(os, "initrd", spec.initrd);
  if (!spec.cmdline.empty()) AddText(os, "cmdline", spec.cmdline);
  if (spec.kernel.empty()) os.append_child("boot").append_attribute("dev") = "hd";

  auto features = domain.append_child("features");
  features.append_child("acpi");
  features.append_child("apic");
  if (hw) domain.append_child("cpu").append_attribute("mode") = "host-passthrough";
  domain.append_child("clock").append_attribute("offset") = "utc";
  AddText(domain, "on_poweroff", "destroy");
  AddText(domain, "on_reboot", "restart");
  // A panicked guest is kept (QEMU stopped, state crashed) so its console and memory can be
  // inspected; the agent reports it and the manager decides whether to restart it.
  AddText(domain, "on_crash", "preserve");

  auto devices = domain.append_child("devices");
  for (const auto& d : spec.disks) AppendDisk(devices, d, spec.paravirt);
  for (const auto& n : spec.nics) {
    auto nic = devices.append_child("interface");
    if (n.type == "port") {
      AppendPortNic(nic, n, spec.paravirt);
      continue;
    }
    nic.append_attribute("type") = n.type == "user" ? "user" : "bridge";
    if (!n.mac.empty()) nic.append_child("mac").append_attribute("address") = n.mac.c_str();
    if (n.type != "user") nic.append_child("source").append_attribute("bridge") = n.source.c_str();
    if (n.type == "ovs") {
      nic.append_child("virtualport").append_attribute("type") = "openvswitch";
      if (n.vlan > 0) nic.append_child("vlan").append_child("tag").append_attribute("id") = n.vlan;
    }
    nic.append_child("model").append_attribute("type") = spec.paravirt ? "virtio" : "e1000e";
  }
  if (!spec.console_log.empty()) {
    auto serial = devices.append_child("serial");
    serial.append_attribute("type") = "file";
    auto src = serial.append_child("source");
    src.append_attribute("path") = spec.console_log.c_str();
    src.append_attribute("append") = "off";
    serial.append_child("target").append_attribute("port") = 0;
  } else {
    devices.append_child("serial").append_attribute("type") = "pty";
  }
  for (const auto& c : spec.channels) {
    auto ch = devices.append_child("channel");
    ch.append_attribute("type") = "unix";
    auto src = ch.append_child("source");
    src.append_attribute("mode") = "bind";
    src.append_attribute("path") = c.socket_path.c_str();
    auto tgt = ch.append_child("target");
    tgt.append_attribute("type") = "virtio";
    tgt.append_attribute("name") = c.name.c_str();
  }
  auto balloon = devices.append_child("memballoon");
  balloon.append_attribute("model") = spec.paravirt ? "virtio" : "none";
  if (spec.paravirt) balloon.append_child("stats").append_attribute("period") = 1;
  // pvpanic (PCI; the guest needs the pvpanic_pci driver): the guest's kernel tells QEMU it
  // panicked, libvirt turns that into the crashed state at once.
  devices.append_child("panic").append_attribute("model") = "pvpanic";
}

void BuildContainer(pugi::xml_node domain, const GuestSpec& spec) {
  domain.append_child("vcpu").text().set(spec.vcpus);
  BuildCpuTune(domain, spec);
  auto os = domain.append_child("os");
  AddText(os, "type", "exe");
  AddText(os, "init", spec.lxc_init);
  for (const auto& a : spec.lxc_init_args) AddText(os, "initarg", a);
  AddText(domain, "on_poweroff", "destroy");
  AddText(domain, "on_reboot", "restart");
  AddText(domain, "on_crash", "destroy");
  auto devices = domain.append_child("devices");
  auto fs = devices.append_child("filesystem");
  fs.append_attribute("type") = "mount";
  fs.append_child("source").append_attribute("dir") = spec.lxc_root.c_str();
  fs.append_child("target").append_attribute("dir") = "/";
  for (const auto& n : spec.nics) {
    if (n.type == "user") continue;  // no user-mode networking for containers
    auto nic = devices.append_child("interface");
    nic.append_attribute("type") = "bridge";
    if (!n.mac.empty()) nic.append_child("mac").append_attribute("address") = n.mac.c_str();
    nic.append_child("source").append_attribute("bridge") = n.source.c_str();
    if (n.type == "ovs") nic.append_child("virtualport").append_attribute("type") = "openvswitch";
  }
  devices.append_child("console").append_attribute("type") = "pty";
}

// Our metadata, whatever prefix libvirt gave the namespace when it re-serialized it: kind, device
// model, labels, and the port NICs (matched to their interfaces by the caller).
void ReadOurMetadata(pugi::xml_node domain, GuestSpec& spec, std::vector<NicSpec>& ports) {
  for (auto child : domain.child("metadata").children()) {
    bool ours = false;
    for (auto a : child.attributes()) {
      if (std::string(a.name()).rfind("xmlns", 0) == 0 && std::string(a.value()) == kUwXmlNamespace) ours = true;
    }
    if (!ours) continue;
    if (auto k = ParseGuestKind(child.attribute("kind").as_string()); k.ok()) spec.kind = *k;
    spec.emulated = std::string(child.attribute("emulated").as_string()) == "yes";
    spec.paravirt = std::string(child.attribute("paravirt").as_string("yes")) != "no";
    for (auto l : child.children()) {
      std::string n = l.name();
      if (n.size() >= 5 && n.substr(n.size() - 5) == "label") {
        spec.labels.emplace_back(l.attribute("key").as_string(), l.attribute("value").as_string());
      }
      if (n == "port" || (n.size() > 5 && n.substr(n.size() - 5) == ":port")) {
        NicSpec p;
        p.type = "port";
        p.source = l.attribute("bridge").as_string();
        p.port = l.attribute("id").as_string();
        p.network = l.attribute("network").as_string();
        p.address = l.attribute("address").as_string();
        p.gateway = l.attribute("gateway").as_string();
        p.device = l.attribute("device").as_string();
        ports.push_back(p);
      }
    }
  }
}

int64_t KiBToMiB(const char* text) { return std::stoll(text) / 1024; }

}  // namespace

std::string BuildDomainXml(const GuestSpec& spec) {
  pugi::xml_document doc;
  auto domain = doc.append_child("domain");
  const char* type = spec.kind == GuestKind::kLxc                       ? "lxc"
                     : (spec.kind == GuestKind::kKvm && !spec.emulated) ? "kvm"
                                                                        : "qemu";
  domain.append_attribute("type") = type;
  AddText(domain, "name", spec.name);
  if (!spec.uuid.empty()) AddText(domain, "uuid", spec.uuid);
  BuildMetadata(domain, spec);
  BuildMemory(domain, spec);
  if (spec.kind == GuestKind::kLxc) {
    BuildContainer(domain, spec);
  } else {
    BuildVm(domain, spec);
  }
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
  return out.str();
}

std::string DiskDeviceXml(const DiskSpec& disk, bool paravirt) {
  pugi::xml_document doc;
  AppendDisk(doc, disk, paravirt);
  std::ostringstream out;
  doc.first_child().print(out, "", pugi::format_raw);
  return out.str();
}

Result<GuestSpec> ParseDomainXml(const std::string& xml) {
  pugi::xml_document doc;
  auto parsed = doc.load_string(xml.c_str());
  if (!parsed) return InvalidArgumentError(std::string("domain XML: ") + parsed.description());
  auto domain = doc.child("domain");
  if (!domain) return InvalidArgumentError("domain XML: no <domain> element");
  try {
    GuestSpec spec;
    std::string type = domain.attribute("type").as_string();
    spec.name = domain.child_value("name");
    spec.uuid = domain.child_value("uuid");
    spec.kind = type == "lxc" ? GuestKind::kLxc : type == "kvm" ? GuestKind::kKvm : GuestKind::kQemu;
    spec.paravirt = true;
    std::vector<NicSpec> ports;  // our metadata's port NICs, matched to their interfaces below
    ReadOurMetadata(domain, spec, ports);
    spec.max_memory_mib = KiBToMiB(domain.child_value("memory"));
    spec.memory_mib =
        domain.child("currentMemory") ? KiBToMiB(domain.child_value("currentMemory")) : spec.max_memory_mib;
    auto vcpu = domain.child("vcpu");
    spec.max_vcpus = vcpu ? vcpu.text().as_int(1) : 1;
    spec.vcpus = vcpu.attribute("current") ? vcpu.attribute("current").as_int() : spec.max_vcpus;
    auto tune = domain.child("cputune");
    spec.cpu_shares = tune.child("shares").text().as_llong(0);
    spec.cpu_period_us = tune.child("period").text().as_llong(0);
    spec.cpu_quota_us = tune.child("quota").text().as_llong(0);
    auto os = domain.child("os");
    spec.kernel = os.child_value("kernel");
    spec.initrd = os.child_value("initrd");
    spec.cmdline = os.child_value("cmdline");
    auto devices = domain.child("devices");
    if (spec.kind == GuestKind::kLxc) {
      spec.lxc_init = os.child_value("init");
      for (auto a : os.children("initarg")) spec.lxc_init_args.push_back(a.child_value());
      for (auto fs : devices.children("filesystem")) {
        if (std::string(fs.child("target").attribute("dir").as_string()) == "/") {
          spec.lxc_root = fs.child("source").attribute("dir").as_string();
        }
      }
    }
    for (auto d : devices.children("disk")) {
      if (std::string(d.attribute("device").as_string("disk")) != "disk") continue;
      DiskSpec disk;
      auto src = d.child("source");
      if (std::string(src.attribute("protocol").as_string()) == "rbd") {
        disk.rbd = src.attribute("name").as_string();
        disk.rbd_user = d.child("auth").attribute("username").as_string();
        disk.rbd_secret_uuid = d.child("auth").child("secret").attribute("uuid").as_string();
        disk.rbd_config_file = src.child("config").attribute("file").as_string();
      }
      disk.path = src.attribute("file") ? src.attribute("file").as_string() : src.attribute("dev").as_string();
      disk.format = d.child("driver").attribute("type").as_string("raw");
      disk.target = d.child("target").attribute("dev").as_string();
      disk.read_only = static_cast<bool>(d.child("readonly"));
      spec.disks.push_back(disk);
    }
    for (auto n : devices.children("interface")) {
      NicSpec nic;
      std::string t = n.attribute("type").as_string();
      if (t == "ethernet") {
        // A port NIC: what the metadata says of the tap it opens.
        const std::string dev = n.child("target").attribute("dev").as_string();
        for (const NicSpec& p : ports) {
          if (p.device == dev) nic = p;
        }
        if (nic.type != "port") continue;  // not ours
        nic.mac = n.child("mac").attribute("address").as_string();
        spec.nics.push_back(nic);
        continue;
      }
      nic.type = t == "user" ? "user" : (n.child("virtualport") ? "ovs" : "bridge");
      nic.source = n.child("source").attribute("bridge").as_string();
      nic.mac = n.child("mac").attribute("address").as_string();
      nic.vlan = n.child("vlan").child("tag").attribute("id").as_int(0);
      spec.nics.push_back(nic);
    }
    for (auto s : devices.children("serial")) {
      if (std::string(s.attribute("type").as_string()) == "file") {
        spec.console_log = s.child("source").attribute("path").as_string();
      }
    }
    for (auto c : devices.children("channel")) {
      auto tgt = c.child("target");
      if (std::string(c.attribute("type").as_string()) != "unix" ||
          std::string(tgt.attribute("type").as_string()) != "virtio") {
        continue;
      }
      spec.channels.push_back({tgt.attribute("name").as_string(), c.child("source").attribute("path").as_string()});
    }
    if (auto b = devices.child("memballoon"); b && std::string(b.attribute("model").as_string()) == "none") {
      spec.paravirt = false;
    }
    return spec;
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("domain XML: bad number: ") + e.what());
  }
}

namespace {

// `value` with the prefix `from` + "/" replaced by `to` + "/"; nullopt when it has no such prefix.
std::optional<std::string> Moved(std::string_view value, std::string_view from, std::string_view to) {
  if (value.size() <= from.size() || value.substr(0, from.size()) != from || value[from.size()] != '/') {
    return std::nullopt;
  }
  return std::string(to) + std::string(value.substr(from.size()));
}

void MovePathsUnder(pugi::xml_node node, std::string_view from, std::string_view to) {
  for (pugi::xml_attribute a : node.attributes()) {
    if (auto moved = Moved(a.value(), from, to)) a.set_value(moved->c_str());
  }
  for (pugi::xml_node child : node.children()) {
    if (child.type() == pugi::node_pcdata || child.type() == pugi::node_cdata) {
      if (auto moved = Moved(child.value(), from, to)) child.set_value(moved->c_str());
    } else if (child.type() == pugi::node_element) {
      MovePathsUnder(child, from, to);
    }
  }
}

}  // namespace

Result<std::string> MoveDomainPaths(const std::string& xml, std::string_view from_dir, std::string_view to_dir) {
  pugi::xml_document doc;
  auto parsed = doc.load_string(xml.c_str(), pugi::parse_default | pugi::parse_declaration | pugi::parse_comments);
  if (!parsed) return InvalidArgumentError(std::string("domain XML: ") + parsed.description());
  MovePathsUnder(doc.document_element(), from_dir, to_dir);
  // A local disk arrives whole (the mirror copies every layer of its chain into one file), so the
  // source's backing chain is not the destination's; libvirt reads the chain of what it opens.
  for (pugi::xml_node disk : doc.document_element().child("devices").children("disk")) {
    while (pugi::xml_node b = disk.child("backingStore")) disk.remove_child(b);
  }
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
  return out.str();
}

}  // namespace uw::vmm
