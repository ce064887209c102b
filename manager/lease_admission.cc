// Admission sees leases (lease_service.h): a guaranteed or elastic guest that no host has room for
// is admitted on a host where leases the broker may take from (elastic above their floor,
// preemptible ones whole) can give what is missing. Those leases get notices that make room for
// it; its create task waits (pending, not queued) until every one of them was acted on, and the
// loop then hands it to the workers. Nothing is ever taken from a guaranteed lease.
#include <algorithm>
#include <map>

#include "lease/broker.h"
#include "manager/internal.h"
#include "manager/lease_json.h"
#include "manager/lease_service.h"
#include "manager/task_journal.h"

namespace uw::manager::internal {
namespace {

constexpr size_t kHostsTried = 8;  // the hosts with the least to take are tried first

// The snapshot as it will be once `takes` are done: shrunk guests hold their new grant, stopped
// ones nothing.
placement::Snapshot AfterTakes(const placement::Snapshot& snap, const std::vector<lease::Take>& takes,
                               const std::map<std::string, std::string>& guest_of_lease) {
  placement::Snapshot out = snap;
  for (const lease::Take& t : takes) {
    const std::string& guest = guest_of_lease.at(t.lease_id);
    if (t.action != lease::NoticeAction::kShrink) {
      std::erase_if(out.vms, [&](const placement::Vm& v) { return v.name == guest; });
      continue;
    }
    for (placement::Vm& v : out.vms) {
      if (v.name != guest) continue;
      v.vcpus = std::max<int64_t>(1, t.after.vcpus);
      v.memory_mib = t.after.memory_mib;
      v.reservation.memory_mib = std::min(v.reservation.memory_mib, v.memory_mib);
      v.demand = {std::min(v.demand.cpu_cores, static_cast<double>(v.vcpus)),
                  std::min(v.demand.memory_mib, v.memory_mib)};
    }
  }
  return out;
}

lease::Resources Sum(const std::vector<lease::Lease>& leases) {
  lease::Resources r{0, 0};
  for (const lease::Lease& l : leases) {
    const lease::Resources give = lease::Reclaimable(l);
    r.vcpus += give.vcpus;
    r.memory_mib += give.memory_mib;
  }
  return r;
}

}  // namespace

Result<std::optional<LeaseService::Admission>> LeaseService::PlanAdmission(const placement::Snapshot& snap,
                                                                           const placement::Vm& vm,
                                                                           std::string_view lease_class,
                                                                           std::string_view placement_policy) {
  using None = std::optional<Admission>;
  if (d_.config.lease_admission != "reclaim" || lease_class == "preemptible") return None();
  UW_ASSIGN_OR_RETURN(std::vector<LeaseRecord> open, table_.Reclaimable());
  std::map<std::string, const placement::Vm*> vm_of;
  for (const placement::Vm& v : snap.vms) vm_of[v.name] = &v;
  std::map<std::string, std::vector<lease::Lease>> on_host;
  std::map<std::string, std::string> guest_of_lease;
  for (LeaseRecord& r : open) {
    auto it = vm_of.find(r.lease.guest);
    if (it == vm_of.end() || it->second->host.empty()) continue;
    guest_of_lease[r.lease.id] = r.lease.guest;
    on_host[it->second->host].push_back(std::move(r.lease));
  }
  // Hosts that could make room, the least to take first.
  std::map<std::string, int64_t> held;
  for (const placement::Vm& v : snap.vms) {
    if (!v.host.empty()) held[v.host] += v.memory_mib;
  }
  std::vector<std::pair<int64_t, const placement::Host*>> hosts;
  for (const placement::Host& h : snap.hosts) {
    auto leases = on_host.find(h.name);
    if (h.state != placement::HostState::kOn || leases == on_host.end()) continue;
    const int64_t missing = std::max<int64_t>(0, vm.memory_mib - (h.memory_mib - held[h.name]));
    if (missing <= Sum(leases->second).memory_mib) hosts.emplace_back(missing, &h);
  }
  std::stable_sort(hosts.begin(), hosts.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  if (hosts.size() > kHostsTried) hosts.resize(kHostsTried);
  const lease::BrokerPolicy policy = d_.config.lease_reclaim_policy;
  for (const auto& [missing, host] : hosts) {
    const std::vector<lease::Lease>& leases = on_host[host->name];
    // What is missing in memory; then that and the guest's vCPUs; then all the host's leases may give.
    for (const lease::Resources& need :
         {lease::Resources{0, missing}, lease::Resources{vm.vcpus, missing}, Sum(leases)}) {
      const lease::ReclaimPlan plan = lease::PlanReclaim(leases, need, policy);
      if (plan.takes.empty()) continue;
      placement::Snapshot after = AfterTakes(snap, plan.takes, guest_of_lease);
      UW_ASSIGN_OR_RETURN(auto index, placement::PlacementIndex::Build(after, placement_policy));
      if (index->Place(vm).host != host->name) continue;
      std::erase_if(after.vms, [&](const placement::Vm& v) { return v.name == vm.name; });
      if (!placement::AdmitVm(after, vm).ok()) continue;  // the cluster's reservations, pools
      Admission a{host->name, plan.takes, {0, 0}};
      for (const lease::Take& t : plan.takes) {
        for (const lease::Lease& l : leases) {
          if (l.id != t.lease_id) continue;
          a.taken.vcpus += l.granted.vcpus - t.after.vcpus;
          a.taken.memory_mib += l.granted.memory_mib - t.after.memory_mib;
        }
      }
      return std::optional<Admission>(std::move(a));
    }
  }
  return None();
}

Result<std::vector<std::string>> LeaseService::SendAdmissionNotices(const Admission& a, std::string_view guest) {
  const int64_t now = NowMs();
  const std::string reason = "to make room on host " + a.host + " for a new guest (admission, " +
                             std::string(lease::BrokerPolicyName(d_.config.lease_reclaim_policy)) + ")";
  std::vector<std::string> ids;
  for (const lease::Take& t : a.takes) {
    UW_ASSIGN_OR_RETURN(LeaseRecord r, table_.Get(t.lease_id));
    UW_ASSIGN_OR_RETURN(NoticeRecord n, SendIn(r, t.action, t.after, reason, now, now + d_.config.lease_notice_ms,
                                               false, std::string(guest)));
    ids.push_back(n.notice.id);
  }
  return ids;
}

Result<std::vector<NoticeRecord>> LeaseService::WaitedFor(const Json& waits_for) {
  std::vector<NoticeRecord> out;
  if (!waits_for.is_array()) return out;
  for (const Json& id : waits_for) {
    if (!id.is_string()) continue;
    auto n = table_.GetNotice(id.get<std::string>());
    if (!n.ok() && n.status().code() == StatusCode::kNotFound) continue;
    UW_RETURN_IF_ERROR(n.status());
    out.push_back(std::move(*n));
  }
  return out;
}

namespace {
bool Final(const lease::Notice& n) {
  return n.state == lease::NoticeState::kActed || n.state == lease::NoticeState::kWithdrawn;
}
}  // namespace

Result<bool> LeaseService::AdmissionDone(const Json& waits_for) {
  UW_ASSIGN_OR_RETURN(std::vector<NoticeRecord> notices, WaitedFor(waits_for));
  for (const NoticeRecord& n : notices) {
    if (!Final(n.notice)) return false;
    UW_ASSIGN_OR_RETURN(std::optional<Task> busy, d_.tasks.InFlightOf(n.notice.guest));
    if (busy) return false;  // the shrink or stop that gives the room back is still running
  }
  return true;
}

Status LeaseService::WithdrawAdmission(const Json& waits_for) {
  UW_ASSIGN_OR_RETURN(std::vector<NoticeRecord> notices, WaitedFor(waits_for));
  for (NoticeRecord& n : notices) {
    if (!Final(n.notice)) UW_RETURN_IF_ERROR(Withdraw(n, "the guest it made room for will not come"));
  }
  return Status::Ok();
}

Status LeaseService::AdmitWaiting() {
  UW_ASSIGN_OR_RETURN(std::vector<Task> creates, d_.tasks.Unfinished("guest.create"));
  for (const Task& t : creates) {
    if (t.state != "pending" || !t.request.contains("waits_for")) continue;
    UW_ASSIGN_OR_RETURN(bool done, AdmissionDone(t.request["waits_for"]));
    if (done) d_.enqueue(t.id);  // claiming twice is harmless: the second claim finds it running
  }
  return Status::Ok();
}

}  // namespace uw::manager::internal
