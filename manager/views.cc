#include "manager/views.h"

#include "common/clock.h"
#include "manager/internal.h"
#include "manager/lease_json.h"

namespace uw::manager {
namespace {

std::string Rfc3339Ms(int64_t ms) { return FormatRfc3339(TimePoint(std::chrono::milliseconds(ms))); }

}  // namespace

Json TokenJson(const TokenInfo& t) {
  return {{"id", t.id},         {"name", t.name},     {"role", RoleName(t.role)},
          {"tenant", t.tenant}, {"rights", t.rights}, {"created", Rfc3339Ms(t.created_ms)}};
}

Json NewTokenJson(const NewToken& t) {
  Json j = TokenJson(t.info);
  j.erase("created");
  j["token"] = t.token;
  return j;
}

Json TaskJson(const Task& t) {
  return {{"id", t.id},
          {"kind", t.kind},
          {"subject", t.subject},
          {"tenant", t.tenant},
          {"state", t.state},
          {"progress", t.progress},
          {"message", t.message},
          {"attempts", t.attempts},
          {"created", Rfc3339Ms(t.created_ms)},
          {"updated", Rfc3339Ms(t.updated_ms)},
          {"error", t.error ? Json{{"code", t.error->code}, {"message", t.error->message}} : Json(nullptr)},
          {"result", t.result}};
}

Json TaskJson(const Task& t, const Principal& p) {
  Json j = TaskJson(t);
  internal::ShowShortNames(p, j);
  return j;
}

Json ImageView(const ImageRecord& i) {
  return {{"name", i.name},
          {"backend", i.backend},
          {"format", i.format},
          {"size_bytes", i.size_bytes},
          {"size_gib", static_cast<double>(i.size_bytes) / static_cast<double>(int64_t{1} << 30)},
          {"used_bytes", i.used_bytes},
          {"source", i.source},
          {"created", Rfc3339Ms(i.created_ms)},
          {"volumes", i.volumes}};
}

Json HostJson(const Host& h) {
  // Built member by member: an initializer list would copy every nested value.
  Json j = Json::object();
  j["name"] = h.name;
  j["agent_url"] = h.agent_url;
  // A connected host in maintenance mode shows as `maintenance` (no new guests, its own evacuated);
  // `maintenance` stays true through the power states it may then go to (standby, failed...).
  j["state"] = h.maintenance && h.state == "connected" ? "maintenance" : h.state;
  j["maintenance"] = h.maintenance;
  j["groups"] = h.groups;
  Json& capacity = j["capacity"];
  capacity["cpu_cores"] = h.cpu_cores;
  capacity["memory_mib"] = h.memory_mib;
  Json& reserved = j["reserved"];
  reserved["vcpus"] = h.reserved_vcpus;
  reserved["memory_mib"] = h.reserved_memory_mib;
  Json& usage = j["usage"];
  usage["cpu_cores"] = h.used_cpu_cores;
  usage["memory_mib"] = h.used_memory_mib;
  j["guests"] = h.guests;
  j["last_heartbeat"] = Rfc3339Ms(h.last_heartbeat_ms);
  return j;
}

Json HostDetailJson(const HostDetail& h) {
  Json j = HostJson(h.host);
  j["guest_names"] = h.guest_names;
  if (h.evacuation) j["evacuation"] = {{"remaining", h.evacuation->remaining}, {"done", h.evacuation->done}};
  j["info"] = h.info;
  return j;
}

Json HostPowerJson(const HostPower& p, bool asked_bmc) {
  Json j = {{"host", p.host},
            {"driver", p.driver},
            {"phase", p.phase},
            {"phase_since", p.phase_since_ms ? Json(Rfc3339Ms(p.phase_since_ms)) : Json(nullptr)},
            {"wake_tested", p.wake_tested_ms ? Json(Rfc3339Ms(*p.wake_tested_ms)) : Json(nullptr)},
            {"last_error", p.last_error.empty() ? Json(nullptr) : Json(p.last_error)}};
  if (asked_bmc) {
    j["bmc"] = {{"state", p.bmc ? Json(*p.bmc) : Json(nullptr)},
                {"error", p.bmc_error.empty() ? Json(nullptr) : Json(p.bmc_error)}};
  }
  return j;
}

Json HostJoinedJson(const HostJoined& j) {
  return {{"name", j.name}, {"host_token", j.host_token}, {"heartbeat_interval_ms", j.heartbeat_interval_ms}};
}

Json HeartbeatAckJson(const HeartbeatAck& a) {
  Json j = {{"name", a.name}, {"state", a.state}, {"heartbeat_interval_ms", a.heartbeat_interval_ms}};
  if (a.samples_through >= 0) j["samples_through"] = a.samples_through;
  return j;
}

Json PoolDetailJson(const PoolDetail& p) {
  Json j = placement::PoolToJson(p.pool);
  j["guests"] = p.guests;
  return j;
}

Json RuleDetailJson(const RuleDetail& r) {
  Json j = placement::RuleToJson(r.rule);
  j["pending_guests"] = r.pending_guests;
  return j;
}

Json RecommendationJson(const Recommendation& r) {
  return {{"id", r.id},
          {"guest", r.guest},
          {"from", r.from},
          {"to", r.to},
          {"priority", r.priority},
          {"reason", r.reason},
          {"gain", r.gain},
          {"imbalance_before", r.imbalance_before},
          {"imbalance_after", r.imbalance_after},
          {"state", r.state},
          {"note", r.note},
          {"created", Rfc3339Ms(r.created_ms)}};
}

Json StartedMovesJson(const StartedMoves& s) {
  Json tasks = Json::array();
  for (const Task& t : s.tasks) tasks.push_back(TaskJson(t));
  Json unschedulable = Json::array();
  for (const UnschedulableMove& u : s.unschedulable) {
    unschedulable.push_back({{"guest", u.guest}, {"from", u.from}, {"to", u.to}, {"reason", u.reason}});
  }
  return {{"tasks", std::move(tasks)}, {"unschedulable", std::move(unschedulable)}, {"waves", s.waves}};
}

Json DrsPassJson(const DrsPass& pass) {
  Json j = placement::PlanToJson(pass.plan);
  if (pass.started) j["started"] = StartedMovesJson(*pass.started);
  return j;
}

Json MigrationJson(const Migration& m) {
  Json j = migration::RecordToJson(m.record);
  j["task"] = m.task;
  j["created"] = Rfc3339Ms(m.created_ms);
  j["updated"] = Rfc3339Ms(m.updated_ms);
  return j;
}

Json GuestJson(const Guest& g, const Principal& p) {
  // Built field by field: nlohmann's initializer lists copy every value (listing 10,000 guests
  // spent a third of its time there).
  auto text_or_null = [](const std::optional<std::string>& t) { return t ? Json(*t) : Json(nullptr); };
  Json j = Json::object();
  j["name"] = std::string(internal::ShownGuestName(p, g.name));
  j["tenant"] = g.tenant;
  j["host"] = text_or_null(g.host);
  j["pool"] = text_or_null(g.pool);
  j["kind"] = g.kind;
  j["devices"] = g.devices;
  j["state"] = g.state;
  j["vcpus"] = g.vcpus;
  j["memory_mib"] = g.memory_mib;
  Json& reserved = j["reserved"];
  reserved["vcpus"] = g.reserved_vcpus;
  reserved["memory_mib"] = g.reserved_memory_mib;
  j["automation"] = g.automation;
  j["migrating_to"] = text_or_null(g.migrating_to);
  j["placement_reason"] = g.placement_reason;
  j["alert"] = g.alert;
  j["health"] = text_or_null(g.health);
  j["on_crash"] = g.on_crash;
  j["restart_priority"] = g.restart_priority;
  j["crash"] = g.crash;
  Json& usage = j["usage"];
  usage["cpu_cores"] = g.used_cpu_cores;
  usage["memory_mib"] = g.used_memory_mib;
  j["created"] = Rfc3339Ms(g.created_ms);
  return j;
}

Json GuestDetailJson(const GuestDetail& g, const Principal& p) {
  Json j = GuestJson(g.guest, p);
  Json& leases = j["leases"] = Json::array();
  for (const LeaseRecord& l : g.leases) leases.push_back(LeaseJson(l, p));
  return j;
}

Json LeaseJson(const LeaseRecord& r, const Principal& p) {
  const lease::Lease& l = r.lease;
  Json j = {{"id", l.id},
            {"guest", l.guest},
            {"tenant", l.tenant},
            {"class", lease::LeaseClassName(l.lease_class)},
            {"state", lease::LeaseStateName(l.state)},
            {"granted", internal::ResourcesJson(l.granted)},
            {"floor", internal::ResourcesJson(l.floor)},
            {"reclaimable", internal::ResourcesJson(lease::Reclaimable(l))},
            {"start_ms", l.start_ms},
            {"term_ms", r.term_ms ? Json(*r.term_ms) : Json(nullptr)},
            {"term_end_ms", l.term_end_ms ? Json(*l.term_end_ms) : Json(nullptr)},
            {"renewal", r.renewal ? internal::RenewalJson(*r.renewal) : Json(nullptr)},
            {"bid", l.bid},
            {"shares", l.shares},
            {"history", internal::HistoryJson(l.history)}};
  internal::ShowShortNames(p, j);
  return j;
}

Json BudgetJson(const Budget& b) {
  return {{"tenant", b.tenant}, {"per_hour", b.per_hour}, {"committed", b.committed}};
}

Json NoticeRecordJson(const NoticeRecord& n, const Principal& p) {
  Json j = internal::NoticeJson(n.notice);
  j["delivery"] = {{"state", n.delivery.state},
                   {"answer", n.delivery.answer},
                   {"detail", n.delivery.detail},
                   {"at_ms", n.delivery.at_ms}};
  internal::ShowShortNames(p, j);
  if (j["reply"].is_object()) internal::ShowShortNames(p, j["reply"]);
  return j;
}

Json HostReclaimJson(const HostReclaim& r, const Principal& p) {
  Json notices = Json::array();
  for (const auto& n : r.notices) notices.push_back(NoticeRecordJson(n, p));
  return {{"policy", lease::BrokerPolicyName(r.policy)},
          {"notices", std::move(notices)},
          {"shortfall", internal::ResourcesJson(r.shortfall)}};
}

Json RepossessionView(const lease::Repossession& r, const Principal& p) {
  Json j = internal::RepossessionJson(r);
  internal::ShowShortNames(p, j);
  return j;
}

Json EventJson(const Event& e, const Principal& p) {
  Json j = {{"seq", e.seq},         {"at", Rfc3339Ms(e.at_ms)}, {"type", e.type},
            {"subject", e.subject}, {"tenant", e.tenant},       {"data", e.data}};
  internal::ShowShortNames(p, j);
  return j;
}

Json MigrationConfigJson(const ManagerConfig& config) {
  return {{"per_host", config.migration_caps.per_host},
          {"cluster", config.migration_caps.cluster},
          {"poll_ms", config.migration_poll_ms},
          {"agent_grace_ms", config.migration_agent_grace_ms},
          {"verify_window_ms", config.migration_verify_window_ms},
          {"verify_timeout_ms", config.migration_verify_timeout_ms},
          {"convergence", migration::ConvergencePolicyToJson(config.convergence)}};
}

}  // namespace uw::manager
