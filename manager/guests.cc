// Guests: the placement snapshot of the store, and the manager's guest calls (the guest
// service's, guest_service.h, and the listing's, guest_listing.h).
// Part of Manager (manager.h), which is split by responsibility across manager/*.cc.

#include <set>

#include "manager/guest_listing.h"
#include "manager/guest_service.h"
#include "manager/internal.h"
#include "manager/manager.h"
#include "manager/snapshot_builder.h"
#include "manager/task_journal.h"
#include "placement/placement.h"

namespace uw::manager {

// ---------------------------------------------------------------------------------------------
// Snapshot

// Rules are stored as written: they may name guests that do not exist yet (they apply to their
// placement when they are created) and host groups that no host is in any more. The engine's
// snapshot names only what exists (internal::BuildSnapshot cuts each rule down to its known
// members, and leaves out a rule that then constrains nothing that exists).
Result<placement::Snapshot> Manager::BuildSnapshot(const placement::Vm* incoming) {
  UW_ASSIGN_OR_RETURN(DrsConfig cfg, GetDrsConfig());
  placement::Settings settings;
  settings.drs = internal::DrsSettingsFromConfig(cfg);
  settings.dpm = internal::DpmSettingsFromConfig(cfg.dpm);
  // HA admission: room to restart every guest after host_failures hosts fail.
  settings.ha.enabled = cfg.ha.enabled && cfg.ha.host_failures > 0;
  settings.ha.host_failures = cfg.ha.host_failures;
  return internal::BuildSnapshot(*store_, NowMs(), settings, incoming);
}

Result<placement::Snapshot> Manager::ClusterSnapshot() { return BuildSnapshot(); }

// ---------------------------------------------------------------------------------------------
// Guests

Result<Page<Guest>> Manager::ListGuests(const Principal& p, const PageQuery& page) {
  return guest_service_->List(p, page);
}
Result<Task> Manager::CreateGuest(const Principal& p, GuestCreate req) {
  return guest_service_->Create(p, std::move(req));
}
Result<GuestDetail> Manager::GetGuest(const Principal& p, std::string_view name) {
  return guest_service_->Get(p, name);
}
Result<Task> Manager::GuestOperation(const Principal& p, std::string_view name, const GuestOp& op) {
  return guest_service_->Operation(p, name, op);
}
Result<Guest> Manager::VisibleGuest(const Principal& p, std::string_view name) {
  return guest_service_->Visible(p, name);
}

Result<std::string> Manager::ListGuestsBody(const Principal& p, const PageQuery& page) {
  return listing_->Body(p, page);
}

}  // namespace uw::manager
