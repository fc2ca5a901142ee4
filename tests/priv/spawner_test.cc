// The sandbox library used directly, in-process: lifecycle, teardown and
// errors. (What a sandbox looks like from inside is isolation_test.cc.)
#include "sandbox/spawner.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "sandbox/base/file_util.h"
#include "sandbox/id_map.h"
#include "tests/util/run_util.h"
#include "tests/util/sanitizers.h"

namespace stoke {
namespace {

using test::run_command;
using test::TempDir;

class SpawnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: creates namespaces and cgroups";
    SpawnerOptions o;
    o.cgroup.parent_name = "stoke-spawner-test-" + std::to_string(getpid());
    auto s = Spawner::create(o);
    ASSERT_TRUE(s.ok()) << s.error().message();
    spawner_ = std::move(s.value());
  }

  SandboxSpec spec(std::vector<std::string> argv) {
    SandboxSpec s;
    s.argv = std::move(argv);
    s.env = default_sandbox_env();
    s.host_uid = s.host_gid = host_id_for(HostIdRange{}, static_cast<uint64_t>(getpid()));
    return s;
  }

  ExitStatus run(const SandboxSpec& s) {
    auto sb = spawner_->spawn(s);
    EXPECT_TRUE(sb.ok()) << sb.error().message();
    if (!sb.ok()) return {};
    auto st = sb.value()->wait(std::chrono::steady_clock::now() + std::chrono::seconds(30));
    EXPECT_TRUE(st.ok()) << st.error().message();
    return st.ok() ? st.value() : ExitStatus{};
  }

  std::unique_ptr<Spawner> spawner_;
};

int count_fds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;  // the DIR's own fd
}

std::string read_all(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> stoke_cgroups_named(const std::string& name) {
  std::vector<std::string> found;
  for (const char* ctrl : {"memory", "cpu", "cpuacct", "pids", "unified"}) {
    std::string root = std::string("/sys/fs/cgroup/") + ctrl;
    auto r = run_command({"/usr/bin/find", root, "-maxdepth", "6", "-type", "d", "-name", name});
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) found.push_back(line);
  }
  return found;
}

TEST_F(SpawnerTest, ExitCodeAndSignalAreReported) {
  EXPECT_EQ(run(spec({"/bin/sh", "-c", "exit 3"})).exit_code, 3);
  // A real fault: pid 1 of a pid namespace ignores signals it sends itself,
  // but not a forced SIGSEGV.
  auto killed = run(spec({"/usr/bin/python3", "-c", "import ctypes; ctypes.string_at(0)"}));
  EXPECT_EQ(killed.signal, SIGSEGV);
  EXPECT_EQ(killed.shell_code(), 139);
}

TEST_F(SpawnerTest, ThousandSandboxesLeaveNoCgroupMountZombieOrFd) {
  const int fds_before = count_fds();
  const std::string mounts_before = read_all("/proc/self/mountinfo");
  auto s = spec({"/bin/true"});
  for (int i = 0; i < 1000; ++i) {
    auto sb = spawner_->spawn(s);
    ASSERT_TRUE(sb.ok()) << "spawn " << i << ": " << sb.error().message();
    auto st = sb.value()->wait();
    ASSERT_TRUE(st.ok()) << st.error().message();
    ASSERT_EQ(st->exit_code, 0);
  }
  EXPECT_EQ(count_fds(), fds_before);
  EXPECT_EQ(read_all("/proc/self/mountinfo"), mounts_before);
  // No child of ours is left unreaped.
  errno = 0;
  EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  // No group of ours is left; the parent directory goes with the spawner.
  EXPECT_TRUE(stoke_cgroups_named("sb-" + std::to_string(getpid()) + "-*").empty());
  spawner_.reset();
  EXPECT_TRUE(stoke_cgroups_named("stoke-spawner-test-" + std::to_string(getpid())).empty());
}

