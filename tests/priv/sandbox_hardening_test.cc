// Sandbox hardening checked from inside a real sandbox (Spawner used
// in-process): no controlling terminal and no TIOCSTI, only ordinary socket
// families, spawns with high fd numbers in the parent, the OOM score a
// function's first child gets, and the pinned core limit.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sandbox/id_map.h"
#include "sandbox/netns_pool.h"
#include "sandbox/spawner.h"
#include "tests/util/run_util.h"

namespace stoke {
namespace {

using nlohmann::json;

class SandboxHardening : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: creates namespaces and cgroups";
  }

  static SpawnerOptions options() {
    SpawnerOptions o;
    o.cgroup.parent_name = "stoke-hardening-test-" + std::to_string(getpid());
    return o;
  }

  static SandboxSpec spec(std::vector<std::string> argv) {
    SandboxSpec s;
    s.argv = std::move(argv);
    s.env = default_sandbox_env();
    s.host_uid = s.host_gid = host_id_for(HostIdRange{}, static_cast<uint64_t>(getpid()));
    return s;
  }

  // Runs `s` with stdout and stderr captured; returns {exit code, output}.
  static std::pair<int, std::string> run_captured(Spawner& spawner, SandboxSpec s) {
    int out[2];
    EXPECT_EQ(pipe2(out, O_CLOEXEC), 0);
    s.fds = {{s.fds.empty() ? 0 : s.fds[0].source, 0}, {out[1], 1}, {out[1], 2}};
    auto sb = spawner.spawn(s);
    close(out[1]);
    if (!sb.ok()) {
      close(out[0]);
      ADD_FAILURE() << sb.error().message();
      return {-1, ""};
    }
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
    close(out[0]);
    auto st = sb.value()->wait(std::chrono::steady_clock::now() + std::chrono::seconds(60));
    EXPECT_TRUE(st.ok()) << st.error().message();
    return {st.ok() ? st.value().exit_code : -1, text};
  }

  static json last_json(const std::string& text) {
    try {
      return test::parse_last_json_line(text);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "no JSON in: " << text;
      return json::object();
    }
  }
};

constexpr const char* kTerminalProbe = R"(
import errno, fcntl, json, os, termios
r = {'sid_is_self': os.getsid(0) == os.getpid()}
r['tty_nr'] = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[4])
try:
    open('/dev/tty', 'rb'); r['dev_tty'] = 'opened'
except OSError as e:
    r['dev_tty'] = errno.errorcode[e.errno]
try:
    fcntl.ioctl(0, termios.TIOCSTI, b'#'); r['tiocsti'] = 'typed'
except OSError as e:
    r['tiocsti'] = errno.errorcode[e.errno]
print(json.dumps(r))
)";

// The spawner runs where a shell would: session leader with the pty as its
// controlling terminal, the sandbox's stdin on that terminal.
TEST_F(SandboxHardening, SandboxHasNoControllingTerminalAndCannotTypeIntoTheCallers) {
  int master = -1, slave = -1;
  ASSERT_EQ(openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  struct termios raw;
  ASSERT_EQ(tcgetattr(slave, &raw), 0);
  cfmakeraw(&raw);  // injected bytes are readable at once, not echoed
  ASSERT_EQ(tcsetattr(slave, TCSANOW, &raw), 0);
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t helper = fork();
  if (helper == 0) {
    close(out[0]);
    if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) != 0) _exit(90);
    auto spawner = Spawner::create(options());
    if (!spawner.ok()) _exit(91);
    SandboxSpec s = spec({"/usr/bin/python3", "-c", kTerminalProbe});
    s.fds = {{slave, 0}, {out[1], 1}, {out[1], 2}};
    auto sb = spawner.value()->spawn(s);
    if (!sb.ok()) {
      dprintf(out[1], "spawn: %s\n", sb.error().message().c_str());
      _exit(92);
    }
    auto st = sb.value()->wait(std::chrono::steady_clock::now() + std::chrono::seconds(60));
    int code = st.ok() ? st.value().exit_code : 93;
    // _exit skips destructors: tear the sandbox and the spawner (its cgroup
    // parent) down first.
    sb.value().reset();
    spawner.value().reset();
    _exit(code);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(helper, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << ": " << text;
  json r = last_json(text);
  EXPECT_EQ(r["sid_is_self"], true) << text;
  EXPECT_EQ(r["tty_nr"], 0) << "the sandbox has a controlling terminal: " << text;
  EXPECT_NE(r["dev_tty"], "opened") << text;
  EXPECT_EQ(r["tiocsti"], "EIO") << text;
  pollfd p{slave, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0) << "bytes were typed into the caller's terminal";
  close(master);
  close(slave);
}

constexpr const char* kSocketProbe = R"(
import errno, json, socket
r = {}
for name, args in [('vsock', (40, socket.SOCK_STREAM)), ('alg', (38, socket.SOCK_SEQPACKET)),
                   ('packet', (17, socket.SOCK_RAW, 0)), ('uevent', (16, socket.SOCK_RAW, 15)),
                   ('raw_ip', (2, socket.SOCK_RAW, 1)), ('sctp', (2, socket.SOCK_STREAM, 132))]:
    try:
        socket.socket(*args).close(); r[name] = 'created'
    except OSError as e:
        r[name] = errno.errorcode[e.errno]
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()
c.sendall(b'ping'); r['tcp_loopback'] = a.recv(4).decode()
r['getaddrinfo'] = sorted({ai[4][0] for ai in socket.getaddrinfo('localhost', 80, proto=socket.IPPROTO_TCP,
                                                                 flags=socket.AI_ADDRCONFIG)})
r['interfaces'] = [n for _, n in socket.if_nameindex()]
print(json.dumps(r))
)";

