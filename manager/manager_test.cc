// The manager's unit tests (manager/manager_fixture.h: in-memory agents, a fake clock).
// Guests and tasks: creation, admission, lifecycle, input checks, idempotency, restart, the event
// stream, cancellation, pools and crashed guests.
#include "manager/manager.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "manager/manager_fixture.h"

namespace uw::manager {
namespace {

using testing::ManagerTest;

TEST_F(ManagerTest, CreateGuestPlacesReservesAndCallsTheAgent) {
  StartManager();
  AddHost("h1");
  AddHost("h2");
  Json body = {{"name", "web1"}, {"vcpus", 2}, {"memory_mib", 1024}, {"image", "tiny"}};
  auto r = Client().Do("POST", "/api/v1/guests", body.dump());
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status, 202) << r->body;
  Json task = Json::parse(r->body);
  EXPECT_EQ(r->headers["location"], "/api/v1/tasks/" + task["id"].get<std::string>());
  Json done = WaitTask(task);
  EXPECT_EQ(done["state"], "succeeded") << done.dump();
  auto g = Client().Call("GET", "/api/v1/guests/web1");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)["state"], "running");
  std::string host = (*g)["host"];
  EXPECT_TRUE(host == "h1" || host == "h2");
  EXPECT_NE((*g)["placement_reason"].get<std::string>().find("next best"), std::string::npos) << g->dump();
  EXPECT_EQ((*g)["devices"], "virtio");
  ASSERT_EQ((*g)["leases"].size(), 1u);
  EXPECT_EQ((*g)["leases"][0]["state"], "active");
  EXPECT_TRUE(HasGuest(host, "web1"));
  Json emu = {{"name", "emu1"}, {"image", "tiny"}, {"memory_mib", 256}, {"paravirt", false}};
  EXPECT_EQ(WaitTask(*Client().Call("POST", "/api/v1/guests", &emu))["state"], "succeeded");
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/emu1"))["devices"], "emulated");
  ASSERT_EQ(WaitTask(*Client().Call("DELETE", "/api/v1/guests/emu1?force=true"))["state"], "succeeded");
  // Same name again: conflict, nothing new.
  auto dup = Client().Call("POST", "/api/v1/guests", &body);
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 1);
}

TEST_F(ManagerTest, AdmissionControlRefusesWhatDoesNotFitAndReservesForParallelCreates) {
  StartManager();
  AddHost("h1", 4, 2048);
  cluster_.HoldCreates("h1", true);  // keep creations in flight so reservations must do the work
  auto c = Client();
  std::vector<Json> tasks;
  for (int i = 0; i < 2; ++i) {
    Json body = {{"name", "g" + std::to_string(i)}, {"image", "tiny"}, {"memory_mib", 1024}};
    auto r = c.Call("POST", "/api/v1/guests", &body);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    tasks.push_back(*r);
  }
  Json third = {{"name", "g2"}, {"image", "tiny"}, {"memory_mib", 1024}};
  auto refused = c.Call("POST", "/api/v1/guests", &third);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted) << refused.status().ToString();
  cluster_.HoldCreates("h1", false);
  for (auto& t : tasks) EXPECT_EQ(WaitTask(t)["state"], "succeeded");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 2);
  EXPECT_EQ(cluster_.GuestsOn("h1").size(), 2u);
}

TEST_F(ManagerTest, FailedCreationReleasesTheReservation) {
  StartManager();
  AddHost("h1", 4, 1024);
  cluster_.SetDown("h1", true);
  Json body = {{"name", "doomed"}, {"image", "tiny"}, {"memory_mib", 1024}};
  auto r = Client().Call("POST", "/api/v1/guests", &body);
  ASSERT_TRUE(r.ok());
  Json done = WaitTask(*r);
  EXPECT_EQ(done["state"], "failed");
  EXPECT_EQ(done["error"]["code"], "unavailable");
  EXPECT_NE(done["error"]["message"].get<std::string>().find("the in-memory host is down"), std::string::npos);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM leases WHERE state <> 'failed'"), 0);
  // The capacity is free again.
  cluster_.SetDown("h1", false);
  auto again = Client().Call("POST", "/api/v1/guests", &body);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(WaitTask(*again)["state"], "succeeded");
}

