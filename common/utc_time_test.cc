#include "common/utc_time.h"

#include <gtest/gtest.h>

#include "common/clock.h"

namespace uw {
namespace {

TEST(UtcTimeTest, EpochMillisAndRfc3339WithOrWithoutFractions) {
  EXPECT_EQ(*ParseUtcMillis("1765044000000", "t"), 1765044000000);
  EXPECT_EQ(*ParseUtcMillis("2025-12-06T18:00:00Z", "t"), 1765044000000);
  EXPECT_EQ(*ParseUtcMillis("2025-12-06T18:00:00.250Z", "t"), 1765044000250);
  EXPECT_EQ(*ParseUtcMillis("2025-12-06T18:00:00.2Z", "t"), 1765044000200);
  EXPECT_EQ(*ParseUtcMillis("2025-12-06T18:00:00.123456789Z", "t"), 1765044000123);
  // What FormatRfc3339 writes comes back as it was.
  const TimePoint t{std::chrono::milliseconds(1765044000987)};
  EXPECT_EQ(*ParseUtcMillis(FormatRfc3339(t), "t"), 1765044000987);
}

TEST(UtcTimeTest, AnythingElseNamesTheField) {
  for (const char* bad : {"", "soon", "2025-13-06T18:00:00Z", "2025-12-06T18:00:00+01:00", "2025-12-06T18:00:00.Z",
                          "2025-12-06T18:00:00Zx", "2025-12-06", "-5", "1234567890123456"}) {
    auto r = ParseUtcMillis(bad, "from");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("from: "), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace uw
