// Resource pools and placement rules (stored in the snapshot format; the engine's parser
// validates them).
// Part of Manager (manager.h), which is split by responsibility across manager/*.cc.
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "api/http.h"
#include "common/id.h"
#include "manager/guest_table.h"
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/pool_rule_tables.h"
#include "manager/snapshot_builder.h"
#include "placement/placement.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

using internal::GuestTable;

// ---------------------------------------------------------------------------------------------
// Pools and rules (stored in the snapshot format; the engine's parser validates them)

Result<Page<placement::Pool>> Manager::ListPools(const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(auto pools, internal::PoolTable(*store_).List());
  return internal::PageList(
      std::move(pools), page, [](const placement::Pool& p) { return p.name; }, true);
}

Result<placement::Pool> Manager::CreatePool(const placement::Pool& pool) {
  const std::string& name = pool.name;
  // Validate with the engine: a snapshot of just the pools plus this one.
  UW_ASSIGN_OR_RETURN(Page<placement::Pool> pools, ListPools());
  placement::Snapshot s;
  s.pools = std::move(pools.items);
  s.pools.push_back(pool);
  UW_RETURN_IF_ERROR(placement::ValidateSnapshot(s));
  const Json spec = placement::PoolToJson(pool);
  // Admission of the pool: its reservations must be backed by the powered-on hosts, with what the
  // other pools and the guests reserve already (placement_mu_: no guest is admitted meanwhile).
  std::lock_guard placement_lock(placement_mu_);
  UW_ASSIGN_OR_RETURN(placement::Snapshot snap, BuildSnapshot());
  const std::vector<placement::AdmissionIssue> before = placement::CheckAdmission(snap);
  snap.pools.push_back(s.pools.back());
  for (const placement::AdmissionIssue& issue : placement::CheckAdmission(snap)) {
    bool old = std::any_of(before.begin(), before.end(), [&](const placement::AdmissionIssue& b) {
      return b.subject == issue.subject && b.reason == issue.reason;
    });
    if (!old) return ResourceExhaustedError("admission control refused pool '" + name + "': " + issue.reason);
  }
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(internal::PoolTable(*store_).Insert(pool));
    return AddEvent("pool.created", name, "", spec);
  }));
  return pool;
}

Status Manager::DeletePool(std::string_view name) {
  return store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(internal::PoolTable(*store_).Delete(name));
    return AddEvent("pool.deleted", name, "", Json::object());
  });
}

Result<Page<placement::Rule>> Manager::ListRules(const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(auto rules, internal::RuleTable(*store_).List());
  return internal::PageList(
      std::move(rules), page, [](const placement::Rule& r) { return r.name; }, true);
}

Result<placement::Rule> Manager::CreateRule(const placement::Rule& rule) {
  const std::string& name = rule.name;
  // Validated by the engine on the current cluster, where guests the rule names that do not exist
  // yet stand in as unplaced guests (the rule applies to them when they are created).
  UW_ASSIGN_OR_RETURN(placement::Snapshot s, BuildSnapshot());
  std::set<std::string> known;
  for (const auto& vm : s.vms) known.insert(vm.name);
  for (const auto& n : rule.vms) {
    if (!known.insert(n).second) continue;
    placement::Vm placeholder;
    placeholder.name = n;
    placeholder.vcpus = 1;
    placeholder.memory_mib = 1;
    s.vms.push_back(std::move(placeholder));
  }
  s.rules = {rule};
  UW_RETURN_IF_ERROR(placement::ValidateSnapshot(s));
  const Json spec = placement::RuleToJson(rule);
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(internal::RuleTable(*store_).Insert(rule));
    return AddEvent("rule.created", name, "", spec);
  }));
  return rule;
}

Result<PoolDetail> Manager::GetPool(std::string_view name) {
  PoolDetail d;
  UW_ASSIGN_OR_RETURN(d.pool, internal::PoolTable(*store_).Get(name));
  // What it holds now: its own guests.
  UW_ASSIGN_OR_RETURN(d.guests, guests_->NamesInPool(name));
  return d;
}

Result<RuleDetail> Manager::GetRule(std::string_view name) {
  RuleDetail d;
  UW_ASSIGN_OR_RETURN(d.rule, internal::RuleTable(*store_).Get(name));
  // Guests it names that do not exist (yet): the rule applies to them when they are created.
  UW_ASSIGN_OR_RETURN(const std::set<std::string> known, guests_->Names());
  for (const auto& v : d.rule.vms) {
    if (!known.count(v)) d.pending_guests.push_back(v);
  }
  return d;
}

Status Manager::RemoveGuestFromRules(const std::string& guest) {
  internal::RuleTable rules(*store_);
  UW_ASSIGN_OR_RETURN(std::vector<placement::Rule> all, rules.List());
  for (placement::Rule& r : all) {
    const size_t before = r.vms.size();
    std::erase(r.vms, guest);
    if (r.vms.size() == before) continue;
    if (r.vms.empty()) {
      UW_RETURN_IF_ERROR(rules.Delete(r.name));
      UW_RETURN_IF_ERROR(
          AddEvent("rule.deleted", r.name, "", {{"reason", "its last guest '" + guest + "' was deleted"}}));
      continue;
    }
    UW_RETURN_IF_ERROR(rules.Save(r));
    UW_RETURN_IF_ERROR(
        AddEvent("rule.changed", r.name, "", {{"removed", guest}, {"reason", "guest deleted"}, {"vms", r.vms}}));
  }
  return Status::Ok();
}