TEST_F(ManagerTest, LifecycleOperationsAreTasks) {
  StartManager();
  AddHost("h1");
  Json body = {{"name", "vm1"},          {"image", "tiny"}, {"memory_mib", 512},
               {"max_memory_mib", 1024}, {"vcpus", 1},      {"max_vcpus", 2}};
  auto c = Client();
  auto created = c.Call("POST", "/api/v1/guests", &body);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ(WaitTask(*created)["state"], "succeeded");
  auto stop = c.Call("POST", "/api/v1/guests/vm1/stop");
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  ASSERT_EQ(WaitTask(*stop)["state"], "succeeded");
  auto stopped = c.Call("GET", "/api/v1/guests/vm1");
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  EXPECT_EQ((*stopped)["state"], "shutoff");
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/vm1/start"))["state"], "succeeded");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/vm1"))["state"], "running");
  Json grow = {{"memory_mib", 1024}, {"vcpus", 2}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/vm1/resize", &grow))["state"], "succeeded");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/vm1"))["memory_mib"], 1024);
  Json too_big = {{"memory_mib", 4096}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/vm1/resize", &too_big).status().code(), StatusCode::kInvalidArgument);
  // A running guest is deleted only with ?force=true: without it, 409 before any task is made.
  const int64_t tasks = Count("SELECT COUNT(*) AS n FROM tasks");
  auto refused = c.Do("DELETE", "/api/v1/guests/vm1");
  EXPECT_EQ(refused->status, 409) << refused->body;
  EXPECT_NE(refused->body.find("force=true"), std::string::npos) << refused->body;
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), tasks);
  EXPECT_EQ(c.Do("DELETE", "/api/v1/guests/vm1?force=maybe")->status, 400);
  EXPECT_TRUE(HasGuest("h1", "vm1"));
  Json forced = WaitTask(*c.Call("DELETE", "/api/v1/guests/vm1?force=true"));
  ASSERT_EQ(forced["state"], "succeeded") << forced.dump();
  EXPECT_EQ(c.Call("GET", "/api/v1/guests/vm1").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(HasGuest("h1", "vm1"));
}

TEST_F(ManagerTest, BadInputGetsTheRightStatusAndChangesNothing) {
  StartManager();
  AddHost("h1");
  auto c = Client();
  auto malformed = c.Do("POST", "/api/v1/guests", "{\"name\": ");
  ASSERT_TRUE(malformed.ok());
  EXPECT_EQ(malformed->status, 400);
  EXPECT_NE(malformed->body.find("invalid_argument"), std::string::npos);
  auto wrong_type = c.Do("POST", "/api/v1/guests", R"({"name": "x", "memory_mib": "big"})");
  EXPECT_EQ(wrong_type->status, 400);
  EXPECT_NE(wrong_type->body.find("memory_mib"), std::string::npos) << wrong_type->body;
  auto unknown_field = c.Do("POST", "/api/v1/guests", R"({"name": "x", "memroy_mib": 5})");
  EXPECT_EQ(unknown_field->status, 400);
  EXPECT_NE(unknown_field->body.find("memroy_mib"), std::string::npos);
  auto bad_name = c.Do("POST", "/api/v1/guests", R"({"name": "../etc"})");
  EXPECT_EQ(bad_name->status, 400);
  EXPECT_EQ(c.Do("GET", "/api/v1/guests/nope")->status, 404);
  EXPECT_EQ(c.Do("GET", "/api/v1/tasks/task-nope")->status, 404);
  EXPECT_EQ(c.Do("POST", "/api/v1/guests/nope/start")->status, 404);
  EXPECT_EQ(c.Do("GET", "/api/v1/hosts/nope")->status, 404);
  std::string huge = R"({"name": "x", "labels": ")" + std::string(100 << 10, 'a') + "\"}";
  EXPECT_EQ(c.Do("POST", "/api/v1/guests", huge)->status, 413);
  EXPECT_EQ(Client("").Do("GET", "/api/v1/guests")->status, 401);
  EXPECT_EQ(Client("wrong-token-0123456789").Do("GET", "/api/v1/guests")->status, 401);
  EXPECT_EQ(Client("").Do("POST", "/api/v1/guests", R"({"name": "x"})")->status, 401);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 0);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), 0);
  EXPECT_EQ(cluster_.creates("h1"), 0);
}

