#include "vmm/manager_link.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "vmm/agent.h"

namespace uw::vmm {
namespace {

// A fake manager: accepts one join token, hands out host tokens, counts heartbeats and can forget
// the host (as a manager that lost its session would).
class FakeManager {
 public:
  FakeManager() {
    router_.AddPublic("POST", "/api/v1/hosts/join", [this](const api::Request& req) {
      if (req.BearerToken() != "join-secret-0123456789")
        return api::Response::Error(UnauthenticatedError("wrong join token"));
      auto body = req.JsonBody();
      if (!body.ok()) return api::Response::Error(body.status());
      std::lock_guard l(mu_);
      last_join_ = *body;
      token_ = "host-token-" + std::to_string(++joins_);
      return api::Response::Json(201, {{"host_token", token_}, {"heartbeat_interval_ms", 50}});
    });
    router_.AddPublic("POST", "/api/v1/hosts/{name}/heartbeat", [this](const api::Request& req) {
      std::lock_guard l(mu_);
      if (req.BearerToken() != token_ || token_.empty())
        return api::Response::Error(UnauthenticatedError("wrong host token"));
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
    if (path == "/api/v1/stats")
      return Json{{"host", {{"name", "h1"}}},
                  {"sampled_at", "2026-12-06T10:00:00.000Z"},
                  {"guests", {{{"name", "g"}, {"cpu_cores", 0.25}}}}};
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
  // The usage goes as numbered samples (SampleBook), the first numbered 1.
  const Json& sample = m.last_heartbeat_["stats"]["samples"][0];
  EXPECT_EQ(sample["seq"], 1);
  EXPECT_DOUBLE_EQ(sample["guests"][0]["cpu_cores"].get<double>(), 0.25);
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
  Json j = {{"host_name", "h1"},
            {"token", "agent-token-0123456789"},
            {"manager_url", "http://10.77.0.254:7800"},
            {"join_token", "join-secret-0123456789"},
            {"heartbeat_interval_ms", 500}};
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

// What the agent answers for `n` running guests, as its routes build them (GuestJson adds health
// and readiness to GuestInfoToJson).
std::pair<Json, Json> AgentAnswers(int n) {
  Json usage = Json::array(), guests = Json::array();
  for (int i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "acme:web-frontend-%04d", i);
    GuestInfo info;
    info.name = name;
    info.uuid = "5f0c3e1a-4b7d-4c1e-9a51-" + std::to_string(100000000000 + i);
    info.state = GuestState::kRunning;
    info.state_reason = "booted";
    info.id = i + 1;
    info.vcpus = info.max_vcpus = 2;
    info.memory_mib = info.max_memory_mib = 2048;
    info.cpu_time_ns = 123456789012ull + i;
    info.console_log = std::string("/var/lib/underware/guests/") + name + "/console.log";
    info.channels.push_back({"org.underware.guest.0", std::string("/run/underware/") + name + ".sock"});
    Json g = GuestInfoToJson(info);
    g["health"] = "ready";
    g["ready"] = true;
    g["health_since"] = int64_t{1764810000000} + i;
    guests.push_back(g);
    GuestUsage u;
    u.counters.name = name;
    u.counters.uuid = info.uuid;
    u.counters.state = GuestState::kRunning;
    u.counters.cpu_time_ns = info.cpu_time_ns;
    u.counters.vcpus = 2;
    u.counters.balloon_current_kib = u.counters.balloon_maximum_kib = 2048 * 1024;
    u.counters.rss_kib = 1900 * 1024;
    u.interval_s = 2.0001;
    u.cpu_cores = 0.123456789 + i * 1e-6;
    u.memory_used_mib = 1234;
    u.block_rd_bps = 1234.5678;
    u.net_rx_bps = 98765.4321;
    usage.push_back(GuestUsageToJson(u));
  }
  Json stats = {{"sampled_at", "2026-12-04T01:00:00.000Z"},
                {"host", {{"name", "h1"}, {"hostname", "h1"}, {"cpu_cores", 64}, {"memory_mib", 262144}}},
                {"guests", usage}};
  return {stats, guests};
}

TEST(ManagerLinkTest, AHostWithMoreThan340GuestsCanNeverHeartbeatAgain) {
  // The full answers made 775 bytes per guest: 592 guests were 459 KB, over the manager's default
  // max_body_bytes (256 KiB). The heartbeat carries only what the manager reads.
  constexpr size_t kManagerBodyLimit = 256 << 10;
  auto [stats, guests] = AgentAnswers(1024);
  const size_t full = Json({{"stats", stats}, {"guests", guests}}).dump().size();
  const Json body = HeartbeatBody(stats, guests);
  const size_t compact = body.dump().size();
  std::printf("heartbeat of 1024 guests: full %zu bytes (%.0f per guest), sent %zu bytes (%.0f per guest)\n", full,
              full / 1024.0, compact, compact / 1024.0);
  // Under even the server-wide default; the manager's heartbeat route takes 1 MiB
  // (heartbeat_max_body_bytes), so hosts four times larger fit too.
  EXPECT_LT(compact, kManagerBodyLimit);
  EXPECT_LT(compact * 3, full);
  // What the manager reads is all there.
  const Json& g = body["guests"][1023];
  EXPECT_EQ(g["name"], "acme:web-frontend-1023");
  for (const char* k : {"state", "kind", "vcpus", "max_vcpus", "memory_mib", "max_memory_mib", "health"}) {
    EXPECT_TRUE(g.contains(k)) << k;
  }
  EXPECT_FALSE(g.contains("channels"));
  const Json& u = body["stats"]["guests"][1023];
  EXPECT_EQ(u.size(), 3u) << u.dump();
  EXPECT_DOUBLE_EQ(u["cpu_cores"].get<double>(), stats["guests"][1023]["cpu_cores"].get<double>());
  EXPECT_EQ(u["memory_used_mib"], 1234);
  // A crashed guest keeps its crash record; unresponsive_since passes through.
  Json crashed = guests[0];
  crashed["crash"] = {{"at", 5}, {"console_tail", "Kernel panic"}, {"extra", 1}};
  crashed["unresponsive_since"] = 7;
  const Json one = HeartbeatBody(stats, Json::array({crashed}));
  EXPECT_EQ(one["guests"][0]["crash"], Json({{"at", 5}, {"console_tail", "Kernel panic"}}));
  EXPECT_EQ(one["guests"][0]["unresponsive_since"], 7);
}

// Issue 18: samples numbered once, kept until acknowledged, with what the counters counted between them.
TEST(SampleBookTest, NumbersEachSampleOnceKeepsItUntilAckedAndCountsDeltas) {
  auto stats = [](const std::string& at, uint64_t cpu_ns, uint64_t rx, uint64_t rd) {
    return Json{{"sampled_at", at},
                {"guests",
                 {{{"name", "g1"},
                   {"cpu_cores", 0.5},
                   {"memory_used_mib", 100},
                   {"cpu_time_ns", cpu_ns},
                   {"net_rx_bytes", rx},
                   {"net_tx_bytes", uint64_t{10}},
                   {"block_rd_bytes", rd},
                   {"block_wr_bytes", uint64_t{0}},
                   {"channels", 3}}}}};
  };
  SampleBook book;
  book.Add(stats("2026-12-06T10:00:00.000Z", 1'000'000'000, 100, 0));
  book.Add(stats("2026-12-06T10:00:00.000Z", 1'000'000'000, 100, 0));  // the same sample again
  ASSERT_EQ(book.size(), 1u);
  book.Add(stats("2026-12-06T10:00:01.000Z", 1'500'000'500, 300, 4096));
  book.Add(stats("2026-12-06T10:00:02.000Z", 1'500'001'000, 300, 4096));
  Json all = book.Pending(1 << 20);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0]["seq"], 1);
  EXPECT_EQ(all[2]["seq"], 3);
  const Json& first = all[0]["guests"][0];
  EXPECT_EQ(first["cpu_us"], 0);  // nothing before a guest's first sample
  EXPECT_EQ(first["net_bytes"], 0);
  EXPECT_EQ(first["baseline"], true);  // where counting starts: the manager records what came before as a gap
  EXPECT_FALSE(first.contains("channels"));
  const Json& second = all[1]["guests"][0];
  EXPECT_FALSE(second.contains("baseline"));
  EXPECT_EQ(second["cpu_us"], 500'000);
  EXPECT_EQ(second["net_bytes"], 200);
  EXPECT_EQ(second["disk_bytes"], 4096);
  EXPECT_EQ(all[2]["guests"][0]["cpu_us"], 1);  // 500 ns carried from the sample before, plus 500
  // A budget sends the oldest first, always at least one.
  EXPECT_EQ(book.Pending(1).size(), 1u);
  book.Ack(2);
  ASSERT_EQ(book.size(), 1u);
  EXPECT_EQ(book.Pending(1 << 20)[0]["seq"], 3);
  // With all acknowledged, the newest goes again (the manager keeps it once and reads the host's
  // usage from it).
  book.Ack(3);
  EXPECT_EQ(book.size(), 0u);
  ASSERT_EQ(book.Pending(1 << 20).size(), 1u);
  EXPECT_EQ(book.Pending(1 << 20)[0]["seq"], 3);
  // A counter that went back (the guest restarted) counts from its reset.
  book.Add(stats("2026-12-06T10:00:03.000Z", 2'000'000, 50, 0));
  const Json last = book.Pending(1 << 20).back()["guests"][0];
  EXPECT_EQ(last["cpu_us"], 2'000);
  EXPECT_EQ(last["net_bytes"], 50 + 10);  // in and out together went back below 310: counted from the reset
  // The oldest go when the manager is away too long.
  for (size_t i = 0; i < SampleBook::kMaxPending + 5; ++i) book.Add(stats(std::to_string(i), 0, 0, 0));
  EXPECT_EQ(book.size(), SampleBook::kMaxPending);
  EXPECT_EQ(book.dropped(), 6);
}

// Opened on a file, the book's pending samples outlive the agent (killed, nothing flushed on the
// way out) and it numbers on; its counters do not: each guest's next sample is a baseline.
TEST(SampleBookTest, AKilledAgentDeliversWhatItHadNotAndNumbersOn) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("uw-samplebook-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "samples.log").string();
  auto stats = [](const std::string& at, uint64_t cpu_ns) {
    return Json{{"sampled_at", at}, {"guests", {{{"name", "g1"}, {"cpu_cores", 1.0}, {"cpu_time_ns", cpu_ns}}}}};
  };
  {
    SampleBook book;
    ASSERT_TRUE(book.Open(path).ok());
    book.Add(stats("2026-12-07T10:00:00.000Z", 1'000'000'000));
    book.Add(stats("2026-12-07T10:00:01.000Z", 2'000'000'000));
    book.Add(stats("2026-12-07T10:00:02.000Z", 3'000'000'000));
    book.Ack(1);
  }  // killed: the destructor only closes the file, which holds what was written
  {
    std::ofstream(path, std::ios::app) << "{\"seq\": 4, \"sampled_";  // a write the kill cut short
  }
  SampleBook again;
  ASSERT_TRUE(again.Open(path).ok());
  Json pending = again.Pending(1 << 20);
  ASSERT_EQ(pending.size(), 2u) << pending.dump();
  EXPECT_EQ(pending[0]["seq"], 2);
  EXPECT_EQ(pending[1]["seq"], 3);
  EXPECT_EQ(pending[1]["guests"][0]["cpu_us"], 1'000'000);
  again.Add(stats("2026-12-07T10:00:40.000Z", 43'000'000'000));
  pending = again.Pending(1 << 20);
  ASSERT_EQ(pending.size(), 3u);
  EXPECT_EQ(pending[2]["seq"], 4);
  EXPECT_EQ(pending[2]["guests"][0]["baseline"], true);  // the 40 s it was down are not counted
  EXPECT_EQ(pending[2]["guests"][0]["cpu_us"], 0);
  // All acknowledged: the log is rewritten short, and the numbering still goes on after a restart.
  again.Ack(4);
  EXPECT_LT(std::filesystem::file_size(path), 64u);
  SampleBook third;
  ASSERT_TRUE(third.Open(path).ok());
  EXPECT_EQ(third.size(), 0u);
  third.Add(stats("2026-12-07T10:00:41.000Z", 44'000'000'000));
  EXPECT_EQ(third.Pending(1 << 20)[0]["seq"], 5);
  // A log that cannot be written is an error naming it; the book works in memory.
  SampleBook nowhere;
  Status s = nowhere.Open((dir / "missing" / "samples.log").string());
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing/samples.log"), std::string::npos) << s.ToString();
  nowhere.Add(stats("2026-12-07T10:00:41.000Z", 1));
  EXPECT_EQ(nowhere.size(), 1u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace uw::vmm
