// uw-hbal: the bridge between Underware snapshots and Ganeti's hbal (htools text backend).
//
//   uw-hbal export --snapshot FILE --text OUT.txt --util OUT.util
//       One node group; every powered-on host a node (t_mem = memory_mib, n_mem = 0, f_mem =
//       memory left after the guests' configured memory, 1 TiB disk, t_cpu = cores); every placed
//       guest an instance with shared storage (disk template `rbd`, so hbal may migrate it to any
//       node, as our engine may) and no disk (snapshots have no disk dimension). The
//       dynamic-utilisation file (-U) gives each instance its CPU demand in cores and its memory
//       demand in "core-equivalents" (MiB x cluster cores / cluster MiB), so that hbal's raw CPU
//       and memory load deviations have the same scale, as our two normalized deviations do.
//       The instance policy allows
//       a vCPU ratio of 64 so that no generated cluster is "bad" for hbal from the start.
//   uw-hbal import --snapshot FILE --hbal-state FILE.balanced [--out SNAPSHOT]
//       Reads the instance -> primary node map hbal saved (-S) and prints our metrics of that
//       placement plus the number of guests hbal moved.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>
#include <unordered_map>

#include "common/json.h"
#include "placement/placement.h"

namespace {

namespace pl = uw::placement;

constexpr int64_t kDiskMiB = 0;
constexpr int64_t kNodeDiskMiB = 1 << 20;

uw::Result<pl::Snapshot> Load(const std::string& path) {
  UW_ASSIGN_OR_RETURN(uw::Json j, uw::LoadJsonFile(path));
  return pl::ParseSnapshot(j);
}

int Export(const pl::Snapshot& s, const std::string& text_path, const std::string& util_path) {
  std::unordered_map<std::string, int64_t> mem_used, disk_used;
  for (const auto& v : s.vms) {
    if (v.host.empty()) continue;
    mem_used[v.host] += v.memory_mib;
    disk_used[v.host] += kDiskMiB;
  }
  const std::string uuid = "00000000-0000-0000-0000-000000000001";
  std::ostringstream t;
  t << "default|" << uuid << "|preferred|\n\n";
  for (const auto& h : s.hosts) {
    if (h.state != pl::HostState::kOn) continue;
    t << h.name << "|" << h.memory_mib << "|0|" << h.memory_mib - mem_used[h.name] << "|" << kNodeDiskMiB << "|"
      << kNodeDiskMiB - disk_used[h.name] << "|" << static_cast<int64_t>(h.cpu_cores) << "|N|" << uuid << "|1\n";
  }
  t << "\n";
  std::ostringstream u;
  double cores = 0, mib = 0;
  for (const auto& h : s.hosts) {
    if (h.state != pl::HostState::kOn) continue;
    cores += h.cpu_cores;
    mib += static_cast<double>(h.memory_mib);
  }
  const double mem_unit = mib > 0 ? cores / mib : 0;
  for (const auto& v : s.vms) {
    if (v.host.empty()) continue;
    t << v.name << "|" << v.memory_mib << "|" << kDiskMiB << "|" << v.vcpus << "|running|Y|" << v.host << "||rbd||1\n";
    u << v.name << " " << v.demand.cpu_cores << " " << static_cast<double>(v.demand.memory_mib) * mem_unit << " 0 0\n";
  }
  t << "\n\n";
  t << "|128,1,1024,1,1,1|128,1,1024,1,1,1;1048576,256,1048576,16,8,12|rbd,drbd,plain|64.0|32.0\n";
  t << "default|128,1,1024,1,1,1|128,1,1024,1,1,1;1048576,256,1048576,16,8,12|rbd,drbd,plain|64.0|32.0\n";
  std::ofstream(text_path) << t.str();
  std::ofstream(util_path) << u.str();
  return 0;
}

int Import(pl::Snapshot s, const std::string& state_path, const std::string& out) {
  std::ifstream in(state_path);
  if (!in) {
    std::cerr << "uw-hbal: cannot open " << state_path << "\n";
    return 2;
  }
  // Sections are separated by blank lines: groups, nodes, instances, tags, policies.
  std::string line;
  int section = 0;
  std::unordered_map<std::string, std::string> primary;
  while (std::getline(in, line)) {
    if (line.empty()) {
      ++section;
      continue;
    }
    if (section != 2) continue;
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string cell;
    while (std::getline(ls, cell, '|')) f.push_back(cell);
    if (f.size() > 6) primary[f[0]] = f[6];
  }
  int64_t moved = 0;
  for (auto& v : s.vms) {
    auto it = primary.find(v.host.empty() ? std::string() : v.name);
    if (it == primary.end()) continue;
    if (it->second != v.host) {
      ++moved;
      v.host = it->second;
    }
  }
  pl::PlanMetrics m = pl::ComputeMetrics(s);
  uw::Json j = {{"imbalance", m.imbalance},
                {"cpu_imbalance", m.cpu_imbalance},
                {"memory_imbalance", m.memory_imbalance},
                {"guests_moved", moved}};
  std::cout << j.dump() << "\n";
  if (!out.empty()) std::ofstream(out) << pl::SnapshotToJson(s).dump(1) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"uw-hbal: convert between Underware snapshots and hbal's text format"};
  app.require_subcommand(1);
  std::string snapshot, text, util, state, out;
  auto* exp = app.add_subcommand("export", "snapshot -> hbal text + utilisation file");
  exp->add_option("--snapshot", snapshot)->required();
  exp->add_option("--text", text)->required();
  exp->add_option("--util", util)->required();
  auto* imp = app.add_subcommand("import", "hbal saved state -> our metrics");
  imp->add_option("--snapshot", snapshot)->required();
  imp->add_option("--hbal-state", state)->required();
  imp->add_option("--out", out);
  CLI11_PARSE(app, argc, argv);
  auto s = Load(snapshot);
  if (!s.ok()) {
    std::cerr << "uw-hbal: " << s.status().ToString() << "\n";
    return 2;
  }
  if (*exp) return Export(*s, text, util);
  return Import(*s, state, out);
}
