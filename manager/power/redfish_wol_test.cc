// The redfish driver against an in-process Redfish service (the real exchange with the test bed's
// HTTPS BMC is tests/manager_integration_test's), and the wol driver's magic packet on a local
// UDP socket.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <mutex>
#include <vector>

#include "api/http.h"
#include "common/base64.h"
#include "manager/power/power.h"

namespace uw::power {
namespace {

// A BMC's Redfish service: one or two systems, Basic auth, the Reset action recorded.
class FakeRedfish {
 public:
  explicit FakeRedfish(std::vector<std::string> allowed = {"On", "ForceOff", "PowerCycle"}, int systems = 1)
      : allowed_(std::move(allowed)) {
    auto auth = [](const api::Request& req) {
      return req.Header("authorization") == "Basic " + Base64Encode("admin:pw-1234");
    };
    auto refused = api::Response::Json(
        401, {{"error", {{"code", "Base.1.8.GeneralError"}, {"message", "Invalid username or password"}}}});
    router_.AddPublic("GET", "/redfish/v1/Systems", [=](const api::Request& req) {
      if (!auth(req)) return refused;
      Json members = Json::array();
      for (int i = 1; i <= systems; ++i) members.push_back({{"@odata.id", "/redfish/v1/Systems/" + std::to_string(i)}});
      return api::Response::Json(200, {{"Members", members}, {"Members@odata.count", systems}});
    });
    router_.AddPublic("GET", "/redfish/v1/Systems/1", [=, this](const api::Request& req) {
      if (!auth(req)) return refused;
      std::lock_guard l(mu_);
      return api::Response::Json(200, {{"Id", "1"},
                                       {"PowerState", power_},
                                       {"Actions",
                                        {{"#ComputerSystem.Reset",
                                          {{"target", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"},
                                           {"ResetType@Redfish.AllowableValues", allowed_}}}}}});
    });
    router_.AddPublic("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset", [=, this](const api::Request& req) {
      if (!auth(req)) return refused;
      auto body = req.JsonBody();
      std::lock_guard l(mu_);
      resets_.push_back(body.ok() ? body->value("ResetType", "") : "?");
      if (resets_.back() == "On") power_ = "PoweringOn";
      if (resets_.back() == "ForceOff") power_ = "Off";
      return api::Response::Json(204, Json());
    });
    server_ = std::make_unique<api::HttpServer>(api::ServerOptions{}, &router_);
    EXPECT_TRUE(server_->Start().ok());
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  std::unique_ptr<PowerDriver> Driver(const std::string& password = "pw-1234", const std::string& system = "") {
    Json j = {
        {"driver", "redfish"}, {"url", url()}, {"username", "admin"}, {"password", password}, {"timeout_ms", 3000}};
    if (!system.empty()) j["system"] = system;
    auto c = ParsePowerConfig(j);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    auto d = MakePowerDriver(*c, "h1");
    return std::move(*d);
  }
  std::vector<std::string> resets() {
    std::lock_guard l(mu_);
    return resets_;
  }

 private:
  std::vector<std::string> allowed_;
  std::mutex mu_;
  std::string power_ = "Off";
  std::vector<std::string> resets_;
  api::Router router_;
  std::unique_ptr<api::HttpServer> server_;
};

TEST(RedfishDriverTest, ReadsPowerStateAndPostsTheResetActionItFinds) {
  FakeRedfish bmc;
  auto d = bmc.Driver();
  EXPECT_EQ(*d->Status(), PowerState::kOff);
  ASSERT_TRUE(d->On().ok());
  EXPECT_EQ(*d->Status(), PowerState::kOn);  // PoweringOn is not off: a fence must not trust it
  ASSERT_TRUE(d->Off().ok());
  EXPECT_EQ(*d->Status(), PowerState::kOff);
  ASSERT_TRUE(d->Cycle().ok());
  EXPECT_EQ(bmc.resets(), (std::vector<std::string>{"On", "ForceOff", "PowerCycle"}));
  EXPECT_TRUE(d->ConfirmsOff());
  EXPECT_EQ(d->Describe(), "redfish " + bmc.url());
}

TEST(RedfishDriverTest, CycleFallsBackToForceRestartAndAMissingTypeIsNamed) {
  FakeRedfish bmc({"ForceRestart"});
  auto d = bmc.Driver();
  ASSERT_TRUE(d->Cycle().ok());
  EXPECT_EQ(bmc.resets(), std::vector<std::string>{"ForceRestart"});
  Status s = d->Off();
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("does not offer ResetType ForceOff (it offers [\"ForceRestart\"])"), std::string::npos)
      << s.message();
}

TEST(RedfishDriverTest, WrongCredentialsAreUnauthenticatedWithTheBmcsMessage) {
  FakeRedfish bmc;
  auto s = bmc.Driver("wrong-pw")->Status();
  ASSERT_EQ(s.status().code(), StatusCode::kUnauthenticated) << s.status().ToString();
  EXPECT_NE(s.status().message().find("the BMC refused the credentials (GET /redfish/v1/Systems: HTTP 401: Invalid "
                                      "username or password)"),
            std::string::npos)
      << s.status().message();
  EXPECT_EQ(s.status().message().find("wrong-pw"), std::string::npos);
}

TEST(RedfishDriverTest, SeveralSystemsNeedTheSystemField) {
  FakeRedfish bmc({"On"}, 2);
  auto s = bmc.Driver()->Status();
  ASSERT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("manages 2 systems (/redfish/v1/Systems/1, /redfish/v1/Systems/2): set "
                                      "`system`"),
            std::string::npos)
      << s.status().message();
  auto one = bmc.Driver("pw-1234", "/redfish/v1/Systems/1")->Status();
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(*one, PowerState::kOff);
}

TEST(RedfishDriverTest, AnUnreachableBmcIsUnavailable) {
  std::string url;
  {
    FakeRedfish gone;
    url = gone.url();
  }
  auto c = ParsePowerConfig({{"driver", "redfish"}, {"url", url}, {"username", "admin"}, {"password", "x"}});
  ASSERT_TRUE(c.ok());
  auto s = (*MakePowerDriver(*c, "h1"))->Status();
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable) << s.status().ToString();
  EXPECT_NE(s.status().message().find("host 'h1' (redfish " + url + "): "), std::string::npos);
}

TEST(PowerConfigTest, RedfishAndWolFieldsAreCheckedAndTheirSecretsKept) {
  auto redfish = ParsePowerConfig({{"driver", "redfish"},
                                   {"url", "https://10.77.0.1"},
                                   {"username", "admin"},
                                   {"password", "pw"},
                                   {"ca_cert", "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"}});
  ASSERT_TRUE(redfish.ok()) << redfish.status().ToString();
  const std::string shown = PowerConfigJson(*redfish, Secrets::kRedacted).dump();
  EXPECT_EQ(shown.find("\"pw\""), std::string::npos) << shown;
  auto again = ParsePowerConfig(PowerConfigJson(*redfish, Secrets::kIncluded));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->password, "pw");
  EXPECT_EQ(again->ca_cert, redfish->ca_cert);

