#include "sandbox/base/parse.h"

#include <gtest/gtest.h>

namespace stoke {
namespace {

TEST(ParseSize, AcceptsBinarySuffixes) {
  EXPECT_EQ(parse_size("4096").value(), 4096u);
  EXPECT_EQ(parse_size("64K").value(), 64u << 10);
  EXPECT_EQ(parse_size("256M").value(), 256u << 20);
  EXPECT_EQ(parse_size("1G").value(), 1ull << 30);
  EXPECT_EQ(parse_size("1.5G").value(), 3ull << 29);
  EXPECT_EQ(parse_size("8MiB").value(), 8u << 20);
  EXPECT_EQ(parse_size("2m").value(), 2u << 20);
}

TEST(ParseSize, RejectsGarbageWithTheInputInTheMessage) {
  for (const char* bad : {"", "M", "12X", "-1", "1.2.3", "abc", "5 M"}) {
    auto r = parse_size(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("'"), std::string::npos) << r.error().message();
  }
  EXPECT_FALSE(parse_size("99999999999T").ok());
}

TEST(ParseDuration, AcceptsUnits) {
  EXPECT_EQ(parse_duration("500ms").value().count(), 500);
  EXPECT_EQ(parse_duration("2s").value().count(), 2000);
  EXPECT_EQ(parse_duration("1.5s").value().count(), 1500);
  EXPECT_EQ(parse_duration("3").value().count(), 3000);
  EXPECT_EQ(parse_duration("2m").value().count(), 120000);
  EXPECT_EQ(parse_duration("1h").value().count(), 3600000);
}

TEST(ParseDuration, RejectsUnknownUnitsAndGarbage) {
  for (const char* bad : {"", "s", "10x", "1d", "-5s", "ms5"}) EXPECT_FALSE(parse_duration(bad).ok()) << bad;
}

TEST(ParseCpus, AcceptsPositiveFractions) {
  EXPECT_DOUBLE_EQ(parse_cpus("0.5").value(), 0.5);
  EXPECT_DOUBLE_EQ(parse_cpus("2").value(), 2.0);
  for (const char* bad : {"0", "", "x", "1.5cpu", "2000"}) EXPECT_FALSE(parse_cpus(bad).ok()) << bad;
}

TEST(ParseCount, AcceptsWholeNumbersOnly) {
  EXPECT_EQ(parse_count("64").value(), 64u);
  for (const char* bad : {"", "6.4", "-1", "1e3", "12a"}) EXPECT_FALSE(parse_count(bad).ok()) << bad;
}

}  // namespace
}  // namespace stoke
