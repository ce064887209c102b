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
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/snapshot_builder.h"
#include "placement/placement.h"
#include "vmm/hypervisor.h"

namespace uw::manager {

using internal::Dump;

// ---------------------------------------------------------------------------------------------
// Pools and rules (stored in the snapshot format; the engine's parser validates them)

namespace {
// The rows' specs (written by PoolToJson / RuleToJson) read back with the engine's parser.
template <class T, class Parse>
Result<std::vector<T>> SpecsOf(const std::vector<SqlRow>& rows, const char* what, Parse parse) {
  std::vector<T> out;
  out.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    UW_ASSIGN_OR_RETURN(T item, parse(rows[i].JsonOf("spec"), std::string(what) + "[" + std::to_string(i) + "]"));
    out.push_back(std::move(item));
  }
  return out;
}
// A rule keeps its name when guests it named are deleted (a vm-vm rule may be left with one).
Result<placement::Rule> StoredRule(const Json& spec, std::string_view path) {
  return placement::ParseRuleJson(spec, path, true);
}
}  // namespace

Result<Page<placement::Pool>> Manager::ListPools(const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT spec FROM pools ORDER BY name"));
  UW_ASSIGN_OR_RETURN(auto pools, SpecsOf<placement::Pool>(rows, "stored pools", placement::ParsePoolJson));
  return internal::PageList(
      std::move(pools), page, [](const placement::Pool& p) { return p.name; }, true);
}

Result<placement::Pool> Manager::CreatePool(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_ASSIGN_OR_RETURN(std::string name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(name, "name"));
  UW_ASSIGN_OR_RETURN(std::string parent, v.String("parent", ""));
  // Validate with the engine: a snapshot of just the pools plus this one.
  UW_ASSIGN_OR_RETURN(Page<placement::Pool> pools, ListPools());
  placement::Snapshot s;
  s.pools = std::move(pools.items);
  UW_ASSIGN_OR_RETURN(placement::Pool pool,
                      placement::ParsePoolJson(body, "pools[" + std::to_string(s.pools.size()) + "]"));
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
    Status ins = store_->Exec("INSERT INTO pools(name, parent, spec) VALUES (?, ?, ?)",
                              {name, parent.empty() ? SqlValue(nullptr) : SqlValue(parent), Dump(spec)});
    if (ins.code() == StatusCode::kAlreadyExists) return AlreadyExistsError("pool '" + name + "' already exists");
    UW_RETURN_IF_ERROR(ins);
    return AddEvent("pool.created", name, "", spec);
  }));
  return pool;
}

Status Manager::DeletePool(std::string_view name) {
  return store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_
                           ->QueryOne("SELECT name FROM pools WHERE name = ?", {std::string(name)},
                                      "pool '" + std::string(name) + "' not found")
                           .status());
    Status s = store_->Exec("DELETE FROM pools WHERE name = ?", {std::string(name)});
    if (s.code() == StatusCode::kFailedPrecondition) {
      return FailedPreconditionError("pool '" + std::string(name) + "' still has guests or child pools");
    }
    UW_RETURN_IF_ERROR(s);
    return AddEvent("pool.deleted", name, "", Json::object());
  });
}

Result<Page<placement::Rule>> Manager::ListRules(const PageQuery& page) {
  UW_ASSIGN_OR_RETURN(auto rows, store_->Query("SELECT spec FROM rules ORDER BY name"));
  UW_ASSIGN_OR_RETURN(auto rules, SpecsOf<placement::Rule>(rows, "stored rules", StoredRule));
  return internal::PageList(
      std::move(rules), page, [](const placement::Rule& r) { return r.name; }, true);
}

Result<placement::Rule> Manager::CreateRule(const Json& body) {
  UW_ASSIGN_OR_RETURN(JsonView v, JsonView::Of(body, ""));
  UW_ASSIGN_OR_RETURN(std::string name, v.String("name"));
  UW_RETURN_IF_ERROR(ValidateName(name, "name"));
  // Validated by the engine on the current cluster, where guests the rule names that do not exist
  // yet stand in as unplaced guests (the rule applies to them when they are created).
  UW_ASSIGN_OR_RETURN(placement::Snapshot s, BuildSnapshot());
  UW_ASSIGN_OR_RETURN(placement::Rule rule, placement::ParseRuleJson(body, "rules[0]"));
  std::set<std::string> known;
  for (const auto& vm : s.vms) known.insert(vm.name);
  for (const auto& n : rule.vms) {
    if (!known.insert(n).second) continue;
    UW_RETURN_IF_ERROR(ValidateGuestName(n, "vms[]"));
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
    Status ins = store_->Exec("INSERT INTO rules(name, spec) VALUES (?, ?)", {name, Dump(spec)});
    if (ins.code() == StatusCode::kAlreadyExists) return AlreadyExistsError("rule '" + name + "' already exists");
    UW_RETURN_IF_ERROR(ins);
    return AddEvent("rule.created", name, "", spec);
  }));
  return rule;
}

