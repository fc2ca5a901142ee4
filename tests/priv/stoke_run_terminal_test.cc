// `stoke run` started from a terminal (as `sudo stoke run` from a shell): the
// sandbox gets pipes, never the caller's terminal, and stdio still flows.
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/util/run_util.h"

namespace stoke {
namespace {

constexpr const char* kScript = R"(
import json, os, sys
line = sys.stdin.readline().strip()
print(json.dumps({'isatty': [os.isatty(fd) for fd in (0, 1, 2)], 'stdin': os.readlink('/proc/self/fd/0'),
                  'line': line}), flush=True)
)";

TEST(StokeRunTerminal, SandboxGetsPipesNotTheCallersTerminalAndStdioStillFlows) {
  std::string why = test::priv_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  int master = -1, slave = -1;
  ASSERT_EQ(openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  auto argv = test::stoke_run_argv({}, {"/usr/bin/python3", "-c", kScript});
  pid_t child = fork();
  if (child == 0) {
    close(master);
    if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) != 0) _exit(90);
    for (int fd = 0; fd < 3; ++fd) dup2(slave, fd);
    if (slave > 2) close(slave);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(91);
  }
  close(slave);
  ASSERT_EQ(write(master, "hello\n", 6), 6);
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{master, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) {
      if (waitpid(child, nullptr, WNOHANG) == child) {
        child = -1;
        break;
      }
      continue;
    }
    ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0) break;  // EIO: every slave fd is closed
    out.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  if (child > 0) waitpid(child, &status, 0);
  close(master);
  nlohmann::json r;
  try {
    r = test::parse_last_json_line(out);
  } catch (const std::exception& e) {
    FAIL() << "no result from the sandbox: " << out;
  }
  EXPECT_EQ(r["isatty"], nlohmann::json::array({false, false, false})) << out;
  EXPECT_EQ(r["stdin"].get<std::string>().rfind("pipe:", 0), 0u) << out;
  EXPECT_EQ(r["line"], "hello") << "what was typed reaches the sandbox's stdin: " << out;
}

}  // namespace
}  // namespace stoke
