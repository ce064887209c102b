// DRS balancing: the greedy best-move rounds (Balance), the swap refinement of an aggressive pass
// on a small cluster (SwapRefine), and the collapse of a guest's chained balancing moves into one
// migration (CollapseChains).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <tuple>
#include <unordered_map>

#include "placement/planner.h"

namespace uw::placement::internal {

namespace {

std::vector<int> PoweredOnHosts(const Cluster& c) {
  std::vector<int> on;
  for (size_t h = 0; h < c.hosts.size(); ++h) {
    if (c.hosts[h].on()) on.push_back(static_cast<int>(h));
  }
  return on;
}

double CostWeight(const PlanContext& ctx) {
  return ctx.cost_weight >= 0 ? ctx.cost_weight : kCostWeightByThreshold[ctx.snap.settings.drs.threshold];
}

// Ping-pong: -1 when a guest of `set` moved too recently to move for balance, else the factor
// (>= 1) its migration cost is multiplied by (guests moved within two intervals cost more).
double PingPongFactor(const Snapshot& s, const std::vector<int>& set) {
  const DrsSettings& drs = s.settings.drs;
  double factor = 1;
  for (int w : set) {
    const auto& ago = s.vms[w].last_moved_ago_s;
    if (!ago) continue;
    if (*ago < drs.min_move_interval_s)
      factor = -1;
    else if (factor > 0 && *ago < 2 * drs.min_move_interval_s && drs.min_move_interval_s > 0)
      factor = std::max(factor, 1 + (2 * drs.min_move_interval_s - *ago) / drs.min_move_interval_s * 4);
  }
  return factor;
}

// The best single move of a balancing round so far.
struct BestMove {
  int from = -1, to = -1, vm = -1;
  double net = 0, gain = 0;  // goodness - cost, goodness
};

// One balancing pass: the state of its greedy rounds.
class Balancer {
 public:
  explicit Balancer(PlanContext& ctx)
      : ctx_(ctx),
        c_(ctx.cluster),
        s_(ctx.snap),
        drs_(ctx.snap.settings.drs),
        // Exhaustive candidates (every guest x every host) while a round costs at most ~100k
        // evaluations; beyond that the most / least loaded hosts per dimension.
        small_(static_cast<double>(c_.n_on) * static_cast<double>(c_.vms.size()) <= 100000),
        k_src_(small_ ? c_.n_on : 2),  // per dimension
        k_dst_(small_ ? c_.n_on : 4),  // per dimension
        drs_metric_(ctx.kind == PolicyKind::kDrs),
        rebalance_(c_.n_on <= 64),
        min_goodness_(kMinGoodnessByThreshold[drs_.threshold]),
        cost_weight_(CostWeight(ctx)),
        on_(PoweredOnHosts(c_)) {}

  void Run() {
    const int64_t max_moves = drs_.max_moves ? *drs_.max_moves : std::numeric_limits<int64_t>::max();
    const int64_t max_rounds = 4 * static_cast<int64_t>(c_.vms.size()) + 16;
    int64_t rounds = 0;
    int64_t made = 0;
    while (made < max_moves && rounds++ < max_rounds) {
      const double level = c_.Imbalance();
      const int priority = PriorityForImbalance(level);
      if (priority > drs_.threshold) break;
      PickCandidateHosts();
      BestMove best = FindBestMove(level);
      if (best.vm < 0) break;
      if (Apply(best, level, priority)) ++made;
    }
  }

 private:
  // Candidate sources: the most loaded hosts per dimension; destinations: the least loaded.
  void PickCandidateHosts() {
    sources_.clear();
    dests_.clear();
    auto cpu = [&](int h) { return c_.hosts[h].cpu_load(); };
    auto mem = [&](int h) { return c_.hosts[h].mem_load(); };
    Pick(cpu, k_src_, true, sources_);
    Pick(mem, k_src_, true, sources_);
    Pick(cpu, k_dst_, false, dests_);
    Pick(mem, k_dst_, false, dests_);
  }

  // Adds the `k` hosts with the highest (`top`) or lowest `key` to `out`, once each.
  template <typename Key>
  void Pick(Key key, int k, bool top, std::vector<int>& out) {
    by_ = on_;
    k = std::min<int>(k, static_cast<int>(by_.size()));
    auto cmp = [&](int a, int b) { return top ? key(a) > key(b) : key(a) < key(b); };
    std::partial_sort(by_.begin(), by_.begin() + k, by_.end(), cmp);
    for (int i = 0; i < k; ++i) {
      if (std::find(out.begin(), out.end(), by_[i]) == out.end()) out.push_back(by_[i]);
    }
  }

