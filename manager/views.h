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

// {"<key>": [view(item)...], "next": KEY or null, "total": N} (see PageQuery).
template <class T, class View>
Json PageView(const char* key, const Page<T>& page, View view) {
  Json items = Json::array();
  for (const T& item : page.items) items.push_back(view(item));
  return internal::PageJson(key, std::move(items), page.total, page.next);
}

}  // namespace uw::manager
