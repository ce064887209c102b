// GuestSpec <-> libvirt domain XML. Private to vmm/.
//
// The spec's Underware-only facts (requested kind, emulation, labels) live in the domain's
// <metadata> under the namespace kUwXmlNamespace, so a restarted agent can recover the spec of a
// guest it did not create in this process.
#pragma once

#include <string>

#include "common/status.h"
#include "vmm/hypervisor.h"

namespace uw::vmm {

inline constexpr const char* kUwXmlNamespace = "https://underware.dev/xmlns/guest/1";

// Builds the domain XML. `spec` must have passed ValidateGuestSpec. For kKvm with spec.emulated
// the domain is type='qemu' (TCG) without a host CPU model; the metadata still says kvm.
std::string BuildDomainXml(const GuestSpec& spec);

// Reads back what BuildDomainXml wrote (and what libvirt adds). kInvalidArgument for XML that is
// not a domain.
Result<GuestSpec> ParseDomainXml(const std::string& xml);

}  // namespace uw::vmm
