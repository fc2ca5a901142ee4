// The cgroup v1 backend against the real kernel (root, v1 hierarchies mounted).
//
// Each test uses its own parent directory "stoke-test-<pid>" so tests running
// at the same time do not meet, and checks that no directory is left behind.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "sandbox/cgroup.h"
#include "tests/util/cgroup_child.h"
#include "tests/util/sanitizers.h"

namespace stoke {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1024 * 1024;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

uint64_t process_cpu_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t wall_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Child side (after fork; only async-signal-safe calls, then _exit).
void attach_or_die(const std::vector<int>& fds) {
  for (size_t i = 0; i < fds.size(); ++i)
    if (::write(fds[i], "0", 1) != 1) ::_exit(100 + static_cast<int>(i));
}

void touch_memory(size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) ::_exit(90);
  for (size_t off = 0; off < bytes; off += 4096) static_cast<volatile char*>(p)[off] = 1;
}

void burn_cpu_ns(uint64_t ns) {
  uint64_t start = process_cpu_ns();
  volatile uint64_t x = 0;
  while (process_cpu_ns() - start < ns) x = x + 1;
}

// Forks a child that attaches itself, runs work(), reports on `ready`, then sleeps
// until killed.
template <typename Work>
pid_t fork_attached_child(const std::vector<int>& fds, int* ready_fd, Work work) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    attach_or_die(fds);
    work();
    char c = 'r';
    if (::write(p[1], &c, 1) != 1) ::_exit(91);
    for (;;) ::pause();
  }
  ::close(p[1]);
  *ready_fd = p[0];
  return pid;
}

bool wait_ready(int fd) {
  char c;
  ssize_t n = ::read(fd, &c, 1);
  ::close(fd);
  return n == 1;
}

class CgroupV1Priv : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create cgroups";
    struct statfs sfs;
    if (::statfs("/sys/fs/cgroup/memory", &sfs) != 0)
      GTEST_SKIP() << "no v1 memory hierarchy at /sys/fs/cgroup/memory";
    options_.version = "v1";
    options_.parent_name = "stoke-test-" + std::to_string(::getpid());
    auto b = open_cgroup_v1(options_);
    if (!b.ok()) GTEST_SKIP() << "cgroup v1 backend unavailable: " << b.error().message();
    backend_ = std::move(b.value());
    parents_ = backend_->parent_dirs();
  }

  void TearDown() override {
    for (const auto& p : parents_) EXPECT_FALSE(fs::exists(p)) << "left behind: " << p;
  }

  // Reaps pid and returns its wait status.
  static int reap(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
  }

  CgroupOptions options_;
  std::unique_ptr<CgroupBackend> backend_;
  std::vector<std::string> parents_;
};

TEST_F(CgroupV1Priv, V1GroupAppliesLimitsBeneathOwnGroupAndRemovesCleanly) {
  auto group = backend_->create("limits", {.memory_bytes = 64 * kMiB, .cpus = 1.5, .pids = 50});
  ASSERT_TRUE(group.ok()) << group.error().message();
  auto paths = (*group)->paths();
  ASSERT_GE(paths.size(), 1u);
  EXPECT_EQ((*group)->attach_fds().size(), paths.size());

  std::string mem, cpu, pids;
  for (const auto& p : paths) {
    EXPECT_EQ(p.rfind("/sys/fs/cgroup/", 0), 0u) << p;
    EXPECT_TRUE(fs::is_directory(p)) << p;
    if (fs::exists(p + "/memory.limit_in_bytes")) mem = p;
    if (fs::exists(p + "/cpu.cfs_quota_us")) cpu = p;
    if (fs::exists(p + "/pids.max")) pids = p;
  }
  ASSERT_FALSE(mem.empty());
  // Beneath the caller's own memory group, which on this host is not the root.
  std::string own = slurp("/proc/self/cgroup");
  size_t at = own.find(":memory:");
  ASSERT_NE(at, std::string::npos);
  std::string own_path = own.substr(at + 8, own.find('\n', at) - at - 8);
  std::string expected_mem =
      "/sys/fs/cgroup/memory" + (own_path == "/" ? "" : own_path) + "/" + options_.parent_name + "/limits";
  EXPECT_EQ(mem, expected_mem);

  EXPECT_EQ(slurp(mem + "/memory.limit_in_bytes"), std::to_string(64 * kMiB));
  if (fs::exists(mem + "/memory.memsw.limit_in_bytes")) {
    EXPECT_EQ(slurp(mem + "/memory.memsw.limit_in_bytes"), std::to_string(64 * kMiB));
  }
  if (!cpu.empty()) {
    EXPECT_EQ(slurp(cpu + "/cpu.cfs_period_us"), "100000");
    EXPECT_EQ(slurp(cpu + "/cpu.cfs_quota_us"), "150000");
  }
  if (!pids.empty()) {
    EXPECT_EQ(slurp(pids + "/pids.max"), "50");
  }

  auto names = backend_->list();
  ASSERT_TRUE(names.ok()) << names.error().message();
  EXPECT_EQ(*names, std::vector<std::string>{"limits"});

  Status s = (*group)->destroy();
  ASSERT_TRUE(s.ok()) << s.error().message();
  for (const auto& p : paths) EXPECT_FALSE(fs::exists(p)) << p;
  EXPECT_TRUE((*group)->destroy().ok());  // idempotent
}

