// Every route the manager serves is in api/openapi.yaml and every route there is served.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "api/http.h"
#include "manager/http_api.h"
#include "manager/manager.h"

namespace uw::manager {
namespace {

// "METHOD /path" for each operation under `paths:` (two-space path keys, four-space methods).
std::set<std::string> SpecRoutes(const std::string& yaml) {
  std::set<std::string> out;
  std::istringstream in(yaml);
  std::string line, path;
  bool in_paths = false;
  static const std::set<std::string> kMethods = {"get", "put", "post", "delete", "patch", "head", "options"};
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != ' ' && line[0] != '#') {
      in_paths = line.rfind("paths:", 0) == 0;
      continue;
    }
    if (!in_paths) continue;
    if (line.rfind("  /", 0) == 0 && line.back() == ':') {
      path = line.substr(2, line.size() - 3);
    } else if (line.rfind("    ", 0) == 0 && line[4] != ' ' && line.back() == ':') {
      std::string m = line.substr(4, line.size() - 5);
      if (kMethods.count(m)) {
        for (auto& c : m) c = static_cast<char>(std::toupper(c));
        out.insert(m + " " + path);
      }
    }
  }
  return out;
}

TEST(OpenApiTest, SpecAndServedRoutesAgree) {
  const char* src = std::getenv("UW_SOURCE_DIR");
  ASSERT_NE(src, nullptr) << "UW_SOURCE_DIR is set by ctest";
  std::ifstream f(std::string(src) + "/api/openapi.yaml");
  ASSERT_TRUE(f) << "cannot read api/openapi.yaml";
  std::stringstream ss;
  ss << f.rdbuf();
  std::set<std::string> spec = SpecRoutes(ss.str());
  ASSERT_GT(spec.size(), 20u);
  ManagerConfig config;
  Manager manager(config);
  api::Router router;
  BuildRoutes(manager, router);
  auto served_list = router.Routes();
  std::set<std::string> served(served_list.begin(), served_list.end());
  for (const auto& r : served) EXPECT_TRUE(spec.count(r)) << "served but not in api/openapi.yaml: " << r;
  for (const auto& r : spec) EXPECT_TRUE(served.count(r)) << "in api/openapi.yaml but not served: " << r;
}

TEST(OpenApiTest, ParserReadsPathsOnly) {
  auto r = SpecRoutes(
      "openapi: 3.0.3\npaths:\n  /a/{x}:\n    parameters: []\n    get:\n      summary: s\n"
      "    post:\n      x: y\ncomponents:\n  /b:\n    get:\n");
  EXPECT_EQ(r, (std::set<std::string>{"GET /a/{x}", "POST /a/{x}"}));
}

}  // namespace
}  // namespace uw::manager
