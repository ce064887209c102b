#include "common/json.h"

#include <gtest/gtest.h>

#include "common/guest_kind.h"

namespace uw {
namespace {

TEST(JsonTest, MalformedTextNamesLineAndColumn) {
  auto r = ParseJson("{\n  \"a\": 1,\n  \"b\": }", "request body");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("request body: line 3, column"), std::string::npos) << r.status().message();
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

// Issue 12: a create body whose `labels` was 70,000 nested arrays (140 KB) crashed uw-manager
// (nlohmann's recursive dump ran out of stack). The depth is now refused while parsing.
TEST(JsonTest, DeeplyNestedTextIsRefusedWhileParsing) {
  for (size_t depth : {70'000u, 1'000'000u}) {
    std::string text = "{\"name\": \"deep\",\n \"labels\": " + std::string(depth, '[') + std::string(depth, ']') + "}";
    auto r = ParseJson(text, "request body");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    // The 64th '[' of labels is at depth 65 (the object is depth 1).
    EXPECT_EQ(r.status().message(), "request body: line 2, column 75: nesting deeper than 64");
  }
  // Objects count as well as arrays.
  std::string objects;
  for (int i = 0; i < 100; ++i) objects += "{\"a\":";
  objects += "1" + std::string(100, '}');
  EXPECT_NE(ParseJson(objects, "x").status().message().find("nesting deeper than 64"), std::string::npos);
}

TEST(JsonTest, NestingLimitIsExactAndSkipsStrings) {
  std::string at_limit = std::string(64, '[') + std::string(64, ']');
  EXPECT_TRUE(ParseJson(at_limit, "x").ok());
  std::string over = std::string(65, '[') + std::string(65, ']');
  EXPECT_EQ(ParseJson(over, "x").status().message(), "x: line 1, column 65: nesting deeper than 64");
  // Brackets inside strings (with escaped quotes) are text, not nesting.
  std::string in_string = "[\"" + std::string(100, '[') + "\\\"" + std::string(100, '{') + "\"]";
  auto r = ParseJson(in_string, "x");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)[0].get<std::string>().size(), 201u);
  // A string ending in an escaped backslash ends there; an escaped quote does not end it.
  std::string escapes =
      R"(["a\\", ")" + std::string(70, '[') + R"(\\\"", )" + std::string(70, '[') + std::string(70, ']') + "]";
  const size_t run = escapes.rfind("\", ") + 3;  // the 70 brackets after both strings
  ASSERT_EQ(escapes[run], '[');
  EXPECT_EQ(ParseJson(escapes, "x").status().message(),
            "x: line 1, column " + std::to_string(run + 64) + ": nesting deeper than 64");
  EXPECT_TRUE(ParseJson(R"(["\\\"[[[[", "\\", {"a": "]]]]\\"}])", "x").ok());
  // Configurable.
  EXPECT_TRUE(ParseJson(over, "x", JsonLimits{.max_depth = 65}).ok());
  EXPECT_FALSE(ParseJson("[[1]]", "x", JsonLimits{.max_depth = 1}).ok());
  EXPECT_TRUE(ParseJson("[1]", "x", JsonLimits{.max_depth = 1}).ok());
  const std::string_view doc = R"({"a": [1, {"b": "]]]"}], "c": {}})";
  size_t offset = 0;
  EXPECT_EQ(JsonNestingDepth(doc, 100, &offset), 3u);
  EXPECT_EQ(offset, doc.size());
  EXPECT_EQ(JsonNestingDepth(doc, 2, &offset), 3u);
  EXPECT_EQ(offset, doc.find("{\"b\""));
}

TEST(JsonTest, OversizedTextIsRefusedBeforeParsing) {
  auto r = ParseJson(std::string(2000, ' ') + "1", "agent reply", JsonLimits{.max_bytes = 2000});
  EXPECT_EQ(r.status().message(), "agent reply: 2001 bytes of JSON, more than the limit of 2000");
  EXPECT_TRUE(ParseJson(std::string(1999, ' ') + "1", "x", JsonLimits{.max_bytes = 2000}).ok());
}

// nlohmann quotes the bytes it read in its message; invalid UTF-8 there made the error answer
// itself undumpable (type_error 316).
TEST(JsonTest, ErrorsOnInvalidUtf8AndNulAreSafeToDump) {
  for (std::string text : {std::string("{\"a\": \"\xff\xfe\"}"), std::string("{\"a\": \"x\0y\"}", 12),
                           std::string("\xc3\x28"), std::string("{\"a\":\0}", 7)}) {
    auto r = ParseJson(text, "request body");
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    const std::string message = r.status().message();
    for (char c : message) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << message;
    EXPECT_NO_THROW(Json(message).dump());
  }
}

TEST(GuestKindTest, NamesParseAndJsonAgree) {
  for (GuestKind k : {GuestKind::kKvm, GuestKind::kQemu, GuestKind::kLxc}) {
    EXPECT_EQ(ParseGuestKind(GuestKindName(k)).value(), k);
    EXPECT_EQ(Json(k), std::string(GuestKindName(k)));  // a name in JSON, never a number
    EXPECT_EQ(Json(std::string(GuestKindName(k))).get<GuestKind>(), k);
  }
  EXPECT_EQ(ParseGuestKind("xen").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace uw
