// A function's environment (its secrets) never passes through the runtime
// zygote (security finding #5, first half): the runtime zygote's memory,
// which every function zygote of every tenant starts from, holds no
// function's env, and so neither does another function's zygote. The test
// reads the processes' memory from the host (/proc/<pid>/mem) and looks for
// the secret's bytes.
#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

// Assembled at run time so that the test binary's own image does not matter.
std::string secret() { return std::string("tenant-a-") + "secret-" + std::to_string(0x5eed1) + "-value"; }

// Whether `needle` occurs in any readable mapping of process `pid`.
bool memory_contains(int pid, const std::string& needle) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  int mem = ::open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(mem, 0) << "open /proc/" << pid << "/mem";
  if (mem < 0) return false;
  std::string line;
  bool found = false;
  while (!found && std::getline(maps, line)) {
    unsigned long start = 0, end = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &start, &end, perms) != 3 || perms[0] != 'r') continue;
    if (line.find("[vvar") != std::string::npos || line.find("[vsyscall]") != std::string::npos) continue;
    std::string data(end - start, '\0');
    ssize_t n = ::pread(mem, data.data(), data.size(), static_cast<off_t>(start));
    if (n <= 0) continue;
    data.resize(static_cast<size_t>(n));
    found = data.find(needle) != std::string::npos;
  }
  ::close(mem);
  return found;
}

class ZygoteEnv : public test::AgentTest {
 protected:
  std::string extra_config() override { return "pools { python: 0 node: 0 }\ncheckpoints: false\n"; }
  void create(const std::string& name, const std::string& env_value) {
    std::string path = dir_.file(name + ".py");
    std::ofstream(path) << "import os\nSEEN = os.environ.get('A_SECRET', '')\ndef main(args):\n    return {'seen': SEEN}\n";
    v1::Request r = test::create_request(name, v1::PYTHON, path, "main.py");
    if (!env_value.empty()) (*r.mutable_create_function()->mutable_config()->mutable_env())["A_SECRET"] = env_value;
    auto c = send(r);
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }
};

TEST_F(ZygoteEnv, AFunctionsEnvReachesItsOwnZygoteButNeitherTheRuntimeZygoteNorAnotherFunctions) {
  create("holder", secret());
  create("other", "");
  auto first = invoke_with("holder");
  ASSERT_EQ(first.status(), v1::SUCCESS) << first.result_json();
  int holder_zygote = zygote_pid("holder");
  ASSERT_GT(holder_zygote, 0) << agent_->log_text();
  // Its own zygote has it: the env arrived, and the scan can find it.
  auto forked = invoke_with("holder", "{}", v1::ZYGOTE);
  ASSERT_EQ(forked.start_kind(), v1::ZYGOTE);
  EXPECT_NE(forked.result_json().find(secret()), std::string::npos) << forked.result_json();
  EXPECT_TRUE(memory_contains(holder_zygote, secret()));
  // Right after it forked holder's zygote, before a later request reuses its heap.
  int runtime_zygote = zygote_pid("(python runtime)");
  ASSERT_GT(runtime_zygote, 0);
  EXPECT_FALSE(memory_contains(runtime_zygote, secret())) << "the runtime zygote holds holder's env";

  auto other_first = invoke_with("other");
  ASSERT_EQ(other_first.status(), v1::SUCCESS) << other_first.result_json();
  int other_zygote = zygote_pid("other");
  ASSERT_GT(other_zygote, 0);
  EXPECT_FALSE(memory_contains(runtime_zygote, secret())) << "the runtime zygote holds holder's env";
  EXPECT_FALSE(memory_contains(other_zygote, secret())) << "other's zygote holds holder's env";
}

}  // namespace
}  // namespace stoke
