#include "vmm/manager_link.h"

#include "vmm/agent.h"

#include <atomic>

#include <gtest/gtest.h>

namespace uw::vmm {
namespace {

// A fake manager: accepts one join token, hands out host tokens, counts heartbeats and can forget
// the host (as a manager that lost its session would).
class FakeManager {
 public:
  FakeManager() {
    router_.AddPublic("POST", "/api/v1/hosts/join", [this](const api::Request& req) {
      if (req.BearerToken() != "join-secret-0123456789") return api::Response::Error(UnauthenticatedError("wrong join token"));
      auto body = req.JsonBody();
      if (!body.ok()) return api::Response::Error(body.status());
      std::lock_guard l(mu_);
      last_join_ = *body;
      token_ = "host-token-" + std::to_string(++joins_);
      return api::Response::Json(201, {{"host_token", token_}, {"heartbeat_interval_ms", 50}});
    });
    router_.AddPublic("POST", "/api/v1/hosts/{name}/heartbeat", [this](const api::Request& req) {
      std::lock_guard l(mu_);
      if (req.BearerToken() != token_ || token_.empty()) return api::Response::Error(UnauthenticatedError("wrong host token"));
      auto body = req.JsonBody();
      if (!body.ok()) return api::Response::Error(body.status());
      last_heartbeat_ = *body;
      ++heartbeats_;
      return api::Response::Json(200, {{"state", "connected"}});
    });
    server_ = std::make_unique<api::HttpServer>(api::ServerOptions{}, &router_);
    EXPECT_TRUE(server_->Start().ok());
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  void Forget() {
    std::lock_guard l(mu_);
    token_.clear();
  }
  std::mutex mu_;
  std::string token_;
  int joins_ = 0, heartbeats_ = 0;
  Json last_join_, last_heartbeat_;
  api::Router router_;
  std::unique_ptr<api::HttpServer> server_;
};

AgentSource FakeSource() {
  return [](std::string_view path) -> Result<Json> {
    if (path == "/api/v1/host") return Json{{"cpu_cores", 8}, {"memory_mib", 16384}, {"hostname", "h"}};
    if (path == "/api/v1/stats") return Json{{"host", {{"name", "h1"}}}, {"guests", {{{"name", "g"}, {"cpu_cores", 0.25}}}}};
    if (path == "/api/v1/guests") return Json{{"guests", {{{"name", "g"}, {"state", "running"}}}}};
    return NotFoundError(std::string(path));
  };
}

ManagerLinkOptions Options(const std::string& url, const std::string& join = "join-secret-0123456789") {
  ManagerLinkOptions o;
  o.manager_url = url;
  o.join_token = join;
  o.host_name = "h1";
  o.agent_url = "http://10.77.0.1:7700";
  o.agent_token = "agent-token";
  o.heartbeat_interval_ms = 50;
  return o;
}

TEST(ManagerLinkTest, JoinsWithCapacityThenHeartbeatsUsageAndGuests) {
  FakeManager m;
  ManagerLink link(Options(m.url()), FakeSource());
  ASSERT_TRUE(link.Heartbeat().ok());
  EXPECT_TRUE(link.joined());
  std::lock_guard l(m.mu_);
  EXPECT_EQ(m.joins_, 1);
  EXPECT_EQ(m.heartbeats_, 1);
  EXPECT_EQ(m.last_join_["capacity"]["memory_mib"], 16384);
  EXPECT_EQ(m.last_join_["agent_url"], "http://10.77.0.1:7700");
  EXPECT_EQ(m.last_heartbeat_["guests"][0]["name"], "g");
  EXPECT_DOUBLE_EQ(m.last_heartbeat_["stats"]["guests"][0]["cpu_cores"].get<double>(), 0.25);
}

TEST(ManagerLinkTest, WrongJoinTokenIsUnauthenticated) {
  FakeManager m;
  ManagerLink link(Options(m.url(), "not-the-join-token"), FakeSource());
  Status s = link.Join();
  EXPECT_EQ(s.code(), StatusCode::kUnauthenticated) << s.ToString();
  EXPECT_FALSE(link.joined());
}

TEST(ManagerLinkTest, RejoinsWhenTheManagerForgetsTheSession) {
  FakeManager m;
  ManagerLink link(Options(m.url()), FakeSource());
  link.Start();
  auto wait = [&](auto pred) {
    for (int i = 0; i < 200 && !pred(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return pred();
  };
  ASSERT_TRUE(wait([&] { return link.heartbeats_sent() >= 2; }));
  m.Forget();
  ASSERT_TRUE(wait([&] {
    std::lock_guard l(m.mu_);
    return m.joins_ >= 2 && m.heartbeats_ >= 3;
  }));
  link.Stop();
}

TEST(ManagerLinkTest, AgentConfigCarriesTheManagerFields) {
  Json j = {{"host_name", "h1"}, {"token", "agent-token-0123456789"}, {"manager_url", "http://10.77.0.254:7800"},
            {"join_token", "join-secret-0123456789"}, {"heartbeat_interval_ms", 500}};
  auto c = AgentConfigFromJson(j, "agent.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->manager_url, "http://10.77.0.254:7800");
  EXPECT_EQ(c->heartbeat_interval_ms, 500);
  j.erase("join_token");
  auto missing = AgentConfigFromJson(j, "agent.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("join_token"), std::string::npos) << missing.status().message();
  j["join_token"] = "x";
  j["heartbeat_interval_ms"] = 1;
  EXPECT_FALSE(AgentConfigFromJson(j, "agent.json").ok());
}

TEST(ManagerLinkTest, UnreachableManagerIsUnavailable) {
  ManagerLink link(Options("http://127.0.0.1:1"), FakeSource());
  EXPECT_EQ(link.Join().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace uw::vmm