  BestMove FindBestMove(double level) {
    BestMove best;
    for (int from : sources_) {
      for (int v : c_.hosts[from].vms) {
        const std::vector<int>* set = MovableSet(v);
        if (!set) continue;
        double factor = PingPongFactor(s_, *set);
        if (factor < 0) continue;
        ConsiderDestinations(from, v, *set, level, factor, best);
      }
    }
    return best;
  }

  // The guests that move with `v` (its unit), or nullptr when `v` does not start a movable set.
  const std::vector<int>* MovableSet(int v) {
    const GuestSlot& g = c_.vms[v];
    // On small clusters a guest moved by balancing may move again (the chain is collapsed
    // into one migration afterwards); elsewhere each guest moves at most once per plan.
    if (!g.live || (g.moved && !(rebalance_ && g.moved_by_balance))) return nullptr;
    if (c_.units[g.unit].size() > 1) {
      if (c_.units[g.unit][0] != v || !c_.UnitTogether(g.unit)) return nullptr;
      const std::vector<int>* set = &c_.units[g.unit];
      bool ok = std::all_of(set->begin(), set->end(), [&](int w) {
        return c_.vms[w].live && (!c_.vms[w].moved || (rebalance_ && c_.vms[w].moved_by_balance));
      });
      return ok ? set : nullptr;
    }
    single_[0] = v;
    return &single_;
  }

  void ConsiderDestinations(int from, int v, const std::vector<int>& set, double level, double factor,
                            BestMove& best) const {
    UnitLoad load = c_.LoadOf(set);
    double cost = ctx_.MigrationCost(load) * factor * cost_weight_;
    for (int to : dests_) {
      if (to == from) continue;
      const HostSlot& d = c_.hosts[to];
      if (d.mem_used + load.mem_cfg > d.mem_capacity) continue;
      // The DRS gain inline: no virtual call, and the square root only for a move that can
      // beat the best so far (gain >= need <=> variance sum after <= 2 (level - need/n)^2).
      double gain;
      if (drs_metric_) {
        const double need = std::max(min_goodness_, best.net + cost);
        const double bound = level - need / c_.n_on;
        if (bound <= 0) continue;
        const double vsum = c_.VarianceSumAfter(from, to, load);
        if (vsum > 2 * bound * bound) continue;
        gain = (level - std::sqrt(0.5 * vsum)) * c_.n_on;
      } else {
        gain = ctx_.objective->Gain(c_, from, to, load);
      }
      if (gain - cost <= best.net || gain < min_goodness_) continue;
      Feasibility f = c_.Check(set, from, to);
      if (!f.ok()) continue;
      gain -= kSoftRulePenalty * static_cast<double>(f.soft_delta);
      if (gain < min_goodness_ || gain - cost <= best.net) continue;
      best.net = gain - cost;
      best.gain = gain;
      best.from = from;
      best.to = to;
      best.vm = v;
    }
  }

  // Records the move; true when it counts against max_moves (no guest of it moved before).
  bool Apply(const BestMove& best, double level, int priority) {
    const GuestSlot& g = c_.vms[best.vm];
    std::vector<int> set = c_.units[g.unit].size() > 1 ? c_.units[g.unit] : std::vector<int>{best.vm};
    const double after = c_.ImbalanceAfter(best.from, best.to, c_.LoadOf(set));
    char reason[320];
    std::snprintf(reason, sizeof reason, "balance (%s): %s -> %s; imbalance %.4f -> %.4f, goodness %.4f",
                  ctx_.plan.policy.c_str(), ctx_.HostLoadText(best.from).c_str(), ctx_.HostLoadText(best.to).c_str(),
                  level, after, best.gain);
    double reported = ctx_.kind == PolicyKind::kDrs ? level - after : best.gain;
    bool again = false;
    for (int w : set) again = again || c_.vms[w].moved;
    ctx_.RecordMove(set, best.from, best.to, priority, reason, reported);
    for (int w : set) c_.vms[w].moved_by_balance = true;
    return !again;
  }

