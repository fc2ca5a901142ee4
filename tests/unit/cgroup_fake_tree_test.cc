// Both cgroup backends against a fake cgroupfs in a temp dir.
//
// A real cgroupfs creates the controller files when the group is made; a plain
// directory does not, so each test pre-creates <self>/<parent>/<name>/ with the
// (empty) files the kernel would provide and then checks what the backend wrote
// into them, and what usage() makes of the counters the test puts there. A
// backend finding its group already there (empty of processes) takes it over.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "sandbox/cgroup.h"

namespace stoke {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1024 * 1024;

void put(const fs::path& path, const std::string& content = "") {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::trunc);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

std::string get(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Removes the files a fake group holds, as the kernel would on rmdir.
void empty_dir(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) fs::remove(e.path());
}

class FakeCgroupTree : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cgroup-fake-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  fs::path root_;
};

// ---------------------------------------------------------------------------
// v1

class FakeV1Tree : public FakeCgroupTree {
 protected:
  void SetUp() override {
    FakeCgroupTree::SetUp();
    // memory and pids on their own; cpu and cpuacct co-mounted, as on many hosts.
    memory_ = root_ / "memory/agent";
    cpu_ = root_ / "cpu,cpuacct/agent";
    pids_ = root_ / "pids/agent";
    for (const auto& d : {memory_, cpu_, pids_}) fs::create_directories(d);
    options_.version = "v1";
    options_.parent_name = "stoke";
    options_.v1_self_dirs = {{"memory", memory_}, {"cpu", cpu_}, {"cpuacct", cpu_}, {"pids", pids_}};
  }

  // The files a v1 kernel would create for group `name`.
  void precreate_group(const std::string& name) {
    fs::path m = memory_ / "stoke" / name, c = cpu_ / "stoke" / name, p = pids_ / "stoke" / name;
    for (const char* f : {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.swappiness",
                          "tasks", "cgroup.procs"})
      put(m / f);
    put(m / "memory.max_usage_in_bytes", "123457536\n");
    put(m / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
    for (const char* f : {"cpu.cfs_period_us", "cpu.cfs_quota_us", "tasks", "cgroup.procs"}) put(c / f);
    put(c / "cpuacct.usage_user", "1500000000\n");
    put(c / "cpuacct.usage_sys", "250000000\n");
    put(c / "cpuacct.stat", "user 150\nsystem 25\n");
    for (const char* f : {"pids.max", "tasks", "cgroup.procs"}) put(p / f);
  }

  fs::path memory_, cpu_, pids_;
  CgroupOptions options_;
};

TEST_F(FakeV1Tree, WritesMemorySwapCpuAndPidsLimits) {
  precreate_group("sb1");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  EXPECT_EQ((*backend)->version(), "v1");
  auto group = (*backend)->create("sb1", {.memory_bytes = 64 * kMiB, .cpus = 1.5, .pids = 100});
  ASSERT_TRUE(group.ok()) << group.error().message();

  fs::path m = memory_ / "stoke/sb1", c = cpu_ / "stoke/sb1", p = pids_ / "stoke/sb1";
  EXPECT_EQ(get(m / "memory.limit_in_bytes"), "67108864");
  EXPECT_EQ(get(m / "memory.memsw.limit_in_bytes"), "67108864");  // same value: no swap
  EXPECT_EQ(get(c / "cpu.cfs_period_us"), "100000");
  EXPECT_EQ(get(c / "cpu.cfs_quota_us"), "150000");
  EXPECT_EQ(get(p / "pids.max"), "100");
  empty_dir(m), empty_dir(c), empty_dir(p);
}

TEST_F(FakeV1Tree, WritesUnlimitedValuesWhenNoLimitIsRequested) {
  precreate_group("sb1");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  fs::path m = memory_ / "stoke/sb1", c = cpu_ / "stoke/sb1", p = pids_ / "stoke/sb1";
  EXPECT_EQ(get(m / "memory.limit_in_bytes"), "-1");
  EXPECT_EQ(get(m / "memory.memsw.limit_in_bytes"), "-1");
  EXPECT_EQ(get(m / "memory.swappiness"), "0");  // swap still kept out
  EXPECT_EQ(get(c / "cpu.cfs_quota_us"), "-1");
  EXPECT_EQ(get(p / "pids.max"), "max");
}

TEST_F(FakeV1Tree, TinyCpuQuotaIsRaisedToTheKernelMinimum) {
  precreate_group("sb1");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {.cpus = 0.001});
  ASSERT_TRUE(group.ok()) << group.error().message();
  EXPECT_EQ(get(cpu_ / "stoke/sb1/cpu.cfs_quota_us"), "1000");
}

