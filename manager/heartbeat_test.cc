// Regression test for "a host with more than about 340 guests can never heartbeat again": the
// heartbeat of a host with 1,024 guests, in the form uw-agent sends (vmm::HeartbeatBody: only what
// the manager reads), is accepted under the default max_body_bytes and reconciles every guest.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "api/http.h"
#include "manager/http_api.h"
#include "manager/manager.h"

namespace uw::manager {
namespace {

// The heartbeat body of `n` running guests, shaped as vmm::HeartbeatBody makes it.
Json Heartbeat(int n, double cpu) {
  Json usage = Json::array(), guests = Json::array();
  for (int i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "acme:web-frontend-%04d", i);
    usage.push_back({{"name", name}, {"cpu_cores", cpu + i * 1e-6}, {"memory_used_mib", 1234}});
    guests.push_back({{"name", name},
                      {"state", "running"},
                      {"kind", "qemu"},
                      {"vcpus", 2},
                      {"max_vcpus", 2},
                      {"memory_mib", 2048},
                      {"max_memory_mib", 2048},
                      {"health", "ready"}});
  }
  return {{"stats", {{"sampled_at", "2026-12-04T01:00:00.000Z"}, {"guests", usage}}}, {"guests", guests}};
}

TEST(HeartbeatTest, AHostWithMoreThan340GuestsCanNeverHeartbeatAgain) {
  auto dir = std::filesystem::temp_directory_path() / ("uw-heartbeat-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  ManagerConfig config;
  config.db_path = (dir / "state.db").string();
  config.join_token = "join-token-0123456789";
  config.admin_token = "admin-token-0123456789";
  config.drs_interval_ms = 0;
  ASSERT_EQ(config.max_body_bytes, size_t{256 << 10}) << "the default limit";
  Manager manager(config);
  ASSERT_TRUE(manager.Start().ok());
  api::Router router;
  BuildRoutes(manager, router);
  api::ServerOptions opts;
  opts.max_body_bytes = config.max_body_bytes;
  api::HttpServer server(opts, &router);
  ASSERT_TRUE(server.Start().ok());
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port());
  Json join = {{"name", "big"},
               {"agent_url", "http://127.0.0.1:1"},
               {"agent_token", "t"},
               {"capacity", {{"cpu_cores", 256}, {"memory_mib", 4 << 20}}}};
  auto joined = api::HttpClient({url, config.join_token, 10000, 3000}).Call("POST", "/api/v1/hosts/join", &join);
  ASSERT_TRUE(joined.ok()) << joined.status().ToString();
  api::HttpClient host({url, (*joined)["host_token"].get<std::string>(), 30000, 3000});

  for (int beat = 0; beat < 3; ++beat) {
    const std::string body = Heartbeat(1024, 0.1 * beat).dump();
    ASSERT_LT(body.size(), config.max_body_bytes);
    auto t0 = std::chrono::steady_clock::now();
    auto r = host.Do("POST", "/api/v1/hosts/big/heartbeat", body, {{"Content-Type", "application/json"}});
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 200) << r->body;
    std::printf("heartbeat %d of 1024 guests: %zu bytes (%.0f per guest), %.1f ms\n", beat, body.size(),
                body.size() / 1024.0, ms);
  }
  // Larger hosts too: the heartbeat route has its own limit (heartbeat_max_body_bytes), other
  // routes keep max_body_bytes.
  const std::string big = Heartbeat(3000, 0.5).dump();
  ASSERT_GT(big.size(), config.max_body_bytes);
  auto r = host.Do("POST", "/api/v1/hosts/big/heartbeat", big, {{"Content-Type", "application/json"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200) << r->body.substr(0, 300);
  auto other = api::HttpClient({url, config.admin_token, 10000, 3000})
                   .Do("POST", "/api/v1/guests", big, {{"Content-Type", "application/json"}});
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->status, 413);
  auto rows = manager.store().Query("SELECT COUNT(*) AS n FROM guests WHERE host = 'big' AND state = 'running'");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ((*rows)[0].Int("n"), 3000);
  auto h = manager.GetHost("big");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->host.state, "connected");
  EXPECT_EQ(h->host.guests, 3000);
  server.Stop();
  manager.Stop();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace uw::manager
