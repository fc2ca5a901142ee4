#include "agent/names.h"

#include <gtest/gtest.h>

namespace stoke::agent {
namespace {

TEST(FunctionNames, AcceptsThePattern) {
  for (const char* ok : {"a", "_", "9lives", "hello-world", "fn.v2", "A_b-c.d"})
    EXPECT_TRUE(check_function_name(ok).ok()) << ok;
  EXPECT_TRUE(check_function_name(std::string(128, 'x')).ok());
}

TEST(FunctionNames, RejectsEverythingElseWithAReason) {
  for (const char* bad : {"", "-lead", ".hidden", "a/b", "../x", "sp ace", "uni\xc3\xa9", "a\nb"})
    EXPECT_FALSE(check_function_name(bad).ok()) << bad;
  auto too_long = check_function_name(std::string(129, 'x'));
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.error().message().find("128"), std::string::npos);
}

}  // namespace
}  // namespace stoke::agent