// Issue 12: the manager accepted what the agent then rejected (a 202 and a failed task instead of
// a 400): it now runs the agent's own spec parser first.
TEST_F(ManagerTest, CreateRefusesWhatTheAgentWouldRefuse) {
  StartManager();
  AddHost("h1");
  struct Case {
    std::string body, mention;
  };
  const std::vector<Case> cases = {
      {R"({"name": "x", "image": "tiny", "boot": "x"})", "boot"},
      {R"({"name": "x", "image": "tiny", "labels": "x"})", "labels"},
      {R"({"name": "x", "image": "tiny", "labels": {"k": 5}})", "labels.k"},
      {R"({"name": "x", "image": "tiny", "nics": {}})", "nics"},
      {R"({"name": "x", "image": "tiny", "nics": [{"type": "tap"}]})", "nics[0].type"},
      {R"({"name": "x", "image": "tiny", "nics": [{"type": "bridge"}]})", "source"},
      {R"({"name": "x", "image": "tiny", "nics": [{"type": "ovs", "source": "br0", "vlan": 5000}]})", "vlan"},
      {R"({"name": "x", "image": "tiny", "cpu": {"shares": 1099511627776}})", "cpu.shares"},
      {R"({"name": "x", "image": "tiny", "cpu": {"period_us": 5}})", "cpu.period_us"},
      {R"({"name": "x", "image": "tiny", "cpu": {"quota_us": 1099511627776}})", "cpu.quota_us"},
      {R"({"name": "x", "image": "tiny", "cpu": {"burst": 1}})", "cpu.burst"},
      {R"({"name": "x", "image": "tiny", "disks": [{"size_mib": 0}]})", "size_mib"},
      {R"({"name": "x"})", "nothing to boot"},
      {R"({"name": "x", "kind": "lxc"})", "lxc.root"},
      {R"({"name": "x", "image": 7})", "image"},
  };
  for (const auto& c : cases) {
    auto r = Client().Do("POST", "/api/v1/guests", c.body);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 400) << c.body << " -> " << r->body;
    EXPECT_NE(r->body.find(c.mention), std::string::npos) << c.body << " -> " << r->body;
  }
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), 0);
  EXPECT_EQ(cluster_.creates("h1"), 0);
}

TEST_F(ManagerTest, IdempotencyKeyReplaysTheFirstAnswer) {
  StartManager();
  AddHost("h1");
  auto c = Client();
  std::string body = R"({"name": "idem", "image": "tiny", "memory_mib": 256})";
  auto first = c.Do("POST", "/api/v1/guests", body, {{"Idempotency-Key", "k1"}});
  auto second = c.Do("POST", "/api/v1/guests", body, {{"Idempotency-Key", "k1"}});
  ASSERT_EQ(first->status, 202);
  EXPECT_EQ(second->status, 202);
  EXPECT_EQ(first->body, second->body);
  EXPECT_EQ(second->headers["idempotent-replayed"], "true");
  auto other = c.Do("POST", "/api/v1/guests", R"({"name": "idem2", "image": "tiny"})", {{"Idempotency-Key", "k1"}});
  EXPECT_EQ(other->status, 400);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks"), 1);
}

