// Helpers for tests that run real binaries: run a command and capture its
// output, find the built binaries, temp dirs, a host loopback listener.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace stoke::test {

struct RunResult {
  // The exit code, or 128+signal when the child was killed by a signal
  // (137 after a timeout kill). -1 if the command could not be started.
  int exit_code = -1;
  std::string out;  // everything the command wrote on stdout
  std::string err;  // everything the command wrote on stderr
  bool timed_out = false;  // killed by run_command after timeout_ms
  long wall_ms = 0;        // spawn to exit
};

// Runs argv (argv[0] is a path, or a name searched in PATH) with the caller's
// environment, no shell, feeding stdin_data on stdin and capturing stdout and
// stderr. The child runs in its own process group; after timeout_ms the
// group and the child get SIGKILL.
RunResult run_command(const std::vector<std::string>& argv, std::string stdin_data = "",
                      int timeout_ms = 60000);

// STOKE_BIN_DIR "/stoke" and STOKE_BIN_DIR "/stoke-probe".
std::string stoke_bin();
std::string probe_bin();

bool is_executable(const std::string& path);

// Why a priv test that runs `stoke run` cannot run here ("" when it can):
// not root, or the stoke binary is not built.
std::string priv_skip_reason();

// {stoke, "run", options..., "--", command...}
std::vector<std::string> stoke_run_argv(const std::vector<std::string>& options,
                                        const std::vector<std::string>& command);

// The last line of `text` that starts with '{', parsed. Throws
// nlohmann::json::exception (or std::runtime_error when there is none).
nlohmann::json parse_last_json_line(const std::string& text);

// The whole file; empty if it cannot be read.
std::string read_file(const std::string& path);

// A fresh directory under /tmp, removed recursively on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A TCP socket listening on 127.0.0.1 at a kernel-chosen port of the host's
// network namespace. Connections are never accepted, only queued.
class LoopbackListener {
 public:
  LoopbackListener();
  ~LoopbackListener();
  LoopbackListener(const LoopbackListener&) = delete;
  LoopbackListener& operator=(const LoopbackListener&) = delete;

  int port() const { return port_; }
  bool ok() const { return fd_ >= 0 && port_ > 0; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace stoke::test
