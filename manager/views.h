// The JSON views of the core's typed results: the shapes the REST API answers with (described by
// api/openapi.yaml). Only the HTTP layer (http_api.cc) and tests that compare with it use them;
// the core never reads JSON back from them.
#pragma once

#include <vector>

#include "common/json.h"
#include "manager/auth.h"
#include "manager/internal.h"
#include "manager/manager.h"

namespace uw::manager {

// {"id", "name", "role", "tenant", "rights", "created"}.
Json TokenJson(const TokenInfo& t);
// TokenJson without "created", with the secret: {"id", "name", "role", "tenant", "rights", "token"}.
Json NewTokenJson(const NewToken& t);

// {"id", "kind", "subject", "tenant", "state", "progress", "message", "attempts", "created", "updated",
// "error": {"code", "message"} or null, "result"}.
Json TaskJson(const Task& t);
// As `p` sees it: a tenant sees its guests by their short names (the subject).
Json TaskJson(const Task& t, const Principal& p);
// A catalogue image (GET /api/v1/images/{name}; the result of an image.import task).
Json ImageView(const ImageRecord& i);

// {"name", "agent_url", "state", "maintenance", "groups", "capacity": {"cpu_cores", "memory_mib"},
// "reserved": {"vcpus", "memory_mib"}, "usage": {"cpu_cores", "memory_mib"}, "guests", "last_heartbeat"}.
Json HostJson(const Host& h);
// HostJson with "guest_names", "evacuation": {"remaining", "done"} (in maintenance only) and "info".
Json HostDetailJson(const HostDetail& h);
// {"host", "driver" (its config without secrets: "password_set" instead; null when none), "phase",
// "phase_since", "wake_tested" (null until a power-on brought the agent back), "last_error" (null
// when none), and when the BMC was asked "bmc": {"state": on|off|null, "error"}}.
Json HostPowerJson(const HostPower& p, bool asked_bmc);
// {"name", "host_token", "heartbeat_interval_ms"}.
Json HostJoinedJson(const HostJoined& j);
// {"name", "state", "heartbeat_interval_ms"}.
Json HeartbeatAckJson(const HeartbeatAck& a);

// The pool as in a snapshot (placement::PoolToJson), with "guests": the names of those in it.
Json PoolDetailJson(const PoolDetail& p);
// The rule as in a snapshot (placement::RuleToJson), with "pending_guests": those it names that do not exist.
Json RuleDetailJson(const RuleDetail& r);

// {"id", "guest", "from", "to", "priority", "reason", "gain", "imbalance_before", "imbalance_after", "state",
// "note", "created"}.
Json RecommendationJson(const Recommendation& r);
// {"tasks": [TaskJson...], "unschedulable": [{"guest", "from", "to", "reason"}...], "waves"}.
Json StartedMovesJson(const StartedMoves& s);
// placement::PlanToJson with "started": StartedMovesJson when the pass started moves.
Json DrsPassJson(const DrsPass& pass);

// {"id", "guest", "tenant", "class", "state", "granted", "floor", "reclaimable", "start_ms", "term_ms",
// "term_end_ms", "renewal", "history"} (amounts {"vcpus", "memory_mib"}; lease_json.h).
Json LeaseJson(const LeaseRecord& r, const Principal& p);
// lease_json.h's NoticeJson with "delivery": {"state", "answer", "detail", "at_ms"}.
// A tenant's budget for the market broker: credits per hour, and what its live leases' bids cost.
Json BudgetJson(const Budget& b);
Json NoticeRecordJson(const NoticeRecord& n, const Principal& p);
// {"policy", "notices": [NoticeRecordJson...], "shortfall": {"vcpus", "memory_mib"}}.
Json HostReclaimJson(const HostReclaim& r, const Principal& p);
// lease_json.h's RepossessionJson.
Json RepossessionView(const lease::Repossession& r, const Principal& p);

// migration::RecordToJson with "task", "created", "updated".
Json MigrationJson(const Migration& m);

// {"name", "tenant", "host", "pool", "kind", "devices", "state", "vcpus", "memory_mib",
// "reserved": {"vcpus", "memory_mib"}, "automation", "migrating_to", "placement_reason", "alert",
// "health", "on_crash", "crash", "usage": {"cpu_cores", "memory_mib"}, "created"}; as `p` sees it
// (a tenant sees its guests by their short names).
Json GuestJson(const Guest& g, const Principal& p);
// GuestJson with "leases": [LeaseJson...], newest first.
Json GuestDetailJson(const GuestDetail& g, const Principal& p);

// {"seq", "at", "type", "subject", "tenant", "data"} as `p` sees it (a tenant sees its guests by their
// short names); the frames of GET /api/v1/events carry the same.
Json EventJson(const Event& e, const Principal& p);

// {"<key>": [view(item)...], "next": KEY or null, "total": N} (see PageQuery).
template <class T, class View>
Json PageView(const char* key, const Page<T>& page, View view) {
  Json items = Json::array();
  for (const T& item : page.items) items.push_back(view(item));
  return internal::PageJson(key, std::move(items), page.total, page.next);
}

// The migration settings in force (GET /api/v1/migrations shows them as "config").
Json MigrationConfigJson(const ManagerConfig& config);

}  // namespace uw::manager
