// Disks added to, grown in and removed from a defined guest (LibvirtHypervisor::AttachDisk,
// ResizeRunningDisk, DetachDisk).
#include <libvirt/libvirt.h>

#include <algorithm>
#include <chrono>
#include <pugixml.hpp>
#include <sstream>
#include <thread>

#include "vmm/domain_xml.h"
#include "vmm/libvirt_driver.h"
#include "vmm/libvirt_internal.h"

namespace uw::vmm {
namespace {

// The <disk> element at `target` in the domain XML `xml`, printed; "" when there is none.
std::string DiskElementAt(const std::string& xml, std::string_view target) {
  pugi::xml_document doc;
  if (!doc.load_string(xml.c_str())) return "";
  for (auto disk : doc.child("domain").child("devices").children("disk")) {
    if (std::string_view(disk.child("target").attribute("dev").as_string()) != target) continue;
    std::ostringstream out;
    disk.print(out, "", pugi::format_raw);
    return out.str();
  }
  return "";
}

// The domain's XML: the running guest's (flags 0), or its persistent definition.
Result<std::string> DomainXml(virDomainPtr d, std::string_view name, unsigned flags) {
  char* xml = virDomainGetXMLDesc(d, flags);
  if (!xml) return LibvirtError("reading guest '" + std::string(name) + "'");
  std::string out(xml);
  free(xml);
  return out;
}

}  // namespace

Status LibvirtHypervisor::AttachDisk(std::string_view name, const DiskSpec& disk) {
  UW_ASSIGN_OR_RETURN(GuestSpec spec, GetSpec(name));
  const std::string what = "guest '" + std::string(name) + "'";
  if (spec.kind == GuestKind::kLxc) return FailedPreconditionError(what + " is a container: it has no disks");
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  UW_ASSIGN_OR_RETURN(std::string live, DomainXml(d.get(), name, 0));
  const bool defined = std::any_of(spec.disks.begin(), spec.disks.end(),
                                   [&](const DiskSpec& have) { return have.target == disk.target; });
  if (defined || !DiskElementAt(live, disk.target).empty()) {
    return AlreadyExistsError(what + " has a disk at " + disk.target + " already");
  }
  const std::string xml = DiskDeviceXml(disk, spec.paravirt);
  return ApplyLiveAndConfig(d.get(), "attaching disk " + disk.target + " to " + what,
                            [&](unsigned flags) { return virDomainAttachDeviceFlags(d.get(), xml.c_str(), flags); });
}

Status LibvirtHypervisor::ResizeRunningDisk(std::string_view name, std::string_view target, int64_t bytes) {
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  UW_ASSIGN_OR_RETURN(std::string live, DomainXml(d.get(), name, 0));
  const std::string what = "disk " + std::string(target) + " of guest '" + std::string(name) + "'";
  if (DiskElementAt(live, target).empty()) return NotFoundError(what + ": the guest has no such disk");
  // Never smaller: QEMU would cut the image (an RBD image too) under the guest.
  virDomainBlockInfo info{};
  if (virDomainGetBlockInfo(d.get(), std::string(target).c_str(), &info, 0) < 0) {
    return LibvirtError("reading the size of " + what);
  }
  if (static_cast<unsigned long long>(bytes) < info.capacity) {
    return InvalidArgumentError("size: " + what + " is " + std::to_string(info.capacity) +
                                " bytes; not shrinking it to " + std::to_string(bytes));
  }
  if (static_cast<unsigned long long>(bytes) == info.capacity) return Status::Ok();
  if (virDomainBlockResize(d.get(), std::string(target).c_str(), static_cast<unsigned long long>(bytes),
                           VIR_DOMAIN_BLOCK_RESIZE_BYTES) < 0) {
    return LibvirtError("resizing " + what);
  }
  return Status::Ok();
}

Status LibvirtHypervisor::DetachDisk(std::string_view name, std::string_view target, Duration timeout) {
  const std::string what = "disk " + std::string(target) + " of guest '" + std::string(name) + "'";
  UW_ASSIGN_OR_RETURN(virDomainPtr raw, Lookup(name));
  DomainHandle d(raw);
  UW_ASSIGN_OR_RETURN(std::string live, DomainXml(d.get(), name, 0));
  UW_ASSIGN_OR_RETURN(std::string defined, DomainXml(d.get(), name, VIR_DOMAIN_XML_INACTIVE));
  std::string element = DiskElementAt(live, target);
  const bool in_definition = !DiskElementAt(defined, target).empty();
  if (element.empty() && !in_definition) return NotFoundError(what + ": the guest has no such disk");
  if (element.empty()) element = DiskElementAt(defined, target);
  const bool running = virDomainIsActive(d.get()) == 1 && !DiskElementAt(live, target).empty();
  // The running guest first: libvirt asks it to let go (a PCI unplug through ACPI) and waits a
  // few seconds; the definition then, so the disk is gone at its next start either way.
  if (running && virDomainDetachDeviceFlags(d.get(), element.c_str(), VIR_DOMAIN_AFFECT_LIVE) < 0) {
    return LibvirtError("detaching " + what);
  }
  if (in_definition && virDomainIsPersistent(d.get()) == 1 &&
      virDomainDetachDeviceFlags(d.get(), element.c_str(), VIR_DOMAIN_AFFECT_CONFIG) < 0) {
    return LibvirtError("detaching " + what + " (persistent definition)");
  }
  if (!running) return Status::Ok();
  const Duration deadline = clock_.Monotonic() + timeout;
  while (true) {
    UW_ASSIGN_OR_RETURN(std::string now, DomainXml(d.get(), name, 0));
    if (DiskElementAt(now, target).empty()) return Status::Ok();
    if (virDomainIsActive(d.get()) != 1) return Status::Ok();  // stopped meanwhile: no live disk left
    if (clock_.Monotonic() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return DeadlineExceededError(what + ": the running guest did not let go of it within " +
                               std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
                               " s (no PCI hot-unplug in the guest?); it is gone from the definition, so "
                               "it goes at the guest's next stop");
}

}  // namespace uw::vmm
