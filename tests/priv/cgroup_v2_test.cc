// The cgroup v2 backend against the real kernel (root, a cgroup2 mount).
//
// On this v1-hybrid host the unified tree at /sys/fs/cgroup/unified has no
// controllers (they are all bound to v1), so the real-kernel tests cover what v2
// offers without controllers — create, self-attach, cgroup.procs, cpu.stat,
// cgroup.kill, remove — and that a requested limit fails loudly. The controller
// files are covered by the fake-tree unit tests; the limits test below runs on
// hosts whose v2 tree offers the controllers.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
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

void attach_or_die(const std::vector<int>& fds) {
  for (size_t i = 0; i < fds.size(); ++i)
    if (::write(fds[i], "0", 1) != 1) ::_exit(100 + static_cast<int>(i));
}

void burn_cpu_ns(uint64_t ns) {
  uint64_t start = process_cpu_ns();
  volatile uint64_t x = 0;
  while (process_cpu_ns() - start < ns) x = x + 1;
}

void touch_memory(size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) ::_exit(90);
  for (size_t off = 0; off < bytes; off += 4096) static_cast<volatile char*>(p)[off] = 1;
}

bool kernel_at_least(int major, int minor) {
  utsname u{};
  if (::uname(&u) != 0) return false;
  int ma = 0, mi = 0;
  if (std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

// The cgroup2 mount and this process's group in it, from /proc/self.
bool find_own_v2_group(std::string* mount, std::string* own) {
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    if (line.find(" - cgroup2 ") == std::string::npos) continue;
    std::istringstream ss(line);
    std::string id, parent, dev, root, point;
    ss >> id >> parent >> dev >> root >> point;
    if (root != "/") continue;
    *mount = point;
    break;
  }
  if (mount->empty()) return false;
  std::ifstream cg("/proc/self/cgroup");
  while (std::getline(cg, line))
    if (line.rfind("0::", 0) == 0) {
      *own = line.substr(3);
      return true;
    }
  return false;
}

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream ss(s);
  std::vector<std::string> out;
  std::string w;
  while (ss >> w) out.push_back(w);
  return out;
}

class CgroupV2Priv : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create cgroups";
    std::string mount, own;
    if (!find_own_v2_group(&mount, &own)) GTEST_SKIP() << "no cgroup2 mount containing this process";
    self_dir_ = mount + (own == "/" ? "" : own);
    available_ = split_words(slurp(self_dir_ + "/cgroup.controllers"));
    options_.version = "v2";
    options_.parent_name = "stoke-test-" + std::to_string(::getpid());
    options_.v2_move_self_to_leaf = false;  // never move the test runner
    auto b = open_cgroup_backend(options_);
    if (!b.ok()) GTEST_SKIP() << "cgroup v2 backend unavailable: " << b.error().message();
    backend_ = std::move(b.value());
  }

  void TearDown() override {
    if (!backend_) return;
    for (const auto& p : backend_->parent_dirs()) EXPECT_FALSE(fs::exists(p)) << "left behind: " << p;
  }

  bool has_controller(const std::string& c) const {
    return std::find(available_.begin(), available_.end(), c) != available_.end();
  }

  static int reap(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
  }

  std::string self_dir_;
  std::vector<std::string> available_;
  CgroupOptions options_;
  std::unique_ptr<CgroupBackend> backend_;
};

