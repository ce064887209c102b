// The placement engine's view of the cluster, built from the store's rows (issue 13, step 3).
// Private to manager/.
//
// Typed all the way (no snapshot JSON written and parsed again under the placement lock): hosts,
// pools, guests, rules and DRS settings become a placement::Snapshot, checked by
// placement::ValidateSnapshot. It is the one place where the store's state meets capacity: every
// admission and placement decision reads this snapshot (a guest in flight holds memory on both
// hosts, as `NAME@incoming` on its destination).
#pragma once

#include <cstdint>

#include "common/json.h"
#include "common/status.h"
#include "manager/manager.h"
#include "manager/store.h"
#include "placement/placement.h"

namespace uw::manager::internal {

// The DRS settings the engine reads, from the manager's DRS config (GET /drs/config).
placement::DrsSettings DrsSettingsFromConfig(const DrsConfig& config);
// The engine's DPM settings: enabled unless off, the band as a target and a tolerance.
placement::DpmSettings DpmSettingsFromConfig(const DpmConfig& config);

// `incoming`: a guest being admitted (unplaced), included so that rules naming it apply to its
// placement. Stored rules are cut down to the guests, hosts and groups that exist (a rule left
// with too few of them is left out). `now_ms` dates the engine's move cooldown.
Result<placement::Snapshot> BuildSnapshot(Store& store, int64_t now_ms, const placement::Settings& settings,
                                          const placement::Vm* incoming = nullptr);

}  // namespace uw::manager::internal