TEST_F(ManagerTest, RestartResumesOrFailsEveryUnfinishedTask) {
  StartManager();
  AddHost("h1");
  Json body = {{"name", "survivor"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto c = Client();
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &body))["state"], "succeeded");
  StopManager();
  {
    // Simulate a crash mid-way: a create journalled and running (reservation in place, agent not
    // yet called), a create the agent did finish before the crash, and a task that kept crashing.
    auto st = Store::Open(config_.db_path);
    ASSERT_TRUE(st.ok());
    Store& s = **st;
    for (const char* g : {"pending1", "halfdone"}) {
      ASSERT_TRUE(s.Exec("INSERT INTO guests(name, host, kind, vcpus, memory_mib, spec, state, created_ms, updated_ms) "
                         "VALUES (?, 'h1', 'qemu', 1, 256, '{}', 'creating', 0, 0)",
                         {std::string(g)})
                      .ok());
      Json req = {{"guest", g}, {"host", "h1"}, {"spec", {{"name", g}, {"memory_mib", 256}}}};
      ASSERT_TRUE(s.Exec("INSERT INTO tasks(id, kind, subject, state, request, attempts, created_ms, updated_ms) "
                         "VALUES (?, 'guest.create', ?, 'running', ?, 1, 0, 0)",
                         {"task-" + std::string(g), std::string(g), req.dump()})
                      .ok());
    }
    ASSERT_TRUE(s.Exec("INSERT INTO tasks(id, kind, subject, state, request, attempts, created_ms, updated_ms) "
                       "VALUES ('task-loop', 'guest.stop', 'survivor', 'running', '{}', 3, 0, 0)")
                    .ok());
  }
  cluster_.Place("h1", Guest("halfdone", "running", 256));
  StartManager();
  EXPECT_EQ(manager_->WaitTask("task-pending1", std::chrono::seconds(10))->state, "succeeded");
  EXPECT_EQ(manager_->WaitTask("task-halfdone", std::chrono::seconds(10))->state, "succeeded");
  auto looped = manager_->WaitTask("task-loop", std::chrono::seconds(1));
  ASSERT_TRUE(looped.ok());
  EXPECT_EQ(looped->state, "failed");
  ASSERT_TRUE(looped->error.has_value());
  EXPECT_NE(looped->error->message.find("restarted"), std::string::npos);
  EXPECT_TRUE(HasGuest("h1", "pending1"));
  EXPECT_EQ(cluster_.GuestsOn("h1").size(), 3u);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM tasks WHERE state NOT IN ('succeeded', 'failed', 'cancelled')"), 0);
  EXPECT_EQ((*Client().Call("GET", "/api/v1/guests/halfdone"))["state"], "running");
}

TEST_F(ManagerTest, EventStreamResumesFromLastEventId) {
  StartManager();
  AddHost("h1");
  std::string seen;
  auto c = Client();
  ASSERT_TRUE(c.Stream("GET", "/api/v1/events?follow=false", [&](std::string_view d) {
                 seen += d;
                 return true;
               }).ok());
  EXPECT_NE(seen.find("event: host.joined"), std::string::npos) << seen;
  std::string after;
  ASSERT_TRUE(c.Stream("GET", "/api/v1/events?follow=false",
                       [&](std::string_view d) {
                         after += d;
                         return true;
                       },
                       {{"Last-Event-ID", "1"}})
                  .ok());
  EXPECT_EQ(after.find("id: 1\n"), std::string::npos);
  EXPECT_NE(after.find("id: 2\n"), std::string::npos) << after;
  EXPECT_NE(seen.find("id: 1\n"), std::string::npos) << seen;
  EXPECT_EQ(c.Do("GET", "/api/v1/events", "", {{"Last-Event-ID", "abc"}})->status, 400);
}