TEST_F(SandboxHardening, OnlyOrdinarySocketFamiliesWorkInsideAndLoopbackTcpStillDoes) {
  auto spawner = Spawner::create(options());
  ASSERT_TRUE(spawner.ok()) << spawner.error().message();
  auto [code, text] = run_captured(*spawner.value(), spec({"/usr/bin/python3", "-c", kSocketProbe}));
  ASSERT_EQ(code, 0) << text;
  json r = last_json(text);
  for (const char* family : {"vsock", "alg", "packet", "uevent", "raw_ip", "sctp"})
    EXPECT_EQ(r[family], "EPERM") << family << ": " << text;
  EXPECT_EQ(r["tcp_loopback"], "ping") << text;
  EXPECT_FALSE(r["getaddrinfo"].empty()) << text;
  EXPECT_EQ(r["interfaces"], json::array({"lo"})) << text;

  // Node's view of the network comes from rtnetlink (getifaddrs).
  if (access("/usr/bin/node", X_OK) == 0) {
    auto [ncode, ntext] = run_captured(
        *spawner.value(),
        spec({"/usr/bin/node", "-e",
              "const os=require('os');console.log(JSON.stringify({interfaces:Object.keys(os.networkInterfaces())}))"}));
    ASSERT_EQ(ncode, 0) << ntext;
    EXPECT_EQ(last_json(ntext)["interfaces"], json::array({"lo"})) << ntext;
  }
}

