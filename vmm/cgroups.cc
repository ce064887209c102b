#include "vmm/cgroups.h"

#include <algorithm>

namespace uw::vmm {
namespace {

std::vector<std::string> Fields(std::string_view line, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t end = line.find(sep, start);
    out.emplace_back(line.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}
// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto octal = [&](size_t k) { return s[k] >= '0' && s[k] <= '7'; };
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] <= '3' && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// One line of /proc/PID/cgroup: "hierarchy-id:controller-list:path" (v2: "0::path").
struct Membership {
  std::vector<std::string> controllers;  // empty for the cgroup2 hierarchy
  std::string path;
};

std::vector<Membership> Memberships(std::string_view proc_cgroup) {
  std::vector<Membership> out;
  for (const auto& line : Fields(proc_cgroup, '\n')) {
    size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string list = line.substr(a + 1, b - a - 1);
    out.push_back({list.empty() ? std::vector<std::string>{} : Fields(list, ','), line.substr(b + 1)});
  }
  return out;
}

// The directory of `m`'s cgroup under the first mount of its hierarchy that holds it, "" if none.
std::string DirOf(const Membership& m, const std::vector<CgroupMount>& mounts) {
  for (const auto& mount : mounts) {
    bool match = m.controllers.empty() ? mount.v2 : !mount.v2;
    for (const auto& c : m.controllers) {
      match = match && std::find(mount.options.begin(), mount.options.end(), c) != mount.options.end();
    }
    if (!match) continue;
    std::string_view rel = m.path;
    if (mount.root != "/") {
      if (rel.substr(0, mount.root.size()) != mount.root ||
          (rel.size() > mount.root.size() && rel[mount.root.size()] != '/')) {
        continue;
      }
      rel.remove_prefix(mount.root.size());
    }
    std::string dir = mount.point;
    if (!rel.empty() && rel != "/") dir += std::string(rel);
    return dir;  // a hierarchy mounted twice: the first mount will do
  }
  return "";
}

bool Has(const std::vector<std::string>& v, std::string_view x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

std::vector<CgroupMount> CgroupMounts(std::string_view mountinfo) {
  std::vector<CgroupMount> mounts;
  for (const auto& line : Fields(mountinfo, '\n')) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    std::vector<std::string> f = Fields(line, ' ');
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 4 || dash - f.begin() < 5) continue;
    const std::string& type = *(dash + 1);
    if (type != "cgroup" && type != "cgroup2") continue;
    mounts.push_back({Unescape(f[3]), Unescape(f[4]), type == "cgroup2", Fields(*(dash + 3), ',')});
  }
  return mounts;
}

std::vector<std::string> CgroupProcsFiles(std::string_view proc_cgroup, std::string_view mountinfo) {
  const std::vector<CgroupMount> mounts = CgroupMounts(mountinfo);
  std::vector<std::string> out;
  for (const auto& m : Memberships(proc_cgroup)) {
    std::string dir = DirOf(m, mounts);
    if (!dir.empty()) out.push_back(dir + "/cgroup.procs");
  }
  return out;
}

Result<CgroupDir> CgroupDirOf(std::string_view proc_cgroup, std::string_view mountinfo, std::string_view controller) {
  const std::vector<CgroupMount> mounts = CgroupMounts(mountinfo);
  const std::vector<Membership> members = Memberships(proc_cgroup);
  // A v1 hierarchy with the controller first: on hybrid machines the cgroup2 mount has none.
  for (const auto& m : members) {
    if (!Has(m.controllers, controller)) continue;
    std::string dir = DirOf(m, mounts);
    if (dir.empty()) {
      return NotFoundError("the " + std::string(controller) + " hierarchy of cgroup " + m.path +
                           " is not mounted here (or only a subtree without it is)");
    }
    return CgroupDir{dir, false};
  }
  for (const auto& m : members) {
    if (!m.controllers.empty()) continue;
    std::string dir = DirOf(m, mounts);
    if (!dir.empty()) return CgroupDir{dir, true};
  }
  return NotFoundError("no mounted cgroup hierarchy holds the " + std::string(controller) +
                       " controller of this process (no v1 hierarchy names it and no cgroup2 mount "
                       "holds its cgroup)");
}

CgroupLayout DetectCgroupLayout(std::string_view mountinfo) {
  CgroupLayout l;
  bool any_v1 = false;
  for (const auto& m : CgroupMounts(mountinfo)) {
    if (m.v2) {
      if (l.unified.empty()) l.unified = m.point;
      continue;
    }
    any_v1 = true;
    const bool cpu = Has(m.options, "cpu"), cpuacct = Has(m.options, "cpuacct");
    if (cpu && l.cpu.empty()) l.cpu = m.point;
    if (cpuacct && l.cpuacct.empty()) l.cpuacct = m.point;
    if (cpu && cpuacct) l.cpu_cpuacct_combined = true;
  }
  if (!any_v1 && l.unified.empty()) {
    l.version = "none";
    l.notes = "no cgroup hierarchy is mounted: guests get no CPU or memory controls";
    return l;
  }
  if (!any_v1) {
    l.version = "v2";
    l.cpu = l.cpuacct = l.unified;
    l.notes = "cgroup v2: CPU shares are written as cpu.weight (same number, 1..10000)";
    return l;
  }
  l.version = l.unified.empty() ? "v1" : "hybrid";
  std::string notes = l.cpu.empty()            ? "no cpu controller is mounted: CPU shares and quotas cannot be set"
                      : l.cpu_cpuacct_combined ? "cpu and cpuacct share one hierarchy"
                                               : "cpu and cpuacct are separate hierarchies";
  if (!l.cpu.empty()) notes += "; CPU shares are cpu.shares (2..262144)";
  if (!l.unified.empty()) {
    notes += "; cgroup2 at " + l.unified + " holds no controllers (hybrid layout)";
  }
  l.notes = notes;
  return l;
}

Json CgroupLayoutToJson(const CgroupLayout& l) {
  return {{"version", l.version},
          {"cpu", l.cpu},
          {"cpuacct", l.cpuacct},
          {"unified", l.unified},
          {"cpu_cpuacct_combined", l.cpu_cpuacct_combined},
          {"notes", l.notes}};
}

CpuWeightFile CpuSharesFileFor(bool v2, int64_t shares) { return {v2 ? "cpu.weight" : "cpu.shares", shares}; }

}  // namespace uw::vmm