// keep_parent: the backend removes the shared parent when it goes. A group
// that outlives it (the agent's last pooled instances are torn down after its
// spawners) must remove the parent itself, or the parent stays behind empty.
TEST_F(CgroupV1Priv, V1KeptParentGoesWithTheLastGroupEvenWhenItOutlivesItsBackend) {
  CgroupOptions kept = options_;
  kept.keep_parent = true;
  auto owner = open_cgroup_v1(kept);
  ASSERT_TRUE(owner.ok()) << owner.error().message();
  auto first = (*owner)->create("first", {});
  auto last = (*owner)->create("last", {});
  ASSERT_TRUE(first.ok() && last.ok());
  ASSERT_TRUE((*first)->destroy().ok());
  for (const auto& p : parents_) EXPECT_TRUE(fs::exists(p)) << "kept while its backend lives: " << p;
  (*owner)->remove_empty_parents();
  for (const auto& p : parents_) EXPECT_TRUE(fs::exists(p)) << "a group is still in it: " << p;
  owner->reset();  // the owner goes first
  ASSERT_TRUE((*last)->destroy().ok());
  for (const auto& p : parents_) EXPECT_FALSE(fs::exists(p)) << "left behind by the last group: " << p;
}

TEST_F(CgroupV1Priv, V1ChildAttachesItselfAndItsCpuAndMemoryAreAccounted) {
  auto group = backend_->create("acct", {.memory_bytes = 256 * kMiB});
  ASSERT_TRUE(group.ok()) << group.error().message();
  int ready = -1;
  pid_t child = fork_attached_child((*group)->attach_fds(), &ready, [] {
    touch_memory(24 * kMiB);
    burn_cpu_ns(150 * 1000 * 1000);
  });
  ASSERT_GT(child, 0);
  ASSERT_TRUE(wait_ready(ready)) << "child died early";

  auto pids = (*group)->pids();
  ASSERT_TRUE(pids.ok()) << pids.error().message();
  EXPECT_EQ(*pids, std::vector<int>{child});
  std::string child_cgroups = slurp("/proc/" + std::to_string(child) + "/cgroup");
  EXPECT_NE(child_cgroups.find(options_.parent_name + "/acct"), std::string::npos) << child_cgroups;

  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  uint64_t cpu = u->cpu_user_ns + u->cpu_system_ns;
  EXPECT_GE(cpu, 100u * 1000 * 1000) << "user " << u->cpu_user_ns << " sys " << u->cpu_system_ns;
  EXPECT_LT(cpu, 10ull * 1000 * 1000 * 1000);
  EXPECT_GE(u->memory_peak_bytes, 24 * kMiB);
  EXPECT_LE(u->memory_peak_bytes, 256 * kMiB);
  EXPECT_EQ(u->oom_kills, 0u);

  Status k = (*group)->kill_all();
  ASSERT_TRUE(k.ok()) << k.error().message();
  int status = reap(child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  pids = (*group)->pids();
  ASSERT_TRUE(pids.ok());
  EXPECT_TRUE(pids->empty());

  auto paths = (*group)->paths();
  Status s = (*group)->destroy();
  ASSERT_TRUE(s.ok()) << s.error().message();
  for (const auto& p : paths) EXPECT_FALSE(fs::exists(p)) << p;
}

// usage() keeps its counter files open and reads them again with pread:
// every read must be the kernel's value now, and reset_peak() must act on the
// reads after it (a warm activation's peak is its own, not the instance's).
TEST_F(CgroupV1Priv, V1CountersReadAgainAreCurrentAndThePeakResets) {
  auto group = backend_->create("again", {.memory_bytes = 256 * kMiB});
  ASSERT_TRUE(group.ok()) << group.error().message();
  test::TwoPhaseCgroupChild child((*group)->attach_fds(), 48 * kMiB, 20 * 1000 * 1000, 120 * 1000 * 1000);
  ASSERT_TRUE(child.wait_first_phase()) << "child died early";
  auto first = (*group)->usage();
  ASSERT_TRUE(first.ok()) << first.error().message();
  EXPECT_GE(first->memory_peak_bytes, 48 * kMiB);
  ASSERT_TRUE((*group)->reset_peak().ok());
  auto after_reset = (*group)->usage();
  ASSERT_TRUE(after_reset.ok()) << after_reset.error().message();
  EXPECT_LT(after_reset->memory_peak_bytes, 24 * kMiB) << "the 48 MiB were given back before the reset";
  ASSERT_TRUE(child.run_second_phase()) << "child died";
  auto second = (*group)->usage();
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_GE(second->cpu_total_ns, first->cpu_total_ns + 100ull * 1000 * 1000)
      << "a second read through the same fds sees the CPU burnt since";
  EXPECT_LT(second->memory_peak_bytes, 24 * kMiB);
}

TEST_F(CgroupV1Priv, V1MemoryLimitOomKillsTheChildAndCountsIt) {
  auto group = backend_->create("oom", {.memory_bytes = 32 * kMiB});
  ASSERT_TRUE(group.ok()) << group.error().message();
  auto fds = (*group)->attach_fds();
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    attach_or_die(fds);
    touch_memory(128 * kMiB);
    ::_exit(0);  // only if the limit did not hold
  }
  int status = reap(child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_GE(u->oom_kills, 1u);
  EXPECT_LE(u->memory_peak_bytes, 32 * kMiB);
  EXPECT_GE(u->memory_peak_bytes, 16 * kMiB);
  Status s = (*group)->destroy();
  ASSERT_TRUE(s.ok()) << s.error().message();
}

// Threads of the calling process, from /proc/self/stat (field 20) with plain
// syscalls: it runs in a forked child of a multithreaded test process.
int own_threads() {
  char buf[1024];
  int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? ::read(fd, buf, sizeof buf - 1) : -1;
  if (fd >= 0) ::close(fd);
  buf[n > 0 ? n : 0] = '\0';
  const char* at = std::strrchr(buf, ')');
  if (at == nullptr) return 1;
  for (int field = 2; *at != '\0'; ++at)
    if (*at == ' ' && ++field == 20) return std::atoi(at + 1);
  return 1;
}

TEST_F(CgroupV1Priv, V1PidsLimitStopsForksAndKillAllTakesGrandchildren) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // reap the grandchildren here
  auto group = backend_->create("pids", {.pids = 5});
  ASSERT_TRUE(group.ok()) << group.error().message();
  bool has_pids = false;
  for (const auto& p : (*group)->paths()) has_pids |= fs::exists(p + "/pids.max");
  if (!has_pids) GTEST_SKIP() << "no v1 pids hierarchy";
  auto fds = (*group)->attach_fds();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(p[0]);
    attach_or_die(fds);
    char report[2] = {0, 0};  // children forked, the child's own threads
    for (int i = 0; i < 10; ++i) {
      pid_t g = ::fork();
      if (g == 0) {
        for (;;) ::pause();
      }
      if (g > 0) ++report[0];
    }
    report[1] = static_cast<char>(own_threads());
    if (::write(p[1], report, 2) != 2) ::_exit(91);
    for (;;) ::pause();
  }
  ::close(p[1]);
  char report[2] = {-1, -1};
  ASSERT_EQ(::read(p[0], report, 2), 2);
  ::close(p[0]);
  const int forked = report[0], threads = report[1];
  // 5 tasks: the child's threads (1, or 2 under TSan, whose runtime starts
  // one of its own in a forked child) and its children.
  EXPECT_EQ(forked + threads, 5) << forked << " children forked beside " << threads << " thread(s)";
  EXPECT_GE(forked, 3);
  auto pids = (*group)->pids();
  ASSERT_TRUE(pids.ok());
  EXPECT_EQ(pids->size(), 1u + static_cast<size_t>(forked)) << "the child and its children";

  Status k = (*group)->kill_all();
  ASSERT_TRUE(k.ok()) << k.error().message();
  pids = (*group)->pids();
  ASSERT_TRUE(pids.ok());
  EXPECT_TRUE(pids->empty());
  int reaped = 0;
  while (::waitpid(-1, nullptr, 0) > 0) ++reaped;
  EXPECT_EQ(reaped, 1 + forked);
  Status s = (*group)->destroy();
  ASSERT_TRUE(s.ok()) << s.error().message();
}