  PlanContext& ctx_;
  Cluster& c_;
  const Snapshot& s_;
  const DrsSettings& drs_;
  const bool small_;
  const int k_src_, k_dst_;
  const bool drs_metric_;
  const bool rebalance_;
  const double min_goodness_;
  const double cost_weight_;
  const std::vector<int> on_;
  std::vector<int> by_, sources_, dests_;  // scratch of the current round
  std::vector<int> single_ = std::vector<int>(1);
};

}  // namespace

void Balance(PlanContext& ctx) {
  const DrsSettings& drs = ctx.snap.settings.drs;
  if (drs.threshold < 2 || ctx.cluster.n_on < 2) return;
  Balancer(ctx).Run();
}

namespace {

// The best swap of a round: guest v on host a for guest w on host b.
struct BestSwap {
  int v = -1, w = -1, a = -1, b = -1;
  double net = 0;
};

// One swap-refinement pass: the state of its rounds.
class Swapper {
 public:
  explicit Swapper(PlanContext& ctx)
      : ctx_(ctx),
        c_(ctx.cluster),
        s_(ctx.snap),
        drs_(ctx.snap.settings.drs),
        cost_weight_(CostWeight(ctx)),
        min_goodness_(kMinGoodnessByThreshold[drs_.threshold]),
        on_(PoweredOnHosts(c_)),
        loads_(c_.vms.size()) {
    for (size_t v = 0; v < c_.vms.size(); ++v) loads_[v] = c_.LoadOf({static_cast<int>(v)});
  }

  void Run() {
    const int64_t max_swaps = drs_.max_moves ? std::max<int64_t>(0, *drs_.max_moves / 2) : 200;
    for (int64_t n = 0; n < max_swaps; ++n) {
      const double level = c_.Imbalance();
      BestSwap best = FindBestSwap(level);
      if (best.v < 0) return;
      if (!Apply(best, level)) return;
    }
  }

 private:
  bool Swappable(int v) const {
    const GuestSlot& g = c_.vms[v];
    // Guests under rules are left to the single-move search, which prices soft rules.
    if (!g.live || (g.moved && !g.moved_by_balance) || c_.units[g.unit].size() > 1 || !c_.vm_rules[v].empty()) {
      return false;
    }
    const auto& ago = s_.vms[v].last_moved_ago_s;
    return !(ago && *ago < drs_.min_move_interval_s);
  }

  // Hot and cold hosts: the 4 most and least loaded per dimension.
  void PickHotAndCold(std::vector<int>& hot, std::vector<int>& cold) const {
    const int k = std::min<int>(4, static_cast<int>(on_.size()) / 2);
    for (int dim = 0; dim < 2; ++dim) {
      std::vector<int> by = on_;
      auto key = [&](int h) { return dim == 0 ? c_.hosts[h].cpu_load() : c_.hosts[h].mem_load(); };
      std::sort(by.begin(), by.end(), [&](int a, int b) { return key(a) > key(b); });
      for (int i = 0; i < k; ++i) {
        if (std::find(hot.begin(), hot.end(), by[i]) == hot.end()) hot.push_back(by[i]);
        int lo = by[by.size() - 1 - i];
        if (std::find(cold.begin(), cold.end(), lo) == cold.end()) cold.push_back(lo);
      }
    }
  }

  BestSwap FindBestSwap(double level) const {
    std::vector<int> hot, cold;
    PickHotAndCold(hot, cold);
    BestSwap best;
    for (int a : hot) {
      for (int b : cold) {
        if (a == b) continue;
        for (int v : c_.hosts[a].vms) {
          if (!Swappable(v)) continue;
          for (int w : c_.hosts[b].vms) {
            if (Swappable(w)) ConsiderSwap(a, b, v, w, level, best);
          }
        }
      }
    }
    return best;
  }

  void ConsiderSwap(int a, int b, int v, int w, double level, BestSwap& best) const {
    const UnitLoad& lv = loads_[v];
    const UnitLoad& lw = loads_[w];
    const HostSlot& ha = c_.hosts[a];
    const HostSlot& hb = c_.hosts[b];
    if (ha.mem_used - lv.mem_cfg + lw.mem_cfg > ha.mem_capacity) return;
    if (hb.mem_used - lw.mem_cfg + lv.mem_cfg > hb.mem_capacity) return;
    if (hb.mem_used + lv.mem_cfg > hb.mem_capacity && ha.mem_used + lw.mem_cfg > ha.mem_capacity) return;
    double cost = (ctx_.MigrationCost(lv) + ctx_.MigrationCost(lw)) * cost_weight_;
    // Square root only for a swap that can beat the best so far.
    const double bound = level - std::max(2 * min_goodness_, best.net + cost) / c_.n_on;
    if (bound <= 0) return;
    const double vsum = c_.VarianceSumAfterSwap(a, b, lv, lw);
    if (vsum > 2 * bound * bound) return;
    double gain = (level - std::sqrt(0.5 * vsum)) * c_.n_on;
    if (gain < 2 * min_goodness_ || gain - cost <= best.net) return;
    best.net = gain - cost;
    best.v = v, best.w = w, best.a = a, best.b = b;
  }

