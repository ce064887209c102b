// LibvirtHypervisor: host facts and the usage counters of every guest.
#include <libvirt/virterror.h>

#include <sstream>

#include "common/units.h"
#include "vmm/libvirt_driver.h"
#include "vmm/libvirt_internal.h"

namespace uw::vmm {

Result<HostInfo> LibvirtHypervisor::Host() {
  UW_ASSIGN_OR_RETURN(virConnectPtr c, Conn());
  HostInfo h;
  h.uri = uri_;
  virNodeInfo node;
  if (virNodeGetInfo(c, &node) < 0) return LibvirtError("reading node info of " + uri_);
  h.cpu_model = node.model;
  h.cpu_cores = static_cast<int>(node.cpus);
  h.memory_mib = static_cast<int64_t>(node.memory / 1024);
  if (char* hn = virConnectGetHostname(c)) {
    h.hostname = hn;
    free(hn);
  }
  if (const char* t = virConnectGetType(c)) h.hypervisor = t;
  unsigned long lib = 0;
  if (virConnectGetLibVersion(c, &lib) == 0) h.libvirt_version = lib;
  unsigned long long free_bytes = virNodeGetFreeMemory(c);
  if (free_bytes > 0) h.free_memory_mib = static_cast<int64_t>(free_bytes / kBytesPerMiB);
  int n = 0;
  if (virNodeGetCPUStats(c, VIR_NODE_CPU_STATS_ALL_CPUS, nullptr, &n, 0) == 0 && n > 0) {
    std::vector<virNodeCPUStats> stats(n);
    if (virNodeGetCPUStats(c, VIR_NODE_CPU_STATS_ALL_CPUS, stats.data(), &n, 0) == 0) {
      uint64_t busy = 0, total = 0;
      for (int i = 0; i < n; ++i) {
        std::string f = stats[i].field;
        if (f == VIR_NODE_CPU_STATS_IDLE || f == VIR_NODE_CPU_STATS_IOWAIT) {
          total += stats[i].value;
        } else if (f == VIR_NODE_CPU_STATS_KERNEL || f == VIR_NODE_CPU_STATS_USER) {
          busy += stats[i].value;
          total += stats[i].value;
        }
      }
      std::lock_guard l(host_mu_);
      if (prev_total_ns_ > 0 && total > prev_total_ns_) {
        h.cpu_busy_fraction = static_cast<double>(busy - prev_busy_ns_) / static_cast<double>(total - prev_total_ns_);
      }
      prev_busy_ns_ = busy;
      prev_total_ns_ = total;
    }
  } else {
    virResetLastError();
  }
  std::istringstream load(ReadSmallFile("/proc/loadavg"));
  load >> h.load1;
  return h;
}

namespace {
uint64_t ULL(virTypedParameterPtr p, int n, const std::string& key) {
  unsigned long long v = 0;
  if (virTypedParamsGetULLong(p, n, key.c_str(), &v) == 1) return v;
  return 0;
}
int64_t KiB(virTypedParameterPtr p, int n, const char* key) {
  unsigned long long v = 0;
  if (virTypedParamsGetULLong(p, n, key, &v) == 1) return static_cast<int64_t>(v);
  return -1;
}
}  // namespace

Result<std::vector<GuestCounters>> LibvirtHypervisor::SampleAll() {
  UW_ASSIGN_OR_RETURN(virConnectPtr c, Conn());
  std::vector<GuestCounters> out;
  virDomainStatsRecordPtr* records = nullptr;
  const unsigned int groups = VIR_DOMAIN_STATS_STATE | VIR_DOMAIN_STATS_CPU_TOTAL | VIR_DOMAIN_STATS_BALLOON |
                              VIR_DOMAIN_STATS_VCPU | VIR_DOMAIN_STATS_INTERFACE | VIR_DOMAIN_STATS_BLOCK;
  int n = virConnectGetAllDomainStats(c, groups, &records, 0);
  const Duration now = clock_.Monotonic();
  if (n >= 0) {
    for (int i = 0; i < n; ++i) {
      virDomainStatsRecordPtr r = records[i];
      GuestCounters g;
      g.name = virDomainGetName(r->dom);
      char uuid[VIR_UUID_STRING_BUFLEN];
      if (virDomainGetUUIDString(r->dom, uuid) == 0) g.uuid = uuid;
      g.at = now;
      if (unsigned id = virDomainGetID(r->dom); id != static_cast<unsigned>(-1)) g.id = id;
      int st = 0;
      virTypedParamsGetInt(r->params, r->nparams, "state.state", &st);
      g.state = StateFor(st);
      g.cpu_time_ns = ULL(r->params, r->nparams, "cpu.time");
      unsigned int vc = 0;
      if (virTypedParamsGetUInt(r->params, r->nparams, "vcpu.current", &vc) == 1) g.vcpus = static_cast<int>(vc);
      g.balloon_current_kib = KiB(r->params, r->nparams, "balloon.current");
      g.balloon_maximum_kib = KiB(r->params, r->nparams, "balloon.maximum");
      g.balloon_usable_kib = KiB(r->params, r->nparams, "balloon.usable");
      g.balloon_available_kib = KiB(r->params, r->nparams, "balloon.available");
      g.rss_kib = KiB(r->params, r->nparams, "balloon.rss");
      unsigned int nb = 0, nn = 0;
      virTypedParamsGetUInt(r->params, r->nparams, "block.count", &nb);
      for (unsigned int b = 0; b < nb; ++b) {
        std::string p = "block." + std::to_string(b) + ".";
        g.block_rd_bytes += ULL(r->params, r->nparams, p + "rd.bytes");
        g.block_wr_bytes += ULL(r->params, r->nparams, p + "wr.bytes");
        g.block_rd_reqs += ULL(r->params, r->nparams, p + "rd.reqs");
        g.block_wr_reqs += ULL(r->params, r->nparams, p + "wr.reqs");
      }
      virTypedParamsGetUInt(r->params, r->nparams, "net.count", &nn);
      for (unsigned int k = 0; k < nn; ++k) {
        std::string p = "net." + std::to_string(k) + ".";
        g.net_rx_bytes += ULL(r->params, r->nparams, p + "rx.bytes");
        g.net_tx_bytes += ULL(r->params, r->nparams, p + "tx.bytes");
      }
      out.push_back(std::move(g));
    }
    virDomainStatsRecordListFree(records);
    return out;
  }
  Status s = LibvirtError("sampling guests on " + uri_);
  if (s.code() != StatusCode::kUnimplemented) return s;
  // Drivers without bulk stats (LXC): one virDomainGetInfo per guest.
  virDomainPtr* doms = nullptr;
  int nd = virConnectListAllDomains(c, &doms, 0);
  if (nd < 0) return LibvirtError("listing guests on " + uri_);
  const bool containers = uri_.rfind("lxc:", 0) == 0;
  for (int i = 0; i < nd; ++i) {
    DomainHandle d(doms[i]);
    if (containers && virDomainIsActive(d.get()) == 1) ReapEndedContainer(d.get(), virDomainGetName(d.get()));
    virDomainInfo info;
    if (virDomainGetInfo(d.get(), &info) < 0) {
      virResetLastError();
      continue;
    }
    GuestCounters g;
    g.name = virDomainGetName(d.get());
    char uuid[VIR_UUID_STRING_BUFLEN];
    if (virDomainGetUUIDString(d.get(), uuid) == 0) g.uuid = uuid;
    g.at = now;
    if (unsigned id = virDomainGetID(d.get()); id != static_cast<unsigned>(-1)) g.id = id;
    g.state = StateFor(info.state);
    g.cpu_time_ns = info.cpuTime;
    g.vcpus = info.nrVirtCpu;
    g.balloon_maximum_kib = static_cast<int64_t>(info.maxMem);
    g.balloon_current_kib = static_cast<int64_t>(info.memory);
    // For containers libvirt reports the memory in use as `memory` when running.
    if (g.state == GuestState::kRunning) g.rss_kib = static_cast<int64_t>(info.memory);
    out.push_back(std::move(g));
  }
  free(doms);
  return out;
}

}  // namespace uw::vmm
