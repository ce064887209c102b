#include "manager/power/power.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "manager/test_dir.h"

namespace uw::power {
namespace {

using namespace std::chrono_literals;
using manager::TestDir;

std::string Slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteScript(const std::filesystem::path& p, const std::string& body) {
  std::ofstream(p) << "#!/bin/sh\n" << body;
  std::filesystem::permissions(p, std::filesystem::perms::owner_all);
}

Json Ipmi() { return {{"driver", "ipmi"}, {"address", "10.77.0.1"}, {"username", "admin"}, {"password", "s3cret-pw"}}; }

TEST(PowerConfigTest, ParsesIpmiAndRedactsItsPassword) {
  auto c = ParsePowerConfig(Ipmi());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->port, 623);
  EXPECT_EQ(c->password, "s3cret-pw");
  const std::string shown = PowerConfigJson(*c, Secrets::kRedacted).dump();
  EXPECT_EQ(shown.find("s3cret-pw"), std::string::npos) << shown;
  EXPECT_NE(shown.find("\"password_set\":true"), std::string::npos) << shown;
  // The stored form round-trips.
  auto again = ParsePowerConfig(PowerConfigJson(*c, Secrets::kIncluded));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->password, "s3cret-pw");
}

TEST(PowerConfigTest, KeepsTheOldPasswordWhenNoneIsGiven) {
  auto old = ParsePowerConfig(Ipmi());
  Json changed = Ipmi();
  changed.erase("password");
  changed["address"] = "10.77.0.9";
  EXPECT_EQ(ParsePowerConfig(changed).status().code(), StatusCode::kInvalidArgument);
  auto c = ParsePowerConfig(changed, &*old);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->password, "s3cret-pw");
  EXPECT_EQ(c->address, "10.77.0.9");
}

TEST(PowerConfigTest, RejectsWhatCannotWorkNamingTheField) {
  auto expect = [](Json j, const std::string& field) {
    auto c = ParsePowerConfig(j);
    ASSERT_EQ(c.status().code(), StatusCode::kInvalidArgument) << j.dump();
    EXPECT_NE(c.status().message().find(field), std::string::npos) << c.status().message();
  };
  Json j = Ipmi();
  j["driver"] = "redfish";
  expect(j, "address: only for the ipmi driver");
  j["driver"] = "ilo";
  expect(j, "driver: expected ipmi, redfish, wol or exec");
  j = Ipmi();
  j["address"] = "-oProxyCommand=x";
  expect(j, "address");
  j = Ipmi();
  j["port"] = 70000;
  expect(j, "port");
  j = Ipmi();
  j["on_command"] = {"true"};
  expect(j, "on_command");
  j = Ipmi();
  j["extra"] = 1;
  expect(j, "extra");
  j = Ipmi();
  j["timeout_ms"] = 0;
  expect(j, "timeout_ms");
  expect({{"driver", "exec"}, {"status_command", {"true"}}, {"on_command", {"true"}}}, "off_command");
  expect({{"driver", "exec"}, {"status_command", Json::array()}, {"on_command", {"x"}}, {"off_command", {"x"}}},
         "status_command");
}

// An exec BMC: a file holds the power state; the commands flip it.
class ExecDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_ = dir_.path() / "power";
    std::ofstream(state_) << "off\n";
    WriteScript(dir_.path() / "status", "cat " + state_.string() + "\n");
    WriteScript(dir_.path() / "on", "[ \"$UW_HOST\" = h1 ] && echo on > " + state_.string() + "\n");
    WriteScript(dir_.path() / "off", "echo \"refused: $UW_POWER_SECRET\" >&2; exit 4\n");
    config_ = *ParsePowerConfig({{"driver", "exec"},
                                 {"status_command", {(dir_.path() / "status").string()}},
                                 {"on_command", {(dir_.path() / "on").string()}},
                                 {"off_command", {(dir_.path() / "off").string()}},
                                 {"password", "hunter2"},
                                 {"timeout_ms", 5000}});
  }
  TestDir dir_{"power-exec"};
  std::filesystem::path state_;
  PowerConfig config_;
};

