// Private to placement/: the parts of the consolidate policy shared by its files (the packer in
// consolidate_pack.cc, the realization in consolidate_realize.cc, the driver in consolidate.cc).
#pragma once

#include <tuple>
#include <vector>

#include "placement/cluster.h"

namespace uw::placement::internal {

// A host assignment of the movable units.
struct Packing {
  bool ok = false;
  int hosts_used = 0;
  std::vector<int> target;  // per unit: host (movable units only; -1 for pinned)
};

// A movable unit: its guests and their load.
struct Item {
  int unit;
  std::vector<int> set;
  UnitLoad load;
};

// Powered-on hosts running at least one guest.
int UsedHosts(const Cluster& c);

// Relative fill of host h after adding `load` (sum of CPU and memory shares).
double Fill(const HostSlot& h, const UnitLoad& load);

enum class Fit { kFirst, kBest };

// Packs the items onto the powered-on hosts of a cluster, each heuristic on a scratch copy of it;
// guests on `pinned_host` hosts that are not items stay. The cluster must outlive the packer.
class Packer {
 public:
  Packer(const Cluster& c, std::vector<Item> items, std::vector<char> pinned_host);

  // Packs items in `order` into hosts, trying `host_order` (first fit) or the fullest that fits.
  Packing Run(const std::vector<int>& order, const std::vector<int>& host_order, Fit fit, bool improve) const;

  // Bin-centric greedy (Panigrahy et al.'s L2-norm rule): fill one host at a time, each time
  // with the guest that leaves the smallest (normalized) residual vector, until none fits.
  // `own_bonus` > 0 favours guests already on the host (fewer moves at nearly the same packing).
  Packing RunBinCentric(const std::vector<int>& host_order, bool improve, double own_bonus = 0) const;

  // Keep-then-fill: hosts in `host_order` (fullest first) keep their own guests while they fit
  // (largest first), then take the guest leaving the smallest residual from anywhere (L2 rule).
  // Packs nearly as tightly as the bin-centric rule but keeps most guests where they are.
  Packing RunKeepThenFill(const std::vector<int>& host_order, bool improve) const;

  // Units the packing moves away from their current host.
  int Moves(const Packing& p) const;

  // Size of an item relative to the largest host: max (kind 0) or sum (kind 1) of its shares.
  double Key(const Item& it, int kind) const;

 private:
  void Eliminate(Cluster& p, Packing& out) const;
  bool pinned_unit(const Cluster& p, int v) const;

  const Cluster& base_;

 public:
  std::vector<char> constrained_;  // items with host constraints: placed first by the fill rules
 private:
  std::vector<Item> items_;
  std::vector<char> pinned_host_;
  double max_cores_ = 1, max_mem_ = 1;
};

using Step = std::tuple<std::vector<int>, int, int>;  // (set, from, to)

// Evacuates every powered-on host not in `keep` into the kept ones. Steps, or false.
bool EvacuateInto(const Cluster& c, const std::vector<char>& keep, std::vector<Step>& steps);

// Sequences a full target assignment; detours through hosts with room break cycles.
bool Sequence(const Cluster& c, const std::vector<Item>& items, const std::vector<int>& target,
              std::vector<Step>& steps);

}  // namespace uw::placement::internal
