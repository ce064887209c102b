// Helpers shared by the files of LibvirtHypervisor (libvirt_*.cc). Private to vmm/.
#pragma once

#include <libvirt/libvirt.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "vmm/hypervisor.h"
#include "vmm/libvirt_driver.h"

namespace uw::vmm {

struct DomainDeleter {
  void operator()(virDomainPtr d) const {
    if (d) virDomainFree(d);
  }
};
using DomainHandle = std::unique_ptr<virDomain, DomainDeleter>;

// libvirt's virDomainState as a GuestState.
GuestState StateFor(int state);

// A small file's contents ("" when it cannot be read): /proc entries.
inline std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Applies a change to the running guest (when it runs) and to its persistent definition, as two
// calls: some drivers refuse AFFECT_LIVE and AFFECT_CONFIG together.
template <typename F>
Status ApplyLiveAndConfig(virDomainPtr d, const std::string& what, F apply) {
  if (virDomainIsActive(d) == 1) {
    if (apply(VIR_DOMAIN_AFFECT_LIVE) < 0) return LibvirtError(what);
    if (virDomainIsPersistent(d) != 1) return Status::Ok();
  }
  if (apply(VIR_DOMAIN_AFFECT_CONFIG) < 0) {
    Status s = LibvirtError(what + " (persistent definition)");
    if (virDomainIsActive(d) == 1) {
      // The live change took effect; the definition keeps the old value until the next change.
      spdlog::warn("{}", s.message());
      return Status::Ok();
    }
    return s;
  }
  return Status::Ok();
}

}  // namespace uw::vmm
