// agent/systemd: what the agent tells systemd, checked by playing systemd: a
// datagram socket named by NOTIFY_SOCKET receives exactly what sd_notify sends.
#include "agent/systemd.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "sandbox/base/unique_fd.h"
#include "tests/util/run_util.h"

namespace stoke::agent::systemd {
namespace {

using namespace std::chrono_literals;

constexpr const char* kEnv[] = {"NOTIFY_SOCKET", "WATCHDOG_USEC",  "WATCHDOG_PID",
                                "LISTEN_PID",    "LISTEN_FDS",     "LISTEN_FDNAMES"};

// Every test starts and ends with none of systemd's variables set, so one test
// (or the environment the tests were started in) cannot leak into another.
class SystemdEnv : public ::testing::Test {
 protected:
  void SetUp() override { clear(); }
  void TearDown() override { clear(); }
  static void clear() {
    for (const char* name : kEnv) ::unsetenv(name);
  }
};

// A stand-in for systemd's notification socket.
class FakeNotifySocket {
 public:
  // `name` is a path, or "@name" for the abstract namespace (what systemd
  // itself uses since v254, and containers often pass).
  explicit FakeNotifySocket(const std::string& name) {
    fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    socklen_t len;
    if (name[0] == '@') {
      addr.sun_path[0] = '\0';
      name.copy(addr.sun_path + 1, name.size() - 1, 1);
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    } else {
      name.copy(addr.sun_path, sizeof addr.sun_path - 1);
      len = sizeof addr;
    }
    bound_ = fd_ && ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0;
    if (bound_) ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  }

  bool ok() const { return bound_; }

  // The next datagram, or "<nothing>" when none arrives within a second.
  std::string next() {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 1000) != 1) return "<nothing>";
    char buf[4096];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    return n < 0 ? "<recv failed>" : std::string(buf, static_cast<size_t>(n));
  }
  bool empty() {
    pollfd p{fd_.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
  }

 private:
  unique_fd fd_;
  bool bound_ = false;
};

void expect_ok(const Status& s) { EXPECT_TRUE(s.ok()) << s.error().message(); }

void expect_lifecycle(FakeNotifySocket& systemd) {
  EXPECT_TRUE(notify_socket_set());
  expect_ok(notify_ready());
  EXPECT_EQ(systemd.next(), "READY=1");
  expect_ok(notify_ready("listening on /run/stoke/stoke.sock"));
  EXPECT_EQ(systemd.next(), "READY=1\nSTATUS=listening on /run/stoke/stoke.sock");
  expect_ok(notify_status("3 sandboxes running"));
  EXPECT_EQ(systemd.next(), "STATUS=3 sandboxes running");
  expect_ok(notify_watchdog());
  EXPECT_EQ(systemd.next(), "WATCHDOG=1");
  expect_ok(notify_extend_timeout(20s));
  EXPECT_EQ(systemd.next(), "EXTEND_TIMEOUT_USEC=20000000");
  expect_ok(notify_stopping());
  EXPECT_EQ(systemd.next(), "STOPPING=1");
  EXPECT_TRUE(systemd.empty());
}

TEST_F(SystemdEnv, NotificationsReachAPathSocket) {
  test::TempDir dir;
  FakeNotifySocket systemd(dir.file("notify"));
  ASSERT_TRUE(systemd.ok());
  expect_lifecycle(systemd);
}

TEST_F(SystemdEnv, NotificationsReachAnAbstractSocket) {
  FakeNotifySocket systemd("@stoke-notify-test-" + std::to_string(::getpid()));
  ASSERT_TRUE(systemd.ok());
  expect_lifecycle(systemd);
}

// A newline in free text would smuggle in another assignment.
TEST_F(SystemdEnv, StatusTextStaysOnOneLine) {
  test::TempDir dir;
  FakeNotifySocket systemd(dir.file("notify"));
  ASSERT_TRUE(systemd.ok());
  expect_ok(notify_status("starting\nREADY=1"));
  EXPECT_EQ(systemd.next(), "STATUS=starting READY=1");
  expect_ok(notify_ready("a\r\nb"));
  EXPECT_EQ(systemd.next(), "READY=1\nSTATUS=a  b");
}

TEST_F(SystemdEnv, WithoutNotifySocketEverythingIsANoOp) {
  EXPECT_FALSE(notify_socket_set());
  expect_ok(notify_ready("x"));
  expect_ok(notify_status("x"));
  expect_ok(notify_watchdog());
  expect_ok(notify_extend_timeout(1s));
  expect_ok(notify_stopping());
  EXPECT_EQ(watchdog_interval(), std::nullopt);
  auto fds = listen_fds_from_systemd();
  ASSERT_TRUE(fds.ok()) << fds.error().message();
  EXPECT_TRUE(fds->empty());
}

TEST_F(SystemdEnv, UnreachableNotifySocketIsAnError) {
  test::TempDir dir;
  ::setenv("NOTIFY_SOCKET", dir.file("nobody-listens").c_str(), 1);
  Status s = notify_ready();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("sd_notify READY=1"), std::string::npos)
      << s.error().message();
}