// A spawner below its sandboxes' oom_score_adj (the agent under systemd runs
// at -500) raises each child before its execve. Two workers doing that at
// once must never wait on each other's children: a child of one inherited the
// other's exec pipe while its own spawner waited for the raise window, and
// both stalled until a 5 s timeout failed one of them.
TEST_F(SpawnerTest, ConcurrentSpawnsThatRaiseOomScoreNeverWaitOnEachOther) {
  // Sandboxes above this process (lowering our own would need
  // CAP_SYS_RESOURCE, which a container's root may lack): every spawn raises.
  SandboxSpec raised = spec({"/bin/true"});
  raised.oom_score_adj = std::stoi(read_all("/proc/self/oom_score_adj")) + 500;
  SpawnerOptions o;
  o.cgroup.parent_name = "stoke-spawner-test-" + std::to_string(getpid());
  auto second = Spawner::create(o);
  ASSERT_TRUE(second.ok()) << second.error().message();
  std::atomic<int> failed{0}, slow{0};
  std::string first_error;
  std::mutex error_mu;
  auto work = [&](Spawner& spawner) {
    for (int i = 0; i < 20; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      auto sb = spawner.spawn(raised);
      if (!sb.ok()) {
        ++failed;
        std::lock_guard lock(error_mu);
        if (first_error.empty()) first_error = sb.error().message();
        continue;
      }
      (void)sb.value()->wait(std::chrono::steady_clock::now() + std::chrono::seconds(30));
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(2)) ++slow;
    }
  };
  std::thread a(work, std::ref(*spawner_));
  std::thread b(work, std::ref(*second.value()));
  a.join();
  b.join();
  EXPECT_EQ(failed.load(), 0) << first_error;
  EXPECT_EQ(slow.load(), 0) << "spawns waited for each other";
}

TEST_F(SpawnerTest, SpawnWorksFromAMultithreadedProcessWithABigHeap) {
  // CLONE_VM: no page-table copy, and the child touches no lock another thread holds.
  std::vector<char> heap(256u << 20, 1);
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int i = 0; i < 4; ++i)
    busy.emplace_back([&] {
      while (!stop) {
        std::string s(1000, 'x');  // keeps malloc's locks busy
        (void)s;
      }
    });
  for (int i = 0; i < 50; ++i) EXPECT_EQ(run(spec({"/bin/true"})).exit_code, 0);
  stop = true;
  for (auto& t : busy) t.join();
  EXPECT_EQ(heap[12345], 1);
}

TEST_F(SpawnerTest, AnInvalidSpecFailsAtOnceAndLeavesNothingToWaitFor) {
  SandboxSpec bad = spec({"/bin/true"});
  bad.tmp_size_bytes = 1;  // refused by validate_spec, before any clone
  auto start = std::chrono::steady_clock::now();
  auto sb = spawner_->spawn(bad);
  ASSERT_FALSE(sb.ok());
  EXPECT_NE(sb.error().message().find("tmp size"), std::string::npos) << sb.error().message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2)) << "the failed spawn hung";
}

TEST_F(SpawnerTest, MissingBinaryNamesTheExecStepAndErrno) {
  auto sb = spawner_->spawn(spec({"/no/such/binary"}));
  ASSERT_FALSE(sb.ok());
  const std::string m = sb.error().message();
  EXPECT_NE(m.find("exec /no/such/binary"), std::string::npos) << m;
  EXPECT_NE(m.find("No such file or directory"), std::string::npos) << m;
  EXPECT_EQ(sb.error().cause, ErrorCause::kExec) << "callers decide on the cause, not on these words";
  EXPECT_TRUE(stoke_cgroups_named("sb-" + std::to_string(getpid()) + "-*").empty());
}

TEST_F(SpawnerTest, CommandIsFoundInPathInsideTheSandbox) {
  EXPECT_EQ(run(spec({"true"})).exit_code, 0);
}

TEST_F(SpawnerTest, BindSourceBehindAPrivateHostDirectoryCanBeBound) {
  // The sandbox's host uid could not walk through the 0700 temp dir, but the
  // bind source is resolved while the child is still host root.
  TempDir dir;
  ASSERT_EQ(mkdir(dir.file("code").c_str(), 0755), 0);
  ASSERT_TRUE(write_file_atomic(dir.file("code") + "/hello", "hi\n").ok());
  auto s = spec({"/bin/sh", "-c", "test \"$(cat /code/hello)\" = hi"});
  s.binds.push_back({dir.file("code"), "/code", false});
  EXPECT_EQ(run(s).exit_code, 0);
}

TEST_F(SpawnerTest, FdsArePlacedExactlyAndNothingElseLeaks) {
  int p[2];
  ASSERT_EQ(pipe2(p, 0), 0);  // deliberately not CLOEXEC: must still not leak
  auto s = spec({"/bin/sh", "-c", "ls /proc/self/fd | tr '\\n' ' ' >&5"});
  s.fds.push_back({p[1], 5});
  auto sb = spawner_->spawn(s);
  ASSERT_TRUE(sb.ok()) << sb.error().message();
  close(p[1]);
  char buf[256] = {};
  ssize_t n = read(p[0], buf, sizeof buf - 1);
  close(p[0]);
  ASSERT_TRUE(sb.value()->wait().ok());
  ASSERT_GT(n, 0);
  // 0 1 2, 5, and the fd ls uses to read the directory.
  EXPECT_EQ(std::string(buf), "0 1 2 3 5 ");
}

