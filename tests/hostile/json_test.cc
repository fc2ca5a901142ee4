// Deeply nested JSON from a function's result or a client's payload (review
// finding #1): copying or dumping such a value recursed once per level and
// overflowed the agent's stack (SIGSEGV, every sandbox gone with it). Now the
// nesting is bounded before any value is built: the activation is recorded as
// the developer's error, the client gets INVALID_ARGUMENT, and the agent and
// its other tenants carry on.
#include <chrono>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/hostile/bystander.h"
#include "tests/hostile/timed_call.h"

namespace stoke {
namespace {

using namespace std::chrono_literals;

// An exec function (OpenWhisk actionloop: a JSON request per line on stdin,
// the result line on fd 3) whose misbehaviour the request picks.
constexpr const char* kJsonAction = R"PY(#!/usr/bin/python3
import json, os, sys, time
def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]
for line in sys.stdin:
    req = json.loads(line)
    p = req["value"]
    mode = p.get("mode", "echo")
    if mode == "nested":
        levels = p.get("levels", 200000)
        write_all(3, b'{"a":' + b"[" * levels + b"]" * levels + b"}\n")
        continue
    if mode == "garbage":
        write_all(3, b"\x00\xff\xfe not json \x1b[2J {{{{\n")
        continue
    if mode == "close":
        os.close(3)
        time.sleep(60)
    write_all(3, (json.dumps({"echo": p}) + "\n").encode())
)PY";

class HostileJson : public test::AgentTest {
 protected:
  std::string extra_config() override { return "zygotes { enabled: false }\ncheckpoints: false\n"; }
  void SetUp() override {
    test::AgentTest::SetUp();
    if (IsSkipped()) return;
    std::string path = test::write_executable(dir_.file("json_action.py"), kJsonAction);
    auto created = send(test::create_request("jsonfn", v1::EXEC, path, "json_action.py", 0, 10000));
    ASSERT_FALSE(created.has_error() && created.error().code() != v1::Error::OK) << created.error().message();
  }
  // A sync invoke that must come back within `limit` (a crashed or stalled
  // agent fails here, with its log).
  v1::Response invoke_within(const std::string& name, const std::string& params,
                             std::chrono::milliseconds limit = 20s) {
    auto r = test::call_within(*agent_, test::invoke_request(name, params), limit);
    EXPECT_TRUE(r.has_value()) << "no answer within " << limit.count() << " ms; agent log:\n" << agent_->log_text();
    return r.value_or(v1::Response{});
  }
  void expect_agent_still_serves() {
    EXPECT_TRUE(agent_->running());
    auto later = invoke_within("jsonfn", R"({"mode": "echo", "n": 7})");
    ASSERT_TRUE(later.has_activation()) << agent_->log_text();
    EXPECT_EQ(later.activation().status(), v1::SUCCESS) << later.activation().result_json();
    EXPECT_EQ(nlohmann::json::parse(later.activation().result_json())["echo"]["n"], 7);
  }
};

TEST_F(HostileJson, DeeplyNestedResultFromExecFunctionIsDeveloperErrorNotACrash) {
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  bystander.start();
  for (int i = 0; i < 3; ++i) {
    auto r = invoke_within("jsonfn", R"({"mode": "nested"})");
    ASSERT_TRUE(r.has_activation()) << (r.has_error() ? r.error().message() : "") << agent_->log_text();
    EXPECT_EQ(r.activation().status(), v1::DEVELOPER_ERROR) << r.activation().result_json();
    EXPECT_NE(r.activation().result_json().find("nested too deeply"), std::string::npos) << r.activation().result_json();
    EXPECT_NE(r.activation().result_json().find("64"), std::string::npos) << r.activation().result_json();
    EXPECT_FALSE(r.activation().activation_id().empty());
  }
  test::Bystander::expect_kept_p99(reference, bystander.stop());
  expect_agent_still_serves();
}

TEST_F(HostileJson, ResultNestedWithinTheLimitIsStillAccepted) {
  auto r = invoke_within("jsonfn", R"({"mode": "nested", "levels": 60})");
  ASSERT_TRUE(r.has_activation());
  EXPECT_EQ(r.activation().status(), v1::SUCCESS) << r.activation().result_json();
}

