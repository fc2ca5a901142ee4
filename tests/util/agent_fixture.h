// A real stoked for end-to-end tests: started from build/bin with a private
// state dir and socket, stopped (or killed) by pid, never by name.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "api/wire/client.h"
#include "proto/stoke/v1/api.pb.h"
#include <gtest/gtest.h>

#include "tests/util/run_util.h"

namespace stoke::test {

class AgentProcess {
 public:
  // Starts stoked on `state_dir` with a socket inside it; waits until it
  // answers a status call (or fails the test).
  explicit AgentProcess(std::string state_dir, std::string extra_config = "");
  ~AgentProcess();  // SIGTERM, wait; SIGKILL if it does not stop in 15 s

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }
  const std::string& log() const { return log_path_; }
  // The agent's stderr so far.
  std::string log_text() const;

  // SIGTERM and wait; returns the exit status (or -1).
  int stop();
  // SIGKILL and reap: the crash case.
  void kill9();
  // Start again on the same state dir.
  void restart();

  wire::Client connect() const;

 private:
  void launch();
  std::string state_dir_, socket_, config_path_, log_path_, extra_config_;
  pid_t pid_ = -1;
};

std::string stoked_bin();

// Requests, built the way the CLI builds them.
v1::Request create_request(const std::string& name, v1::Runtime runtime, const std::string& code_file,
                           const std::string& file_name, uint64_t memory = 0, uint64_t timeout_ms = 0,
                           uint32_t concurrency = 0);
v1::Request invoke_request(const std::string& name, const std::string& params_json = "{}");

// The cgroup directories of one agent's sandboxes and zygotes (named
// sb-<agent pid>-<n>; tests run side by side, so nothing global like a
// process name would do), one per line, and the processes inside them.
std::string sandbox_cgroups_of(pid_t agent);
std::vector<int> sandbox_processes_of(pid_t agent);

// Writes an executable file (0755) and returns its path.
std::string write_executable(const std::string& path, const std::string& content);

}  // namespace stoke::test

namespace stoke::test {

// Base of the tests that need a running agent: skips (with the reason) when
// not root or stoked is not built, else starts one on a private temp dir.
class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override;
  // Every test that leaves its agent up ends with the agent's memory ledger
  // consistent: no accounting error, the holders adding up to the total.
  void TearDown() override;
  // Extra config text appended to the agent's config file.
  virtual std::string extra_config() { return ""; }

  // One call on a fresh connection (a failed call fails the test).
  v1::Response send(const v1::Request& request);
  // A sync invocation with `start` forced (unspecified: the agent chooses).
  v1::Activation invoke_with(const std::string& name, const std::string& params_json = "{}",
                             v1::StartKind start = v1::START_KIND_UNSPECIFIED);
  v1::Status status();
  // The function's live zygote (pid), waiting up to 15 s for it; -1 if none.
  // not_pid: a zygote to look past (the one a test just killed).
  int zygote_pid(const std::string& function, int not_pid = -1);
  // Registers `name` (python) from a directory holding stoke-probe and a
  // __main__.py with `source`, through the CLI with `extra_args` appended.
  void create_probe_bundle(const std::string& name, const std::string& source,
                           const std::vector<std::string>& extra_args = {});

  TempDir dir_;
  std::unique_ptr<AgentProcess> agent_;
};

}  // namespace stoke::test