TEST_F(CgroupV1Priv, V1CpuQuotaThrottlesTheChild) {
  auto group = backend_->create("quota", {.cpus = 0.2});
  ASSERT_TRUE(group.ok()) << group.error().message();
  std::string cpu_dir;
  for (const auto& p : (*group)->paths())
    if (fs::exists(p + "/cpu.cfs_quota_us")) cpu_dir = p;
  if (cpu_dir.empty()) GTEST_SKIP() << "no v1 cpu hierarchy";
  auto fds = (*group)->attach_fds();
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    attach_or_die(fds);
    uint64_t start = wall_ns();
    volatile uint64_t x = 0;
    while (wall_ns() - start < 500ull * 1000 * 1000) x = x + 1;
    ::_exit(0);
  }
  int status = reap(child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  uint64_t cpu = u->cpu_user_ns + u->cpu_system_ns;
  // 20% of 0.5 s is 100 ms; allow a couple of periods of slack.
  EXPECT_LT(cpu, 300ull * 1000 * 1000) << "quota not applied";
  EXPECT_GT(cpu, 10ull * 1000 * 1000);
  std::string stat = slurp(cpu_dir + "/cpu.stat");
  EXPECT_EQ(stat.find("nr_throttled 0\n"), std::string::npos) << stat;
  Status s = (*group)->destroy();
  ASSERT_TRUE(s.ok()) << s.error().message();
}

