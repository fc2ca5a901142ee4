// Faults with a promised outcome: the runtime killed from outside in the
// middle of a request, and the state dir out of space. Each: the activation
// ends with a recorded status (or the client gets a clear error), nothing
// already acknowledged is lost, the agent stays up and recovers by itself.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/util/agent_fixture.h"

extern char** environ;

namespace stoke {
namespace {

constexpr const char* kSleeper = R"(import time
def main(args):
    if args.get("sleep"):
        time.sleep(args["sleep"])
    return {"ok": True}
)";

using test::sandbox_processes_of;

class Faults : public test::AgentTest {
 protected:
  std::string extra_config() override {
    return "pools { python: 0 node: 0 }\nzygotes { enabled: false }\ncheckpoints: false\n";
  }
};

TEST_F(Faults, RuntimeKilledMidRequestIsRecordedAndTheFunctionServesOn) {
  std::string path = dir_.file("main.py");
  std::ofstream(path) << kSleeper;
  auto created = send(test::create_request("sleeper", v1::PYTHON, path, "main.py", 64 << 20, 30000));
  ASSERT_FALSE(created.has_error() && created.error().code() != v1::Error::OK);
  auto c = agent_->connect();
  v1::Request inv = test::invoke_request("sleeper", "{\"sleep\": 20}");
  auto id = c.send(inv);
  ASSERT_TRUE(id.ok());
  std::vector<int> pids;
  for (int i = 0; i < 300 && pids.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pids = sandbox_processes_of(agent_->pid());
  }
  ASSERT_FALSE(pids.empty()) << agent_->log_text();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the request is in
  for (int pid : pids) ::kill(pid, SIGKILL);  // the agent's own sandboxes, by pid
  auto r = c.wait_for(id.value());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r.value().has_activation());
  const auto& a = r.value().activation();
  EXPECT_NE(a.status(), v1::SUCCESS);
  EXPECT_NE(a.result_json().find("error"), std::string::npos) << a.result_json();
  // Recorded as answered.
  v1::Request get;
  get.mutable_get_activation()->set_activation_id(a.activation_id());
  EXPECT_EQ(send(get).activation().status(), a.status());
  EXPECT_EQ(invoke_with("sleeper").status(), v1::SUCCESS);
}

// stoked in a private mount namespace whose state dir is a small tmpfs: the
// test fills that tmpfs (through /proc/<agent>/root) and frees it again.
class OutOfSpace : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = test::priv_skip_reason();
    if (!why.empty()) GTEST_SKIP() << why;
    if (!std::filesystem::exists("/usr/bin/unshare")) GTEST_SKIP() << "unshare (util-linux) missing";
    state_ = dir_.file("state");
    std::filesystem::create_directories(state_);
    socket_ = dir_.file("stoke.sock");
    std::string conf = dir_.file("stoked.conf");
    std::ofstream(conf) << "state_dir: \"" << state_ << "\"\nsocket_path: \"" << socket_
                        << "\"\nlog_level: \"debug\"\npools { python: 0 node: 0 }\nzygotes { enabled: false }\n"
                        << "checkpoints: false\n";
    std::string log = dir_.file("stoked.log");
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd, 1);
    posix_spawn_file_actions_adddup2(&fa, fd, 2);
    std::string stoked = test::stoked_bin();
    // The tmpfs exists only in the new mount namespace (propagation private):
    // the host's mounts are not touched.
    std::vector<std::string> args = {"/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                                     "mount -t tmpfs -o size=24m,mode=0711 stoke-enospc \"$0\" && exec \"$1\" "
                                     "--config \"$2\"",
                                     state_, stoked, conf};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fd);
    for (int i = 0; i < 500; ++i) {
      if (wire::Client::connect(socket_, "test").ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "stoked did not start:\n" << test::read_file(log);
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status;
      for (int i = 0; i < 1500; ++i) {
        if (waitpid(pid_, &status, WNOHANG) == pid_) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      ::kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
  }
  wire::Client connect() {
    auto c = wire::Client::connect(socket_, "test");
    if (!c.ok()) throw std::runtime_error(c.error().message());
    return std::move(c.value());
  }
  // The state dir as the agent sees it (its mount namespace, via /proc).
  std::string in_agent(const std::string& name) {
    return "/proc/" + std::to_string(pid_) + "/root" + state_ + "/" + name;
  }

  test::TempDir dir_;
  std::string state_, socket_;
  pid_t pid_ = -1;
};

TEST_F(OutOfSpace, FullStateDirGivesClearErrorsLosesNothingAndRecoversWhenSpaceReturns) {
  auto c = connect();
  std::string path = dir_.file("main.py");
  std::ofstream(path) << kSleeper;
  auto created = c.call(test::create_request("small", v1::PYTHON, path, "main.py", 64 << 20, 10000));
  ASSERT_TRUE(created.ok() && created.value().has_function());
  auto first = c.call(test::invoke_request("small"));
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first.value().activation().status(), v1::SUCCESS);

  // Fill the tmpfs.
  std::string filler = in_agent("filler");
  {
    int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << filler;
    std::string block(1 << 16, 'x');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    EXPECT_EQ(errno, ENOSPC);
    ::close(fd);
  }
  // Whatever the agent answers now is an answer, not a crash or a hang; an
  // activation it replies with must be one it recorded.
  std::vector<std::string> replied;
  auto other = c.call(test::create_request("other", v1::PYTHON, path, "main.py"));
  ASSERT_TRUE(other.ok()) << "the connection broke on a full disk";
  for (int i = 0; i < 3; ++i) {
    auto r = c.call(test::invoke_request("small"));
    ASSERT_TRUE(r.ok()) << "the connection broke on a full disk";
    if (r.value().has_activation()) replied.push_back(r.value().activation().activation_id());
    else EXPECT_FALSE(r.value().error().message().empty());
  }
  EXPECT_EQ(waitpid(pid_, nullptr, WNOHANG), 0) << "stoked died on a full disk";

  // Space returns: everything works again, without a restart.
  ASSERT_EQ(::unlink(filler.c_str()), 0);
  auto again = c.call(test::invoke_request("small"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value().activation().status(), v1::SUCCESS);
  auto other2 = c.call(test::create_request("other2", v1::PYTHON, path, "main.py"));
  ASSERT_TRUE(other2.ok());
  EXPECT_TRUE(other2.value().has_function()) << other2.value().error().message();
  for (const auto& id : replied) {
    v1::Request get;
    get.mutable_get_activation()->set_activation_id(id);
    auto r = c.call(get);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r.value().has_activation()) << "activation " << id << " was replied to during ENOSPC and is lost";
  }
  std::printf("during ENOSPC: create %s; %zu of 3 invokes answered with an activation\n",
              other.value().has_error() ? ("refused: " + other.value().error().message()).c_str() : "accepted",
              replied.size());
}

}  // namespace
}  // namespace stoke
