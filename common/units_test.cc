#include "common/units.h"

#include <gtest/gtest.h>

namespace uw {
namespace {

TEST(UnitsTest, ParsesMemorySizes) {
  EXPECT_EQ(*ParseMemoryMiB("512"), 512);
  EXPECT_EQ(*ParseMemoryMiB("512MiB"), 512);
  EXPECT_EQ(*ParseMemoryMiB("2GiB"), 2048);
  EXPECT_EQ(*ParseMemoryMiB("1.5 GiB"), 1536);
  EXPECT_EQ(*ParseMemoryMiB("2048KiB"), 2);
  EXPECT_EQ(*ParseMemoryMiB("1T"), 1048576);
}

TEST(UnitsTest, RejectsBadMemorySizes) {
  EXPECT_EQ(ParseMemoryMiB("lots").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseMemoryMiB("-1").status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ParseMemoryMiB("3 parsecs").status().message().find("unknown memory unit"), std::string::npos);
  EXPECT_FALSE(ParseMemoryMiB("100KiB").ok());  // not a whole MiB
}

TEST(UnitsTest, FormatsAndAdds) {
  EXPECT_EQ(FormatMiB(512), "512 MiB");
  EXPECT_EQ(FormatMiB(4096), "4 GiB");
  EXPECT_EQ(FormatMiB(1536), "1.5 GiB");
  Resources a{1.5, 1024}, b{0.5, 512};
  EXPECT_EQ(a + b, (Resources{2.0, 1536}));
  EXPECT_TRUE(b.FitsIn(a));
  EXPECT_FALSE(a.FitsIn(b));
}

}  // namespace
}  // namespace uw