TEST_F(CgroupV2Priv, V2GroupIsCreatedBeneathOwnGroupAndChildAttachesAndIsAccounted) {
  auto group = backend_->create("acct", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  std::string dir = self_dir_ + "/" + options_.parent_name + "/acct";
  EXPECT_EQ((*group)->paths(), std::vector<std::string>{dir});
  EXPECT_TRUE(fs::exists(dir + "/cgroup.procs"));
  ASSERT_EQ((*group)->attach_fds().size(), 1u);

  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  auto fds = (*group)->attach_fds();
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(p[0]);
    attach_or_die(fds);
    burn_cpu_ns(150 * 1000 * 1000);
    char c = 'r';
    if (::write(p[1], &c, 1) != 1) ::_exit(91);
    for (;;) ::pause();
  }
  ::close(p[1]);
  char c;
  ASSERT_EQ(::read(p[0], &c, 1), 1) << "child died early";
  ::close(p[0]);

  auto pids = (*group)->pids();
  ASSERT_TRUE(pids.ok()) << pids.error().message();
  EXPECT_EQ(*pids, std::vector<int>{child});
  std::string child_cg = slurp("/proc/" + std::to_string(child) + "/cgroup");
  EXPECT_NE(child_cg.find("0::" + dir.substr(dir.find(options_.parent_name) - 1)), std::string::npos)
      << child_cg;

  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  uint64_t cpu = u->cpu_user_ns + u->cpu_system_ns;
  EXPECT_GE(cpu, 100ull * 1000 * 1000) << "user " << u->cpu_user_ns << " sys " << u->cpu_system_ns;
  EXPECT_LT(cpu, 10ull * 1000 * 1000 * 1000);

  Status k = (*group)->kill_all();
  ASSERT_TRUE(k.ok()) << k.error().message();
  int status = reap(child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  Status s = (*group)->destroy();
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_TRUE((*group)->destroy().ok());
}

// usage() keeps its counter files open and reads them again with pread:
// every read must be the kernel's value now. memory.peak resets (6.12+) only
// for reads through the fd that wrote the reset: the kept one.
TEST_F(CgroupV2Priv, V2CountersReadAgainAreCurrentAndThePeakResetsWhereTheKernelCan) {
  auto group = backend_->create("again", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  test::TwoPhaseCgroupChild child((*group)->attach_fds(), 48 * kMiB, 20 * 1000 * 1000, 120 * 1000 * 1000);
  ASSERT_TRUE(child.wait_first_phase()) << "child died early";
  auto first = (*group)->usage();
  ASSERT_TRUE(first.ok()) << first.error().message();
  ASSERT_TRUE((*group)->reset_peak().ok());
  ASSERT_TRUE(child.run_second_phase()) << "child died";
  auto second = (*group)->usage();
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_GE(second->cpu_total_ns, first->cpu_total_ns + 100ull * 1000 * 1000)
      << "a second read through the same fd sees the CPU burnt since";
  if (!has_controller("memory")) return;
  EXPECT_GE(first->memory_peak_bytes, 48 * kMiB);
  if (kernel_at_least(6, 12))
    EXPECT_LT(second->memory_peak_bytes, 24 * kMiB) << "the 48 MiB were given back before the reset";
  else
    EXPECT_GE(second->memory_peak_bytes, 48 * kMiB) << "before 6.12 the peak is the group's whole life";
}

// keep_parent: the backend removes the shared parent when it goes. A group
// that outlives it (the agent's last pooled instances are torn down after its
// spawners) must remove the parent itself, or the parent stays behind empty.
TEST_F(CgroupV2Priv, V2KeptParentGoesWithTheLastGroupEvenWhenItOutlivesItsBackend) {
  CgroupOptions kept = options_;
  kept.keep_parent = true;
  auto owner = open_cgroup_backend(kept);
  ASSERT_TRUE(owner.ok()) << owner.error().message();
  auto last = (*owner)->create("last", {});
  ASSERT_TRUE(last.ok()) << last.error().message();
  const std::vector<std::string> parents = (*owner)->parent_dirs();
  owner->reset();  // the owner goes first
  ASSERT_TRUE((*last)->destroy().ok());
  for (const auto& p : parents) EXPECT_FALSE(fs::exists(p)) << "left behind by the last group: " << p;
}

TEST_F(CgroupV2Priv, V2KillAllTakesEveryProcessInTheGroup) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  auto group = backend_->create("killall", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  auto fds = (*group)->attach_fds();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(p[0]);
    attach_or_die(fds);
    for (int i = 0; i < 3; ++i)
      if (::fork() == 0)
        for (;;) ::pause();
    char c = 'r';
    if (::write(p[1], &c, 1) != 1) ::_exit(91);
    for (;;) ::pause();
  }
  ::close(p[1]);
  char c;
  ASSERT_EQ(::read(p[0], &c, 1), 1);
  ::close(p[0]);
  auto pids = (*group)->pids();
  ASSERT_TRUE(pids.ok());
  EXPECT_EQ(pids->size(), 4u);

  Status k = (*group)->kill_all();
  ASSERT_TRUE(k.ok()) << k.error().message();
  pids = (*group)->pids();
  ASSERT_TRUE(pids.ok());
  EXPECT_TRUE(pids->empty());
  int reaped = 0, status = 0;
  while (::waitpid(-1, &status, 0) > 0) {
    ++reaped;
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  }
  EXPECT_EQ(reaped, 4);
  Status s = (*group)->destroy();
  ASSERT_TRUE(s.ok()) << s.error().message();
}

TEST_F(CgroupV2Priv, V2RequestedLimitWithoutItsControllerFailsClearlyAndLeavesNothing) {
  struct Case {
    const char* controller;
    CgroupLimits limits;
  };
  int checked = 0;
  for (const Case& c :
       {Case{"memory", {.memory_bytes = 64 * kMiB}}, Case{"cpu", {.cpus = 1}}, Case{"pids", {.pids = 10}}}) {
    if (has_controller(c.controller)) continue;
    ++checked;
    auto group = backend_->create("limited", c.limits);
    ASSERT_FALSE(group.ok()) << c.controller << " limit accepted without the controller";
    EXPECT_NE(group.error().message().find(std::string("'") + c.controller + "' controller is not available"),
              std::string::npos)
        << group.error().message();
    for (const auto& p : backend_->parent_dirs()) EXPECT_FALSE(fs::exists(p)) << p;
  }
  if (checked == 0) GTEST_SKIP() << "memory, cpu and pids are all available in " << self_dir_;
}

TEST_F(CgroupV2Priv, V2GroupAppliesLimitsWhenControllersAreAvailable) {
  for (const char* c : {"memory", "cpu", "pids"})
    if (!has_controller(c)) GTEST_SKIP() << "controller '" << c << "' not available in " << self_dir_;
  auto group = backend_->create("limits", {.memory_bytes = 64 * kMiB, .cpus = 1.5, .pids = 50});
  if (!group.ok() && group.error().err == EBUSY)
    GTEST_SKIP() << "own group has processes (no-internal-processes rule): " << group.error().message();
  ASSERT_TRUE(group.ok()) << group.error().message();
  std::string dir = (*group)->paths().at(0);
  EXPECT_EQ(slurp(dir + "/memory.max"), std::to_string(64 * kMiB));
  if (fs::exists(dir + "/memory.swap.max")) {
    EXPECT_EQ(slurp(dir + "/memory.swap.max"), "0");
  }
  EXPECT_EQ(slurp(dir + "/cpu.max"), "150000 100000");
  EXPECT_EQ(slurp(dir + "/pids.max"), "50");

  auto fds = (*group)->attach_fds();
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    attach_or_die(fds);
    touch_memory(256 * kMiB);
    ::_exit(0);
  }
  int status = reap(child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_GE(u->oom_kills, 1u);
  ASSERT_TRUE((*group)->destroy().ok());
}

TEST_F(CgroupV2Priv, V2OomKillsEveryProcessOfTheGroupNotOnlyTheOneThatAllocated) {
  if (!has_controller("memory")) GTEST_SKIP() << "controller 'memory' not available in " << self_dir_;
  auto group = backend_->create("oomgroup", {.memory_bytes = 32 * kMiB});
  if (!group.ok() && group.error().err == EBUSY)
    GTEST_SKIP() << "own group has processes (no-internal-processes rule): " << group.error().message();
  ASSERT_TRUE(group.ok()) << group.error().message();
  std::string dir = (*group)->paths().at(0);
  EXPECT_EQ(slurp(dir + "/memory.oom.group"), "1");
  auto fds = (*group)->attach_fds();
  pid_t bystander = ::fork();
  ASSERT_GE(bystander, 0);
  if (bystander == 0) {
    attach_or_die(fds);
    for (;;) ::pause();
  }
  pid_t hog = ::fork();
  ASSERT_GE(hog, 0);
  if (hog == 0) {
    attach_or_die(fds);
    touch_memory(256 * kMiB);
    ::_exit(0);
  }
  int hog_status = reap(hog);
  EXPECT_TRUE(WIFSIGNALED(hog_status) && WTERMSIG(hog_status) == SIGKILL) << hog_status;
  // The bystander used almost nothing, yet goes with the group.
  int bystander_status = reap(bystander);
  EXPECT_TRUE(WIFSIGNALED(bystander_status) && WTERMSIG(bystander_status) == SIGKILL) << bystander_status;
  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_GE(u->oom_kills, 1u);
  ASSERT_TRUE((*group)->destroy().ok());
}

TEST_F(CgroupV2Priv, V2RemoveStaleKillsAndRemovesAGroupLeftByACrashedOwner) {
  pid_t child = -1;
  {
    auto group = backend_->create("crashed", {});
    ASSERT_TRUE(group.ok()) << group.error().message();
    auto fds = (*group)->attach_fds();
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(p[0]);
      attach_or_die(fds);
      char c = 'r';
      if (::write(p[1], &c, 1) != 1) ::_exit(91);
      for (;;) ::pause();
    }
    ::close(p[1]);
    char c;
    ASSERT_EQ(::read(p[0], &c, 1), 1);
    ::close(p[0]);
    test::abandon(std::move(group.value()));  // the owner "crashes"
  }
  auto fresh = open_cgroup_backend(options_);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message();
  auto names = (*fresh)->list();
  ASSERT_TRUE(names.ok()) << names.error().message();
  EXPECT_EQ(*names, std::vector<std::string>{"crashed"});
  Status s = (*fresh)->remove_stale("crashed");
  ASSERT_TRUE(s.ok()) << s.error().message();
  int status = reap(child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
}

TEST_F(CgroupV2Priv, V2ConcurrentOwnersShareTheParentWithoutErrors) {
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