  // Records the two moves; false (and nothing recorded) when one fails the engine's checks.
  bool Apply(const BestSwap& best, double level) {
    const int bv = best.v, bw = best.w, ba = best.a, bb = best.b;
    // Run the move that fits first; each must pass the engine's checks at its turn.
    std::vector<std::tuple<int, int, int>> order = {{bv, ba, bb}, {bw, bb, ba}};
    if (c_.hosts[bb].mem_used + c_.vms[bv].mem > c_.hosts[bb].mem_capacity) std::swap(order[0], order[1]);
    const double before = level;
    size_t mark = ctx_.plan.moves.size();
    bool ok = true;
    std::vector<std::pair<int, int>> done;
    for (const auto& [v, from, to] : order) {
      if (!c_.Check({v}, from, to).ok()) {
        ok = false;
        break;
      }
      char reason[320];
      std::snprintf(reason, sizeof reason, "balance (%s): swap %s <-> %s between %s and %s; imbalance %.4f",
                    ctx_.plan.policy.c_str(), s_.vms[bv].name.c_str(), s_.vms[bw].name.c_str(),
                    s_.hosts[ba].name.c_str(), s_.hosts[bb].name.c_str(), before);
      ctx_.RecordMove({v}, from, to, PriorityForImbalance(before), reason, 0);
      c_.vms[v].moved_by_balance = true;
      done.emplace_back(v, from);
    }
    if (!ok) {
      for (auto it = done.rbegin(); it != done.rend(); ++it)
        c_.MoveSet({it->first}, c_.vms[it->first].host, it->second);
      ctx_.plan.moves.resize(mark);
      return false;
    }
    ctx_.plan.moves[mark].gain = ctx_.plan.moves[mark + 1].gain = (before - c_.Imbalance()) / 2;
    return true;
  }

  PlanContext& ctx_;
  Cluster& c_;
  const Snapshot& s_;
  const DrsSettings& drs_;
  const double cost_weight_;
  const double min_goodness_;
  const std::vector<int> on_;
  std::vector<UnitLoad> loads_;  // per guest
};

}  // namespace

// Swaps for the last stretch of an aggressive (threshold 5) DRS pass on a small cluster: when no
// single move helps, exchanging a guest of a loaded host with a smaller one of a light host often
// still does. Both moves are checked in the order they will run; memory must fit at every step.
void SwapRefine(PlanContext& ctx) {
  const DrsSettings& drs = ctx.snap.settings.drs;
  const int n_on = ctx.cluster.n_on;
  if (ctx.kind != PolicyKind::kDrs || drs.threshold < 5 || n_on < 2 || n_on > 64) return;
  Swapper(ctx).Run();
}

// A guest that balancing moved more than once (a -> b, later b -> c) becomes one migration
// a -> c, placed where the first or the last of its moves was, whichever the checker accepts
// (a -> a disappears). If neither is safe the moves stay as they are (still a valid plan).
void CollapseChains(PlanContext& ctx) {
  std::unordered_map<std::string, int> count;
  for (const Move& m : ctx.plan.moves) ++count[m.vm];
  std::vector<std::string> chained;
  for (const Move& m : ctx.plan.moves) {
    if (count[m.vm] > 1 && std::find(chained.begin(), chained.end(), m.vm) == chained.end()) chained.push_back(m.vm);
  }
  for (const std::string& vm : chained) {
    std::vector<size_t> at;
    for (size_t i = 0; i < ctx.plan.moves.size(); ++i) {
      if (ctx.plan.moves[i].vm == vm) at.push_back(i);
    }
    bool balancing =
        std::all_of(at.begin(), at.end(), [&](size_t i) { return ctx.plan.moves[i].reason.rfind("balance", 0) == 0; });
    if (at.size() < 2 || !balancing) continue;
    const Move first = ctx.plan.moves[at.front()], last = ctx.plan.moves[at.back()];
    for (bool keep_first : {true, false}) {
      Plan trial = ctx.plan;
      double gain = 0;
      for (size_t i : at) gain += trial.moves[i].gain;
      size_t keep = keep_first ? at.front() : at.back();
      Move merged = keep_first ? first : last;
      merged.from = first.from;
      merged.to = last.to;
      merged.gain = gain;
      std::vector<Move> moves;
      for (size_t i = 0; i < trial.moves.size(); ++i) {
        if (i == keep) {
          if (merged.from != merged.to) moves.push_back(merged);
        } else if (std::find(at.begin(), at.end(), i) == at.end()) {
          moves.push_back(trial.moves[i]);
        }
      }
      trial.moves = std::move(moves);
      if (CheckPlan(ctx.snap, trial).ok()) {
        ctx.plan = std::move(trial);
        break;
      }
    }
  }
}

}  // namespace uw::placement::internal
