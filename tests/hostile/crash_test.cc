// A function that crashes its own runtime: the activation is recorded with a
// clear status and the agent and its other tenants do not notice.
#include <fstream>

#include <gtest/gtest.h>

#include "tests/hostile/bystander.h"

namespace stoke {
namespace {

class Crash : public test::AgentTest {
 protected:
  std::string extra_config() override { return "zygotes { enabled: false }\ncheckpoints: false\n"; }
};

TEST_F(Crash, RuntimeKilledBySegfaultIsRecordedAndBystanderKeepsItsLatency) {
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  std::string path = dir_.file("segv.py");
  std::ofstream(path) << "import ctypes\ndef main(args):\n    ctypes.string_at(0)\n";
  auto created = send(test::create_request("segv", v1::PYTHON, path, "main.py"));
  ASSERT_FALSE(created.has_error() && created.error().code() != v1::Error::OK) << created.error().message();

  bystander.start();
  for (int i = 0; i < 5; ++i) {
    auto a = invoke_with("segv");
    EXPECT_EQ(a.status(), v1::DEVELOPER_ERROR) << a.result_json();
    EXPECT_FALSE(a.activation_id().empty());
  }
  auto during = bystander.stop();
  test::Bystander::expect_kept_p99(reference, during);
  EXPECT_TRUE(agent_->running());
}

}  // namespace
}  // namespace stoke
