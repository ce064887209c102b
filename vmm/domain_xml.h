// GuestSpec <-> libvirt domain XML. Private to vmm/.
//
// The spec's Underware-only facts (requested kind, emulation, labels) live in the domain's
// <metadata> under the namespace kUwXmlNamespace, so a restarted agent can recover the spec of a
// guest it did not create in this process.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "vmm/hypervisor.h"

namespace uw::vmm {

inline constexpr const char* kUwXmlNamespace = "https://underware.dev/xmlns/guest/1";

// Builds the domain XML. `spec` must have passed ValidateGuestSpec. For kKvm with spec.emulated
// the domain is type='qemu' (TCG) without a host CPU model; the metadata still says kvm.
std::string BuildDomainXml(const GuestSpec& spec);

// One <disk> element as BuildDomainXml writes it for `disk` (virtio bus when `paravirt`, else
// sata): what a disk hot-plug gives libvirt.
std::string DiskDeviceXml(const DiskSpec& disk, bool paravirt);

// Reads back what BuildDomainXml wrote (and what libvirt adds). kInvalidArgument for XML that is
// not a domain.
Result<GuestSpec> ParseDomainXml(const std::string& xml);

// The domain XML with every file under `from_dir` moved under `to_dir`: each attribute value and
// text node that is `from_dir` + "/..." becomes `to_dir` + "/..." (disk sources, the console log,
// channel sockets, a kernel kept in the state directory). Directories are given without a
// trailing slash. Used for live migration, where the destination keeps its files under its own
// state directory. Disks lose their <backingStore> chains: a local disk arrives whole (the mirror
// copies every layer into the destination's one file). kInvalidArgument for XML that does not parse.
Result<std::string> MoveDomainPaths(const std::string& xml, std::string_view from_dir, std::string_view to_dir);

}  // namespace uw::vmm
