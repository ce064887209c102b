// The manager's unit tests (manager/manager_fixture.h: in-memory agents, a fake clock).
// Migrations through the manager's API: cancel, failure, cold moves, a guest dying after the
// switch-over, and the copy a move left behind.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "manager/manager_fixture.h"

namespace uw::manager {
namespace {

using testing::ManagerTest;

TEST_F(ManagerTest, MigrationCancelFailureAndOrder) {
  StartManager();
  AddHost("h1", 4, 4096);
  AddHost("h2", 4, 4096);
  auto c = Client();
  Json a = {{"name", "a"}, {"image", "tiny"}, {"memory_mib", 1024}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &a))["state"], "succeeded");
  std::string src = (*c.Call("GET", "/api/v1/guests/a"))["host"];
  std::string dst = src == "h1" ? "h2" : "h1";
  // Bad requests change nothing.
  Json nohost = {{"mode", "live"}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/a/migrate", &nohost).status().code(), StatusCode::kInvalidArgument);
  Json same = {{"host", src}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/a/migrate", &same).status().code(), StatusCode::kFailedPrecondition);
  Json ghost = {{"host", "h9"}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/a/migrate", &ghost).status().code(), StatusCode::kAborted);
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/nope/migrate", &same).status().code(), StatusCode::kNotFound);

  // Cancel a running migration: the guest stays on its source and the task ends cancelled.
  cluster_.Script(src, "*", {.never_converges = true});
  gate_.Hold(true);  // the transfer's polls wait: it is in flight when cancelled
  Json to = {{"host", dst}};
  auto t = c.Call("POST", "/api/v1/guests/a/migrate", &to);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE(gate_.WaitForWaiting(1));
  ASSERT_TRUE(gate_.Pass());  // one progress poll: the task reports the transfer
  const std::string message = (*c.Call("GET", "/api/v1/tasks/" + (*t)["id"].get<std::string>()))["message"];
  EXPECT_EQ(message.rfind("transfer", 0), 0u) << message;
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["migrating_to"], dst) << "the destination's capacity is held";
  ASSERT_TRUE(c.Call("POST", "/api/v1/tasks/" + (*t)["id"].get<std::string>() + "/cancel").ok());
  gate_.Hold(false);
  Json cancelled = WaitTask(*t);
  EXPECT_EQ(cancelled["state"], "cancelled") << cancelled.dump();
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["host"], src);
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["migrating_to"], nullptr);

  // A failing transfer rolls back with libvirt's reason.
  cluster_.Script(src, "*", {.polls_to_complete = 1, .fail = true});
  Json failed = WaitTask(*c.Call("POST", "/api/v1/guests/a/migrate", &to));
  EXPECT_EQ(failed["state"], "failed");
  EXPECT_NE(failed["error"]["message"].get<std::string>().find("unexpectedly failed (in-memory script)"),
            std::string::npos)
      << failed.dump();
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/a"))["host"], src);
  auto migs = c.Call("GET", "/api/v1/migrations?guest=a");
  ASSERT_EQ((*migs)["migrations"].size(), 2u);
  EXPECT_EQ((*migs)["migrations"][0]["phase"], "rolled_back");

  // Containers move only cold; a cold move stops, recreates and deletes.
  Json ct = {{"name", "ct"}, {"image", "tiny"}, {"kind", "lxc"}, {"memory_mib", 256}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &ct))["state"], "succeeded");
  std::string ct_host = (*c.Call("GET", "/api/v1/guests/ct"))["host"];
  Json ct_to = {{"host", ct_host == "h1" ? "h2" : "h1"}};
  EXPECT_EQ(c.Call("POST", "/api/v1/guests/ct/migrate", &ct_to).status().code(), StatusCode::kFailedPrecondition);
  ct_to["mode"] = "cold";
  Json cold = WaitTask(*c.Call("POST", "/api/v1/guests/ct/migrate", &ct_to));
  EXPECT_EQ(cold["state"], "succeeded") << cold.dump();
  EXPECT_EQ((*c.Call("GET", "/api/v1/guests/ct"))["host"], ct_to["host"]);
  EXPECT_EQ(HasGuest("h1", "ct") + HasGuest("h2", "ct"), 1);
}