TEST_F(FakeV1Tree, MemoryLimitWorksWithoutSwapAccounting) {
  precreate_group("sb1");
  fs::remove(memory_ / "stoke/sb1/memory.memsw.limit_in_bytes");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {.memory_bytes = 32 * kMiB});
  ASSERT_TRUE(group.ok()) << group.error().message();
  EXPECT_EQ(get(memory_ / "stoke/sb1/memory.limit_in_bytes"), "33554432");
}

TEST_F(FakeV1Tree, CoMountedCpuAndCpuacctShareOneDirectoryAndAttachFds) {
  precreate_group("sb1");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  EXPECT_EQ((*backend)->parent_dirs(),
            (std::vector<std::string>{memory_ / "stoke", cpu_ / "stoke", pids_ / "stoke"}));
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  EXPECT_EQ((*group)->name(), "sb1");
  EXPECT_EQ((*group)->paths(),
            (std::vector<std::string>{memory_ / "stoke/sb1", cpu_ / "stoke/sb1", pids_ / "stoke/sb1"}));
  auto fds = (*group)->attach_fds();
  ASSERT_EQ(fds.size(), 3u);
  for (int fd : fds) {
    EXPECT_EQ(::fcntl(fd, F_GETFL) & O_ACCMODE, O_WRONLY);
    EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
  }
  // The fds are the groups' tasks files: "0" written to the first lands in memory's.
  ASSERT_EQ(::write(fds[0], "0", 1), 1);
  EXPECT_EQ(get(memory_ / "stoke/sb1/tasks"), "0");
}

TEST_F(FakeV1Tree, UsageReadsCpuacctNanosecondsPeakAndOomKills) {
  precreate_group("sb1");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_EQ(u->cpu_user_ns, 1500000000u);
  EXPECT_EQ(u->cpu_system_ns, 250000000u);
  EXPECT_EQ(u->memory_peak_bytes, 123457536u);
  EXPECT_EQ(u->oom_kills, 3u);
}

TEST_F(FakeV1Tree, UsageSplitsTheExactCpuacctUsageInTheTickedProportion) {
  precreate_group("sb1");
  std::ofstream(cpu_ / "stoke/sb1/cpuacct.usage") << "3000000000\n";
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_EQ(u->cpu_total_ns, 3000000000u);
  EXPECT_EQ(u->cpu_user_ns, 2571428571u);
  EXPECT_EQ(u->cpu_system_ns, 428571429u);
  EXPECT_EQ(u->cpu_user_sampled_ns, 1500000000u);
}

TEST_F(FakeV1Tree, UsageFallsBackToCpuacctStatTicksOnOldKernels) {
  precreate_group("sb1");
  fs::remove(cpu_ / "stoke/sb1/cpuacct.usage_user");
  fs::remove(cpu_ / "stoke/sb1/cpuacct.usage_sys");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  uint64_t ns_per_tick = 1000000000ull / static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
  EXPECT_EQ(u->cpu_user_ns, 150 * ns_per_tick);
  EXPECT_EQ(u->cpu_system_ns, 25 * ns_per_tick);
}

TEST_F(FakeV1Tree, PidsAreTheUnionOfAllHierarchies) {
  precreate_group("sb1");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  put(memory_ / "stoke/sb1/cgroup.procs", "34\n12\n");
  put(pids_ / "stoke/sb1/cgroup.procs", "56\n34\n");
  auto pids = (*group)->pids();
  ASSERT_TRUE(pids.ok()) << pids.error().message();
  EXPECT_EQ(*pids, (std::vector<int>{12, 34, 56}));
  put(memory_ / "stoke/sb1/cgroup.procs");  // no real processes to kill at teardown
  put(pids_ / "stoke/sb1/cgroup.procs");
}

