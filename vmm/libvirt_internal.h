// Helpers shared by the files of LibvirtHypervisor (libvirt_*.cc). Private to vmm/.
#pragma once

#include <libvirt/libvirt.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "vmm/hypervisor.h"

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

}  // namespace uw::vmm
