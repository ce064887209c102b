// The OVSDB client against a real ovsdb-server (openvswitch-switch; no ovs-vswitchd: the tests
// write what it would, such as an interface's ofport, through a second client), and the stream
// splitter and error mapping on their own.
#include "netvirt/ovsdb.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <future>
#include <thread>

#include "netvirt/ovsdb_server_fixture.h"

namespace uw::netvirt {
namespace {

using namespace std::chrono_literals;
using testing::OvsdbServerTest;

TEST(JsonStreamSplitterTest, CutsConcatenatedTextsWhereverTheBytesBreak) {
  const std::string stream = R"({"id":1,"result":["a}b","c\"{d"]} [1,[2,{"x":"]"}]]  )"
                             "\n"
                             R"({"method":"echo","params":[],"id":"echo"})";
  for (size_t piece : {stream.size(), size_t{1}, size_t{7}}) {
    JsonStreamSplitter s(1 << 20);
    std::vector<std::string> out;
    for (size_t i = 0; i < stream.size(); i += piece) {
      ASSERT_TRUE(s.Feed(std::string_view(stream).substr(i, piece), out).ok());
    }
    ASSERT_EQ(out.size(), 3u) << piece;
    EXPECT_EQ(Json::parse(out[0])["result"][1], "c\"{d");
    EXPECT_EQ(Json::parse(out[1])[1][1]["x"], "]");
    EXPECT_EQ(Json::parse(out[2])["method"], "echo");
  }
}