TEST_F(FakeV1Tree, DestroyRemovesGroupAndEmptyParentAndIsIdempotent) {
  precreate_group("sb1");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {.memory_bytes = 64 * kMiB});
  ASSERT_TRUE(group.ok()) << group.error().message();
  for (const auto& p : (*group)->paths()) empty_dir(p);
  Status s = (*group)->destroy();
  ASSERT_TRUE(s.ok()) << s.error().message();
  for (const auto& p : (*backend)->parent_dirs()) EXPECT_FALSE(fs::exists(p)) << p;
  EXPECT_TRUE(fs::exists(memory_));  // never the caller's own group
  EXPECT_TRUE((*group)->attach_fds().empty());
  EXPECT_TRUE((*group)->destroy().ok());
}

TEST_F(FakeV1Tree, DestroyKeepsParentThatOtherGroupsStillUse) {
  precreate_group("sb1");
  precreate_group("sb2");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  for (const auto& p : (*group)->paths()) empty_dir(p);
  ASSERT_TRUE((*group)->destroy().ok());
  EXPECT_FALSE(fs::exists(memory_ / "stoke/sb1"));
  EXPECT_TRUE(fs::exists(memory_ / "stoke/sb2"));
}

TEST_F(FakeV1Tree, DestroyReportsADirectoryItCannotRemove) {
  precreate_group("sb1");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  Status s = (*group)->destroy();  // regular files inside: not a cgroupfs
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().err, ENOTEMPTY);
  EXPECT_NE(s.error().message().find("rmdir"), std::string::npos) << s.error().message();
  for (const auto& p : (*group)->paths()) empty_dir(p);
  EXPECT_TRUE((*group)->destroy().ok());
}

TEST_F(FakeV1Tree, CreateRefusesAnExistingGroupThatHasProcesses) {
  precreate_group("sb1");
  put(memory_ / "stoke/sb1/cgroup.procs", "4242\n");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {.memory_bytes = 64 * kMiB});
  ASSERT_FALSE(group.ok());
  EXPECT_EQ(group.error().err, EEXIST);
  EXPECT_EQ(get(memory_ / "stoke/sb1/memory.limit_in_bytes"), "");  // untouched
}

TEST_F(FakeV1Tree, CreateMissingLimitFileFailsAndCleansUp) {
  // No pre-created files: a plain mkdir gives empty dirs, the limit write fails
  // (as it would on a hierarchy without that controller), and the new dirs go.
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {.memory_bytes = 64 * kMiB});
  ASSERT_FALSE(group.ok());
  EXPECT_NE(group.error().message().find("memory.limit_in_bytes"), std::string::npos)
      << group.error().message();
  for (const auto& p : (*backend)->parent_dirs()) EXPECT_FALSE(fs::exists(p)) << p;
}

TEST_F(FakeV1Tree, OpenFailsClearlyWithoutMemoryController) {
  options_.v1_self_dirs.erase("memory");
  auto backend = open_cgroup_v1(options_);
  ASSERT_FALSE(backend.ok());
  EXPECT_NE(backend.error().message().find("memory controller"), std::string::npos)
      << backend.error().message();
}

TEST_F(FakeV1Tree, CpuQuotaWithoutCpuControllerIsRefused) {
  options_.v1_self_dirs.erase("cpu");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {.cpus = 1});
  ASSERT_FALSE(group.ok());
  EXPECT_NE(group.error().message().find("'cpu' controller"), std::string::npos) << group.error().message();
  for (const auto& p : (*backend)->parent_dirs()) EXPECT_FALSE(fs::exists(p)) << p;
}

TEST_F(FakeV1Tree, PidsLimitWithoutPidsControllerIsRefused) {
  options_.v1_self_dirs.erase("pids");
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {.pids = 10});
  ASSERT_FALSE(group.ok());
  EXPECT_NE(group.error().message().find("'pids' controller"), std::string::npos) << group.error().message();
}

TEST_F(FakeV1Tree, BadGroupNamesAreRejected) {
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  for (const char* bad : {"", ".", "..", "a/b", "../escape"}) {
    auto group = (*backend)->create(bad, {});
    EXPECT_FALSE(group.ok()) << "'" << bad << "'";
    EXPECT_FALSE((*backend)->remove_stale(bad).ok()) << "'" << bad << "'";
  }
  options_.parent_name = "../up";
  EXPECT_FALSE(open_cgroup_v1(options_).ok());
}

