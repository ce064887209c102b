// Cgroup layouts as the kernel shows them in /proc/self/mountinfo and /proc/PID/cgroup: pure
// functions on those texts, so every layout is unit tested without a machine that has it.
//
//   v2      one cgroup2 hierarchy (usually /sys/fs/cgroup); every controller lives there.
//   v1      one cgroup hierarchy per controller group: `cpu,cpuacct` combined, or `cpu` and
//           `cpuacct` mounted separately.
//   hybrid  v1 controller hierarchies plus a cgroup2 mount without controllers
//           (usually /sys/fs/cgroup/unified, used by systemd for process tracking).
//
// Paths in /proc/PID/cgroup are relative to the reader's cgroup namespace, and a hierarchy may be
// mounted from a subtree (mountinfo's root field): both are handled. Thread-safe (no state).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace uw::vmm {

// One mounted cgroup hierarchy.
struct CgroupMount {
  std::string root;                  // the subtree of the hierarchy mounted here ("/" for all of it)
  std::string point;                 // where it is mounted
  bool v2 = false;                   // cgroup2
  std::vector<std::string> options;  // super options; for v1 they name the controllers
};

// The cgroup and cgroup2 mounts listed in a mountinfo text, in order. Lines that are not cgroup
// mounts, or malformed, are skipped.
std::vector<CgroupMount> CgroupMounts(std::string_view mountinfo);

// The cgroup.procs files that put a process into the cgroups of another: `proc_cgroup` is that
// process's /proc/PID/cgroup, `mountinfo` our /proc/self/mountinfo (both relative to our cgroup
// namespace). One file per mounted hierarchy; hierarchies not mounted here, or mounted from a
// subtree that does not hold the process's cgroup, are skipped. Used so that a command run in a
// container is accounted and limited with it.
std::vector<std::string> CgroupProcsFiles(std::string_view proc_cgroup, std::string_view mountinfo);

// The directory of the process's cgroup in the hierarchy that holds `controller` ("cpu",
// "cpuacct", "memory", ...): the v1 hierarchy whose mount names the controller, else (pure v2, or
// a hybrid machine whose v1 mounts lack it) the cgroup2 hierarchy. kNotFound, naming what is
// missing, when no mounted hierarchy holds the process's cgroup for that controller.
struct CgroupDir {
  std::string dir;  // e.g. /sys/fs/cgroup/cpu/machine/qemu-1-vm.libvirt-qemu/emulator
  bool v2 = false;  // found in the cgroup2 hierarchy
};
Result<CgroupDir> CgroupDirOf(std::string_view proc_cgroup, std::string_view mountinfo, std::string_view controller);

// What the host's cgroup layout is and what that changes for guests.
struct CgroupLayout {
  std::string version;                // "v1" | "v2" | "hybrid" | "none" (no cgroup mounted)
  std::string cpu;                    // mount point of the hierarchy with the cpu controller ("" none)
  std::string cpuacct;                // same for cpuacct (v2: the cgroup2 mount, where cpu.stat accounts)
  std::string unified;                // mount point of the cgroup2 hierarchy ("" none)
  bool cpu_cpuacct_combined = false;  // v1: one `cpu,cpuacct` hierarchy
  std::string notes;                  // for operators: what differs on this layout
};
CgroupLayout DetectCgroupLayout(std::string_view mountinfo);
Json CgroupLayoutToJson(const CgroupLayout& layout);

// The file that holds a guest's CPU shares in its cgroup and the value libvirt writes there for
// `shares`: v1 `cpu.shares` = shares; v2 `cpu.weight` = shares as well (libvirt writes the
// number verbatim and refuses values outside 1..10000 on v2).
struct CpuWeightFile {
  std::string file;  // "cpu.shares" | "cpu.weight"
  int64_t value = 0;
};
CpuWeightFile CpuSharesFileFor(bool v2, int64_t shares);

}  // namespace uw::vmm
