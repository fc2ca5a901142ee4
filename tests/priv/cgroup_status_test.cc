// `stoke status` says which cgroup hierarchy the agent drives, with which
// controllers and where its sandboxes' groups live: v1 on this hybrid host,
// v2 in the pure-v2 VM (scripts/test-v2), both checked against the kernel.
#include <linux/magic.h>
#include <sys/statfs.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/util/agent_fixture.h"

namespace stoke {
namespace {

bool pure_v2_host() {
  struct statfs fs {};
  return ::statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

class CgroupStatus : public test::AgentTest {
 protected:
  std::string extra_config() override { return "pools { python: 0 node: 0 }\nzygotes { enabled: false }\n"; }
};

TEST_F(CgroupStatus, StatusReportsTheHostsCgroupVersionControllersAndWhereGroupsLive) {
  v1::Status st = status();
  EXPECT_EQ(st.cgroup_version(), pure_v2_host() ? "v2" : "v1");
  std::vector<std::string> controllers(st.cgroup_controllers().begin(), st.cgroup_controllers().end());
  for (const char* c : {"memory", "cpu", "pids"})
    EXPECT_NE(std::find(controllers.begin(), controllers.end(), c), controllers.end())
        << c << " missing from " << st.DebugString();
  ASSERT_GT(st.cgroup_parents_size(), 0);
  for (const auto& p : st.cgroup_parents()) {
    EXPECT_EQ(p.rfind("/sys/fs/cgroup/", 0), 0u) << p;
    // Beneath the agent's own group: on v2 that is its one line of /proc/<pid>/cgroup.
    if (pure_v2_host()) {
      std::ifstream in("/proc/" + std::to_string(agent_->pid()) + "/cgroup");
      std::string line;
      std::getline(in, line);
      ASSERT_EQ(line.rfind("0::", 0), 0u) << line;
      std::string own = line.substr(3);
      std::string own_dir = "/sys/fs/cgroup" + (own == "/" ? "" : own);
      // The agent may have moved itself into a leaf of its parent (no
      // internal processes): its group is then below the parent.
      EXPECT_TRUE(p.rfind(own_dir, 0) == 0 || own_dir.rfind(p, 0) == 0) << p << " vs " << own_dir;
    }
  }
  // And a sandbox runs with them.
  std::string path = dir_.file("f.py");
  std::ofstream(path) << "def main(args):\n    return {'ok': True}\n";
  auto c = send(test::create_request("probe", v1::PYTHON, path, "f.py"));
  ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  auto a = invoke_with("probe");
  EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json() << agent_->log_text();
}

// cgroup v2: a group given to the agent (config cgroup_root) instead of its
// own. The test makes it beneath its own group, as an administrator would
// delegate one; the agent makes stoke/ and every sandbox's group there and
// leaves nothing behind.
class CgroupRoot : public test::AgentTest {
 protected:
  void SetUp() override {
    if (!pure_v2_host()) GTEST_SKIP() << "cgroup_root is for cgroup v2 hosts (scripts/test-v2 runs this)";
    std::ifstream in("/proc/self/cgroup");
    std::string line;
    std::getline(in, line);
    std::string own = line.rfind("0::", 0) == 0 ? line.substr(3) : "/";
    given_ = "/sys/fs/cgroup" + (own == "/" ? std::string() : own) + "/given-root-" + std::to_string(::getpid());
    ASSERT_EQ(::mkdir(given_.c_str(), 0755), 0) << given_;
    test::AgentTest::SetUp();
  }
  void TearDown() override {
    test::AgentTest::TearDown();
    if (!given_.empty()) ::rmdir(given_.c_str());
  }
  std::string extra_config() override {
    return "pools { python: 0 node: 0 }\nzygotes { enabled: false }\ncgroup_root: \"" + given_ + "\"\n";
  }
  std::string given_;
};

TEST_F(CgroupRoot, SandboxesGroupsAreMadeBeneathTheGivenGroupAndRemovedAfter) {
  v1::Status st = status();
  ASSERT_EQ(st.cgroup_parents_size(), 1) << st.DebugString();
  EXPECT_EQ(st.cgroup_parents(0), given_ + "/stoke");
  std::string path = dir_.file("f.py");
  std::ofstream(path) << "def main(args):\n    return {'cgroup': open('/proc/self/cgroup').read()}\n";
  auto c = send(test::create_request("inside", v1::PYTHON, path, "f.py"));
  ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  auto a = invoke_with("inside", "{}", v1::COLD);
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json() << agent_->log_text();
  EXPECT_GT(a.usage().memory_peak_bytes(), 0u) << "accounted from the group beneath the given one";
  int status = agent_->stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  size_t left = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(given_))
    left += e.is_directory() ? 1 : 0;
  EXPECT_EQ(left, 0u) << "groups left beneath " << given_;
}

}  // namespace
}  // namespace stoke
