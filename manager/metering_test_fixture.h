// The fixture of the metering and billing tests (manager_test): a manager on in-memory agents and
// a FakeClock, with metering's pass run by hand and the clock moved to a given time.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "manager/lease_test_fixture.h"
#include "manager/metering_service.h"

namespace uw::manager::testing {

class MeteringFixture : public LeaseTest {
 protected:
  int64_t Now() { return ToUnixMillis(clock_.Now()); }
  void AdvanceTo(int64_t ms) { clock_.Advance(std::chrono::milliseconds(ms - Now())); }
  void Pass() { ASSERT_TRUE(manager_->metering().Pass().ok()); }
  // A new token of `role` (billing-reader, read-only, ...).
  std::string RoleToken(const std::string& role) {
    Json body = {{"name", role + "-key"}, {"role", role}};
    auto r = Client().Call("POST", "/api/v1/tokens", &body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? (*r)["token"].get<std::string>() : "";
  }
};

}  // namespace uw::manager::testing
