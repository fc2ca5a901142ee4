#include "tests/util/agent_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

extern char** environ;

namespace stoke::test {

std::string stoked_bin() { return std::string(STOKE_BIN_DIR) + "/stoked"; }

AgentProcess::AgentProcess(std::string state_dir, std::string extra_config)
    : state_dir_(std::move(state_dir)), extra_config_(std::move(extra_config)) {
  socket_ = state_dir_ + "/stoke.sock";
  config_path_ = state_dir_ + "/stoked.conf";
  log_path_ = state_dir_ + "/stoked.log";
  std::ofstream(config_path_) << "state_dir: \"" << state_dir_ << "/state\"\n"
                              << "socket_path: \"" << socket_ << "\"\n"
                              << "log_level: \"debug\"\n"
                              << extra_config_;
  launch();
}

AgentProcess::~AgentProcess() {
  if (pid_ <= 0) return;
  // A clean stop exits 0. Anything else (a crash at shutdown, a sanitizer's
  // report, which ends an instrumented agent) fails the test that ran it.
  int status = stop();
  if (status != -1 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    ADD_FAILURE() << "stoked did not exit cleanly on SIGTERM ("
                  << (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                        : "signal " + std::to_string(WTERMSIG(status)))
                  << "); its log:\n" << log_text();
}

void AgentProcess::launch() {
  int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, log, 2);
  posix_spawn_file_actions_adddup2(&fa, log, 1);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  std::string bin = stoked_bin();
  std::vector<char*> argv = {bin.data(), const_cast<char*>("--config"), config_path_.data(), nullptr};
  pid_t pid;
  int rc = posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(log);
  ASSERT_EQ(rc, 0) << "cannot start " << bin;
  pid_ = pid;
  // Ready when a client completes the handshake.
  for (int i = 0; i < 500; ++i) {
    auto c = wire::Client::connect(socket_, "test");
    if (c.ok()) return;
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      FAIL() << "stoked exited during start:\n" << log_text();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL() << "stoked did not answer within 5 s:\n" << log_text();
}

std::string AgentProcess::log_text() const {
  std::ifstream f(log_path_);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int AgentProcess::stop() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 1500; ++i) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "stoked did not stop within 15 s of SIGTERM; killing it";
  kill9();
  return -1;
}

void AgentProcess::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void AgentProcess::restart() {
  if (pid_ > 0) stop();
  launch();
}

wire::Client AgentProcess::connect() const {
  auto c = wire::Client::connect(socket_, "test");
  if (!c.ok()) throw std::runtime_error("connect: " + c.error().message());
  return std::move(c.value());
}

v1::Request create_request(const std::string& name, v1::Runtime runtime, const std::string& code_file,
                           const std::string& file_name, uint64_t memory, uint64_t timeout_ms, uint32_t concurrency) {
  v1::Request r;
  auto* c = r.mutable_create_function();
  c->set_name(name);
  auto* cfg = c->mutable_config();
  cfg->set_runtime(runtime);
  cfg->set_code(read_file(code_file));
  cfg->set_code_format(v1::SINGLE_FILE);
  cfg->set_code_file_name(file_name);
  cfg->set_memory_bytes(memory);
  cfg->set_timeout_ms(timeout_ms);
  cfg->set_concurrency(concurrency);
  return r;
}

v1::Request invoke_request(const std::string& name, const std::string& params_json) {
  v1::Request r;
  r.mutable_invoke()->set_function(name);
  r.mutable_invoke()->set_params_json(params_json);
  return r;
}

std::string sandbox_cgroups_of(pid_t agent) {
  return run_command({"/usr/bin/find", "/sys/fs/cgroup", "-maxdepth", "7", "-type", "d", "-name",
                      "sb-" + std::to_string(agent) + "-*"})
      .out;
}

std::vector<int> sandbox_processes_of(pid_t agent) {
  std::vector<int> pids;
  std::istringstream in(sandbox_cgroups_of(agent));
  for (std::string dir; std::getline(in, dir);) {
    std::istringstream procs(read_file(dir + "/cgroup.procs"));
    for (int pid; procs >> pid;) pids.push_back(pid);
  }
  return pids;
}

std::string write_executable(const std::string& path, const std::string& content) {
  std::ofstream(path) << content;
  chmod(path.c_str(), 0755);
  return path;
}

}  // namespace stoke::test

namespace stoke::test {

void AgentTest::SetUp() {
  std::string why = priv_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  if (!is_executable(stoked_bin())) GTEST_SKIP() << "stoked is not built";
  agent_ = std::make_unique<AgentProcess>(dir_.path(), extra_config());
  ASSERT_TRUE(agent_->running());
}

void AgentTest::TearDown() {
  if (!agent_ || !agent_->running()) return;
  v1::Request r;
  r.mutable_get_status();
  Result<v1::Response> c = Error{"connect", 0, ""};
  try {
    c = agent_->connect().call(r);
  } catch (const std::exception&) {
    return;  // the test took the agent's socket away
  }
  if (!c.ok() || !c->has_status()) return;
  const v1::Status& st = c->status();
  EXPECT_EQ(st.memory_accounting_errors(), 0u) << "the agent's memory ledger went wrong; its log:\n"
                                               << agent_->log_text();
  uint64_t sum = 0;
  for (const auto& [holder, bytes] : st.reserved_memory_by_holder()) sum += bytes;
  EXPECT_EQ(sum, st.reserved_memory_bytes()) << "the holders' memory adds up to the total reserved";
}

v1::Response AgentTest::send(const v1::Request& request) {
  auto c = agent_->connect().call(request);
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message());
  return c.ok() ? c.value() : v1::Response{};
}

v1::Activation AgentTest::invoke_with(const std::string& name, const std::string& params_json, v1::StartKind start) {
  v1::Request r = invoke_request(name, params_json);
  r.mutable_invoke()->set_start(start);
  auto c = send(r);
  EXPECT_TRUE(c.has_activation()) << (c.has_error() ? c.error().message() : "");
  return c.activation();
}

v1::Status AgentTest::status() {
  v1::Request r;
  r.mutable_get_status();
  return send(r).status();
}

int AgentTest::zygote_pid(const std::string& function, int not_pid) {
  for (int i = 0; i < 300; ++i) {
    v1::Status st = status();
    for (const auto& z : st.zygotes())
      if (z.function() == function && z.pid() != not_pid) return z.pid();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

void AgentTest::create_probe_bundle(const std::string& name, const std::string& source,
                                    const std::vector<std::string>& extra_args) {
  std::string pkg = dir_.file(name);
  std::filesystem::create_directories(pkg);
  std::filesystem::copy_file(probe_bin(), pkg + "/stoke-probe");
  std::ofstream(pkg + "/__main__.py") << source;
  std::vector<std::string> argv = {stoke_bin(), "--socket", agent_->socket(), "fn", "create", name, "--runtime",
                                   "python", "--code", pkg};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  auto r = run_command(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace stoke::test