TEST_F(FakeV1Tree, ListIsTheUnionAcrossHierarchiesAndRemoveStaleCleansUp) {
  fs::create_directories(memory_ / "stoke/old1");
  fs::create_directories(cpu_ / "stoke/old1");
  fs::create_directories(pids_ / "stoke/old2");  // half-created before a crash
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto names = (*backend)->list();
  ASSERT_TRUE(names.ok()) << names.error().message();
  EXPECT_EQ(*names, (std::vector<std::string>{"old1", "old2"}));
  ASSERT_TRUE((*backend)->remove_stale("old1").ok());
  ASSERT_TRUE((*backend)->remove_stale("old2").ok());
  names = (*backend)->list();
  ASSERT_TRUE(names.ok());
  EXPECT_TRUE(names->empty());
  for (const auto& p : (*backend)->parent_dirs()) EXPECT_FALSE(fs::exists(p)) << p;
}

TEST_F(FakeV1Tree, ListWithoutParentDirectoryIsEmpty) {
  auto backend = open_cgroup_v1(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto names = (*backend)->list();
  ASSERT_TRUE(names.ok()) << names.error().message();
  EXPECT_TRUE(names->empty());
}

// ---------------------------------------------------------------------------
// v2

class FakeV2Tree : public FakeCgroupTree {
 protected:
  void SetUp() override {
    FakeCgroupTree::SetUp();
    self_ = root_ / "agent.service";
    put(self_ / "cgroup.controllers", "cpuset cpu io memory hugetlb pids\n");
    put(self_ / "cgroup.subtree_control");
    put(self_ / "cgroup.procs");
    options_.version = "v2";
    options_.parent_name = "stoke";
    options_.v2_self_dir = self_;
    options_.v2_move_self_to_leaf = false;
  }

  void precreate_parent() { put(self_ / "stoke/cgroup.subtree_control"); }

  fs::path precreate_group(const std::string& name) {
    precreate_parent();
    fs::path g = self_ / "stoke" / name;
    for (const char* f :
         {"memory.max", "memory.swap.max", "cpu.max", "pids.max", "cgroup.procs", "cgroup.kill"})
      put(g / f);
    put(g / "cpu.stat", "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 4\n");
    put(g / "memory.peak", "4096000\n");
    put(g / "memory.events", "low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\noom_group_kill 0\n");
    return g;
  }

  fs::path self_;
  CgroupOptions options_;
};

TEST_F(FakeV2Tree, EnablesControllersAndWritesLimits) {
  fs::path g = precreate_group("sb1");
  auto backend = open_cgroup_v2(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  EXPECT_EQ((*backend)->version(), "v2");
  auto group = (*backend)->create("sb1", {.memory_bytes = 64 * kMiB, .cpus = 1.5, .pids = 100});
  ASSERT_TRUE(group.ok()) << group.error().message();
  EXPECT_EQ(get(self_ / "cgroup.subtree_control"), "+cpu +memory +pids");
  EXPECT_EQ(get(self_ / "stoke/cgroup.subtree_control"), "+cpu +memory +pids");
  EXPECT_EQ(get(g / "memory.max"), "67108864");
  EXPECT_EQ(get(g / "memory.swap.max"), "0");
  EXPECT_EQ(get(g / "cpu.max"), "150000 100000");
  EXPECT_EQ(get(g / "pids.max"), "100");
  EXPECT_EQ((*group)->paths(), (std::vector<std::string>{g}));
  auto fds = (*group)->attach_fds();
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_EQ(::fcntl(fds[0], F_GETFL) & O_ACCMODE, O_WRONLY);
  EXPECT_TRUE(::fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
  ASSERT_EQ(::write(fds[0], "0", 1), 1);
  EXPECT_EQ(get(g / "cgroup.procs"), "0");
}

TEST_F(FakeV2Tree, WritesMaxWhenNoLimitIsRequestedAndKeepsSwapOff) {
  fs::path g = precreate_group("sb1");
  auto backend = open_cgroup_v2(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  EXPECT_EQ(get(g / "memory.max"), "max");
  EXPECT_EQ(get(g / "memory.swap.max"), "0");
  EXPECT_EQ(get(g / "cpu.max"), "max 100000");
  EXPECT_EQ(get(g / "pids.max"), "max");
}

TEST_F(FakeV2Tree, ControllersAlreadyEnabledAreNotWrittenAgain) {
  fs::path g = precreate_group("sb1");
  put(self_ / "cgroup.subtree_control", "cpu memory pids\n");
  put(self_ / "stoke/cgroup.subtree_control", "memory\n");
  auto backend = open_cgroup_v2(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  EXPECT_EQ(get(self_ / "cgroup.subtree_control"), "cpu memory pids\n");  // not touched
  EXPECT_EQ(get(self_ / "stoke/cgroup.subtree_control"), "+cpu +pids");   // only the missing ones
}

TEST_F(FakeV2Tree, UsageReadsCpuStatPeakAndOomKill) {
  precreate_group("sb1");
  auto backend = open_cgroup_v2(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_EQ(u->cpu_user_ns, 2000000u);
  EXPECT_EQ(u->cpu_system_ns, 500000u);
  EXPECT_EQ(u->memory_peak_bytes, 4096000u);
  EXPECT_EQ(u->oom_kills, 2u);
}

TEST_F(FakeV2Tree, UsageWithoutMemoryControllerFilesReportsCpuOnly) {
  fs::path g = precreate_group("sb1");
  fs::remove(g / "memory.peak");
  fs::remove(g / "memory.events");
  auto backend = open_cgroup_v2(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_EQ(u->cpu_user_ns, 2000000u);
  EXPECT_EQ(u->memory_peak_bytes, 0u);
  EXPECT_EQ(u->oom_kills, 0u);
}

TEST_F(FakeV2Tree, RequestedLimitWithoutItsControllerFailsBeforeCreatingAnything) {
  put(self_ / "cgroup.controllers", "cpu pids\n");
  auto backend = open_cgroup_v2(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {.memory_bytes = 64 * kMiB});
  ASSERT_FALSE(group.ok());
  EXPECT_NE(
      group.error().message().find("memory limit was requested but the 'memory' controller is not available"),
      std::string::npos)
      << group.error().message();
  EXPECT_FALSE(fs::exists(self_ / "stoke"));
  EXPECT_EQ(get(self_ / "cgroup.subtree_control"), "");

  put(self_ / "cgroup.controllers", "memory\n");
  auto cpu = (*backend)->create("sb1", {.cpus = 0.5});
  ASSERT_FALSE(cpu.ok());
  EXPECT_NE(cpu.error().message().find("'cpu' controller"), std::string::npos) << cpu.error().message();
  auto pids = (*backend)->create("sb1", {.pids = 5});
  ASSERT_FALSE(pids.ok());
  EXPECT_NE(pids.error().message().find("'pids' controller"), std::string::npos) << pids.error().message();
  EXPECT_FALSE(fs::exists(self_ / "stoke"));
}

TEST_F(FakeV2Tree, UnavailableControllersAreSkippedWhenNoLimitNeedsThem) {
  put(self_ / "cgroup.controllers", "hugetlb\n");  // like the unified tree on this host
  precreate_parent();
  fs::path g = self_ / "stoke/sb1";
  put(g / "cgroup.procs");
  put(g / "cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n");
  auto backend = open_cgroup_v2(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  EXPECT_EQ(get(self_ / "cgroup.subtree_control"), "");
  EXPECT_FALSE(fs::exists(g / "memory.max"));
  auto u = (*group)->usage();
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_EQ(u->cpu_user_ns, 0u);
}

TEST_F(FakeV2Tree, KillAllWritesCgroupKill) {
  fs::path g = precreate_group("sb1");
  auto backend = open_cgroup_v2(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  Status s = (*group)->kill_all();
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(get(g / "cgroup.kill"), "1");
}

TEST_F(FakeV2Tree, DestroyRemovesGroupAndEmptyParent) {
  fs::path g = precreate_group("sb1");
  auto backend = open_cgroup_v2(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  auto group = (*backend)->create("sb1", {});
  ASSERT_TRUE(group.ok()) << group.error().message();
  empty_dir(g);
  empty_dir(self_ / "stoke");
  Status s = (*group)->destroy();
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_FALSE(fs::exists(self_ / "stoke"));
  EXPECT_TRUE(fs::exists(self_));
  EXPECT_TRUE((*group)->destroy().ok());
}

TEST_F(FakeV2Tree, ListSkipsTheSupervisorLeafAndRemoveStaleCleansUp) {
  precreate_parent();
  fs::create_directories(self_ / "stoke/old1");
  fs::create_directories(self_ / "stoke/old2");
  fs::create_directories(self_ / "stoke/supervisor");
  auto backend = open_cgroup_v2(options_);
  ASSERT_TRUE(backend.ok()) << backend.error().message();
  EXPECT_EQ((*backend)->parent_dirs(), (std::vector<std::string>{self_ / "stoke"}));
  auto names = (*backend)->list();
  ASSERT_TRUE(names.ok()) << names.error().message();
  EXPECT_EQ(*names, (std::vector<std::string>{"old1", "old2"}));
  ASSERT_TRUE((*backend)->remove_stale("old1").ok());
  EXPECT_FALSE(fs::exists(self_ / "stoke/old1"));
  EXPECT_FALSE((*backend)->remove_stale("supervisor").ok());
  EXPECT_FALSE((*backend)->create("supervisor", {}).ok());
  EXPECT_TRUE(fs::exists(self_ / "stoke/supervisor"));
}

TEST_F(FakeV2Tree, OpenRefusesADirectoryThatIsNotACgroup) {
  options_.v2_self_dir = root_ / "nothing-here";
  auto backend = open_cgroup_v2(options_);
  ASSERT_FALSE(backend.ok());
  EXPECT_NE(backend.error().message().find("not a cgroup2 group"), std::string::npos)
      << backend.error().message();
}

// ---------------------------------------------------------------------------
// Choosing the backend

class BackendChoice : public FakeCgroupTree {
 protected:
  void SetUp() override {
    FakeCgroupTree::SetUp();
    put(root_ / "v2/cgroup.controllers", "memory\n");
    fs::create_directories(root_ / "v1/memory");
    options_.v2_self_dir = root_ / "v2";
    options_.v1_self_dirs = {{"memory", root_ / "v1/memory"}};
    if (const char* env = ::getenv("STOKE_CGROUP_VERSION")) saved_env_ = env;
    ::unsetenv("STOKE_CGROUP_VERSION");
  }
  void TearDown() override {
    if (saved_env_.empty())
      ::unsetenv("STOKE_CGROUP_VERSION");
    else
      ::setenv("STOKE_CGROUP_VERSION", saved_env_.c_str(), 1);
    FakeCgroupTree::TearDown();
  }
  CgroupOptions options_;
  std::string saved_env_;
};

TEST_F(BackendChoice, OptionsVersionForcesTheBackend) {
  options_.version = "v1";
  auto v1 = open_cgroup_backend(options_);
  ASSERT_TRUE(v1.ok()) << v1.error().message();
  EXPECT_EQ((*v1)->version(), "v1");
  options_.version = "v2";
  auto v2 = open_cgroup_backend(options_);
  ASSERT_TRUE(v2.ok()) << v2.error().message();
  EXPECT_EQ((*v2)->version(), "v2");
}

TEST_F(BackendChoice, EnvironmentForcesTheBackendWhenOptionsSayAuto) {
  options_.version = "auto";
  ::setenv("STOKE_CGROUP_VERSION", "v2", 1);
  auto v2 = open_cgroup_backend(options_);
  ASSERT_TRUE(v2.ok()) << v2.error().message();
  EXPECT_EQ((*v2)->version(), "v2");
  ::setenv("STOKE_CGROUP_VERSION", "v1", 1);
  auto v1 = open_cgroup_backend(options_);
  ASSERT_TRUE(v1.ok()) << v1.error().message();
  EXPECT_EQ((*v1)->version(), "v1");
  options_.version = "v2";  // explicit options win over the environment
  auto forced = open_cgroup_backend(options_);
  ASSERT_TRUE(forced.ok()) << forced.error().message();
  EXPECT_EQ((*forced)->version(), "v2");
}

TEST_F(BackendChoice, UnknownVersionsAreErrors) {
  options_.version = "v3";
  EXPECT_FALSE(open_cgroup_backend(options_).ok());
  options_.version = "auto";
  ::setenv("STOKE_CGROUP_VERSION", "cgroup2", 1);
  auto r = open_cgroup_backend(options_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("STOKE_CGROUP_VERSION"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace stoke