// Regression: a guest that died on its destination right after a live move was reported
// `running` and its migration `done` (issue 11: a TCG guest panicked after arrival).
TEST_F(ManagerTest, AGuestThatDiesAfterTheSwitchOverFailsItsMigration) {
  StartManager();
  AddHost("h1", 4, 4096);
  AddHost("h2", 4, 4096);
  auto c = Client();
  Json a = {{"name", "a"}, {"image", "tiny"}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &a))["state"], "succeeded");
  const std::string src = (*c.Call("GET", "/api/v1/guests/a"))["host"];
  const std::string dst = src == "h1" ? "h2" : "h1";
  cluster_.Script(src, "*", {.dies_on_destination = true});
  Json to = {{"host", dst}};
  Json task = WaitTask(*c.Call("POST", "/api/v1/guests/a/migrate", &to));
  EXPECT_EQ(task["state"], "failed") << task.dump();
  EXPECT_NE(task["error"]["message"].get<std::string>().find("crashed on the destination"), std::string::npos)
      << task.dump();
  Json guest = *c.Call("GET", "/api/v1/guests/a");
  EXPECT_EQ(guest["host"], dst) << "the source copy is gone: the guest is where it died";
  EXPECT_EQ(guest["state"], "crashed") << "never `running` while it is dead";
  Json mig = (*c.Call("GET", "/api/v1/migrations?guest=a"))["migrations"][0];
  EXPECT_EQ(mig["phase"], "failed_after_switchover") << mig.dump();
  EXPECT_NE(mig["console_tail"].get<std::string>().find("Kernel panic"), std::string::npos) << mig.dump();
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'migration.failed_after_switchover'"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.migrated'"), 0);

  // A healthy arrival verifies and ends done.
  cluster_.Script("h1", "*", {});
  cluster_.Script("h2", "*", {});
  Json b = {{"name", "b"}, {"image", "tiny"}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &b))["state"], "succeeded");
  const std::string bsrc = (*c.Call("GET", "/api/v1/guests/b"))["host"];
  Json bto = {{"host", bsrc == "h1" ? "h2" : "h1"}};
  EXPECT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/b/migrate", &bto))["state"], "succeeded");
  Json bmig = (*c.Call("GET", "/api/v1/migrations?guest=b"))["migrations"][0];
  EXPECT_EQ(bmig["phase"], "done");
  EXPECT_NE(bmig["history"].dump().find("verify"), std::string::npos) << bmig.dump();
}

// Regression: a move that ended while the source agent was down left libvirt's shut-off source
// definition behind (the guest was then defined on two hosts). The source host's next heartbeat
// has it removed; a running second copy is still a duplicate.
TEST_F(ManagerTest, TheShutOffCopyAMoveLeftOnItsSourceIsRemoved) {
  StartManager();
  AddHost("h1", 4, 4096);
  AddHost("h2", 4, 4096);
  auto c = Client();
  Json a = {{"name", "a"}, {"image", "tiny"}, {"memory_mib", 512}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests", &a))["state"], "succeeded");
  const std::string src = (*c.Call("GET", "/api/v1/guests/a"))["host"];
  Json to = {{"host", src == "h1" ? "h2" : "h1"}};
  ASSERT_EQ(WaitTask(*c.Call("POST", "/api/v1/guests/a/migrate", &to))["state"], "succeeded");
  ASSERT_FALSE(HasGuest(src, "a"));
  AgentGuest copy = Guest("a", "shutoff", 512);
  cluster_.Place(src, copy);
  LetTasksSettle();
  Heartbeat(src);
  EXPECT_FALSE(HasGuest(src, "a")) << "the leftover was not removed";
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'migration.leftover_removed'"), 1);
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.duplicate'"), 0);
  // A running copy is not a leftover.
  copy.state = "running";
  cluster_.Place(src, copy);
  Heartbeat(src);
  EXPECT_TRUE(HasGuest(src, "a"));
  EXPECT_EQ(Count("SELECT COUNT(*) AS n FROM events WHERE type = 'guest.duplicate'"), 1);
}

}  // namespace
}  // namespace uw::manager
