// Admission under the node's memory budget: platform-owned memory (idle
// instances, prewarmed runtimes, instances forked ahead, zygotes) yields to
// an activation, then an activation waits (bounded), then it is refused.
#include <functional>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;

constexpr const char* kSleepy = R"(
import time
def main(args):
    time.sleep(args.get("sleep", 0))
    return {"ok": True}
)";

// Answers, or dies without answering when asked to.
constexpr const char* kDiesOnDemand = R"(
import os
def main(args):
    if args.get("die"):
        os._exit(3)
    return {"ok": True}
)";

class Admission : public test::AgentTest {
 protected:
  // Room for one 128 MiB instance, not two.
  std::string extra_config() override {
    // No prewarmed instances: they would hold part of this small budget.
    return "node_memory_budget_bytes: 209715200\ndefault_memory_bytes: 67108864\nadmission_wait_ms: " +
           std::to_string(wait_ms()) + "\npools { python: 0 node: 0 }\nzygotes { enabled: false }\ncheckpoints: false\n";
  }
  virtual int wait_ms() { return 5000; }

  v1::Response send(const v1::Request& r) {
    auto c = agent_->connect().call(r);
    EXPECT_TRUE(c.ok());
    return c.ok() ? c.value() : v1::Response{};
  }
  void create(const std::string& name, uint64_t memory, const char* code = kSleepy) {
    std::string path = dir_.file(name + ".py");
    std::ofstream(path) << code;
    auto c = send(test::create_request(name, v1::PYTHON, path, "main.py", memory));
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
  v1::Response invoke(const std::string& name, const json& params = json::object()) {
    return send(test::invoke_request(name, params.dump()));
  }
  v1::Status status() {
    v1::Request r;
    r.mutable_get_status();
    return send(r).status();
  }
};

TEST_F(Admission, IdleInstancesAreEvictedLeastRecentlyUsedFirst) {
  create("a", 128 << 20);
  create("b", 128 << 20);
  ASSERT_EQ(invoke("a").activation().status(), v1::SUCCESS);
  EXPECT_EQ(status().reserved_memory_bytes(), 128u << 20) << "a's idle instance stays reserved";
  auto b = invoke("b");
  ASSERT_EQ(b.activation().status(), v1::SUCCESS) << b.activation().result_json();
  EXPECT_EQ(b.activation().start_kind(), v1::COLD);
  EXPECT_EQ(status().pools().at("warm_idle"), 1u) << "a was evicted to make room for b";
  EXPECT_EQ(invoke("a").activation().start_kind(), v1::COLD);
  EXPECT_LE(status().reserved_memory_bytes(), 200u << 20);
}

TEST_F(Admission, AWarmInstanceThatDiesGivesItsMemoryBack) {
  create("dies", 128 << 20, kDiesOnDemand);
  ASSERT_EQ(invoke("dies").activation().status(), v1::SUCCESS);
  EXPECT_EQ(status().reserved_memory_bytes(), 128u << 20) << "its idle instance";
  auto died = invoke("dies", json{{"die", true}});
  ASSERT_TRUE(died.has_activation());
  EXPECT_EQ(died.activation().start_kind(), v1::WARM);
  EXPECT_NE(died.activation().status(), v1::SUCCESS);
  EXPECT_EQ(status().reserved_memory_bytes(), 0u) << "the dead instance's memory came back";
  // Were it still counted, this one would find no room (200 MiB budget) and be refused.
  auto next = invoke("dies");
  ASSERT_TRUE(next.has_activation()) << (next.has_error() ? next.error().message() : "");
  EXPECT_EQ(next.activation().status(), v1::SUCCESS) << next.activation().result_json();
}

TEST_F(Admission, ActivationWaitsForMemoryThenRuns) {
  create("hog", 128 << 20);
  create("next", 128 << 20);
  auto client = agent_->connect();
  auto first = client.send(test::invoke_request("hog", json{{"sleep", 1}}.dump()));
  ASSERT_TRUE(first.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto second = invoke("next");
  ASSERT_TRUE(second.has_activation()) << (second.has_error() ? second.error().message() : "");
  EXPECT_EQ(second.activation().status(), v1::SUCCESS);
  EXPECT_GT(second.activation().wait_ms(), 300) << "it waited for hog's memory";
  auto r1 = client.wait_for(first.value());
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(r1->activation().status(), v1::SUCCESS);
}

TEST_F(Admission, FunctionBiggerThanTheBudgetIsRefusedAtOnce) {
  create("huge", 256 << 20);
  auto r = invoke("huge");
  ASSERT_TRUE(r.has_error());
  EXPECT_EQ(r.error().code(), v1::Error::RESOURCE_EXHAUSTED);
  EXPECT_NE(r.error().message().find("budget"), std::string::npos) << r.error().message();
  // Recorded, not lost.
  v1::Request list;
  list.mutable_list_activations()->set_function("huge");
  auto l = send(list);
  ASSERT_EQ(l.activation_list().activations_size(), 1);
  EXPECT_EQ(l.activation_list().activations(0).status(), v1::INTERNAL_ERROR);
}

TEST_F(Admission, IdleTimeIsCountedAsPlatformOverhead) {
  create("idler", 128 << 20);
  ASSERT_EQ(invoke("idler").activation().status(), v1::SUCCESS);
  double before = status().idle_gb_seconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  double after = status().idle_gb_seconds();
  // 128 MiB idle for ~0.4 s = ~0.05 GB-s.
  EXPECT_GT(after - before, 0.02);
  EXPECT_LT(after - before, 0.5);
}

class AdmissionShortWait : public Admission {
  int wait_ms() override { return 300; }
};

TEST_F(AdmissionShortWait, ActivationIsRefusedWhenNoMemoryFreesInTime) {
  create("hog", 128 << 20);
  create("next", 128 << 20);
  auto client = agent_->connect();
  auto first = client.send(test::invoke_request("hog", json{{"sleep", 2}}.dump()));
  ASSERT_TRUE(first.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto second = invoke("next");
  ASSERT_TRUE(second.has_error());
  EXPECT_EQ(second.error().code(), v1::Error::RESOURCE_EXHAUSTED);
  EXPECT_NE(second.error().message().find("300 ms"), std::string::npos) << second.error().message();
  auto r1 = client.wait_for(first.value());
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(r1->activation().status(), v1::SUCCESS);
}

// A small node whose pools hold most of the budget: 320 MiB, two 64 MiB
// prewarmed runtimes, a function zygote and its instances.
class AdmissionOnASmallNode : public Admission {
 protected:
  std::string extra_config() override {
    return "node_memory_budget_bytes: 335544320\ndefault_memory_bytes: 67108864\nadmission_wait_ms: 5000\n"
           "pools { python: 2 node: 0 }\nzygotes { enabled: true }\ncheckpoints: false\n";
  }
  bool wait_until(const std::function<bool(const v1::Status&)>& done) {
    for (int i = 0; i < 150; ++i) {
      if (done(status())) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
};

TEST_F(AdmissionOnASmallNode, PoolsYieldTheirMemoryBeforeAnActivationWaitsOrIsRefused) {
  create("small", 64 << 20);
  create("big", 256 << 20);
  ASSERT_EQ(invoke("small").activation().status(), v1::SUCCESS);
  ASSERT_TRUE(wait_until([](const v1::Status& st) {
    bool zygote = false;
    for (const auto& z : st.zygotes()) zygote |= z.function() == "small";
    return zygote && st.pools().at("prewarm_python") == 2;
  })) << "no zygote for small or no prewarmed runtimes\n" << agent_->log_text();
  // Prewarmed 128 + small's zygote 64 + its idle instance 64: 256 of 320 MiB.
  ASSERT_GE(status().reserved_memory_bytes(), 256u << 20);

  auto big = invoke("big");
  ASSERT_TRUE(big.has_activation()) << (big.has_error() ? big.error().message() : "") << "\n" << agent_->log_text();
  EXPECT_EQ(big.activation().status(), v1::SUCCESS) << big.activation().result_json();
  EXPECT_LT(big.activation().wait_ms(), 2000) << "it waited for memory the pools held";
  // The platform's instances gave way; small still answers, and gets its
  // pools back once memory allows.
  EXPECT_EQ(invoke("small").activation().status(), v1::SUCCESS);
  EXPECT_LE(status().reserved_memory_bytes(), 320u << 20);
}

}  // namespace
}  // namespace stoke