TEST_F(HostileJson, DeeplyNestedResultWrittenByPythonFunctionIsDeveloperError) {
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  std::string path = dir_.file("nested.py");
  std::ofstream(path) << "import os\n"
                         "def main(args):\n"
                         "    data = b'{\"a\":' + b'[' * 300000 + b']' * 300000 + b'}\\n'\n"
                         "    while data:\n"
                         "        data = data[os.write(3, data):]\n"
                         "    return {'after': 'the nested line'}\n";
  auto created = send(test::create_request("nestedpy", v1::PYTHON, path, "main.py", 0, 10000));
  ASSERT_FALSE(created.has_error() && created.error().code() != v1::Error::OK) << created.error().message();
  bystander.start();
  for (int i = 0; i < 2; ++i) {
    auto r = invoke_within("nestedpy", "{}");
    ASSERT_TRUE(r.has_activation()) << (r.has_error() ? r.error().message() : "") << agent_->log_text();
    EXPECT_EQ(r.activation().status(), v1::DEVELOPER_ERROR) << r.activation().result_json();
    EXPECT_NE(r.activation().result_json().find("nested too deeply"), std::string::npos) << r.activation().result_json();
  }
  test::Bystander::expect_kept_p99(reference, bystander.stop());
  expect_agent_still_serves();
}

TEST_F(HostileJson, DeeplyNestedPayloadFromClientIsInvalidArgument) {
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  std::string payload = "{\"a\":" + std::string(200000, '[') + std::string(200000, ']') + "}";
  bystander.start();
  for (int i = 0; i < 3; ++i) {
    auto r = invoke_within("jsonfn", payload);
    ASSERT_TRUE(r.has_error()) << "expected a refusal; agent log:\n" << agent_->log_text();
    EXPECT_EQ(r.error().code(), v1::Error::INVALID_ARGUMENT) << r.error().message();
    EXPECT_NE(r.error().message().find("nested too deeply"), std::string::npos) << r.error().message();
  }
  test::Bystander::expect_kept_p99(reference, bystander.stop());
  expect_agent_still_serves();
}

TEST_F(HostileJson, PayloadIsForwardedAsTheClientWroteItEvenOverSeveralLines) {
  // The payload travels as text (never re-serialized); its line breaks must
  // not split the runtime's one-line request.
  auto r = invoke_within("jsonfn", "{\n  \"mode\": \"echo\",\n  \"deep\": [[[[\"a\\nb\"]]]],\r\n  \"u\": \"\\u00e9\"\n}\n");
  ASSERT_TRUE(r.has_activation()) << (r.has_error() ? r.error().message() : "");
  EXPECT_EQ(r.activation().status(), v1::SUCCESS) << r.activation().result_json();
  auto echo = nlohmann::json::parse(r.activation().result_json())["echo"];
  EXPECT_EQ(echo["deep"][0][0][0][0], "a\nb");
  EXPECT_EQ(echo["u"], "\xc3\xa9");
  for (const char* bad : {"[1]", "{\"a\":", "{} {}", "\"s\""}) {
    auto refused = invoke_within("jsonfn", bad);
    ASSERT_TRUE(refused.has_error()) << bad;
    EXPECT_EQ(refused.error().code(), v1::Error::INVALID_ARGUMENT) << bad << ": " << refused.error().message();
  }
}

TEST_F(HostileJson, GarbageOnFd3AndFd3ClosedAreDeveloperErrors) {
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  bystander.start();
  auto garbage = invoke_within("jsonfn", R"({"mode": "garbage"})");
  ASSERT_TRUE(garbage.has_activation());
  EXPECT_EQ(garbage.activation().status(), v1::DEVELOPER_ERROR) << garbage.activation().result_json();
  EXPECT_NE(garbage.activation().result_json().find("not JSON"), std::string::npos) << garbage.activation().result_json();
  // The stored error is valid JSON even though the garbage was not UTF-8.
  EXPECT_TRUE(nlohmann::json::accept(garbage.activation().result_json())) << garbage.activation().result_json();

  auto start = std::chrono::steady_clock::now();
  auto closed = invoke_within("jsonfn", R"({"mode": "close"})");
  ASSERT_TRUE(closed.has_activation());
  EXPECT_EQ(closed.activation().status(), v1::DEVELOPER_ERROR) << closed.activation().result_json();
  EXPECT_NE(closed.activation().result_json().find("closed fd 3"), std::string::npos) << closed.activation().result_json();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 8s) << "a closed fd 3 must end the activation, not its timeout";
  test::Bystander::expect_kept_p99(reference, bystander.stop());
  expect_agent_still_serves();
}

}  // namespace
}  // namespace stoke
