#include "manager/views.h"

#include "common/clock.h"
#include "manager/internal.h"

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

}  // namespace uw::manager
