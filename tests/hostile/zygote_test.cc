// A function zygote runs the tenant's import-time code, so its answers are
// the tenant's: a function whose import replaces the zygote's fork gets no
// zygote start at all. Each activation still ends with a recorded status (a
// cold start), no worker of the agent blocks, the zygote is retired, and
// another tenant's warm latency holds throughout.
#include <chrono>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/hostile/bystander.h"
#include "tests/util/sanitizers.h"

namespace stoke {
namespace {

using json = nlohmann::json;

// What the serving process reports of itself: the fields a real instance
// has set before any Python runs in it.
constexpr const char* kReportSelf = R"(
def main(args):
    st = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        st[key] = value.strip()
    return {k: st.get(k, "") for k in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp", "NSpid")}
)";

// Import-time code: the zygote answers every fork with the read end of a pipe
// whose write end it keeps (a wait on it never ends).
constexpr const char* kAnswersWithAPipe = R"(
import __main__, os
_kept = []
def _fork(self, child_fds, cgroup_fds, seccomp):
    r, w = os.pipe()
    _kept.append(w)
    return 4242, r
if hasattr(__main__, "Zygote"):  # only in a function zygote
    __main__.Zygote.fork = _fork
)";

// Import-time code: forks are plain os.fork()s that join the instance's cgroup
// (so the limits look applied) but skip everything else: same pid namespace,
// the zygote's capabilities, no default seccomp filter.
constexpr const char* kSkipsTheIsolation = R"(
import __main__, os
def _fork(self, child_fds, cgroup_fds, seccomp):
    pid = os.fork()
    if pid == 0:
        staged = [os.dup(fd) for fd in child_fds]
        for i, fd in enumerate(staged):
            os.dup2(fd, i)
        for fd in cgroup_fds:
            os.write(fd, b"0")
        os.closerange(4, 65536)
        return 0, -1
    self.children.add(pid)
    return pid, os.pidfd_open(pid)
if hasattr(__main__, "Zygote"):
    __main__.Zygote.fork = _fork
)";

// Import-time code: the zygote never reaps what it forks, so an instance that
// ended stays a zombie, its exit status unknown to the agent.
constexpr const char* kNeverReaps = R"(
import __main__, os
if hasattr(__main__, "Zygote"):
    __main__.Zygote.reap = lambda self: None
def main(args):
    if args.get("die"):
        os._exit(3)  # no answer: the instance is torn down, not parked
    return {}
)";

class HostileZygote : public test::AgentTest {
 protected:
  std::string extra_config() override { return "pools { python: 0 node: 0 }\ncheckpoints: false\n"; }

  void create(const std::string& name, const std::string& source) {
    std::string path = dir_.file(name + ".py");
    std::ofstream(path) << source;
    auto c = send(test::create_request(name, v1::PYTHON, path, "main.py", 0, /*timeout_ms=*/3000));
    ASSERT_FALSE(c.has_error() && c.error().code() != v1::Error::OK) << c.error().message();
  }

  bool has_zygote(const std::string& function) {
    v1::Status st = status();
    for (const auto& z : st.zygotes())
      if (z.function() == function) return true;
    return false;
  }

  // Several zygote-forced calls of a function whose import subverts the
  // zygote: each is served by a real sandbox (cold), the zygote is gone, the
  // agent answers, a normal function still works, the bystander's p99 holds.
  void expect_subverted_zygote_never_serves(const std::string& name, const std::string& attack) {
    test::Bystander bystander(*agent_);
    auto reference = bystander.measure();
    create(name, attack + kReportSelf);
    bystander.start();
    auto first = invoke_with(name);
    EXPECT_EQ(first.status(), v1::SUCCESS) << first.result_json();
    for (int i = 0; i < 6; ++i) {
      auto a = invoke_with(name, "{}", v1::ZYGOTE);
      ASSERT_FALSE(a.activation_id().empty());
      EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
      EXPECT_NE(a.start_kind(), v1::ZYGOTE) << "a fork the zygote's tenant code made served an activation";
      if (a.status() != v1::SUCCESS) continue;
      json self = json::parse(a.result_json());
      EXPECT_EQ(self["CapEff"], "0000000000000000") << self.dump();
      EXPECT_EQ(self["CapBnd"], "0000000000000000") << self.dump();
      EXPECT_EQ(self["NoNewPrivs"], "1") << self.dump();
      EXPECT_EQ(self["Seccomp"], "2") << self.dump();
    }
    auto during = bystander.stop();
    test::Bystander::expect_kept_p99(reference, during);
    EXPECT_TRUE(agent_->running());
    EXPECT_FALSE(has_zygote(name)) << "the subverted zygote is still serving";
    EXPECT_NE(agent_->log_text().find("failed the agent's checks"), std::string::npos) << agent_->log_text();

    create(name + "-normal", kReportSelf);
    auto normal = invoke_with(name + "-normal");
    EXPECT_EQ(normal.status(), v1::SUCCESS) << normal.result_json();
  }
};

TEST_F(HostileZygote, ForkAnsweredWithAPipeIsRefusedAndNoWorkerBlocks) {
  expect_subverted_zygote_never_serves("pipe", kAnswersWithAPipe);
}

TEST_F(HostileZygote, ForkThatSkipsItsIsolationIsRefusedAndStartsCold) {
  expect_subverted_zygote_never_serves("skipper", kSkipsTheIsolation);
}

// Teardown of an instance the agent killed does not wait for its zygote to
// reap it (it used to poll up to 1 s for the exit status, per activation,
// holding a worker).
TEST_F(HostileZygote, ZygoteThatNeverReapsDoesNotHoldTeardowns) {
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure();
  create("hoarder", kNeverReaps);
  auto first = invoke_with("hoarder");
  ASSERT_EQ(first.status(), v1::SUCCESS) << first.result_json();
  bystander.start();
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto a = invoke_with("hoarder", R"({"die": true})", v1::ZYGOTE);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(a.start_kind(), v1::ZYGOTE);
    EXPECT_EQ(a.status(), v1::DEVELOPER_ERROR) << a.result_json();
    if (!test::kUnderSanitizer) {  // an instrumented agent is several times slower
      EXPECT_LT(ms, 800.0) << "call " << i << " waited for its zygote to reap the instance";
    }
  }
  auto during = bystander.stop();
  test::Bystander::expect_kept_p99(reference, during);
  EXPECT_TRUE(agent_->running());
}

}  // namespace
}  // namespace stoke