// Finding #11: the child stages fds above the parent's highest one; with the
// sandbox's RLIMIT_NOFILE (1024) applied first, that failed for every spawn.
TEST_F(SandboxHardening, SpawnsWorkWhileTheParentHoldsFdsAbove1100) {
  struct rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old_limit), 0);
  struct rlimit raised = old_limit;
  raised.rlim_cur = std::max<rlim_t>(raised.rlim_cur, 4096);
  if (raised.rlim_max != RLIM_INFINITY && raised.rlim_max < 4096) GTEST_SKIP() << "hard RLIMIT_NOFILE below 4096";
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &raised), 0);
  auto spawner = Spawner::create(options());
  ASSERT_TRUE(spawner.ok()) << spawner.error().message();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_EQ(dup3(p[0], 1200, O_CLOEXEC), 1200);
  ASSERT_EQ(dup3(p[1], 1201, O_CLOEXEC), 1201);
  close(p[0]);
  close(p[1]);
  SandboxSpec s = spec({"/bin/sh", "-c", "ulimit -n"});
  s.fds = {{0, 0}, {1201, 1}, {2, 2}};
  auto sb = spawner.value()->spawn(s);
  close(1201);
  ASSERT_TRUE(sb.ok()) << sb.error().message();
  std::string text;
  char buf[256];
  for (ssize_t n; (n = read(1200, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  close(1200);
  auto st = sb.value()->wait(std::chrono::steady_clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(st.ok()) << st.error().message();
  EXPECT_EQ(st.value().exit_code, 0);
  EXPECT_EQ(text, "1024\n") << "the sandbox's own fd limit still applies";
  setrlimit(RLIMIT_NOFILE, &old_limit);
}

int own_oom_score_adj() {
  std::ifstream f("/proc/self/oom_score_adj");
  int v = 0;
  f >> v;
  return v;
}

// Finding #16: an exec function that forks at its first instruction used to
// give the child the spawner's own score (the raise came after exec). The
// agent lowers its own (-500) with CAP_SYS_RESOURCE, which a test host may not
// grant; raising the sandbox above the test process's score takes the same path.
TEST_F(SandboxHardening, ChildForkedAtTheFirstInstructionGetsTheSandboxOomScoreAndTheSpawnerKeepsItsOwn) {
  ASSERT_TRUE(test::is_executable(test::probe_bin())) << test::probe_bin();
  int own = own_oom_score_adj();
  if (own >= 500) GTEST_SKIP() << "the test process's oom_score_adj is already " << own;
  auto spawner = Spawner::create(options());
  ASSERT_TRUE(spawner.ok()) << spawner.error().message();
  for (int i = 0; i < 20; ++i) {
    SandboxSpec s = spec({"/probe", "oom-of-first-child"});
    s.oom_score_adj = 500;
    s.binds.push_back({test::probe_bin(), "/probe", false});
    auto [code, text] = run_captured(*spawner.value(), s);
    ASSERT_EQ(code, 0) << text;
    json r = last_json(text);
    EXPECT_EQ(r["first_child_oom_score_adj"], 500) << "run " << i << ": " << text;
    EXPECT_EQ(r["own_oom_score_adj"], 500) << "run " << i << ": " << text;
    ASSERT_EQ(own_oom_score_adj(), own) << "the spawner did not get its own score back";
  }
}

constexpr const char* kCoreProbe = R"(
import json, resource
r = {'core': list(resource.getrlimit(resource.RLIMIT_CORE))}
try:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); r['lowered'] = True
except (OSError, ValueError):  # Python reports EPERM from setrlimit as ValueError
    r['lowered'] = False
print(json.dumps(r))
)";

// Finding #20: RLIMIT_CORE=0 still dumps to a pipe core_pattern; 1 does not,
// and the function cannot change it.
TEST_F(SandboxHardening, CoreLimitIsOneAndTheFunctionCannotLowerIt) {
  auto spawner = Spawner::create(options());
  ASSERT_TRUE(spawner.ok()) << spawner.error().message();
  auto [code, text] = run_captured(*spawner.value(), spec({"/usr/bin/python3", "-c", kCoreProbe}));
  ASSERT_EQ(code, 0) << text;
  json r = last_json(text);
  EXPECT_EQ(r["core"], json::array({1, 1})) << text;
  EXPECT_EQ(r["lowered"], false) << text;
}

constexpr const char* kLeaveTimeWait = R"(
import json, os, socket
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
c.close(); a.close(); s.close()   # the side closing first stays in TIME_WAIT
print(json.dumps({'netns': os.readlink('/proc/self/ns/net')}))
)";

constexpr const char* kLookAround = R"(
import json, os
lines = open('/proc/self/net/tcp').read().splitlines()[1:]
print(json.dumps({'netns': os.readlink('/proc/self/ns/net'), 'tcp_sockets': len(lines)}))
)";

// Finding #15: a pooled network namespace keeps TIME_WAIT sockets (and
// tcp_metrics) after its sandbox; it goes back to the same function only.
TEST_F(SandboxHardening, PooledNetworkNamespaceIsNotHandedToAnotherFunction) {
  auto pool = NetnsPool::create(1, 4);
  ASSERT_TRUE(pool.ok()) << pool.error().message();
  SpawnerOptions o = options();
  o.netns_pool = pool.value();
  auto spawner = Spawner::create(o);
  ASSERT_TRUE(spawner.ok()) << spawner.error().message();
  SandboxSpec first = spec({"/usr/bin/python3", "-c", kLeaveTimeWait});
  auto [code, text] = run_captured(*spawner.value(), first);
  ASSERT_EQ(code, 0) << text;
  std::string used_ns = last_json(text)["netns"];

  SandboxSpec other = spec({"/usr/bin/python3", "-c", kLookAround});
  other.host_uid = other.host_gid = host_id_for(HostIdRange{}, static_cast<uint64_t>(getpid()) + 7);
  ASSERT_NE(other.host_uid, first.host_uid);
  auto [ocode, otext] = run_captured(*spawner.value(), other);
  ASSERT_EQ(ocode, 0) << otext;
  json seen = last_json(otext);
  EXPECT_NE(seen["netns"], used_ns) << "another function got the used namespace: " << otext;
  EXPECT_EQ(seen["tcp_sockets"], 0) << "another function sees the first one's sockets: " << otext;

  SandboxSpec again = spec({"/usr/bin/python3", "-c", kLookAround});
  auto [acode, atext] = run_captured(*spawner.value(), again);
  ASSERT_EQ(acode, 0) << atext;
  EXPECT_EQ(last_json(atext)["netns"], used_ns) << "the same function reuses its namespace: " << atext;
}

}  // namespace
}  // namespace stoke