TEST_F(ManagerTest, CancelReleasesAPendingCreation) {
  config_.task_workers = 1;
  StartManager();
  AddHost("h1", 4, 4096);
  cluster_.HoldCreates("h1", true);  // the one worker is busy creating `first`: `second` waits
  auto c = Client();
  Json a = {{"name", "first"}, {"image", "tiny"}, {"memory_mib", 256}},
       b = {{"name", "second"}, {"image", "tiny"}, {"memory_mib", 256}};
  auto t1 = c.Call("POST", "/api/v1/guests", &a);
  auto t2 = c.Call("POST", "/api/v1/guests", &b);
  ASSERT_TRUE(t1.ok() && t2.ok());
  ASSERT_TRUE(Eventually([&] { return cluster_.creates_waiting("h1") == 1; }));
  auto cancelled = c.Call("POST", "/api/v1/tasks/" + (*t2)["id"].get<std::string>() + "/cancel");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status().ToString();
  EXPECT_EQ((*cancelled)["state"], "cancelled");
  cluster_.HoldCreates("h1", false);
  EXPECT_EQ(WaitTask(*t1)["state"], "succeeded");
  EXPECT_EQ(c.Call("GET", "/api/v1/guests/second").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c.Call("POST", "/api/v1/tasks/" + (*t1)["id"].get<std::string>() + "/cancel").status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_FALSE(HasGuest("h1", "second"));
}

// Issue 11: pool limits are enforced at admission (naming the pool and the figures), pool
// reservations must be backed, and a pool's shares and CPU limit reach the guest's cputune.
TEST_F(ManagerTest, PoolLimitsAndReservationsAtAdmissionAndCputuneFromThePool) {
  StartManager();
  AddHost("h1", 8, 16384);
  auto c = Client();
  Json batch = {{"name", "batch"}, {"cpu", {{"limit_cores", 3}, {"shares", 8000}}}, {"memory", {{"limit_mib", 2048}}}};
  ASSERT_TRUE(c.Call("POST", "/api/v1/pools", &batch).ok());
  Json child = {{"name", "batch-low"}, {"parent", "batch"}, {"cpu", {{"shares", 2000}}}};
  ASSERT_TRUE(c.Call("POST", "/api/v1/pools", &child).ok());
  Json b1 = {{"name", "b1"}, {"image", "tiny"}, {"pool", "batch"}, {"vcpus", 2}, {"memory_mib", 1024}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &b1))["state"], "succeeded");
  // cputune: shares 1024 * 8000 / 4000; each of its 2 vCPUs capped at one core (min(3, 2) / 2).
  EXPECT_EQ(cluster_.CreateSpec("h1", "b1")["cpu"],
            Json({{"shares", 2048}, {"period_us", 100000}, {"quota_us", 100000}}))
      << cluster_.CreateSpec("h1", "b1").dump();
  auto refused = [&](const Json& body) {
    auto r = c.Call("POST", "/api/v1/guests", &body);
    EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << body.dump();
    return r.status().message();
  };
  std::string cpu = refused({{"name", "b2"}, {"image", "tiny"}, {"pool", "batch"}, {"vcpus", 2}, {"memory_mib", 256}});
  EXPECT_NE(cpu.find("pool 'batch' CPU limit"), std::string::npos) << cpu;
  EXPECT_NE(cpu.find("4 > limit of 3 cores"), std::string::npos) << cpu;
  std::string mem = refused({{"name", "b3"}, {"image", "tiny"}, {"pool", "batch"}, {"memory_mib", 1536}});
  EXPECT_NE(mem.find("pool 'batch' memory limit"), std::string::npos) << mem;
  EXPECT_NE(mem.find("2560 > limit of 2048 MiB"), std::string::npos) << mem;
  // A container in the child pool: the parent's limit applies, its own shares (low: 512), and a
  // container's quota covers all of it.
  Json ct = {{"name", "ct1"}, {"image", "tiny"}, {"pool", "batch-low"},
             {"kind", "lxc"}, {"vcpus", 1},      {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &ct))["state"], "succeeded");
  EXPECT_EQ(cluster_.CreateSpec("h1", "ct1")["cpu"],
            Json({{"shares", 512}, {"period_us", 100000}, {"quota_us", 100000}}));
  std::string parent =
      refused({{"name", "b4"}, {"image", "tiny"}, {"pool", "batch-low"}, {"vcpus", 1}, {"memory_mib", 256}});
  EXPECT_NE(parent.find("pool 'batch' CPU limit"), std::string::npos) << parent;
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM guests"), 2);
  EXPECT_EQ(cluster_.creates("h1"), 2);
  // Outside pools the agent's own defaults stay.
  Json free = {{"name", "free"}, {"image", "tiny"}, {"memory_mib", 256}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &free))["state"], "succeeded");
  EXPECT_FALSE(cluster_.CreateSpec("h1", "free").contains("cpu"));
  // Reservations: a pool reserving more than the powered-on hosts have is refused ...
  Json huge = {{"name", "huge"}, {"cpu", {{"reservation_cores", 100}}}};
  auto h = c.Call("POST", "/api/v1/pools", &huge);
  EXPECT_EQ(h.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(h.status().message().find("pool 'huge'"), std::string::npos) << h.status().message();
  EXPECT_NE(h.status().message().find("100.00 cores"), std::string::npos) << h.status().message();
  // ... and what a pool reserves is kept from guests outside it.
  Json gold = {{"name", "gold"}, {"memory", {{"reservation_mib", 14000}}}};
  ASSERT_TRUE(c.Call("POST", "/api/v1/pools", &gold).ok());
  std::string kept = refused({{"name", "outsider"}, {"image", "tiny"}, {"memory_mib", 1024}});
  EXPECT_NE(kept.find("exceed the powered-on capacity"), std::string::npos) << kept;
  EXPECT_EQ((*c.Call("GET", "/api/v1/pools/batch"))["guests"], Json({"b1"}));
  EXPECT_EQ(c.Call("GET", "/api/v1/pools/nope").status().code(), StatusCode::kNotFound);
}