TEST_F(ExecDriverTest, RunsTheOperatorsCommandsWithTheHostsName) {
  auto d = MakePowerDriver(config_, "h1");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*(*d)->Status(), PowerState::kOff);
  ASSERT_TRUE((*d)->On().ok());
  EXPECT_EQ(*(*d)->Status(), PowerState::kOn);
  EXPECT_EQ((*d)->Cycle().code(), StatusCode::kUnimplemented);
}

TEST_F(ExecDriverTest, AFailedCommandSaysWhyWithoutTheSecret) {
  auto d = MakePowerDriver(config_, "h1");
  Status s = (*d)->Off();
  ASSERT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("host 'h1' (exec): off_command exited with 4: refused: ***"), std::string::npos)
      << s.message();
  EXPECT_EQ(s.message().find("hunter2"), std::string::npos);
}

TEST_F(ExecDriverTest, AStatusThatIsNeitherOnNorOffIsAnError) {
  std::ofstream(state_) << "maybe\n";
  auto d = MakePowerDriver(config_, "h1");
  auto s = (*d)->Status();
  ASSERT_EQ(s.status().code(), StatusCode::kInternal);
  EXPECT_NE(s.status().message().find("'maybe'"), std::string::npos);
}

// The ipmi driver against a stand-in ipmitool that records how it was called (the real one
// against ipmi_sim is tests/manager_integration_test's).
class IpmiDriverTest : public ::testing::Test {
 protected:
  void Tool(const std::string& answer, int exit_code) {
    WriteScript(tool_, "echo \"$*\" > " + (dir_.path() / "argv").string() + "\necho \"$IPMI_PASSWORD\" > " +
                           (dir_.path() / "env").string() + "\n" + answer + "\nexit " + std::to_string(exit_code) +
                           "\n");
  }
  std::unique_ptr<PowerDriver> Driver() {
    auto d = MakePowerDriver(*ParsePowerConfig(Ipmi()), "h1", DriverContext{.ipmitool = tool_.string()});
    return d.ok() ? std::move(*d) : nullptr;
  }
  TestDir dir_{"power-ipmi"};
  std::filesystem::path tool_ = dir_.path() / "ipmitool";
};

TEST_F(IpmiDriverTest, PassesThePasswordInTheEnvironmentNeverOnTheCommandLine) {
  Tool("echo 'Chassis Power is on'", 0);
  auto d = Driver();
  EXPECT_EQ(*d->Status(), PowerState::kOn);
  const std::string argv = Slurp(dir_.path() / "argv");
  EXPECT_NE(argv.find("-v -I lanplus -C 3 -H 10.77.0.1 -p 623 -U admin -E"), std::string::npos) << argv;
  EXPECT_NE(argv.find("chassis power status"), std::string::npos) << argv;
  EXPECT_EQ(argv.find("s3cret-pw"), std::string::npos) << argv;
  EXPECT_EQ(Slurp(dir_.path() / "env"), "s3cret-pw\n");
  Tool("echo 'Chassis Power is off'", 0);
  EXPECT_EQ(*d->Status(), PowerState::kOff);
  Tool("echo 'Chassis Power Control: Up/On'", 0);
  EXPECT_TRUE(d->On().ok());
  EXPECT_NE(Slurp(dir_.path() / "argv").find("chassis power on"), std::string::npos);
}

TEST_F(IpmiDriverTest, RefusedCredentialsAreUnauthenticated) {
  // What ipmitool 1.8.19 -v prints against ipmi_sim with a wrong password.
  Tool("echo '> RAKP 2 HMAC is invalid' >&2; echo 'Error: Unable to establish IPMI v2 / RMCP+ session' >&2", 1);
  Status s = Driver()->Off();
  EXPECT_EQ(s.code(), StatusCode::kUnauthenticated) << s.ToString();
  EXPECT_NE(s.message().find("host 'h1' (ipmi 10.77.0.1:623): the BMC refused the credentials"), std::string::npos)
      << s.message();
}

TEST_F(IpmiDriverTest, AnUnreachableBmcIsUnavailable) {
  Tool("echo 'Get Auth Capabilities error' >&2; echo 'Error: Unable to establish IPMI v2 / RMCP+ session' >&2", 1);
  Status s = Driver()->On();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("the BMC did not answer: Error: Unable to establish"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace uw::power