namespace {

std::string Figure(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// A pooled guest's CPU tuning: the pool's shares scale the cgroup default, and no guest runs beyond
// the tightest CPU limit on the way to the root (`chain`, nearest first), nor beyond its vCPUs.
struct CpuTune {
  int64_t shares = 1024;
  std::optional<int64_t> period_us, quota_us;  // both or neither
};
CpuTune PoolCpuTune(const std::vector<placement::Pool>& chain, int64_t vcpus, GuestKind kind) {
  CpuTune tune;
  // Shares: the pool's CPU shares relative to a normal pool (4000) scale the cgroup default of
  // 1024 (high 8000 -> 2048, low 2000 -> 512).
  const double pool_shares = static_cast<double>(chain.front().cpu.shares);
  tune.shares = std::clamp<int64_t>(std::llround(1024.0 * pool_shares / 4000.0), 2, 262144);
  // Quota: libvirt applies a QEMU guest's quota to each vCPU thread, a container's to all of it.
  std::optional<double> limit;
  for (const placement::Pool& p : chain) {
    if (p.cpu.limit) limit = limit ? std::min(*limit, *p.cpu.limit) : *p.cpu.limit;
  }
  if (limit) {
    constexpr int64_t kPeriodUs = 100000;
    const double cap = std::min(*limit, static_cast<double>(vcpus));
    const double per = kind == GuestKind::kLxc ? cap : cap / static_cast<double>(vcpus);
    tune.period_us = kPeriodUs;
    tune.quota_us = std::max<int64_t>(1000, std::llround(per * kPeriodUs));
  }
  return tune;
}

// A create into a pool whose CPU limit (vCPUs of its guests) or memory limit (their memory) it would
// exceed, at any level of the pool tree: kResourceExhausted naming the pool and figures.
// `pools` are all of them, `chain` the new guest's pool and its ancestors.
Status CheckPoolLimits(GuestTable& guests, const std::vector<placement::Pool>& pools,
                       const std::vector<placement::Pool>& chain, const GuestCreate& req) {
  UW_ASSIGN_OR_RETURN(std::vector<internal::PooledGrant> pooled, guests.PooledGrants());
  for (const placement::Pool& p : chain) {
    const std::set<std::string> subtree = internal::PoolSubtree(pools, p.name);
    int64_t vcpus = 0, memory = 0, count = 0;
    for (const auto& g : pooled) {
      if (!subtree.count(g.pool)) continue;
      vcpus += g.vcpus;
      memory += g.memory_mib;
      ++count;
    }
    if (p.cpu.limit && static_cast<double>(vcpus + req.vcpus) > *p.cpu.limit + 1e-9) {
      return ResourceExhaustedError("pool '" + p.name + "' CPU limit: its " + std::to_string(count) + " guests have " +
                                    std::to_string(vcpus) + " vCPUs and '" + req.name + "' asks for " +
                                    std::to_string(req.vcpus) + " (" + std::to_string(vcpus + req.vcpus) +
                                    " > limit of " + Figure(*p.cpu.limit) + " cores)");
    }
    if (p.memory.limit && static_cast<double>(memory + req.memory_mib) > *p.memory.limit + 1e-9) {
      return ResourceExhaustedError("pool '" + p.name + "' memory limit: its " + std::to_string(count) +
                                    " guests have " + std::to_string(memory) + " MiB and '" + req.name + "' asks for " +
                                    std::to_string(req.memory_mib) + " (" + std::to_string(memory + req.memory_mib) +
                                    " > limit of " + Figure(*p.memory.limit) + " MiB)");
    }
  }
  return Status::Ok();
}

}  // namespace

Status Manager::AdmitToPool(GuestCreate& req) {
  UW_ASSIGN_OR_RETURN(std::vector<placement::Pool> pools, internal::PoolTable(*store_).List());
  auto chain = internal::PoolChain(pools, req.pool);
  if (chain.status().code() == StatusCode::kNotFound) {
    return NotFoundError("pool '" + req.pool + "' not found: create it first (POST /api/v1/pools)");
  }
  UW_RETURN_IF_ERROR(chain.status());
  UW_RETURN_IF_ERROR(CheckPoolLimits(*guests_, pools, *chain, req));
  // The pool's shares and CPU limit reach the guest's cputune (fields the request sets win, except
  // that the pool's limit caps a larger or unlimited quota).
  const CpuTune tune = PoolCpuTune(*chain, req.vcpus, req.kind);
  Json& cpu = req.agent_spec["cpu"];
  if (!cpu.is_object()) cpu = Json::object();
  if (!cpu.contains("shares")) cpu["shares"] = tune.shares;
  if (tune.quota_us) {
    const int64_t quota = cpu.value("quota_us", int64_t{0});
    const int64_t period = cpu.value("period_us", int64_t{0});
    if (quota <= 0 || period <= 0 ||
        static_cast<double>(quota) / static_cast<double>(period) >
            static_cast<double>(*tune.quota_us) / static_cast<double>(*tune.period_us)) {
      cpu["quota_us"] = *tune.quota_us;
      cpu["period_us"] = *tune.period_us;
    }
  }
  return Status::Ok();
}

Status Manager::DeleteRule(std::string_view name) {
  return store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(internal::RuleTable(*store_).Delete(name));
    return AddEvent("rule.deleted", name, "", Json::object());
  });
}

}  // namespace uw::manager
