// uw-manager on the real test bed: the test-bed agents join (through vmm::ManagerLink, reading each
// agent over HTTP, since the test bed's agent configs carry no manager_url), guests are created
// through the manager's REST API onto real hosts (libvirtd + emulated guests), and bad input is
// refused with the right status while nothing changes.
#include "tests/manager_it_fixture.h"

namespace uw {
namespace {

using it::kAdmin;
using it::ManagerIntegrationTest;
using testing::Testbed;
using testing::TickWatcher;
using testing::WaitFor;

TEST_F(ManagerIntegrationTest, TestbedAgentsJoinAndStayConnected) {
  ASSERT_TRUE(WaitFor(
      [] {
        auto r = Client().Call("GET", "/api/v1/hosts");
        if (!r.ok() || (*r)["hosts"].size() != testbed_->hosts.size()) return false;
        for (const auto& h : (*r)["hosts"]) {
          if (h["state"] != "connected") return false;
        }
        return true;
      },
      std::chrono::seconds(30)));
  auto h = Client().Call("GET", "/api/v1/hosts/" + testbed_->hosts[0].name);
  ASSERT_TRUE(h.ok());
  EXPECT_GT((*h)["capacity"]["memory_mib"].get<int64_t>(), 0);
  EXPECT_GT((*h)["capacity"]["cpu_cores"].get<double>(), 0);
}

TEST_F(ManagerIntegrationTest, HostMissingHeartbeatsDisconnectsAndReconnects) {
  const std::string name = testbed_->hosts.back().name;
  auto state = [&] {
    auto r = Client().Call("GET", "/api/v1/hosts/" + name);
    return r.ok() ? (*r)["state"].get<std::string>() : std::string("?");
  };
  ASSERT_TRUE(WaitFor([&] { return state() == "connected"; }, std::chrono::seconds(30)));
  links_->back()->Stop();
  EXPECT_TRUE(WaitFor([&] { return state() == "disconnected"; }, std::chrono::seconds(20)));
  links_->back()->Start();
  EXPECT_TRUE(WaitFor([&] { return state() == "connected"; }, std::chrono::seconds(20)));
  const std::string events = Events();
  EXPECT_NE(events.find("event: host.disconnected"), std::string::npos);
  EXPECT_NE(events.find("event: host.reconnected"), std::string::npos);
}

TEST_F(ManagerIntegrationTest, CreateStopAndDeleteAGuestOnARealHost) {
  ASSERT_TRUE(WaitFor([] { return links_->at(0)->heartbeats_sent() > 0; }, std::chrono::seconds(30)));
  Json body = {{"name", "mit-g1"}, {"kind", "qemu"}, {"image", "tiny"}, {"vcpus", 1}, {"memory_mib", 256}};
  auto r = Client().Do("POST", "/api/v1/guests", body.dump(), {{"Idempotency-Key", "mit-create-1"}});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status, 202) << r->body;
  Json done = WaitTask(Json::parse(r->body));
  ASSERT_EQ(done["state"], "succeeded") << done.dump();
  // Retrying with the same key does not create a second task or guest.
  auto again = Client().Do("POST", "/api/v1/guests", body.dump(), {{"Idempotency-Key", "mit-create-1"}});
  EXPECT_EQ(Json::parse(again->body)["id"], Json::parse(r->body)["id"]);
  auto g = Client().Call("GET", "/api/v1/guests/mit-g1");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)["state"], "running");
  std::string host = (*g)["host"];
  EXPECT_FALSE((*g)["placement_reason"].get<std::string>().empty());
  EXPECT_TRUE(AgentGuests().count("mit-g1"));
  // Heartbeats bring the agent's view back into the manager; the guest stays running there.
  Json force = {{"force", true}};
  auto stop = Client().Call("POST", "/api/v1/guests/mit-g1/stop", &force);
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  EXPECT_EQ(WaitTask(*stop, 120)["state"], "succeeded");
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/mit-g1"))["state"], "shutoff");
  auto del = Client().Call("DELETE", "/api/v1/guests/mit-g1");
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(WaitTask(*del, 120)["state"], "succeeded");
  EXPECT_FALSE(AgentGuests().count("mit-g1"));
  EXPECT_EQ(Client().Call("GET", "/api/v1/guests/mit-g1").status().code(), StatusCode::kNotFound);
}