TEST_F(SpawnerTest, DeadlineKillsAndReportsTimedOut) {
  auto sb = spawner_->spawn(spec({"/bin/sleep", "100"}));
  ASSERT_TRUE(sb.ok());
  auto t0 = std::chrono::steady_clock::now();
  auto st = sb.value()->wait(t0 + std::chrono::milliseconds(200));
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->timed_out);
  EXPECT_EQ(st->signal, SIGKILL);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST_F(SpawnerTest, SandboxDiesWithTheThreadThatSpawnedIt) {
  // kill_with_parent: the parent-death signal fires when the spawning thread
  // exits, so an agent crash cannot leave sandboxes running.
  pid_t sandbox_pid = -1;
  std::unique_ptr<Sandbox> keep;
  std::thread t([&] {
    auto sp = Spawner::create({.cgroup = {.parent_name = "stoke-spawner-test-" + std::to_string(getpid())}});
    ASSERT_TRUE(sp.ok());
    auto sb = sp.value()->spawn(spec({"/bin/sleep", "100"}));
    ASSERT_TRUE(sb.ok()) << sb.error().message();
    sandbox_pid = sb.value()->pid();
    keep = std::move(sb.value());
  });
  t.join();
  ASSERT_GT(sandbox_pid, 0);
  auto st = keep->wait(std::chrono::steady_clock::now() + std::chrono::seconds(5));
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->timed_out) << "the sandbox outlived its spawning thread";
  EXPECT_EQ(st->signal, SIGKILL);
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

bool group_exists_anywhere(const std::string& name) {
  auto r = test::run_command({"/usr/bin/find", "/sys/fs/cgroup", "-maxdepth", "7", "-type", "d", "-name", name});
  return !r.out.empty();
}

