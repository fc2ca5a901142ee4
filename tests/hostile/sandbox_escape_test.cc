// Functions that try to leave their sandbox sideways: type into a terminal,
// open odd socket families, use up a host-wide kernel budget, fork without
// end, fill their /tmp. Each runs against a real stoked while another
// tenant's warm invokes (the Bystander) keep their latency.
#include <sys/inotify.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/hostile/bystander.h"

namespace stoke {
namespace {

using nlohmann::json;

class SandboxEscape : public test::AgentTest {
 protected:
  std::string extra_config() override { return "zygotes { enabled: false }\ncheckpoints: false\n"; }

  void create_python(const std::string& name, const std::string& source, uint64_t timeout_ms = 0) {
    std::string path = dir_.file(name + ".py");
    std::ofstream(path) << source;
    auto created = send(test::create_request(name, v1::PYTHON, path, "main.py", 0, timeout_ms));
    ASSERT_FALSE(created.has_error() && created.error().code() != v1::Error::OK) << created.error().message();
  }

  // Runs the attack `name` once under the bystander's eye; returns its result.
  // (A result with an "error" key is an application error: results say "errno".)
  json attack(const std::string& name, v1::Activation* activation = nullptr) {
    test::Bystander bystander(*agent_);
    auto reference = bystander.measure();
    bystander.start();
    v1::Activation a = invoke_with(name);
    auto during = bystander.stop();
    test::Bystander::expect_kept_p99(reference, during);
    EXPECT_TRUE(agent_->running());
    if (activation) *activation = a;
    EXPECT_EQ(a.status(), v1::SUCCESS) << a.result_json();
    if (a.status() != v1::SUCCESS) return json::object();
    return json::parse(a.result_json());
  }
};

TEST_F(SandboxEscape, FunctionCannotTypeIntoATerminalOrOpenOne) {
  ASSERT_NO_FATAL_FAILURE(create_python("inject", R"(
import errno, fcntl, os, termios
def main(args):
    r = {'sid_is_self': os.getsid(0) == os.getpid()}
    try:
        os.close(os.open('/dev/tty', os.O_RDWR)); r['dev_tty'] = 'opened'
    except OSError as e:
        r['dev_tty'] = errno.errorcode[e.errno]
    for fd in (0, 1, 2):
        try:
            fcntl.ioctl(fd, termios.TIOCSTI, b'#'); r['tiocsti%d' % fd] = 'typed'
        except OSError as e:
            r['tiocsti%d' % fd] = errno.errorcode[e.errno]
    return r
)"));
  json r = attack("inject");
  EXPECT_NE(r["dev_tty"], "opened") << r.dump();
  for (const char* key : {"tiocsti0", "tiocsti1", "tiocsti2"}) EXPECT_EQ(r[key], "EIO") << r.dump();
}

TEST_F(SandboxEscape, OddSocketFamiliesAreRefused) {
  ASSERT_NO_FATAL_FAILURE(create_python("families", R"(
import errno, socket
def main(args):
    r = {}
    tries = {
        'vsock_host': lambda: socket.socket(40, socket.SOCK_STREAM).connect((2, 22)),
        'alg': lambda: socket.socket(38, socket.SOCK_SEQPACKET).bind(('hash', 'sha256')),
        'packet': lambda: socket.socket(17, socket.SOCK_RAW, 0),
        'uevent': lambda: socket.socket(16, socket.SOCK_RAW, 15).bind((0, 1)),
        'raw_ip': lambda: socket.socket(2, socket.SOCK_RAW, 1),
        'sctp': lambda: socket.socket(2, socket.SOCK_STREAM, 132),
        'tipc': lambda: socket.socket(30, socket.SOCK_RDM),
    }
    for name, attempt in tries.items():
        try:
            attempt(); r[name] = 'worked'
        except OSError as e:
            r[name] = errno.errorcode.get(e.errno, str(e.errno))
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)
    c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()
    c.sendall(b'ok'); r['tcp_loopback'] = a.recv(2).decode()
    return r
)"));
  json r = attack("families");
  for (const char* family : {"vsock_host", "alg", "packet", "uevent", "raw_ip", "sctp", "tipc"})
    EXPECT_EQ(r[family], "EPERM") << family << ": " << r.dump();
  EXPECT_EQ(r["tcp_loopback"], "ok") << r.dump();
}

// How many inotify instances this (root) process can create, up to `want`.
int inotify_instances_available(int want) {
  std::vector<int> fds;
  for (int i = 0; i < want; ++i) {
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0) break;
    fds.push_back(fd);
  }
  for (int fd : fds) close(fd);
  return static_cast<int>(fds.size());
}

// Sandbox user namespaces are owned by root, so their inotify instances were
// charged to root's host-wide budget (fs.inotify.max_user_instances).
TEST_F(SandboxEscape, InotifyHoardingLeavesRootsBudgetIntact) {
  ASSERT_NO_FATAL_FAILURE(create_python("hoard", R"(
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
held = []
def main(args):
    err = 0
    for _ in range(1000):
        fd = libc.inotify_init1(0)
        if fd < 0:
            err = ctypes.get_errno(); break
        held.append(fd)
    return {'created': len(held), 'errno': errno.errorcode.get(err, str(err))}
)"));
  int before = inotify_instances_available(32);
  ASSERT_EQ(before, 32) << "this host's root has too few inotify instances left to run the test";
  json r = attack("hoard");
  // The warm instance still holds whatever it got.
  EXPECT_EQ(r["created"], 0) << r.dump();
  EXPECT_EQ(r["errno"], "ENOSYS") << r.dump();
  EXPECT_EQ(inotify_instances_available(32), 32) << "a function used up root's inotify instances: " << r.dump();
}

TEST_F(SandboxEscape, ForkBombIsHeldByThePidsLimitAndTheActivationEnds) {
  ASSERT_NO_FATAL_FAILURE(create_python("bomb", R"(
import errno, os, time
def main(args):
    forked, err = 0, None
    while forked < 100000:
        try:
            pid = os.fork()
        except OSError as e:
            err = errno.errorcode[e.errno]; break
        if pid == 0:
            try:
                os.fork()
            except OSError:
                pass
            time.sleep(3600)
            os._exit(0)
        forked += 1
    return {'forked': forked, 'errno': err}
)",
                                        20000));
  v1::Activation a;
  json r = attack("bomb", &a);
  ASSERT_EQ(a.status(), v1::SUCCESS) << a.result_json();
  EXPECT_EQ(r["errno"], "EAGAIN") << r.dump();
  EXPECT_LT(r["forked"].get<int>(), 256) << r.dump();  // pids.max of a sandbox
}

TEST_F(SandboxEscape, FillingTmpStopsAtItsSize) {
  ASSERT_NO_FATAL_FAILURE(create_python("filler", R"(
import errno
def main(args):
    written, err = 0, None
    chunk = b'f' * (1 << 20)
    try:
        with open('/tmp/fill', 'wb', buffering=0) as f:
            while written < (1 << 31):
                written += f.write(chunk)
    except OSError as e:
        err = errno.errorcode[e.errno]
    return {'written': written, 'errno': err}
)"));
  json r = attack("filler");
  EXPECT_EQ(r["errno"], "ENOSPC") << r.dump();
  EXPECT_LE(r["written"].get<uint64_t>(), uint64_t{65} << 20) << r.dump();  // 64 MiB tmpfs
}

}  // namespace
}  // namespace stoke