TEST(JsonStreamSplitterTest, GarbageAndOversizedTextsBreakTheStreamForGood) {
  JsonStreamSplitter s(1 << 20);
  std::vector<std::string> out;
  Status bad = s.Feed(R"({"a":1} x {"b":2})", out);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument) << bad.ToString();
  EXPECT_EQ(out.size(), 1u);
  EXPECT_EQ(s.Feed(R"({"c":3})", out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(out.size(), 1u);
  JsonStreamSplitter small(16);
  Status big = small.Feed(R"({"a":"0123456789abcdef"})", out);
  EXPECT_EQ(big.code(), StatusCode::kResourceExhausted) << big.ToString();
  // Deep nesting is only counted, never recursed into.
  JsonStreamSplitter deep(1 << 20);
  std::vector<std::string> nested;
  ASSERT_TRUE(deep.Feed(std::string(100000, '[') + std::string(100000, ']'), nested).ok());
  EXPECT_EQ(nested.size(), 1u);
}

TEST(OvsdbErrorCodeTest, RfcErrorsMapToCodes) {
  EXPECT_EQ(OvsdbErrorCode("constraint violation",
                           "Transaction causes multiple rows in \"Bridge\" table to have identical values"),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(OvsdbErrorCode("constraint violation", "0 is less than minimum allowed value 1"),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(OvsdbErrorCode("referential integrity violation", ""), StatusCode::kFailedPrecondition);
  EXPECT_EQ(OvsdbErrorCode("unknown database", ""), StatusCode::kInvalidArgument);
  EXPECT_EQ(OvsdbErrorCode("syntax error", ""), StatusCode::kInvalidArgument);
  EXPECT_EQ(OvsdbErrorCode("resources exhausted", ""), StatusCode::kResourceExhausted);
  EXPECT_EQ(OvsdbErrorCode("timed out", ""), StatusCode::kDeadlineExceeded);
}

TEST_F(OvsdbServerTest, TransactionsApplyWholeOrNotAtAll) {
  auto dbs = client_->ListDbs(5s);
  ASSERT_TRUE(dbs.ok()) << dbs.status().ToString();
  EXPECT_NE(std::find(dbs->begin(), dbs->end(), "Open_vSwitch"), dbs->end());
  ASSERT_TRUE(AddBridge(*client_, "br-t", "p1").ok());
  EXPECT_EQ(Names("Bridge"), std::set<std::string>({"br-t"}));
  EXPECT_EQ(Names("Port"), std::set<std::string>({"p1"}));
  // A second bridge of the same name fails at the commit: nothing of it stays (not its port).
  Status dup = AddBridge(*client_, "br-t", "p2");
  EXPECT_EQ(dup.code(), StatusCode::kAlreadyExists) << dup.ToString();
  EXPECT_NE(dup.message().find("Bridge"), std::string::npos) << dup.ToString();
  EXPECT_EQ(Names("Port"), std::set<std::string>({"p1"}));
  // An operation that names what is not there: its index and op in the error.
  auto unknown = client_->Transact(
      "Open_vSwitch", Json::array({{{"op", "select"}, {"table", "NoSuchTable"}, {"where", Json::array()}}}), 5s);
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument) << unknown.status().ToString();
  EXPECT_NE(unknown.status().message().find("operation 0 (select NoSuchTable)"), std::string::npos)
      << unknown.status().ToString();
  auto no_db = client_->Transact("NoSuchDb", Json::array(), 5s);
  EXPECT_EQ(no_db.status().code(), StatusCode::kInvalidArgument) << no_db.status().ToString();
  EXPECT_EQ(client_->Transact("Open_vSwitch", Json::object(), 5s).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(OvsdbServerTest, MonitorsSeeOtherClientsChanges) {
  std::mutex mu;
  std::condition_variable cv;
  std::set<std::string> seen;
  auto on_update = [&](const Json& updates) {
    std::lock_guard l(mu);
    const Json bridges = updates.value("Bridge", Json::object());
    for (const auto& [uuid, change] : bridges.items()) {
      if (change.contains("new")) seen.insert(change["new"].value("name", ""));
    }
    cv.notify_all();
  };
  ASSERT_TRUE(AddBridge(*client_, "br-a", "pa").ok());
  auto initial = client_->Monitor("Open_vSwitch", "m1", {{"Bridge", {{"columns", {"name"}}}}}, on_update, 5s);
  ASSERT_TRUE(initial.ok()) << initial.status().ToString();
  EXPECT_EQ(initial->at("Bridge").size(), 1u) << initial->dump();
  EXPECT_EQ(client_->Monitor("Open_vSwitch", "m1", Json::object(), on_update, 5s).status().code(),
            StatusCode::kAlreadyExists);
  auto other = OvsdbClient::Connect("unix:" + socket_, 5s);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  ASSERT_TRUE(AddBridge(**other, "br-b", "pb").ok());
  std::unique_lock l(mu);
  EXPECT_TRUE(cv.wait_for(l, 5s, [&] { return seen.count("br-b") > 0; }));
  l.unlock();
  EXPECT_TRUE(client_->MonitorCancel("m1", 5s).ok());
  EXPECT_EQ(client_->MonitorCancel("m1", 5s).code(), StatusCode::kInvalidArgument);
}

TEST_F(OvsdbServerTest, APortIsReadyWithItsOfportOrFailsWithItsError) {
  ASSERT_TRUE(AddBridge(*client_, "br-p", "tap1").ok());
  // Nothing yet: no port after the timeout.
  auto none = WaitForOfport(*client_, "tap1", 200ms);
  EXPECT_EQ(none.status().code(), StatusCode::kDeadlineExceeded) << none.status().ToString();
  // "ovs-vswitchd" gives it a port while the caller waits.
  auto waiting = std::async(std::launch::async, [&] { return WaitForOfport(*client_, "tap1", 5s); });
  std::this_thread::sleep_for(100ms);
  auto other = OvsdbClient::Connect(socket_, 5s);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)
                  ->Transact("Open_vSwitch",
                             Json::array({{{"op", "update"},
                                           {"table", "Interface"},
                                           {"where", Json::array({{"name", "==", "tap1"}})},
                                           {"row", {{"ofport", 7}}}}}),
                             5s)
                  .ok());
  auto port = waiting.get();
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  EXPECT_EQ(*port, 7);
  // add-port "succeeded" but the device could not be opened: its error, not a port.
  ASSERT_TRUE(AddBridge(*client_, "br-q", "tap2").ok());
  SetInterface("tap2", "ofport", -1);
  SetInterface("tap2", "error", "could not open network device tap2 (No such device)");
  auto failed = WaitForOfport(*client_, "tap2", 5s);
  EXPECT_EQ(failed.status().code(), StatusCode::kFailedPrecondition) << failed.status().ToString();
  EXPECT_NE(failed.status().message().find("No such device"), std::string::npos) << failed.status().ToString();
  EXPECT_EQ(WaitForOfport(*client_, "tap-none", 5s).status().code(), StatusCode::kNotFound);
}

TEST_F(OvsdbServerTest, ALostServerFailsCallsAndNothingHangs) {
  EXPECT_EQ(OvsdbClient::Connect((dir_ / "nothing.sock").string(), 2s).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(OvsdbClient::Connect("", 2s).status().code(), StatusCode::kInvalidArgument);
  StopServer();
  for (int i = 0; i < 500 && client_->connected(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(client_->connected());
  auto after = client_->ListDbs(2s);
  EXPECT_EQ(after.status().code(), StatusCode::kUnavailable) << after.status().ToString();
}

}  // namespace
}  // namespace uw::netvirt