TEST(SpawnerRecovery, GroupsOfADeadSpawnerAreRemovedByTheNextOne) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: creates cgroups";
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  ASSERT_GT(dead, 0);
  ASSERT_EQ(waitpid(dead, nullptr, 0), dead);
  CgroupOptions o;
  o.parent_name = "stoke-recovery-test-" + std::to_string(getpid());
  auto backend = open_cgroup_backend(o);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  const std::string leftover = "sb-" + std::to_string(dead) + "-1";
  auto group = backend.value()->create(leftover, {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  test::abandon(std::move(group.value()));  // as if its owner had been killed: never destroyed
  ASSERT_TRUE(group_exists_anywhere(leftover));

  auto spawner = Spawner::create({.cgroup = o});
  ASSERT_TRUE(spawner.ok()) << spawner.error().message();
  EXPECT_FALSE(group_exists_anywhere(leftover));
  spawner.value().reset();
  EXPECT_FALSE(group_exists_anywhere(o.parent_name));
}

TEST(SpawnerRecovery, KillingStokeRunKillsItsSandboxAndTheNextRunCleansUp) {
  std::string why = test::priv_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  // stoke run -- sleep; kill -9 the stoke process itself.
  pid_t stoke = fork();
  if (stoke == 0) {
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execl(test::stoke_bin().c_str(), "stoke", "run", "--", "/bin/sleep", "1000.25", nullptr);
    _exit(127);
  }
  ASSERT_GT(stoke, 0);
  const std::string group = "sb-" + std::to_string(stoke) + "-1";
  for (int i = 0; i < 200 && !group_exists_anywhere(group); ++i) usleep(10000);
  ASSERT_TRUE(group_exists_anywhere(group)) << "stoke run never created its sandbox";
  usleep(100000);
  ASSERT_EQ(kill(stoke, SIGKILL), 0);
  ASSERT_EQ(waitpid(stoke, nullptr, 0), stoke);
  // The sandbox died with its parent (no sleep 1000.25 left on the host)...
  bool alive = true;
  for (int i = 0; i < 100 && alive; ++i) {
    alive = !test::run_command({"/usr/bin/pgrep", "-f", "sleep 1000.25"}).out.empty();
    if (alive) usleep(20000);
  }
  EXPECT_FALSE(alive) << "the sandbox outlived a kill -9 of stoke run";
  // ...and the next stoke run removes the group the dead one left.
  auto r = test::run_command({test::stoke_bin(), "run", "--", "/bin/true"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(group_exists_anywhere(group));
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

std::string status_field(const std::string& status, const std::string& key) {
  std::istringstream in(status);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return line.substr(line.find_first_not_of(" \t", key.size() + 1));
  return "";
}

TEST(SpawnerCpus, SandboxGetsEveryCpuTheSpawnerMayUse) {
  // The spawner briefly moves a new child to another CPU so parent and child
  // start in parallel; the child must end up with the full mask again.
  std::string why = test::priv_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  std::string mine = status_field(read_all("/proc/self/status"), "Cpus_allowed_list");
  for (int i = 0; i < 20; ++i) {
    auto r = test::run_command({test::stoke_bin(), "run", "--", "/bin/cat", "/proc/self/status"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(status_field(r.out, "Cpus_allowed_list"), mine);
  }
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

void write_own_oom_score_adj(int value) {
  std::ofstream("/proc/self/oom_score_adj") << value;
}

TEST(SpawnerOom, SandboxGetsItsOwnOomScoreNotTheSpawnersProtection) {
  // The agent runs with OOMScoreAdjust=-500; a sandbox must be the OOM
  // killer's first choice instead. Lowering our own score needs
  // CAP_SYS_RESOURCE, which this machine lacks, so the raise is checked.
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  auto spawner = Spawner::create({.cgroup = {.parent_name = "stoke-oom-test-" + std::to_string(getpid())}});
  ASSERT_TRUE(spawner.ok()) << spawner.error().message();
  // Our own score is raised a little first (allowed unprivileged), so a leak
  // of the sandbox's value into this process would show.
  write_own_oom_score_adj(100);
  SandboxSpec s;
  s.argv = {"/bin/sleep", "30"};
  s.env = default_sandbox_env();
  s.host_uid = s.host_gid = host_id_for(HostIdRange{}, static_cast<uint64_t>(getpid()));
  s.oom_score_adj = 500;
  auto sb = spawner.value()->spawn(s);
  ASSERT_TRUE(sb.ok()) << sb.error().message();
  EXPECT_EQ(std::atoi(test::read_file("/proc/" + std::to_string(sb.value()->pid()) + "/oom_score_adj").c_str()), 500);
  // The child shared our mm until it exec'd: writing its score then would
  // have set ours as well (the kernel keeps it per mm).
  EXPECT_EQ(std::atoi(test::read_file("/proc/self/oom_score_adj").c_str()), 100);
  ASSERT_TRUE(sb.value()->kill().ok());
  ASSERT_TRUE(sb.value()->wait().ok());
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

TEST(SandboxSyscalls, EverydayShellWorkIsAllowedBySeccomp) {
  // cd (chdir), chmod, chown on own files, mkdir, rename, symlinks, pipes, a
  // subshell: what scripts and runtimes do all the time.
  std::string why = test::priv_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  auto r = test::run_command({test::stoke_bin(), "run", "--", "/bin/sh", "-c",
                              "set -e; cd /tmp; mkdir -p a/b; chmod 700 a; chown 0:0 a; cd a/b; pwd; "
                              "echo x > f; mv f g; ln -s g h; cat h | tr x y; (cd /; ls >/dev/null)"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "/tmp/a/b\ny\n");
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

// Processes whose command line contains `marker` (the sandbox child shows its
// parent's command line until it execs).
int processes_with(const std::string& marker) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = read_all(e.path().string() + "/cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(marker) != std::string::npos && std::stoi(name) != getpid()) ++n;
  }
  return n;
}

TEST(SpawnerFaults, ChildExitsWhenTheSpawnerDiesMidHandshake) {
  std::string why = test::priv_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  const std::string marker = "stoke-orphan-marker-" + std::to_string(getpid());
  setenv("STOKE_FAULT", "spawner-exit-after-maps", 1);
  auto r = test::run_command({test::stoke_bin(), "run", "--", "/bin/echo", marker});
  unsetenv("STOKE_FAULT");
  EXPECT_EQ(r.exit_code, 77) << r.err;
  int left = 1;
  for (int i = 0; i < 100 && left > 0; ++i) {
    left = processes_with(marker);
    if (left > 0) usleep(20000);
  }
  EXPECT_EQ(left, 0) << "the sandbox child outlived its spawner";
  // Its cgroup is collected by the next spawner (its owner is dead).
  EXPECT_EQ(test::run_command({test::stoke_bin(), "run", "--", "/bin/true"}).exit_code, 0);
}

}  // namespace
}  // namespace stoke
