// The api_limits block of stoked.conf: defaults match ServerLimits, values
// are read as written, and nonsense is refused naming the field.
#include <gtest/gtest.h>

#include "agent/config.h"
#include "agent/server_limits.h"

namespace stoke::agent {
namespace {

TEST(ApiLimitsConfig, DefaultsMatchTheServersDefaults) {
  AgentConfig c = default_config();
  ServerLimits s;
  EXPECT_EQ(c.api_limits().max_connections(), s.max_connections);
  EXPECT_EQ(c.api_limits().max_connections_per_uid(), s.max_connections_per_uid);
  EXPECT_EQ(c.api_limits().max_requests_in_flight(), s.max_requests_in_flight);
  EXPECT_EQ(c.api_limits().max_output_bytes(), s.max_output_bytes);
  EXPECT_EQ(c.api_limits().max_buffered_bytes(), s.max_buffered_bytes);
  EXPECT_EQ(std::chrono::milliseconds(c.api_limits().frame_timeout_ms()), s.frame_timeout);
}

TEST(ApiLimitsConfig, ValuesAreReadAsWritten) {
  auto c = parse_config("api_limits { max_connections: 9 max_connections_per_uid: 3 frame_timeout_ms: 250 }\n",
                        "stoked.conf");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->api_limits().max_connections(), 9u);
  EXPECT_EQ(c->api_limits().max_connections_per_uid(), 3u);
  EXPECT_EQ(c->api_limits().frame_timeout_ms(), 250u);
}

TEST(ApiLimitsConfig, NonsenseIsRefusedNamingTheField) {
  for (auto [text, field] : {std::pair{"api_limits { max_connections: 0 }", "api_limits.max_connections"},
                             std::pair{"api_limits { max_connections_per_uid: 0 }", "api_limits.max_connections_per_uid"},
                             std::pair{"api_limits { max_requests_in_flight: 0 }", "api_limits.max_requests_in_flight"},
                             std::pair{"api_limits { max_requests_in_flight: 70000 }", "api_limits.max_requests_in_flight"},
                             std::pair{"api_limits { max_output_bytes: 1000 }", "api_limits.max_output_bytes"},
                             std::pair{"api_limits { max_buffered_bytes: 0 }", "api_limits.max_buffered_bytes"},
                             std::pair{"api_limits { frame_timeout_ms: 0 }", "api_limits.frame_timeout_ms"}}) {
    auto c = parse_config(text, "stoked.conf");
    Status s = c.ok() ? validate_config(*c) : Status(c.error());
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_NE(s.error().message().find(field), std::string::npos) << s.error().message();
  }
}

}  // namespace
}  // namespace stoke::agent
