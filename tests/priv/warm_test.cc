// Warm reuse: an instance stays after an activation and serves the next one
// of the same function version, until its keep-alive ends or the code changes.
#include <sys/wait.h>

#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;

// Module-level state tells instances apart: a token drawn at import and a
// counter of activations served.
constexpr const char* kCounter = R"(
import os, time, uuid
TOKEN = uuid.uuid4().hex
served = 0
def main(args):
    global served
    served += 1
    for i in range(args.get("lines", 0)):
        print(args.get("tag", "x"), i)
    if args.get("sleep"):
        time.sleep(args["sleep"])
    return {"token": TOKEN, "served": served, "version": "v1"}
)";

class Warm : public test::AgentTest {
 protected:
  // No prewarmed instances, zygotes or images here: calls without an idle instance
  // are cold, which the tests rely on.
  std::string extra_config() override {
    return "keep_alive_ms: 1500\npools { python: 0 node: 0 }\nzygotes { enabled: false }\ncheckpoints: false\n";
  }
  v1::Response send(const v1::Request& r) {
    auto c = agent_->connect().call(r);
    EXPECT_TRUE(c.ok());
    return c.ok() ? c.value() : v1::Response{};
  }
  void create(const std::string& name, const std::string& source, v1::Runtime runtime = v1::PYTHON,
              const std::string& file = "f.py", uint64_t timeout_ms = 0, bool update = false) {
    std::string path = dir_.file(name + "-" + std::to_string(++files_) + "-" + file);
    std::ofstream(path) << source;
    v1::Request r = test::create_request(name, runtime, path, file, 0, timeout_ms);
    if (update) {
      v1::Request u;
      u.mutable_update_function()->set_name(name);
      *u.mutable_update_function()->mutable_config() = r.create_function().config();
      r = u;
    }
    auto c = send(r);
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
  v1::Activation invoke(const std::string& name, const json& params = json::object(),
                        v1::StartKind start = v1::START_KIND_UNSPECIFIED) {
    v1::Request r = test::invoke_request(name, params.dump());
    r.mutable_invoke()->set_start(start);
    auto c = send(r);
    EXPECT_TRUE(c.has_activation()) << (c.has_error() ? c.error().message() : "");
    return c.activation();
  }
  uint32_t idle_instances() {
    v1::Request r;
    r.mutable_get_status();
    return send(r).status().pools().at("warm_idle");
  }
  int files_ = 0;
};

TEST_F(Warm, SecondCallIsWarmOnTheSameInstanceAndStateIsKept) {
  create("counter", kCounter);
  auto first = invoke("counter");
  auto second = invoke("counter");
  ASSERT_EQ(first.status(), v1::SUCCESS) << first.result_json();
  ASSERT_EQ(second.status(), v1::SUCCESS) << second.result_json();
  EXPECT_EQ(first.start_kind(), v1::COLD);
  EXPECT_EQ(second.start_kind(), v1::WARM);
  EXPECT_EQ(second.init_ms(), 0);
  json a = json::parse(first.result_json()), b = json::parse(second.result_json());
  EXPECT_EQ(a["token"], b["token"]) << "the same instance served both";
  EXPECT_EQ(b["served"], 2);
  EXPECT_LT(second.duration_ms(), first.duration_ms());
  EXPECT_GE(second.usage().cpu_user_ms(), 0);
  EXPECT_GT(second.usage().memory_peak_bytes(), 0u);
  EXPECT_EQ(idle_instances(), 1u);
}

// Short warm activations are charged the CPU they used, from the kernel's
// exact runtime: on v1 the user/system counters move in whole scheduler ticks
// (4 ms), so before this nearly every short warm call was accounted as free.
TEST_F(Warm, ShortWarmActivationsAreChargedTheirExactCpuTime) {
  create("spin", "def main(args):\n    s = 0\n    for i in range(20000):\n        s += i * i\n    return {'s': s}\n");
  ASSERT_EQ(invoke("spin").status(), v1::SUCCESS);
  for (int i = 0; i < 8; ++i) {
    v1::Activation a = invoke("spin");
    ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json();
    ASSERT_EQ(a.start_kind(), v1::WARM);
    double cpu = a.usage().cpu_user_ms() + a.usage().cpu_system_ms();
    EXPECT_GT(cpu, 0.0) << "warm call " << i << " accounted as free";
    EXPECT_LT(cpu, a.duration_ms() + 1.0) << "more CPU than wall time on one core";
  }
}

// The status reports the agent's own time per warm call: neither the
// runtime's turn (a 50 ms sleep in each call) nor a cold start counts.
TEST_F(Warm, StatusReportsTheAgentsOwnTimePerWarmCallWithoutTheRuntimesTurn) {
  create("sleeper", "import time\ndef main(args):\n    time.sleep(0.05)\n    return {}\n");
  for (int i = 0; i < 6; ++i) ASSERT_EQ(invoke("sleeper").status(), v1::SUCCESS);
  v1::Request r;
  r.mutable_get_status();
  auto t = send(r).status().warm_agent_time();
  EXPECT_EQ(t.samples(), 5u) << "one per warm success, the cold first call not counted";
  EXPECT_EQ(t.total(), 5u);
  EXPECT_GT(t.p50_us(), 0);
  EXPECT_LT(t.p50_us(), 50000) << "the runtime's 50 ms are not the agent's";
  EXPECT_GE(t.p99_us(), t.p50_us());
}

TEST_F(Warm, LogsOfBackToBackActivationsStayApart) {
  create("talker", kCounter);
  for (int round = 0; round < 5; ++round) {
    std::string tag = "round" + std::to_string(round);
    auto a = invoke("talker", {{"lines", 20}, {"tag", tag}});
    ASSERT_EQ(a.status(), v1::SUCCESS);
    ASSERT_EQ(a.logs_size(), 20) << "round " << round;
    for (const auto& line : a.logs()) EXPECT_EQ(line.rfind(tag + " ", 0), 0u) << line << " in " << tag;
  }
}

TEST_F(Warm, KeepAliveEndStopsTheIdleInstance) {
  create("brief", kCounter);
  EXPECT_EQ(invoke("brief").start_kind(), v1::COLD);
  EXPECT_EQ(idle_instances(), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // keep_alive_ms is 1500
  EXPECT_EQ(idle_instances(), 0u);
  EXPECT_EQ(invoke("brief").start_kind(), v1::COLD);
}

TEST_F(Warm, UpdateWhileIdleMeansTheNextCallRunsTheNewCode) {
  create("changing", kCounter);
  EXPECT_EQ(json::parse(invoke("changing").result_json())["version"], "v1");
  std::string v2 = kCounter;
  v2.replace(v2.find("\"v1\""), 4, "\"v2\"");
  create("changing", v2, v1::PYTHON, "f.py", 0, /*update=*/true);
  auto a = invoke("changing");
  EXPECT_EQ(json::parse(a.result_json())["version"], "v2");
  EXPECT_EQ(a.start_kind(), v1::COLD);
  EXPECT_EQ(a.version(), 2u);
}

TEST_F(Warm, InstanceThatTimedOutIsNeverReused) {
  create("sleepy", kCounter, v1::PYTHON, "f.py", 1000);
  EXPECT_EQ(invoke("sleepy", {{"sleep", 5}}).status(), v1::TIMEOUT);
  EXPECT_EQ(idle_instances(), 0u);
  EXPECT_EQ(invoke("sleepy").start_kind(), v1::COLD);
}

TEST_F(Warm, ForcedStartKindsAreHonouredOrRefused) {
  create("forced", kCounter);
  v1::Request warm_first = test::invoke_request("forced");
  warm_first.mutable_invoke()->set_start(v1::WARM);
  auto refused = send(warm_first);
  ASSERT_TRUE(refused.has_error());
  EXPECT_EQ(refused.error().code(), v1::Error::FAILED_PRECONDITION);
  EXPECT_EQ(invoke("forced").start_kind(), v1::COLD);
  EXPECT_EQ(invoke("forced", json::object(), v1::WARM).start_kind(), v1::WARM);
  EXPECT_EQ(invoke("forced", json::object(), v1::COLD).start_kind(), v1::COLD);
}

TEST_F(Warm, NodeInstancesAreReusedToo) {
  create("js-counter", "let served = 0;\nexports.main = () => ({ served: ++served });\n", v1::NODE, "f.js");
  EXPECT_EQ(invoke("js-counter").start_kind(), v1::COLD);
  auto second = invoke("js-counter");
  EXPECT_EQ(second.start_kind(), v1::WARM);
  EXPECT_EQ(json::parse(second.result_json())["served"], 2);
}

TEST_F(Warm, ExecInstancesAreNotReused) {
  // Their logs carry no end-of-activation marker, so they could not be told apart.
  std::string action = test::write_executable(
      dir_.file("echo.sh"), "#!/bin/sh\nwhile read -r l; do echo log; printf '{}\\n' >&3; done\n");
  auto c = send(test::create_request("exec-echo", v1::EXEC, action, "echo.sh"));
  ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK);
  EXPECT_EQ(invoke("exec-echo").start_kind(), v1::COLD);
  EXPECT_EQ(invoke("exec-echo").start_kind(), v1::COLD);
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

class WarmRestart : public Warm {};

TEST_F(WarmRestart, StopTearsDownIdleInstancesAndARestartStartsCold) {
  create("survivor", kCounter);
  EXPECT_EQ(invoke("survivor").start_kind(), v1::COLD);
  ASSERT_EQ(idle_instances(), 1u);
  pid_t pid = agent_->pid();
  int status = agent_->stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto left = test::run_command({"/usr/bin/find", "/sys/fs/cgroup", "-maxdepth", "7", "-type", "d", "-name",
                                 "sb-" + std::to_string(pid) + "-*"});
  EXPECT_TRUE(left.out.empty()) << "idle instances outlived the agent: " << left.out;
  agent_->restart();
  EXPECT_EQ(idle_instances(), 0u);
  auto a = invoke("survivor");
  EXPECT_EQ(a.start_kind(), v1::COLD);
  EXPECT_EQ(json::parse(a.result_json())["served"], 1);
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

TEST_F(Warm, IdleInstancesNeverOutnumberTheFunctionsConcurrency) {
  create("single", kCounter);  // concurrency 1 (the default)
  for (int i = 0; i < 3; ++i) {
    auto a = invoke("single", json::object(), v1::COLD);  // each forced start makes a new instance
    ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  }
  EXPECT_EQ(idle_instances(), 1u) << "an idle instance beyond the concurrency could never be used";
  EXPECT_EQ(invoke("single").start_kind(), v1::WARM);
}

}  // namespace
}  // namespace stoke
