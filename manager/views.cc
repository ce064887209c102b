#include "manager/views.h"

#include "common/clock.h"

namespace uw::manager {

Json TokenJson(const TokenInfo& t) {
  return {{"id", t.id},
          {"name", t.name},
          {"role", RoleName(t.role)},
          {"tenant", t.tenant},
          {"rights", t.rights},
          {"created", FormatRfc3339(TimePoint(std::chrono::milliseconds(t.created_ms)))}};
}

Json NewTokenJson(const NewToken& t) {
  Json j = TokenJson(t.info);
  j.erase("created");
  j["token"] = t.token;
  return j;
}

}  // namespace uw::manager
