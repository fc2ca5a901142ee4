// Prewarmed ("stem cell") instances: runtime started ahead, code given by the
// first activation that takes one, and the pool refilled behind it.
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

using json = nlohmann::json;

class Prewarm : public test::AgentTest {
 protected:
  std::string extra_config() override { return "pools { python: 1 node: 1 }\n"; }

  v1::Response send(const v1::Request& r) {
    auto c = agent_->connect().call(r);
    EXPECT_TRUE(c.ok());
    return c.ok() ? c.value() : v1::Response{};
  }
  void create(const std::string& name, v1::Runtime runtime, const std::string& file, const std::string& source,
              bool update = false) {
    std::string path = dir_.file(name + std::to_string(++n_) + "-" + file);
    std::ofstream(path) << source;
    v1::Request r = test::create_request(name, runtime, path, file);
    if (update) {
      v1::Request u;
      u.mutable_update_function()->set_name(name);
      *u.mutable_update_function()->mutable_config() = r.create_function().config();
      r = u;
    }
    auto c = send(r);
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
  v1::Activation invoke(const std::string& name, const json& params = json::object()) {
    v1::Request r = test::invoke_request(name, params.dump());
    auto c = send(r);
    EXPECT_TRUE(c.has_activation()) << (c.has_error() ? c.error().message() : "");
    return c.activation();
  }
  std::map<std::string, uint32_t> pools() {
    v1::Request r;
    r.mutable_get_status();
    auto st = send(r).status();
    return {st.pools().begin(), st.pools().end()};
  }
  // The pool fills in the background after the agent starts.
  void wait_for_pools(uint32_t python, uint32_t node) {
    for (int i = 0; i < 200; ++i) {
      auto p = pools();
      if (p["prewarm_python"] == python && p["prewarm_node"] == node) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    FAIL() << "prewarm pools did not reach python=" << python << " node=" << node << "\n" << agent_->log_text();
  }
  int n_ = 0;
};

TEST_F(Prewarm, FirstCallTakesAPrewarmedInstanceAndThePoolIsRefilled) {
  ASSERT_NO_FATAL_FAILURE(wait_for_pools(1, 1));
  create("py", v1::PYTHON, "main.py",
         "import os\nprint('loaded')\ndef main(args):\n    return {'n': args['n'] + 1, 'cwd': os.getcwd()}\n");
  auto a = invoke("py", {{"n", 1}});
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json() << agent_->log_text();
  EXPECT_EQ(a.start_kind(), v1::PREWARM);
  EXPECT_GT(a.init_ms(), 0);
  json r = json::parse(a.result_json());
  EXPECT_EQ(r["n"], 2);
  std::string logs;
  for (const auto& l : a.logs()) logs += l + "\n";
  EXPECT_NE(logs.find("loaded"), std::string::npos) << "import-time output is the first activation's: " << logs;
  ASSERT_NO_FATAL_FAILURE(wait_for_pools(1, 1));  // refilled
  EXPECT_EQ(invoke("py", {{"n", 5}}).start_kind(), v1::WARM) << "then the instance stays warm";
}

TEST_F(Prewarm, NodeAndPackagesWorkThroughThePoolToo) {
  ASSERT_NO_FATAL_FAILURE(wait_for_pools(1, 1));
  std::string pkg = dir_.file("jspkg");
  std::filesystem::create_directories(pkg + "/lib");
  std::ofstream(pkg + "/package.json") << R"({"main": "lib/entry.js"})";
  std::ofstream(pkg + "/lib/helper.js") << "exports.twice = (x) => 2 * x;\n";
  std::ofstream(pkg + "/lib/entry.js") << "const h = require('./helper');\nexports.main = (p) => ({ n: h.twice(p.n) });\n";
  auto made = test::run_command({test::stoke_bin(), "--socket", agent_->socket(), "fn", "create", "jspkg", "--runtime",
                                 "node", "--code", pkg});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  auto a = invoke("jspkg", {{"n", 21}});
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_EQ(a.start_kind(), v1::PREWARM);
  EXPECT_EQ(json::parse(a.result_json())["n"], 42);
}

TEST_F(Prewarm, ErrorsOfInjectedCodeAreTheDevelopersAsWhenCold) {
  ASSERT_NO_FATAL_FAILURE(wait_for_pools(1, 1));
  create("broken", v1::PYTHON, "main.py", "def main(args:\n    pass\n");
  auto a = invoke("broken");
  EXPECT_EQ(a.start_kind(), v1::PREWARM);
  EXPECT_EQ(a.status(), v1::DEVELOPER_ERROR) << a.result_json();
}

TEST_F(Prewarm, UpdateNeverLeavesAnInstanceServingOldCode) {
  ASSERT_NO_FATAL_FAILURE(wait_for_pools(1, 1));
  create("v", v1::PYTHON, "main.py", "def main(args):\n    return {'v': 1}\n");
  EXPECT_EQ(json::parse(invoke("v").result_json())["v"], 1);
  create("v", v1::PYTHON, "main.py", "def main(args):\n    return {'v': 2}\n", /*update=*/true);
  ASSERT_NO_FATAL_FAILURE(wait_for_pools(1, 1));
  auto a = invoke("v");
  EXPECT_EQ(json::parse(a.result_json())["v"], 2);
  EXPECT_NE(a.start_kind(), v1::WARM);
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

TEST_F(Prewarm, StoppingWhileStemCellsStartLeavesNoCgroup) {
  // The agent has just answered its first call: its stem cells (and the
  // python runtime zygote) are still starting. A stop now must end them too.
  int pid = agent_->pid();
  int status = agent_->stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto left = test::run_command({"/usr/bin/find", "/sys/fs/cgroup", "-maxdepth", "7", "-type", "d", "-name",
                                 "sb-" + std::to_string(pid) + "-*"});
  EXPECT_TRUE(left.out.empty()) << "sandboxes still starting at the stop leaked: " << left.out;
}

}  // namespace
}  // namespace stoke
