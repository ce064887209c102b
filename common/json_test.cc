#include "common/json.h"

#include <gtest/gtest.h>

namespace uw {
namespace {

TEST(JsonTest, MalformedTextNamesLineAndColumn) {
  auto r = ParseJson("{\n  \"a\": 1,\n  \"b\": }", "request body");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("request body: line 3, column"), std::string::npos)
      << r.status().message();
}

TEST(JsonTest, ErrorsNameTheFieldPath) {
  Json doc = Json::parse(R"({"vms": [{"memory_mib": 5}, {"memory_mib": -3}]})");
  auto root = JsonView::Of(doc);
  ASSERT_TRUE(root.ok());
  auto vms = root->Objects("vms");
  ASSERT_TRUE(vms.ok());
  EXPECT_EQ(*(*vms)[0].PositiveInt("memory_mib"), 5);
  auto bad = (*vms)[1].PositiveInt("memory_mib");
  EXPECT_EQ(bad.status().message(), "vms[1].memory_mib: expected a positive integer");
}

TEST(JsonTest, TypesDefaultsAndNulls) {
  Json doc = Json::parse(R"({"name": 3, "limit": null, "n": 2.0, "on": true, "x": {"y": "z"}})");
  auto v = *JsonView::Of(doc, "spec");
  EXPECT_EQ(v.String("name").status().message(), "spec.name: expected a string, got number");
  EXPECT_EQ(v.String("missing").status().message(), "spec.missing: required string is missing");
  EXPECT_EQ(*v.String("missing", "dflt"), "dflt");
  EXPECT_FALSE(v.OptionalNumber("limit")->has_value());
  EXPECT_EQ(*v.Int("n"), 2);
  EXPECT_TRUE(*v.Bool("on"));
  EXPECT_EQ(*v.Object("x")->String("y"), "z");
  EXPECT_EQ(v.Object("name").status().message(), "spec.name: expected an object, got number");
  EXPECT_EQ(v.RejectUnknown({"name", "limit", "n", "on"}).message(), "spec.x: unknown field");
}

TEST(JsonTest, RootMustBeObject) {
  Json doc = Json::parse("[1,2]");
  EXPECT_EQ(JsonView::Of(doc).status().message(), "document: expected a JSON object, got array");
}

}  // namespace
}  // namespace uw