TEST_F(ManagerIntegrationTest, BadInputIsRefusedAndChangesNothing) {
  auto before_agents = AgentGuests();
  auto before = Client().Call("GET", "/api/v1/guests");
  ASSERT_TRUE(before.ok());
  Json tenant_a = {{"name", "mit-a"}, {"role", "tenant"}, {"tenant", "alpha"}};
  Json tenant_b = {{"name", "mit-b"}, {"role", "tenant"}, {"tenant", "beta"}};
  std::string a = (*Client().Call("POST", "/api/v1/tokens", &tenant_a))["token"];
  std::string b = (*Client().Call("POST", "/api/v1/tokens", &tenant_b))["token"];
  struct Case {
    std::string token, method, path, body;
    int status;
    std::string mention;
  };
  std::vector<Case> cases = {
      {kAdmin, "POST", "/api/v1/guests", R"({"name": "mit-bad", )", 400, "invalid_argument"},
      {kAdmin, "POST", "/api/v1/guests", R"({"name": "mit-bad", "vcpus": "two"})", 400, "vcpus"},
      {kAdmin, "POST", "/api/v1/guests", R"({"name": "mit-bad", "memory_mib": -5})", 400, "memory_mib"},
      {kAdmin, "POST", "/api/v1/guests", R"(["not", "an", "object"])", 400, "object"},
      {kAdmin, "POST", "/api/v1/guests", R"({"name": "mit-bad", "memory_mib": 99999999})", 400, "memory_mib"},
      {kAdmin, "POST", "/api/v1/guests", "{\"name\": \"mit-bad\", \"labels\": \"" + std::string(100000, 'x') + "\"}",
       413, "resource_exhausted"},
      {kAdmin, "GET", "/api/v1/guests/mit-nope", "", 404, "mit-nope"},
      {kAdmin, "POST", "/api/v1/guests/mit-nope/start", "", 404, "mit-nope"},
      {kAdmin, "GET", "/api/v1/tasks/task-nope", "", 404, "task-nope"},
      {kAdmin, "POST", "/api/v1/hosts/nope/maintenance", "", 404, "nope"},
      {"", "GET", "/api/v1/guests", "", 401, "token"},
      {"wrong-token-0123456789", "POST", "/api/v1/guests", R"({"name": "mit-bad"})", 401, "token"},
      {a, "GET", "/api/v1/hosts", "", 403, "tenant"},
  };
  for (const auto& c : cases) {
    auto r = Client(c.token).Do(c.method, c.path, c.body);
    ASSERT_TRUE(r.ok()) << c.method << " " << c.path;
    EXPECT_EQ(r->status, c.status) << c.method << " " << c.path << " " << c.body.substr(0, 80) << " -> " << r->body;
    EXPECT_NE(r->body.find(c.mention), std::string::npos) << r->body;
    EXPECT_NE(r->body.find("\"error\""), std::string::npos) << r->body;
  }
  // A tenant's guest is invisible and untouchable for another tenant. Names are unique per
  // tenant: the guest runs on its host as "alpha:mit-alpha" (a real QEMU and a real container
  // under that libvirt name), and beta's guest of the same name neither collides nor leaks.
  Json mine = {{"name", "mit-alpha"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto created = Client(a).Call("POST", "/api/v1/guests", &mine);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ((*created)["subject"], "mit-alpha");
  ASSERT_EQ(WaitTask(*created)["state"], "succeeded");
  Json mine_ct = {{"name", "mit-alpha-ct"}, {"kind", "lxc"}, {"image", "tiny"}, {"memory_mib", 128}};
  auto created_ct = Client(a).Call("POST", "/api/v1/guests", &mine_ct);
  ASSERT_TRUE(created_ct.ok()) << created_ct.status().ToString();
  ASSERT_EQ(WaitTask(*created_ct)["state"], "succeeded") << WaitTask(*created_ct).dump();
  Json theirs = {{"name", "mit-alpha"}, {"image", "tiny"}, {"memory_mib", 256}, {"start", false}};
  auto created_b = Client(b).Call("POST", "/api/v1/guests", &theirs);
  ASSERT_TRUE(created_b.ok()) << created_b.status().ToString();
  ASSERT_EQ(WaitTask(*created_b)["state"], "succeeded");
  auto on_hosts = AgentGuests();
  EXPECT_TRUE(on_hosts.count("alpha:mit-alpha") && on_hosts.count("alpha:mit-alpha-ct") &&
              on_hosts.count("beta:mit-alpha"));
  EXPECT_EQ((*Client(a).Call("GET", "/api/v1/guests/mit-alpha"))["state"], "running");
  EXPECT_EQ((*Client(a).Call("GET", "/api/v1/guests/mit-alpha-ct"))["state"], "running");
  EXPECT_EQ((*Client(b).Call("GET", "/api/v1/guests/mit-alpha"))["tenant"], "beta");
  EXPECT_EQ((*Client(b).Call("GET", "/api/v1/guests"))["guests"].size(), 1u);
  for (const std::string& g : {std::string("mit-alpha"), std::string("mit-alpha-ct")}) {
    auto del = Client(a).Call("DELETE", "/api/v1/guests/" + g + "?force=true");
    ASSERT_TRUE(del.ok()) << del.status().ToString();
    EXPECT_EQ(WaitTask(*del, 120)["state"], "succeeded") << g;
  }
  auto del_b = Client(b).Call("DELETE", "/api/v1/guests/mit-alpha");
  ASSERT_TRUE(del_b.ok()) << del_b.status().ToString();
  EXPECT_EQ(WaitTask(*del_b, 120)["state"], "succeeded");
  mine["start"] = false;
  created = Client(a).Call("POST", "/api/v1/guests", &mine);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ(WaitTask(*created)["state"], "succeeded");
  for (auto [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/api/v1/guests/mit-alpha"},
                                                        {"POST", "/api/v1/guests/mit-alpha/start"},
                                                        {"DELETE", "/api/v1/guests/mit-alpha"},
                                                        {"POST", "/api/v1/guests/mit-alpha/resize"}}) {
    auto r = Client(b).Do(method, path, method == "POST" ? R"({"memory_mib": 128})" : "");
    EXPECT_EQ(r->status, 404) << method << " " << path << " -> " << r->body;
  }
  EXPECT_EQ((*Client(b).Call("GET", "/api/v1/guests"))["guests"].size(), 0u);
  EXPECT_EQ((*Client(a).Call("GET", "/api/v1/guests/mit-alpha"))["state"], "shutoff");
  auto del = Client(a).Call("DELETE", "/api/v1/guests/mit-alpha");
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(WaitTask(*del, 120)["state"], "succeeded");
  // Nothing else changed: same guests in the manager and on the agents.
  auto after = Client().Call("GET", "/api/v1/guests");
  EXPECT_EQ((*after)["guests"].size(), (*before)["guests"].size());
  EXPECT_EQ(AgentGuests(), before_agents);
}

// Live migration through the manager's API between two real hosts (libvirt peer-to-peer, TCG
// guests). Prints the measured figures as JSON lines ("migration-figure: {...}").
TEST_F(ManagerIntegrationTest, LiveMigrationMovesRealGuestsMeasuredCancelledAndOrdered) {
  ASSERT_GE(testbed_->hosts.size(), 2u);
  ASSERT_TRUE(WaitFor([] { return links_->at(1)->heartbeats_sent() > 0; }, std::chrono::seconds(30)));
  CreateBooted("mit-m256", 256, true);
  CreateBooted("mit-m512", 512, false);
  for (const std::string g : {"mit-m256", "mit-m512"}) {
    std::vector<int64_t> total, downtime;
    std::vector<double> guest_gap;
    for (int run = 0; run < 3; ++run) {
      std::string from = HostOf(g), to = Other(from);
      // The guest ticks on its serial console through the move; both hosts' console logs are read.
      const std::string tag = "r" + std::to_string(run);
      TickWatcher ticks({ConsoleLog(IndexOf(from), g), ConsoleLog(IndexOf(to), g)}, tag);
      Json tick = {{"command", "tick 60 " + tag}};
      auto started = AgentOf(from).Call("POST", "/api/v1/guests/" + g + "/exec", &tick);
      ASSERT_TRUE(started.ok()) << started.status().ToString();
      ASSERT_TRUE(WaitFor([&] { return ticks.Seen(0) >= 200; }, std::chrono::seconds(30)))
          << g << " does not tick on its console (" << ticks.Seen(0) << " ticks)";
      Json body = {{"host", to}};
      auto t = Client().Call("POST", "/api/v1/guests/" + g + "/migrate", &body);
      ASSERT_TRUE(t.ok()) << t.status().ToString();
      Json done = WaitTask(*t);
      ASSERT_EQ(done["state"], "succeeded") << done.dump();
      EXPECT_EQ(HostOf(g), to);
      ExpectOnce(g);
      // Done means verified: the guest answered its control channel on the destination.
      Json mig = (*Client().Call("GET", "/api/v1/migrations?guest=" + g))["migrations"][0];
      EXPECT_EQ(mig["phase"], "done");
      EXPECT_NE(mig["history"].dump().find("answering its control channel"), std::string::npos) << mig.dump();
      EXPECT_TRUE(WaitFor([&] { return ticks.Seen(1) >= 200; }, std::chrono::seconds(30)))
          << g << " stopped ticking after the move (" << ticks.Seen(1) << " ticks at the destination)";
      ticks.Stop();
      if (!ticks.realtime()) std::printf("note: the tick reader is not real-time here; guest gaps are rough\n");
      Json stop = {{"command", "tick-stop"}};
      EXPECT_TRUE(AgentOf(to).Call("POST", "/api/v1/guests/" + g + "/exec", &stop).ok());
      guest_gap.push_back(ticks.MaxGapMs());
      // Live: the guest paused for a fraction of the move, and its console lost nothing across it.
      EXPECT_LT(guest_gap.back(), done["result"]["total_ms"].get<double>()) << g;
      // (The one line being written at the switch-over is split between the two hosts' files.)
      EXPECT_LE(ticks.Missing(), 1) << g << ": console output lost across the move";
      total.push_back(done["result"]["total_ms"]);
      downtime.push_back(done["result"]["downtime_ms"]);
      // The guest kept running through it: it answers a command on its channel at the destination.
      Json cmd = {{"command", "echo alive-after-" + std::to_string(run)}};
      auto out = AgentOf(to).Call("POST", "/api/v1/guests/" + g + "/exec", &cmd);
      ASSERT_TRUE(out.ok()) << out.status().ToString();
      EXPECT_NE(out->dump().find("alive-after-" + std::to_string(run)), std::string::npos) << out->dump();
    }
    std::sort(total.begin(), total.end());
    std::sort(downtime.begin(), downtime.end());
    std::sort(guest_gap.begin(), guest_gap.end());
    Json fig = {{"guest", g},
                {"runs", total.size()},
                {"median_total_ms", total[1]},
                {"median_downtime_ms", downtime[1]},
                {"median_guest_gap_ms", std::round(guest_gap[1] * 10) / 10},
                {"total_ms", total},
                {"downtime_ms", downtime},
                {"guest_gap_ms", guest_gap}};
    std::printf("migration-figure: %s\n", fig.dump().c_str());
    RecordProperty(g + "_median_total_ms", std::to_string(total[1]));
    RecordProperty(g + "_median_downtime_ms", std::to_string(downtime[1]));
    RecordProperty(g + "_median_guest_gap_ms", std::to_string(guest_gap[1]));
  }

  // Concurrency: two, then three at once (a third, 128 MiB guest; three guests is what this
  // machine's two cores hold). All land, each once; the wall time against the sum of the parts.
  CreateBooted("mit-c128", 128, false);
  const std::vector<std::vector<std::string>> groups = {{"mit-m256", "mit-m512"}, {"mit-m256", "mit-m512", "mit-c128"}};
  for (const auto& group : groups) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Json> tasks;
    for (const auto& g : group) {
      Json body = {{"host", Other(HostOf(g))}};
      auto t = Client().Call("POST", "/api/v1/guests/" + g + "/migrate", &body);
      ASSERT_TRUE(t.ok()) << t.status().ToString();
      tasks.push_back(*t);
    }
    int64_t sum = 0, worst_downtime = 0;
    int succeeded = 0;
    for (const auto& t : tasks) {
      Json done = WaitTask(t);
      EXPECT_EQ(done["state"], "succeeded") << done.dump();
      if (done["state"] != "succeeded") continue;
      ++succeeded;
      sum += done["result"]["total_ms"].get<int64_t>();
      worst_downtime = std::max(worst_downtime, done["result"]["downtime_ms"].get<int64_t>());
    }
    const auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    for (const auto& g : group) ExpectOnce(g);
    Json fig = {{"concurrent", group.size()},
                {"succeeded", succeeded},
                {"wall_ms", wall.count()},
                {"sum_total_ms", sum},
                {"worst_downtime_ms", worst_downtime}};
    std::printf("concurrency-figure: %s\n", fig.dump().c_str());
  }
  DeleteGuest("mit-c128");

  // Cancel a slow migration (1 MiB/s): it stops, the guest stays and runs on its source.
  {
    std::string from = HostOf("mit-m512");
    Json t = StartSlowMigration("mit-m512", 1);
    const std::string id = t["id"];
    EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/mit-m512"))["migrating_to"], Other(from));
    ASSERT_TRUE(Client().Call("POST", "/api/v1/tasks/" + id + "/cancel").ok());
    Json done = WaitTask(t, 120);
    EXPECT_EQ(done["state"], "cancelled") << done.dump();
    EXPECT_EQ(HostOf("mit-m512"), from);
    ExpectOnce("mit-m512");
  }

  // Convergence escalation for real: throttled to 1 MiB/s, 512 MiB would take over 8 minutes; past
  // its deadline (15 s in this configuration) the manager raises the bandwidth and it completes.
  {
    std::string from = HostOf("mit-m512");
    Json t = StartSlowMigration("mit-m512", 1);
    Json done = WaitTask(t, 180);
    EXPECT_EQ(done["state"], "succeeded") << done.dump();
    EXPECT_EQ(HostOf("mit-m512"), Other(from));
    ExpectOnce("mit-m512");
    const std::string events = Events();
    EXPECT_NE(events.find("event: migration.escalated"), std::string::npos);
    EXPECT_NE(events.find("raise_bandwidth"), std::string::npos);
  }

  // Bad requests: unknown host, a move that does not fit, a live move of a stopped guest.
  Json ghost = {{"host", "h99"}};
  EXPECT_EQ(Client().Call("POST", "/api/v1/guests/mit-m256/migrate", &ghost).status().code(), StatusCode::kAborted);
  EXPECT_EQ(Client().Do("POST", "/api/v1/guests/mit-m256/migrate", "{not json")->status, 400);

  // Maintenance empties a host for real (mandatory moves, applied in manual mode too).
  {
    std::string h = HostOf("mit-m256");
    ASSERT_TRUE(Client().Call("POST", "/api/v1/hosts/" + h + "/maintenance").ok());
    EXPECT_TRUE(WaitFor(
        [&] {
          auto g = Client().Call("GET", "/api/v1/hosts/" + h);
          return g.ok() && (*g)["guests"] == 0;
        },
        std::chrono::seconds(120)));
    ExpectOnce("mit-m256");
    ExpectOnce("mit-m512");
    ASSERT_TRUE(Client().Call("DELETE", "/api/v1/hosts/" + h + "/maintenance").ok());
  }
  for (const std::string g : {"mit-m256", "mit-m512"}) DeleteGuest(g);
  EXPECT_FALSE(AgentGuests().count("mit-m256"));
}

// Failures in the middle of a transfer (slow migrations, 4 MiB/s): a killed destination agent, a
// restarted source agent, uw-manager killed with SIGKILL and restarted, the network between the
// two hosts cut. Whatever the outcome, the guest runs exactly once and the manager says where.
TEST_F(ManagerIntegrationTest, MigrationFailuresLeaveTheGuestRunningExactlyOnce) {
  ASSERT_GE(testbed_->hosts.size(), 2u);
  ASSERT_TRUE(WaitFor([] { return links_->at(1)->heartbeats_sent() > 0; }, std::chrono::seconds(30)));
  CreateBooted("mit-f1", 256, false);
  auto outcome = [](const Json& done) {
    std::string s = done.value("state", "");
    EXPECT_TRUE(s == "succeeded" || s == "failed") << done.dump();
    EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/mit-f1"))["migrating_to"], nullptr);
    std::printf("migration-failure: %s -> %s (%s)\n", done.value("kind", "").c_str(), s.c_str(),
                done["error"].is_null() ? "" : done["error"].value("message", "").c_str());
  };

  // 1. Destination agent killed: libvirt migrates peer-to-peer without it.
  {
    Json t = StartSlowMigration("mit-f1", 4);
    ASSERT_NE(t["id"], "none");
    const std::string to = Other(HostOf("mit-f1"));
    ASSERT_TRUE(testing::StopAgent(*testbed_, IndexOf(to), SIGKILL).ok());
    Json done = WaitTask(t, 240);
    Status up = testing::RestartAgents(*testbed_);
    ASSERT_TRUE(up.ok()) << up.ToString();
    StartLinks();
    WaitConnected();
    outcome(done);
    ExpectOnce("mit-f1");
  }
  // 2. Source agent killed and restarted while libvirt transfers.
  {
    Json t = StartSlowMigration("mit-f1", 4);
    ASSERT_NE(t["id"], "none");
    const std::string from = HostOf("mit-f1");
    ASSERT_TRUE(testing::StopAgent(*testbed_, IndexOf(from), SIGKILL).ok());
    Status up = testing::RestartAgents(*testbed_);
    ASSERT_TRUE(up.ok()) << up.ToString();
    StartLinks();
    outcome(WaitTask(t, 240));
    WaitConnected();
    ExpectOnce("mit-f1");
  }
  // 3. uw-manager killed mid-transfer and restarted: it asks both hosts and finishes the task.
  {
    Json t = StartSlowMigration("mit-f1", 4);
    ASSERT_NE(t["id"], "none");
    ASSERT_EQ(kill(pid_, SIGKILL), 0);
    waitpid(pid_, nullptr, 0);
    StartManagerProcess();
    Json done = WaitTask(t, 240);
    WaitConnected();
    outcome(done);
    EXPECT_GE(done.value("attempts", 0), 1);
    ExpectOnce("mit-f1");
  }
  // 4. The network between the two hosts cut (blackhole routes both ways; the manager still
  // reaches both): the transfer cannot finish, the guest stays on its source.
  {
    Json t = StartSlowMigration("mit-f1", 4);
    ASSERT_NE(t["id"], "none");
    const std::string from = HostOf("mit-f1"), to = Other(from);
    const auto& a = testbed_->hosts[IndexOf(from)];
    const auto& b = testbed_->hosts[IndexOf(to)];
    auto route = [&](const char* op) {
      testing::RunCommand("ip netns exec uw-" + a.name + " ip route " + op + " blackhole " + b.address + "/32");
      testing::RunCommand("ip netns exec uw-" + b.name + " ip route " + op + " blackhole " + a.address + "/32");
    };
    route("add");
    Json done = WaitTask(t, 300);
    route("del");
    EXPECT_EQ(done["state"], "failed") << done.dump();
    EXPECT_EQ(HostOf("mit-f1"), from);
    outcome(done);
    ExpectOnce("mit-f1");
  }
  DeleteGuest("mit-f1");
}

}  // namespace
}  // namespace uw