// Crashed guests are noticed from the heartbeat and handled by their on_crash policy: restarted
// where they were (at most 3 times in 10 minutes), or kept for inspection.
TEST_F(ManagerTest, CrashedGuestsAreRestartedWithABackOffOrKept) {
  StartManager();
  AddHost("h1", 4, 4096);
  auto c = Client();
  Json bad = {{"name", "x"}, {"image", "tiny"}, {"on_crash", "reboot"}};
  auto refused = c.Call("POST", "/api/v1/guests", &bad);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("on_crash"), std::string::npos) << refused.status().message();
  Json a = {{"name", "a"}, {"image", "tiny"}, {"memory_mib", 256}};
  Json k = {{"name", "k"}, {"image", "tiny"}, {"memory_mib", 256}, {"on_crash", "keep"}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &a))["state"], "succeeded");
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &k))["state"], "succeeded");
  EXPECT_EQ(cluster_.CreateSpec("h1", "a").value("on_crash", "absent"), "absent")
      << "on_crash is the manager's, not the agent's";
  auto crash = [&](const std::string& name) {
    cluster_.SetState("h1", name, "crashed");
    // Heartbeats right after a task ends do not override the task's word: let it pass first.
    LetTasksSettle();
    Heartbeat("h1");
  };
  auto restarts = [&] { return Count("SELECT COUNT(*) AS n FROM tasks WHERE kind = 'guest.restart'"); };
  // Until its restart task has ended: a heartbeat while a task is in flight is the task's business
  // (ignored), and the guest reads `running` before its task has ended.
  auto wait_running = [&](const std::string& name) {
    EXPECT_TRUE(Eventually([&] {
      return Count("SELECT COUNT(*) AS n FROM tasks WHERE subject = '" + name +
                   "' AND state NOT IN ('succeeded', 'failed', 'cancelled')") == 0;
    }));
    return (*c.Call("GET", "/api/v1/guests/" + name))["state"];
  };
  for (int attempt = 1; attempt <= 3; ++attempt) {
    crash("a");
    EXPECT_EQ(restarts(), attempt);
    EXPECT_EQ(wait_running("a"), "running") << "restart " << attempt;
  }
  Json shown = *c.Call("GET", "/api/v1/guests/a");
  EXPECT_NE(shown["crash"]["console_tail"].get<std::string>().find("Kernel panic"), std::string::npos) << shown.dump();
  EXPECT_EQ(shown["crash"]["restarts"].size(), 3u);
  EXPECT_EQ(shown["on_crash"], "restart");
  // A fourth crash within 10 minutes: left crashed, with a crash-loop event.
  crash("a");
  EXPECT_EQ(restarts(), 3);
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["state"], "crashed");
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.crash_loop'"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.crashed'"), 4);
  // on_crash keep: crashed, kept, no task.
  crash("k");
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/k"))["state"], "crashed");
  EXPECT_EQ(restarts(), 3);
  // An operator's start of a crashed guest powers it off and boots it.
  Json started = WaitTask(*c.Call("POST", "/api/v1/guests/k/start"));
  EXPECT_EQ(started["state"], "succeeded") << started.dump();
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/k"))["state"], "running");
}

}  // namespace
}  // namespace uw::manager
