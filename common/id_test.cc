#include "common/id.h"

#include <gtest/gtest.h>

#include <set>

namespace uw {
namespace {

TEST(IdTest, UuidsAreWellFormedAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string u = NewUuid();
    ASSERT_EQ(u.size(), 36u);
    EXPECT_EQ(u[14], '4');
    EXPECT_TRUE(IsUuid(u)) << u;
    EXPECT_TRUE(seen.insert(u).second);
  }
  EXPECT_EQ(NewId("task").rfind("task-", 0), 0u);
  for (const char* bad : {"", "5d3a1c9e-0000-4000-8000-00000000000", "5d3a1c9e-0000-4000-8000-00000000000g",
                          "5d3a1c9e00000-4000-8000-000000000001", "<uuid>/x</uuid>-0000-0000-00000000000"}) {
    EXPECT_FALSE(IsUuid(bad)) << bad;
  }
  EXPECT_TRUE(IsUuid("5D3A1C9E-0000-4000-8000-000000000001"));
}

TEST(IdTest, ValidatesNames) {
  EXPECT_TRUE(ValidateName("web-01.prod_a", "guest name").ok());
  EXPECT_FALSE(ValidateName("", "guest name").ok());
  EXPECT_FALSE(ValidateName("-lead", "guest name").ok());
  EXPECT_FALSE(ValidateName("a b", "guest name").ok());
  EXPECT_FALSE(ValidateName("../etc", "guest name").ok());
  EXPECT_FALSE(ValidateName(std::string(64, 'a'), "guest name").ok());
}

TEST(IdTest, GuestNamesMayCarryTheirTenant) {
  EXPECT_TRUE(ValidateGuestName("web1", "guest name").ok());
  EXPECT_TRUE(ValidateGuestName("acme:web1", "guest name").ok());
  EXPECT_FALSE(ValidateGuestName("acme:", "guest name").ok());
  EXPECT_FALSE(ValidateGuestName(":web1", "guest name").ok());
  EXPECT_FALSE(ValidateGuestName("a:b:c", "guest name").ok());
  EXPECT_FALSE(ValidateGuestName("acme:../etc", "guest name").ok());
  Status long_one = ValidateGuestName("acme:" + std::string(59, 'a'), "name");
  EXPECT_FALSE(long_one.ok());
  EXPECT_NE(long_one.message().find("at most 58 characters"), std::string::npos) << long_one.ToString();
  EXPECT_TRUE(ValidateGuestName("acme:" + std::string(58, 'a'), "name").ok());
}

}  // namespace
}  // namespace uw
