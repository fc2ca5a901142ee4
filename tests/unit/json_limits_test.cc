#include "agent/json_limits.h"

#include <gtest/gtest.h>

#include <string>

namespace stoke::agent {
namespace {

std::string nested_arrays(size_t levels) { return std::string(levels, '[') + std::string(levels, ']'); }

TEST(JsonLimits, CountsNestingOfArraysAndObjects) {
  EXPECT_EQ(json_nesting_depth("1", 64), 0u);
  EXPECT_EQ(json_nesting_depth("{}", 64), 1u);
  EXPECT_EQ(json_nesting_depth(R"({"a":[{"b":[]}],"c":{}})", 64), 4u);
  EXPECT_EQ(json_nesting_depth(nested_arrays(64), 64), 64u);
}

TEST(JsonLimits, BracketsInsideStringsDoNotCount) {
  EXPECT_EQ(json_nesting_depth(R"({"a":"[[[[{{{{"})", 2), 1u);
  // An escaped quote does not end the string; an escaped backslash does not
  // escape the quote after it.
  EXPECT_EQ(json_nesting_depth(R"({"a":"\"[[[[", "b":"\\"})", 2), 1u);
  EXPECT_EQ(json_nesting_depth(R"(["\\",[[[]]]])", 10), 4u);
}

TEST(JsonLimits, StopsCountingPastTheLimit) {
  EXPECT_EQ(json_nesting_depth(nested_arrays(1000000), 64), 65u);
}

TEST(JsonLimits, ParsesJsonWithinTheLimit) {
  auto j = parse_json_bounded(R"({"a":[1,{"b":"]]]"}]})");
  ASSERT_TRUE(j.ok()) << j.error().message();
  EXPECT_EQ((*j)["a"][1]["b"], "]]]");
  auto deepest = parse_json_bounded(nested_arrays(kMaxJsonDepth));
  ASSERT_TRUE(deepest.ok()) << deepest.error().message();
}

TEST(JsonLimits, RefusesDeeperJsonNamingTheLimit) {
  auto j = parse_json_bounded(nested_arrays(kMaxJsonDepth + 1));
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.error().message().find("nested too deeply"), std::string::npos) << j.error().message();
  EXPECT_NE(j.error().message().find("64"), std::string::npos) << j.error().message();
}

TEST(JsonLimits, RefusesTheReviewersCrashInputQuickly) {
  // The reproduction of review finding #1: a copy or dump of this overflows
  // the stack. Refused before any value is built.
  std::string crash = "{\"a\":" + nested_arrays(300000) + "}";
  auto j = parse_json_bounded(crash);
  ASSERT_FALSE(j.ok());
  EXPECT_FALSE(validate_json_object_bounded(crash).ok());
}

TEST(JsonLimits, SyntaxErrorsAreErrorsNotExceptions) {
  auto j = parse_json_bounded("{\"a\": ");
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.error().message().find("not JSON"), std::string::npos) << j.error().message();
}

TEST(JsonLimits, ValidatesOneObjectWithoutBuildingIt) {
  EXPECT_TRUE(validate_json_object_bounded(R"( {"a": [1, 2]} )").ok());
  EXPECT_FALSE(validate_json_object_bounded("[1]").ok());
  EXPECT_FALSE(validate_json_object_bounded("\"s\"").ok());
  EXPECT_FALSE(validate_json_object_bounded("{} {}").ok());
  EXPECT_FALSE(validate_json_object_bounded("").ok());
  auto bad = validate_json_object_bounded("{\"a\":}");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("not JSON"), std::string::npos) << bad.error().message();
}

TEST(JsonLimits, OneLineKeepsTheValueAndDropsLineBreaks) {
  std::string text = "{\n  \"a\": \"x\\ny\",\r\n  \"b\": [1,\n2]\n}";
  std::string line = json_on_one_line(text);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(line), nlohmann::json::parse(text));
}

TEST(JsonText, AppendedStringsParseBackToTheSameBytes) {
  for (std::string text : {std::string("hello"), std::string(""), std::string("q\"uote\\back"),
                           std::string("line\nbreak\ttab\x01\x1f"), std::string("caf\xc3\xa9 \xe2\x82\xac"),
                           std::string("a\0b", 3)}) {
    std::string out = "[";
    append_json_string(out, text);
    out += "]";
    EXPECT_EQ(out.find('\n'), std::string::npos) << "one line";
    auto parsed = nlohmann::json::parse(out);
    EXPECT_EQ(parsed[0].get<std::string>(), text) << out;
  }
}

}  // namespace
TEST(JsonLimits, BoundParametersAreDefaultsTheInvocationsOwnParamsOverride) {
  EXPECT_EQ(nlohmann::json::parse(with_defaults(R"({"a": 1, "b": {"x": 1}})", R"({"b": 2, "c": 3})")),
            nlohmann::json::parse(R"({"a": 1, "b": 2, "c": 3})"));
  EXPECT_EQ(nlohmann::json::parse(with_defaults(R"({"a": 1})", "{}")), nlohmann::json::parse(R"({"a": 1})"));
  EXPECT_EQ(with_defaults(R"({"a": 1})", "{}").find('\n'), std::string::npos) << "one line";
}

TEST(JsonLimits, AnnotationsAreAListOfKeyAndValue) {
  EXPECT_TRUE(validate_annotations(R"([{"key": "web-export", "value": true}, {"key": "x", "value": {"y": [1]}}])").ok());
  EXPECT_TRUE(validate_annotations("[]").ok());
  for (const char* bad : {"{}", R"([{"value": 1}])", R"([{"key": 1, "value": 1}])", R"([{"key": "k"}])", "[1]", "[",
                          "nope"})
    EXPECT_FALSE(validate_annotations(bad).ok()) << bad;
  EXPECT_FALSE(validate_annotations(std::string(100, '[') + std::string(100, ']')).ok()) << "depth is bounded";
}

}  // namespace stoke::agent
