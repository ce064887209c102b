#include "common/base64.h"

#include <gtest/gtest.h>

namespace uw {
namespace {

TEST(Base64Test, KnownValuesAndRoundTrips) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("hello world"), "aGVsbG8gd29ybGQ=");
  EXPECT_EQ(*Base64Decode("aGVsbG8gd29ybGQ="), "hello world");
  EXPECT_EQ(*Base64Decode("aGVs\nbG8g d29y\r\nbGQ="), "hello world");  // line breaks skipped
  EXPECT_EQ(*Base64Decode(""), "");
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (size_t n = 0; n <= all.size(); n += 37) {
    EXPECT_EQ(*Base64Decode(Base64Encode(all.substr(0, n))), all.substr(0, n)) << n;
  }
  EXPECT_FALSE(Base64Decode("a*b").ok());
  EXPECT_FALSE(Base64Decode("-_").ok());  // the URL-safe alphabet is not this one
}

}  // namespace
}  // namespace uw
