// Pure logic of an activation: classifying a runtime's reply, capping logs,
// billing, and who may talk to the agent.
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "agent/activation_run.h"
#include "agent/agent.h"
#include "agent/server.h"

namespace stoke::agent {
namespace {

TEST(ClassifyResult, ObjectIsSuccessAndErrorMemberIsApplicationError) {
  EXPECT_EQ(classify_result(R"({"a": 1})").status, v1::SUCCESS);
  auto e = classify_result(R"({"error": "boom"})");
  EXPECT_EQ(e.status, v1::APPLICATION_ERROR);
  EXPECT_NE(e.result_json.find("boom"), std::string::npos);
}

TEST(ClassifyResult, AnythingButAnObjectIsTheDevelopersError) {
  for (const char* bad : {"[1,2]", "42", "\"text\"", "null", "not json", "{\"unterminated\": ", ""}) {
    auto o = classify_result(bad);
    EXPECT_EQ(o.status, v1::DEVELOPER_ERROR) << bad;
    EXPECT_NE(o.result_json.find("error"), std::string::npos) << bad;
  }
}

TEST(ClassifyResult, AResultIsKeptAsSentWithItsNumbersExact) {
  auto o = classify_result("  {\"n\": 1E15, \"big\": 123456789012345678901234567890}\r");
  EXPECT_EQ(o.status, v1::SUCCESS);
  EXPECT_EQ(o.result_json, R"({"n": 1E15, "big": 123456789012345678901234567890})");
}

TEST(ClassifyResult, AResultIsNeverStoredLargerThanItWasSent) {
  // Found by result_fuzz: an error quoting 92 control bytes; and a crafted
  // result that re-encoding would have grown nearly fourfold.
  std::string controls = "05" + std::string(90, '\x15');
  EXPECT_LE(classify_result(controls).result_json.size(), 2048u);
  std::string numbers = "{\"__stoke\": {}, \"a\": [1E15";
  for (int i = 0; i < 1000; ++i) numbers += ",1E15";
  numbers += "]}";
  auto o = classify_result(numbers);
  EXPECT_EQ(o.status, v1::DEVELOPER_ERROR);
  EXPECT_LE(o.result_json.size(), numbers.size());
  EXPECT_NE(o.result_json.find("re-encodes"), std::string::npos) << o.result_json;
  // The runtime's own marker is still taken out of a result that does not grow.
  auto marked = classify_result(R"({"error": "boom", "__stoke": {"status": "developer_error"}})");
  EXPECT_EQ(marked.status, v1::DEVELOPER_ERROR);
  EXPECT_EQ(marked.result_json, R"({"error":"boom"})");
}

TEST(ClassifyResult, DeeplyNestedResultIsRefusedNotRecursedInto) {
  // Review finding #1: dump() of this overflowed the agent's stack.
  std::string deep = "{\"a\":" + std::string(300000, '[') + std::string(300000, ']') + "}";
  auto o = classify_result(deep);
  EXPECT_EQ(o.status, v1::DEVELOPER_ERROR);
  EXPECT_NE(o.result_json.find("nested too deeply"), std::string::npos) << o.result_json;
}

TEST(ClassifyResult, BytesThatAreNotUtf8AreQuotedSafely) {
  // The error quotes the reply; a strict dump of it would throw on the loop.
  auto o = classify_result("\xff\xfe not json");
  EXPECT_EQ(o.status, v1::DEVELOPER_ERROR);
  EXPECT_NE(o.result_json.find("not JSON"), std::string::npos) << o.result_json;
}

TEST(LogCapture, SplitsLinesAcrossChunksAndCapsBytesAndLines) {
  ActivationLimits limits;
  limits.max_log_bytes = 20;
  limits.max_log_lines = 3;
  std::string partial;
  std::vector<std::string> lines;
  size_t bytes = 0;
  bool truncated = false;
  append_log_bytes("hel", limits, partial, lines, bytes, truncated);
  append_log_bytes("lo\nwor", limits, partial, lines, bytes, truncated);
  append_log_bytes("ld\n", limits, partial, lines, bytes, truncated);
  EXPECT_EQ(lines, (std::vector<std::string>{"hello", "world"}));
  EXPECT_FALSE(truncated);
  append_log_bytes("0123456789012345\n", limits, partial, lines, bytes, truncated);
  EXPECT_TRUE(truncated) << "byte cap";
  EXPECT_LE(bytes, 20u);

  std::string p2;
  std::vector<std::string> l2;
  size_t b2 = 0;
  bool t2 = false;
  limits.max_log_bytes = 1000;
  append_log_bytes("a\nb\nc\nd\ne\n", limits, p2, l2, b2, t2);
  EXPECT_EQ(l2.size(), 3u);
  EXPECT_TRUE(t2) << "line cap";
}

TEST(Billing, RoundsUpToTheUnitAndChargesReservedMemory) {
  v1::Usage u;
  fill_billing(u, 12.1, 1, 256ULL << 20);
  EXPECT_EQ(u.billed_ms(), 13u);
  EXPECT_DOUBLE_EQ(u.gb_seconds(), 0.013 * 0.25);
  fill_billing(u, 12.1, 100, 1ULL << 30);
  EXPECT_EQ(u.billed_ms(), 100u);
  EXPECT_DOUBLE_EQ(u.gb_seconds(), 0.1);
  fill_billing(u, -3, 1, 1ULL << 30);
  EXPECT_EQ(u.billed_ms(), 0u);
}

TEST(ActivationIds, AreThirtyTwoHexDigitsAndDiffer) {
  std::string a = new_activation_id(), b = new_activation_id();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(a, b);
}

TEST(ActivationIds, StartWithTheirMillisecondSoLaterIdsSortAfterEarlierOnes) {
  auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  std::string a = new_activation_id();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::string b = new_activation_id();
  EXPECT_LT(a, b);
  uint64_t ms = std::stoull(a.substr(0, 12), nullptr, 16);
  EXPECT_GE(ms, static_cast<uint64_t>(before));
  EXPECT_LE(ms, static_cast<uint64_t>(before) + 1000);
  // The rest is random: ids of the same millisecond still differ.
  std::set<std::string> tails;
  for (int i = 0; i < 1000; ++i) tails.insert(new_activation_id().substr(12));
  EXPECT_EQ(tails.size(), 1000u);
}

TEST(AccessPolicy, RootAlwaysOthersOnlyWhenListed) {
  AccessPolicy p;
  EXPECT_TRUE(p.allows({1, 0, 0}));
  EXPECT_TRUE(p.allows({1, 1000, 1000})) << "no lists: the socket's mode and group decide";
  p.allowed_uids.insert(1000);
  EXPECT_FALSE(p.allows({1, 1001, 1001}));
  EXPECT_TRUE(p.allows({1, 1000, 5}));
  p.allowed_gids.insert(77);
  EXPECT_TRUE(p.allows({1, 2000, 77}));
  EXPECT_FALSE(p.allows({1, 2000, 78}));
}

}  // namespace
}  // namespace stoke::agent