Result<PoolDetail> Manager::GetPool(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT spec FROM pools WHERE name = ?", {std::string(name)},
                                                 "pool '" + std::string(name) + "' not found"));
  PoolDetail d;
  UW_ASSIGN_OR_RETURN(d.pool, placement::ParsePoolJson(r.JsonOf("spec"), "stored pool '" + std::string(name) + "'"));
  // What it holds now: its own guests.
  UW_ASSIGN_OR_RETURN(auto guests,
                      store_->Query("SELECT name FROM guests WHERE pool = ? ORDER BY name", {std::string(name)}));
  for (const auto& g : guests) d.guests.push_back(g.Str("name"));
  return d;
}

Result<RuleDetail> Manager::GetRule(std::string_view name) {
  UW_ASSIGN_OR_RETURN(SqlRow r, store_->QueryOne("SELECT spec FROM rules WHERE name = ?", {std::string(name)},
                                                 "rule '" + std::string(name) + "' not found"));
  RuleDetail d;
  UW_ASSIGN_OR_RETURN(d.rule, StoredRule(r.JsonOf("spec"), "stored rule '" + std::string(name) + "'"));
  // Guests it names that do not exist (yet): the rule applies to them when they are created.
  UW_ASSIGN_OR_RETURN(auto guests, store_->Query("SELECT name FROM guests"));
  std::set<std::string> known;
  for (const auto& g : guests) known.insert(g.Str("name"));
  for (const auto& v : d.rule.vms) {
    if (!known.count(v)) d.pending_guests.push_back(v);
  }
  return d;
}

Status Manager::RemoveGuestFromRules(const std::string& guest) {
  UW_ASSIGN_OR_RETURN(auto rules, store_->Query("SELECT name, spec FROM rules ORDER BY name"));
  for (const auto& r : rules) {
    Json spec = r.JsonOf("spec");
    if (!spec.is_object() || !spec.contains("vms") || !spec["vms"].is_array()) continue;
    Json& vms = spec["vms"];
    const size_t before = vms.size();
    vms.erase(std::remove(vms.begin(), vms.end(), Json(guest)), vms.end());
    if (vms.size() == before) continue;
    if (vms.empty()) {
      UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM rules WHERE name = ?", {r.Str("name")}));
      UW_RETURN_IF_ERROR(
          AddEvent("rule.deleted", r.Str("name"), "", {{"reason", "its last guest '" + guest + "' was deleted"}}));
      continue;
    }
    UW_RETURN_IF_ERROR(store_->Exec("UPDATE rules SET spec = ? WHERE name = ?", {Dump(spec), r.Str("name")}));
    UW_RETURN_IF_ERROR(
        AddEvent("rule.changed", r.Str("name"), "", {{"removed", guest}, {"reason", "guest deleted"}, {"vms", vms}}));
  }
  return Status::Ok();
}