  auto wol = ParsePowerConfig({{"driver", "wol"}, {"mac", "52-54-00-AB-CD-EF"}});
  ASSERT_TRUE(wol.ok()) << wol.status().ToString();
  EXPECT_EQ(wol->mac, "52:54:00:ab:cd:ef");
  EXPECT_EQ(wol->broadcast, "255.255.255.255");
  EXPECT_EQ(wol->port, 9);
  EXPECT_EQ(ParsePowerConfig(PowerConfigJson(*wol, Secrets::kIncluded))->mac, "52:54:00:ab:cd:ef");

  auto error = [](const Json& j) { return ParsePowerConfig(j).status().message(); };
  const Json rf = {{"driver", "redfish"}, {"url", "https://bmc"}, {"username", "admin"}, {"password", "pw"}};
  auto with = [](Json j, const char* key, const Json& value) {
    j[key] = value;
    return j;
  };
  EXPECT_NE(error(with(rf, "url", "ftp://bmc")).find("url: expected the BMC's base URL"), std::string::npos);
  EXPECT_NE(error(with(rf, "url", "https://user@bmc/x")).find("url:"), std::string::npos);
  EXPECT_NE(error(with(rf, "password", "")).find("password: required for redfish"), std::string::npos);
  EXPECT_NE(error(with(rf, "ca_cert", "not pem")).find("ca_cert: expected PEM"), std::string::npos);
  EXPECT_NE(error(with(rf, "system", "/etc/passwd")).find("system:"), std::string::npos);
  EXPECT_NE(error(with(rf, "mac", "52:54:00:ab:cd:ef")).find("mac: only for the wol driver"), std::string::npos);
  const Json wl = {{"driver", "wol"}, {"mac", "52:54:00:ab:cd:ef"}};
  EXPECT_NE(error(with(wl, "mac", "52:54:00:ab:cd")).find("mac: expected"), std::string::npos);
  EXPECT_NE(error(with(wl, "broadcast", "10.77.0.0/24")).find("broadcast: expected an IPv4"), std::string::npos);
  EXPECT_NE(error(with(wl, "password", "x")).find("password: only for the"), std::string::npos);
  EXPECT_NE(error(with(wl, "port", 0)).find("port: expected 1..65535"), std::string::npos);
}

TEST(WolDriverTest, OnSendsTheMagicPacketAndOffAndStateGoThroughTheAgent) {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof(at)), 0);
  const timeval patience{10, 0};  // a packet that never comes fails the test, not hangs it
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof(patience));
  socklen_t len = sizeof(at);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&at), &len), 0);
  auto c = ParsePowerConfig(
      {{"driver", "wol"}, {"mac", "52:54:00:ab:cd:ef"}, {"broadcast", "127.0.0.1"}, {"port", ntohs(at.sin_port)}});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  Status agent = UnavailableError("connection refused");
  int shutdowns = 0;
  DriverContext context;
  context.agent_ping = [&] { return agent; };
  context.agent_shutdown = [&] {
    ++shutdowns;
    return Status::Ok();
  };
  auto made = MakePowerDriver(*c, "h1", context);
  ASSERT_TRUE(made.ok());
  auto d = std::move(*made);
  EXPECT_FALSE(d->ConfirmsOff());
  EXPECT_TRUE(d->RepeatsOn());
  EXPECT_EQ(*d->Status(), PowerState::kOff);

  ASSERT_TRUE(d->On().ok());
  char buf[256];
  const ssize_t n = recv(fd, buf, sizeof(buf), 0);
  close(fd);
  ASSERT_EQ(n, 102);
  EXPECT_EQ(std::string(buf, 6), std::string(6, '\xff'));
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(std::string(buf + 6 + i * 6, 6), std::string("\x52\x54\x00\xab\xcd\xef", 6)) << i;

  agent = Status::Ok();
  EXPECT_EQ(*d->Status(), PowerState::kOn);
  ASSERT_TRUE(d->Off().ok());
  EXPECT_EQ(shutdowns, 1);
  agent = DeadlineExceededError("no answer");  // a hung host is not known to be off
  EXPECT_EQ(d->Status().status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(d->Cycle().code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace uw::power
