// Test fixture: a private ovsdb-server with the Open_vSwitch schema in a temporary directory
// (openvswitch-switch; no ovs-vswitchd: tests write what it would through a second client).
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/command.h"
#include "netvirt/ovsdb.h"

extern char** environ;

namespace uw::netvirt::testing {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A private ovsdb-server with the Open_vSwitch schema, in a temporary directory.
class OvsdbServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path schema = "/usr/share/openvswitch/vswitch.ovsschema";
    ASSERT_TRUE(fs::exists(schema)) << "ovsdb-server's schema is missing: install openvswitch-switch "
                                       "(scripts/install-deps)";
    dir_ = fs::temp_directory_path() / ("uw-ovsdb-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    dir_ = dir_.string().substr(0, 80);  // the socket path must stay under 108 bytes
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    socket_ = (dir_ / "db.sock").string();
    auto made = RunCommand({"ovsdb-tool", "create", (dir_ / "conf.db").string(), schema.string()}, {}, 30s);
    ASSERT_TRUE(made.ok() && made->exit_code == 0) << (made.ok() ? made->err : made.status().ToString());
    StartServer();
    // Ready once it accepts: its socket file exists from bind(), before listen() (a connection
    // then is refused), so the marker is the first connection it takes.
    Result<std::unique_ptr<OvsdbClient>> c = UnavailableError("not tried");
    for (int i = 0; i < 500 && !c.ok(); ++i) {
      c = OvsdbClient::Connect(socket_, 1s);
      if (!c.ok()) std::this_thread::sleep_for(10ms);
    }
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::move(*c);
    // The root row, as `ovs-vsctl init` makes it.
    auto root = client_->Transact(
        "Open_vSwitch", Json::array({{{"op", "insert"}, {"table", "Open_vSwitch"}, {"row", Json::object()}}}), 5s);
    ASSERT_TRUE(root.ok()) << root.status().ToString();
  }
  void TearDown() override {
    client_.reset();
    StopServer();
    fs::remove_all(dir_);
  }
  void StartServer() {
    // Debian puts it in /usr/sbin, which a developer's PATH may not have.
    const std::string server = fs::exists("/usr/sbin/ovsdb-server") ? "/usr/sbin/ovsdb-server" : "ovsdb-server";
    std::vector<std::string> argv = {server,
                                     (dir_ / "conf.db").string(),
                                     "--remote=punix:" + socket_,
                                     "--unixctl=" + (dir_ / "ctl").string(),
                                     "--no-chdir",
                                     "--log-file=" + (dir_ / "ovsdb.log").string()};
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ASSERT_EQ(posix_spawnp(&pid_, args[0], nullptr, nullptr, args.data(), environ), 0);
    for (int i = 0; i < 500 && !fs::exists(socket_); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(fs::exists(socket_)) << "ovsdb-server made no socket (" << (dir_ / "ovsdb.log").string() << ")";
  }
  void StopServer() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // Adds bridge `bridge` with one internal port and interface `port`.
  Status AddBridge(OvsdbClient& c, const std::string& bridge, const std::string& port) {
    const Json ops = Json::array(
        {{{"op", "insert"},
          {"table", "Interface"},
          {"row", {{"name", port}, {"type", "internal"}}},
          {"uuid-name", "i"}},
         {{"op", "insert"},
          {"table", "Port"},
          {"row", {{"name", port}, {"interfaces", {"named-uuid", "i"}}}},
          {"uuid-name", "p"}},
         {{"op", "insert"},
          {"table", "Bridge"},
          {"row", {{"name", bridge}, {"ports", {"named-uuid", "p"}}}},
          {"uuid-name", "b"}},
         {{"op", "mutate"},
          {"table", "Open_vSwitch"},
          {"where", Json::array()},
          {"mutations", Json::array({{"bridges", "insert", {"set", Json::array({{"named-uuid", "b"}})}}})}}});
    return c.Transact("Open_vSwitch", ops, 5s).status();
  }
  // The names in `table`.
  std::set<std::string> Names(const std::string& table) {
    auto r = client_->Transact(
        "Open_vSwitch",
        Json::array({{{"op", "select"}, {"table", table}, {"where", Json::array()}, {"columns", {"name"}}}}), 5s);
    std::set<std::string> out;
    if (!r.ok()) return out;
    for (const Json& row : (*r)[0]["rows"]) out.insert(row["name"].get<std::string>());
    return out;
  }
  // Sets Interface `name`'s `column` to `value` (as ovs-vswitchd does).
  void SetInterface(const std::string& name, const std::string& column, const Json& value) {
    auto r = client_->Transact("Open_vSwitch",
                               Json::array({{{"op", "update"},
                                             {"table", "Interface"},
                                             {"where", Json::array({{"name", "==", name}})},
                                             {"row", {{column, value}}}}}),
                               5s);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  fs::path dir_;
  std::string socket_;
  pid_t pid_ = -1;
  std::unique_ptr<OvsdbClient> client_;
};

}  // namespace uw::netvirt::testing