TEST_F(CgroupV1Priv, V1RemoveStaleKillsAndRemovesAGroupLeftByACrashedOwner) {
  int ready = -1;
  pid_t child = -1;
  {
    auto group = backend_->create("crashed", {.memory_bytes = 64 * kMiB});
    ASSERT_TRUE(group.ok()) << group.error().message();
    child = fork_attached_child((*group)->attach_fds(), &ready, [] {});
    ASSERT_GT(child, 0);
    ASSERT_TRUE(wait_ready(ready));
    // The owner "crashes": its group object is never destroyed.
    test::abandon(std::move(group.value()));
  }
  auto fresh = open_cgroup_v1(options_);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message();
  auto names = (*fresh)->list();
  ASSERT_TRUE(names.ok()) << names.error().message();
  EXPECT_EQ(*names, std::vector<std::string>{"crashed"});
  Status s = (*fresh)->remove_stale("crashed");
  ASSERT_TRUE(s.ok()) << s.error().message();
  int status = reap(child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  names = (*fresh)->list();
  ASSERT_TRUE(names.ok());
  EXPECT_TRUE(names->empty());
}

TEST_F(CgroupV1Priv, V1ParentStaysWhileAnotherGroupUsesIt) {
  auto a = backend_->create("a", {});
  ASSERT_TRUE(a.ok()) << a.error().message();
  auto b = backend_->create("b", {});
  ASSERT_TRUE(b.ok()) << b.error().message();
  ASSERT_TRUE((*a)->destroy().ok());
  for (const auto& p : parents_) EXPECT_TRUE(fs::exists(p)) << p;
  ASSERT_TRUE((*b)->destroy().ok());
  for (const auto& p : parents_) EXPECT_FALSE(fs::exists(p)) << p;
}

TEST_F(CgroupV1Priv, AutoDetectMatchesTheFilesystemAtSysFsCgroup) {
  if (::getenv("STOKE_CGROUP_VERSION") != nullptr) GTEST_SKIP() << "STOKE_CGROUP_VERSION is set";
  struct statfs sfs;
  ASSERT_EQ(::statfs("/sys/fs/cgroup", &sfs), 0);
  bool v2 = static_cast<unsigned long>(sfs.f_type) == 0x63677270UL;  // CGROUP2_SUPER_MAGIC
  CgroupOptions o;
  o.parent_name = options_.parent_name;
  auto b = open_cgroup_backend(o);
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ((*b)->version(), v2 ? "v2" : "v1");
}

TEST_F(CgroupV1Priv, V1ConcurrentOwnersShareTheParentWithoutErrors) {
  // Several owners create and destroy groups under one parent directory; each
  // destroy() may remove the parent while another owner is between its mkdirs.
  constexpr int kOwners = 3, kRounds = 150;
  std::vector<pid_t> owners;
  for (int w = 0; w < kOwners; ++w) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (int i = 0; i < kRounds; ++i) {
        std::string name = "w";  // built with += (gcc 12's -Wrestrict misfires on "w" + to_string)
        name += std::to_string(w);
        name += '-';
        name += std::to_string(i);
        auto g = backend_->create(name, {});
        if (!g.ok()) {
          std::fprintf(stderr, "owner %d round %d: %s\n", w, i, g.error().message().c_str());
          ::_exit(1);
        }
        if (Status s = (*g)->destroy(); !s) {
          std::fprintf(stderr, "owner %d round %d: %s\n", w, i, s.error().message().c_str());
          ::_exit(2);
        }
      }
      ::_exit(0);
    }
    owners.push_back(pid);
  }
  for (pid_t pid : owners) {
    int status = reap(pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "owner failed, status " << status;
  }
}

}  // namespace
}  // namespace stoke
