// Host administration: the host list and details, maintenance (the evacuation and its
// cancellation) and host groups. Joins, heartbeats and deadlines are HostSessions' (host_sessions.h).
// Part of Manager (manager.h), which is split by responsibility across manager/*.cc.
#include <spdlog/spdlog.h>

#include <set>

#include "common/id.h"
#include "manager/guest_table.h"
#include "manager/ha_service.h"
#include "manager/host_sessions.h"
#include "manager/host_table.h"
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/migration_table.h"
#include "manager/power_service.h"
#include "manager/task_journal.h"

namespace uw::manager {

Result<HostJoined> Manager::JoinHost(std::string_view join_token, const HostJoin& join) {
  return sessions_->Join(join_token, join);
}

Result<HeartbeatAck> Manager::Heartbeat(std::string_view name, std::string_view host_token, const Json& body) {
  return sessions_->Heartbeat(name, host_token, body);
}

void Manager::CheckHeartbeats() {
  sessions_->CheckHeartbeats();
  power_->Check();
}

Status Manager::RunHa() { return ha_->Pass(); }

Result<Page<Host>> Manager::ListHosts(const PageQuery& page) { return hosts_->List(page); }

Result<HostDetail> Manager::GetHost(std::string_view name) {
  UW_ASSIGN_OR_RETURN(HostDetail d, hosts_->Get(name));
  UW_ASSIGN_OR_RETURN(d.guest_names, guests_->NamesOn(name));
  if (d.host.maintenance) {
    // Evacuation progress: guests still on the host (moves are recommended by DRS as mandatory).
    d.evacuation = HostDetail::Evacuation{static_cast<int64_t>(d.guest_names.size()), d.guest_names.empty()};
  }
  return d;
}

Result<HostDetail> Manager::SetMaintenance(std::string_view name, bool on) {
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(hosts_->SetMaintenance(name, on));
    return AddEvent(on ? "host.maintenance_on" : "host.maintenance_off", name, "", Json::object());
  }));
  if (on) {
    // Evacuation moves are mandatory: compute them now rather than at the next DRS pass.
    if (auto r = RunDrs(); !r.ok()) spdlog::warn("DRS after maintenance of {}: {}", name, r.status().ToString());
  } else {
    // The evacuation is over: its moves (DRS-started migrations off this host) that have not
    // switched over are cancelled; a running one is aborted and its guest stays here. Operators'
    // own moves (no recommendation) are left alone.
    UW_ASSIGN_OR_RETURN(std::vector<Task> moves, tasks_->Unfinished("guest.migrate"));
    const Principal manager_itself{"manager", Role::kAdmin, "", {}};
    Json cancelled = Json::array();
    for (const auto& t : moves) {
      if (t.request.value("from", "") != name || t.request.value("recommendation", "").empty()) continue;
      auto rec = internal::MigrationTable(*store_).OfTask(t.id);                   // an unreadable record is cancelled
      if (rec.ok() && *rec && migration::PastSwitchOver((*rec)->phase)) continue;  // landed or landing: too late
      auto c = CancelTask(manager_itself, t.id);
      if (!c.ok()) {
        spdlog::warn("maintenance off on {}: cancelling {}: {}", name, t.id, c.status().ToString());
        continue;
      }
      cancelled.push_back({{"task", t.id}, {"guest", t.subject}});
    }
    if (!cancelled.empty()) {
      UW_RETURN_IF_ERROR(AddEvent("host.evacuation_cancelled", name, "", {{"cancelled", cancelled}}));
    }
  }
  return GetHost(name);
}

Result<HostPower> Manager::SetPowerDriver(std::string_view host, const Json& body) {
  return power_->SetDriver(host, body);
}
Status Manager::DeletePowerDriver(std::string_view host) { return power_->DeleteDriver(host); }
Result<HostPower> Manager::GetHostPower(std::string_view host, bool ask_bmc) { return power_->Get(host, ask_bmc); }
Result<HostPower> Manager::PowerHost(std::string_view host, std::string_view action) {
  return power_->Act(host, action);
}

Result<HostDetail> Manager::SetHostGroups(std::string_view name, const std::vector<std::string>& groups) {
  UW_RETURN_IF_ERROR(store_->Transact([&]() -> Status {
    UW_RETURN_IF_ERROR(hosts_->SetGroups(name, groups));
    return AddEvent("host.groups_changed", name, "", {{"groups", groups}});
  }));
  return GetHost(name);
}

}  // namespace uw::manager