TEST_F(SystemdEnv, WatchdogIntervalIsHalfOfWatchdogUsec) {
  EXPECT_EQ(watchdog_interval(), std::nullopt);

  ::setenv("WATCHDOG_USEC", "30000000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  EXPECT_EQ(watchdog_interval(), std::optional<std::chrono::microseconds>(15s));

  // Without WATCHDOG_PID the watchdog is meant for whoever reads it.
  ::unsetenv("WATCHDOG_PID");
  ::setenv("WATCHDOG_USEC", "1000", 1);
  EXPECT_EQ(watchdog_interval(), std::optional<std::chrono::microseconds>(500us));
}

TEST_F(SystemdEnv, WatchdogForAnotherProcessOrMalformedIsOff) {
  ::setenv("WATCHDOG_USEC", "30000000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid() + 1).c_str(), 1);
  EXPECT_EQ(watchdog_interval(), std::nullopt);

  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  for (const char* bad : {"", "soon", "-5", "0", "12abc"}) {
    ::setenv("WATCHDOG_USEC", bad, 1);
    EXPECT_EQ(watchdog_interval(), std::nullopt) << "WATCHDOG_USEC=" << bad;
  }
}

// Socket activation hands fds from 3 on to the process named by LISTEN_PID.
// fd 3 belongs to the test process, so each case runs in a forked child that
// reports through its exit code.
enum ActivationOutcome {
  kPassed = 0,
  kSetupFailed = 10,
  kCallFailed,
  kWrongFds,
  kEnvLeft,
  kNotCloexec,
};

int activate_in_child(int type, bool listening) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int s = ::socket(AF_UNIX, type, 0);
    if (s < 0) ::_exit(kSetupFailed);
    if (listening) {
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;  // autobind: a fresh abstract address
      if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(sa_family_t)) != 0 ||
          ::listen(s, 1) != 0)
        ::_exit(kSetupFailed);
    }
    if (::dup2(s, 3) != 3) ::_exit(kSetupFailed);
    if (s != 3) ::close(s);
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "1", 1);
    ::setenv("LISTEN_FDNAMES", "stoked.socket", 1);
    auto fds = listen_fds_from_systemd();
    if (!fds.ok()) ::_exit(kCallFailed);
    if (fds->size() != 1 || (*fds)[0] != 3) ::_exit(kWrongFds);
    if (std::getenv("LISTEN_FDS") || std::getenv("LISTEN_PID") || std::getenv("LISTEN_FDNAMES"))
      ::_exit(kEnvLeft);
    if ((::fcntl(3, F_GETFD) & FD_CLOEXEC) == 0) ::_exit(kNotCloexec);
    ::_exit(kPassed);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST_F(SystemdEnv, ListenFdsAcceptsAListeningUnixStreamSocket) {
  EXPECT_EQ(activate_in_child(SOCK_STREAM, /*listening=*/true), kPassed);
}

TEST_F(SystemdEnv, ListenFdsRejectsWhatStokedSocketWouldNeverPass) {
  EXPECT_EQ(activate_in_child(SOCK_STREAM, /*listening=*/false), kCallFailed);
  EXPECT_EQ(activate_in_child(SOCK_DGRAM, /*listening=*/false), kCallFailed);
}

TEST_F(SystemdEnv, ListenFdsForAnotherProcessAreNotOurs) {
  ::setenv("LISTEN_PID", std::to_string(::getpid() + 1).c_str(), 1);
  ::setenv("LISTEN_FDS", "1", 1);
  auto fds = listen_fds_from_systemd();
  ASSERT_TRUE(fds.ok()) << fds.error().message();
  EXPECT_TRUE(fds->empty());
}

}  // namespace
}  // namespace stoke::agent::systemd