namespace {
// The pool and its ancestors, nearest first, as stored specs (snapshot pool format).
Result<std::vector<Json>> PoolChain(Store& store, const std::string& pool) {
  UW_ASSIGN_OR_RETURN(auto rows, store.Query("SELECT name, parent, spec FROM pools"));
  std::map<std::string, const SqlRow*> by_name;
  for (const auto& r : rows) by_name[r.Str("name")] = &r;
  std::vector<Json> chain;
  for (std::string cur = pool; !cur.empty() && chain.size() <= rows.size();) {
    auto it = by_name.find(cur);
    if (it == by_name.end()) return NotFoundError("pool '" + cur + "' not found");
    chain.push_back(it->second->JsonOf("spec"));
    cur = it->second->Str("parent");
  }
  return chain;
}

std::string Figure(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
}  // namespace

Status Manager::CheckPoolLimits(const GuestCreate& req) {
  UW_ASSIGN_OR_RETURN(std::vector<Json> chain, PoolChain(*store_, req.pool));
  UW_ASSIGN_OR_RETURN(auto pools, store_->Query("SELECT name, parent FROM pools"));
  UW_ASSIGN_OR_RETURN(auto pooled, store_->Query("SELECT pool, vcpus, memory_mib FROM guests WHERE pool IS NOT NULL"));
  for (const Json& p : chain) {
    const std::string name = p.value("name", "");
    // Its subtree: the pool and every pool below it.
    std::set<std::string> subtree = {name};
    for (bool grew = true; grew;) {
      grew = false;
      for (const auto& r : pools) {
        if (!r.IsNull("parent") && subtree.count(r.Str("parent")) && subtree.insert(r.Str("name")).second) grew = true;
      }
    }
    int64_t vcpus = 0, memory = 0, guests = 0;
    for (const auto& g : pooled) {
      if (!subtree.count(g.Str("pool"))) continue;
      vcpus += g.Int("vcpus");
      memory += g.Int("memory_mib");
      ++guests;
    }
    const Json cpu_limit = p.value("cpu", Json::object()).value("limit_cores", Json(nullptr));
    if (cpu_limit.is_number() && static_cast<double>(vcpus + req.vcpus) > cpu_limit.get<double>() + 1e-9) {
      return ResourceExhaustedError("pool '" + name + "' CPU limit: its " + std::to_string(guests) + " guests have " +
                                    std::to_string(vcpus) + " vCPUs and '" + req.name + "' asks for " +
                                    std::to_string(req.vcpus) + " (" + std::to_string(vcpus + req.vcpus) +
                                    " > limit of " + Figure(cpu_limit.get<double>()) + " cores)");
    }
    const Json mem_limit = p.value("memory", Json::object()).value("limit_mib", Json(nullptr));
    if (mem_limit.is_number() && static_cast<double>(memory + req.memory_mib) > mem_limit.get<double>() + 1e-9) {
      return ResourceExhaustedError("pool '" + name + "' memory limit: its " + std::to_string(guests) +
                                    " guests have " + std::to_string(memory) + " MiB and '" + req.name + "' asks for " +
                                    std::to_string(req.memory_mib) + " (" + std::to_string(memory + req.memory_mib) +
                                    " > limit of " + Figure(mem_limit.get<double>()) + " MiB)");
    }
  }
  return Status::Ok();
}

Result<Json> Manager::PoolCpuTune(const std::string& pool, int64_t vcpus, GuestKind kind) {
  if (pool.empty()) return Json(nullptr);
  UW_ASSIGN_OR_RETURN(std::vector<Json> chain, PoolChain(*store_, pool));
  // Shares: the pool's CPU shares relative to a normal pool (4000) scale the cgroup default of
  // 1024 (high 8000 -> 2048, low 2000 -> 512).
  const double pool_shares = chain.front().value("cpu", Json::object()).value("shares", 4000.0);
  const int64_t shares = std::clamp<int64_t>(std::llround(1024.0 * pool_shares / 4000.0), 2, 262144);
  Json tune = {{"shares", shares}};
  // Quota: no guest runs beyond the tightest CPU limit on the way to the root, nor beyond its
  // vCPUs. libvirt applies a QEMU guest's quota to each vCPU thread, a container's to all of it.
  std::optional<double> limit;
  for (const Json& p : chain) {
    const Json l = p.value("cpu", Json::object()).value("limit_cores", Json(nullptr));
    if (l.is_number()) limit = limit ? std::min(*limit, l.get<double>()) : l.get<double>();
  }
  if (limit) {
    constexpr int64_t kPeriodUs = 100000;
    const double cap = std::min(*limit, static_cast<double>(vcpus));
    const double per = kind == GuestKind::kLxc ? cap : cap / static_cast<double>(vcpus);
    tune["period_us"] = kPeriodUs;
    tune["quota_us"] = std::max<int64_t>(1000, std::llround(per * kPeriodUs));
  }
  return tune;
}

Status Manager::DeleteRule(std::string_view name) {
  return store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(store_
                           ->QueryOne("SELECT name FROM rules WHERE name = ?", {std::string(name)},
                                      "rule '" + std::string(name) + "' not found")
                           .status());
    UW_RETURN_IF_ERROR(store_->Exec("DELETE FROM rules WHERE name = ?", {std::string(name)}));
    return AddEvent("rule.deleted", name, "", Json::object());
  });
}

}  // namespace uw::manager
