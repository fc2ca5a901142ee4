#include "tests/util/run_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

extern char** environ;

namespace stoke::test {
namespace {

using Clock = std::chrono::steady_clock;

// After the child exits, how long to keep reading output that something it
// left behind may still hold open.
constexpr int kDrainAfterExitMs = 200;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

bool make_pipe(Fd& read_end, Fd& write_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return false;
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  return true;
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Reads what is available; false on EOF or a real error.
bool read_some(int fd, std::string& into) {
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
      into.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    return false;
  }
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

long ms_since(Clock::time_point t) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

}  // namespace

RunResult run_command(const std::vector<std::string>& argv, std::string stdin_data,
                      int timeout_ms) {
  RunResult result;
  if (argv.empty()) {
    result.err = "run_command: empty argv";
    return result;
  }

  Fd in_r, in_w, out_r, out_w, err_r, err_w;
  if (!make_pipe(in_r, in_w) || !make_pipe(out_r, out_w) || !make_pipe(err_r, err_w)) {
    result.err = std::string("run_command: pipe: ") + strerror(errno);
    return result;
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_r.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_w.get(), 2);

  // The child starts with default dispositions and an empty mask whatever the
  // test process did (e.g. ignoring SIGPIPE), in a process group of its own.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETPGROUP);

  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  // Writing to a child that stopped reading must not kill the test.
  signal(SIGPIPE, SIG_IGN);

  auto start = Clock::now();
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, cargv[0], &actions, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  in_r.reset();
  out_w.reset();
  err_w.reset();
  if (rc != 0) {
    result.err = "run_command: cannot start " + argv[0] + ": " + strerror(rc);
    return result;
  }

  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  set_nonblocking(out_r.get());
  set_nonblocking(err_r.get());
  set_nonblocking(in_w.get());
  size_t stdin_off = 0;
  if (stdin_data.empty()) in_w.reset();

  auto deadline = start + std::chrono::milliseconds(timeout_ms);
  bool exited = false;
  Clock::time_point exited_at{};
  for (;;) {
    if (out_r.get() < 0 && err_r.get() < 0 && (exited || pidfd.get() < 0)) break;
    if (exited && ms_since(exited_at) >= kDrainAfterExitMs) break;

    pollfd fds[4];
    int nfds = 0;
    int out_i = -1, err_i = -1, in_i = -1, pid_i = -1;
    if (out_r.get() >= 0) { out_i = nfds; fds[nfds++] = {out_r.get(), POLLIN, 0}; }
    if (err_r.get() >= 0) { err_i = nfds; fds[nfds++] = {err_r.get(), POLLIN, 0}; }
    if (in_w.get() >= 0) { in_i = nfds; fds[nfds++] = {in_w.get(), POLLOUT, 0}; }
    if (pidfd.get() >= 0 && !exited) { pid_i = nfds; fds[nfds++] = {pidfd.get(), POLLIN, 0}; }

    int wait_ms;
    if (exited) {
      wait_ms = kDrainAfterExitMs - static_cast<int>(ms_since(exited_at));
    } else {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      wait_ms = static_cast<int>(std::max<long long>(0, left.count()));
    }
    if (wait_ms <= 0 && !exited && !result.timed_out) {
      result.timed_out = true;
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      // Give the pipes a moment to reach EOF once the group is dead.
      deadline = Clock::now() + std::chrono::seconds(2);
      continue;
    }
    if (wait_ms <= 0 && result.timed_out && !exited) break;

    int n = poll(fds, static_cast<nfds_t>(nfds), std::max(wait_ms, 0));
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (out_i >= 0 && fds[out_i].revents != 0 && !read_some(out_r.get(), result.out)) out_r.reset();
    if (err_i >= 0 && fds[err_i].revents != 0 && !read_some(err_r.get(), result.err)) err_r.reset();
    if (in_i >= 0 && fds[in_i].revents != 0) {
      if (fds[in_i].revents & (POLLERR | POLLHUP)) {
        in_w.reset();
      } else {
        ssize_t w = write(in_w.get(), stdin_data.data() + stdin_off, stdin_data.size() - stdin_off);
        if (w > 0) stdin_off += static_cast<size_t>(w);
        else if (w < 0 && errno != EAGAIN && errno != EINTR) in_w.reset();
        if (stdin_off >= stdin_data.size()) in_w.reset();
      }
    }
    if (pid_i >= 0 && fds[pid_i].revents != 0) {
      exited = true;
      exited_at = Clock::now();
      in_w.reset();
    }
  }
  // Whatever is still buffered was written before we stopped waiting.
  if (out_r.get() >= 0) read_some(out_r.get(), result.out);
  if (err_r.get() >= 0) read_some(err_r.get(), result.err);

  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.wall_ms = ms_since(start);
  result.exit_code = decode_status(status);
  return result;
}

std::string stoke_bin() { return STOKE_BIN_DIR "/stoke"; }
std::string probe_bin() { return STOKE_BIN_DIR "/stoke-probe"; }

bool is_executable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

std::string priv_skip_reason() {
  if (geteuid() != 0) return "needs root: priv tests create namespaces, cgroups and mounts";
  if (!is_executable(stoke_bin())) return "the stoke binary is not built: " + stoke_bin();
  return "";
}

std::vector<std::string> stoke_run_argv(const std::vector<std::string>& options,
                                        const std::vector<std::string>& command) {
  std::vector<std::string> argv{stoke_bin(), "run"};
  argv.insert(argv.end(), options.begin(), options.end());
  argv.push_back("--");
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

nlohmann::json parse_last_json_line(const std::string& text) {
  std::istringstream in(text);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  if (last.empty()) throw std::runtime_error("no JSON object line in output: " + text);
  return nlohmann::json::parse(last);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/stoke-test-XXXXXX";
  if (mkdtemp(tmpl) == nullptr)
    throw std::system_error(errno, std::generic_category(), "mkdtemp");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

LoopbackListener::LoopbackListener() {
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 || listen(fd_, 16) < 0 ||
      getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
    close(fd_);
    fd_ = -1;
    return;
  }
  port_ = ntohs(addr.sin_port);
}

LoopbackListener::~LoopbackListener() {
  if (fd_ >= 0) close(fd_);
}

}  // namespace stoke::test
