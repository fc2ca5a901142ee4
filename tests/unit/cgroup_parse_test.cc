// The pure parsers behind the cgroup backends: /proc/self/cgroup,
// /proc/self/mountinfo and flat "key value" files.
#include <gtest/gtest.h>

#include "sandbox/cgroup.h"

namespace stoke {
namespace {

// Trimmed from this development host (v1 hybrid) and from a pure v2 host.
constexpr const char* kHybridProcSelfCgroup =
    "9:name=systemd:/\n"
    "8:pids:/\n"
    "7:blkio:/\n"
    "4:memory:/process_api/03646eae601833b5b83eafdc3bdd7e50\n"
    "3:cpuset:/\n"
    "2:cpuacct:/\n"
    "1:cpu:/\n"
    "0::/\n";

constexpr const char* kHybridMountinfo =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

TEST(CgroupParse, ProcSelfCgroupMapsEachControllerToItsPath) {
  auto m = parse_proc_self_cgroup(kHybridProcSelfCgroup);
  EXPECT_EQ(m.at("memory"), "/process_api/03646eae601833b5b83eafdc3bdd7e50");
  EXPECT_EQ(m.at("cpu"), "/");
  EXPECT_EQ(m.at("cpuacct"), "/");
  EXPECT_EQ(m.at("pids"), "/");
  EXPECT_EQ(m.at("name=systemd"), "/");
  EXPECT_EQ(m.at(""), "/");  // the v2 line
  EXPECT_EQ(m.count("devices"), 0u);
}

TEST(CgroupParse, ProcSelfCgroupSplitsCoMountedControllers) {
  auto m = parse_proc_self_cgroup("2:cpu,cpuacct:/system.slice/stoked.service\n5:net_cls,net_prio:/x\n");
  EXPECT_EQ(m.at("cpu"), "/system.slice/stoked.service");
  EXPECT_EQ(m.at("cpuacct"), "/system.slice/stoked.service");
  EXPECT_EQ(m.at("net_cls"), "/x");
  EXPECT_EQ(m.at("net_prio"), "/x");
}

TEST(CgroupParse, ProcSelfCgroupOnPureV2HostHasOnlyTheUnifiedPath) {
  auto m = parse_proc_self_cgroup("0::/system.slice/stoked.service\n");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m.at(""), "/system.slice/stoked.service");
}

TEST(CgroupParse, ProcSelfCgroupKeepsColonsInsidePaths) {
  auto m = parse_proc_self_cgroup("0::/a:b/c:d\n");
  EXPECT_EQ(m.at(""), "/a:b/c:d");
}

TEST(CgroupParse, ProcSelfCgroupSkipsMalformedLines) {
  auto m = parse_proc_self_cgroup("garbage\n3:memory\n4:pids:relative\n\n1:cpu:/ok");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m.at("cpu"), "/ok");
}

TEST(CgroupParse, MountsFindV1HierarchiesAndTheCgroup2Mount) {
  auto m = parse_cgroup_mounts(kHybridMountinfo);
  EXPECT_EQ(m.at("cpu"), "/sys/fs/cgroup/cpu");
  EXPECT_EQ(m.at("cpuacct"), "/sys/fs/cgroup/cpuacct");
  EXPECT_EQ(m.at("memory"), "/sys/fs/cgroup/memory");
  EXPECT_EQ(m.at("pids"), "/sys/fs/cgroup/pids");
  EXPECT_EQ(m.at("name=systemd"), "/sys/fs/cgroup/systemd");
  EXPECT_EQ(m.at(""), "/sys/fs/cgroup/unified");
  // Mount options are not controllers; tmpfs is not a cgroup.
  EXPECT_EQ(m.count("rw"), 0u);
  EXPECT_EQ(m.count("mode=755"), 0u);
  EXPECT_EQ(m.size(), 6u);
}

TEST(CgroupParse, MountsMapCoMountedControllersToOneMountPoint) {
  auto m = parse_cgroup_mounts(
      "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:7 - cgroup cgroup "
      "rw,xattr,cpu,cpuacct\n"
      "26 24 0:23 / /sys/fs/cgroup/systemd rw shared:8 - cgroup cgroup "
      "rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd\n");
  EXPECT_EQ(m.at("cpu"), "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(m.at("cpuacct"), "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(m.at("name=systemd"), "/sys/fs/cgroup/systemd");
  EXPECT_EQ(m.count("xattr"), 0u);
  EXPECT_EQ(m.count("release_agent=/lib/systemd/systemd-cgroups-agent"), 0u);
  EXPECT_EQ(m.size(), 3u);
}

TEST(CgroupParse, MountsOnPureV2HostHaveOnlyTheUnifiedMount) {
  auto m = parse_cgroup_mounts(
      "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
      "rw,nsdelegate,memory_recursiveprot\n");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m.at(""), "/sys/fs/cgroup");
}

TEST(CgroupParse, MountsUnescapeSpacesInMountPoints) {
  auto m = parse_cgroup_mounts("41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 none rw\n");
  EXPECT_EQ(m.at(""), "/mnt/my cgroups");
}

TEST(CgroupParse, MountsKeepTheFirstMountOfAHierarchy) {
  auto m = parse_cgroup_mounts(
      "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
      "90 80 0:32 / /other/memory rw - cgroup cgroup rw,memory\n");
  EXPECT_EQ(m.at("memory"), "/sys/fs/cgroup/memory");
}

TEST(CgroupParse, MountsPreferAWholeHierarchyOverAnEarlierSubtreeBindMount) {
  auto m = parse_cgroup_mounts(
      "35 31 0:32 /some/group /run/bound rw - cgroup cgroup rw,memory\n"
      "36 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
  EXPECT_EQ(m.at("memory"), "/sys/fs/cgroup/memory");
}

TEST(CgroupParse, MountsIgnoreTruncatedLines) {
  auto m = parse_cgroup_mounts("35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup\nnonsense\n\n");
  EXPECT_TRUE(m.empty());
}

TEST(CgroupParse, FlatKeyedReadsCpuStat) {
  auto m = parse_flat_keyed(
      "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\nnr_throttled 0\n"
      "throttled_usec 0\n");
  EXPECT_EQ(m.at("usage_usec"), 2500u);
  EXPECT_EQ(m.at("user_usec"), 2000u);
  EXPECT_EQ(m.at("system_usec"), 500u);
  EXPECT_EQ(m.size(), 6u);
}

TEST(CgroupParse, FlatKeyedReadsV1OomControl) {
  auto m = parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n");
  EXPECT_EQ(m.at("oom_kill"), 7u);
  EXPECT_EQ(m.at("under_oom"), 0u);
}

TEST(CgroupParse, FlatKeyedReadsMemoryEventsAndLargeValues) {
  auto m = parse_flat_keyed("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\ntotal 18446744073709551615\n");
  EXPECT_EQ(m.at("oom_kill"), 2u);
  EXPECT_EQ(m.at("max"), 12u);
  EXPECT_EQ(m.at("total"), UINT64_MAX);
}

TEST(CgroupParse, FlatKeyedSkipsLinesThatAreNotKeyAndNumber) {
  auto m = parse_flat_keyed(
      "limit max\nneg -4\nextra 1 2\n\n  spaced\t 9 \ntoo_big 18446744073709551616\nhex 0x10\n"
      "ok 5\r\n");
  EXPECT_EQ(m.count("limit"), 0u);
  EXPECT_EQ(m.count("neg"), 0u);
  EXPECT_EQ(m.count("extra"), 0u);
  EXPECT_EQ(m.count("too_big"), 0u);
  EXPECT_EQ(m.count("hex"), 0u);
  EXPECT_EQ(m.at("spaced"), 9u);
  EXPECT_EQ(m.at("ok"), 5u);
  EXPECT_EQ(m.size(), 2u);
}

}  // namespace
}  // namespace stoke

namespace stoke {
namespace {

TEST(CpuTimeSplit, PreciseTotalIsSplitInTheSampledProportion) {
  CpuSplit s = split_cpu_time(3'000'000'000, 1'500'000'000, 250'000'000);
  EXPECT_EQ(s.user_ns, 2'571'428'571u);
  EXPECT_EQ(s.user_ns + s.system_ns, 3'000'000'000u);
}

TEST(CpuTimeSplit, NoTickLandedCountsEverythingAsUserTime) {
  CpuSplit s = split_cpu_time(1'234'567, 0, 0);
  EXPECT_EQ(s.user_ns, 1'234'567u);
  EXPECT_EQ(s.system_ns, 0u);
}

TEST(CpuTimeSplit, HugeFiguresDoNotOverflow) {
  CpuSplit s = split_cpu_time(UINT64_MAX / 2, UINT64_MAX / 4, UINT64_MAX / 4);
  EXPECT_EQ(s.user_ns + s.system_ns, UINT64_MAX / 2);
  EXPECT_NEAR(static_cast<double>(s.user_ns), static_cast<double>(UINT64_MAX / 4), 2.0);
}

// A warm activation's share: 0.8 ms of exact runtime between two reads in
// which no tick landed is 0.8 ms of user time, not the 0 the sampled
// figures say; a tick that landed splits the delta.
TEST(CpuTimeSplit, AnActivationBetweenTwoReadsGetsItsExactShare) {
  CgroupUsage before, after;
  before.cpu_total_ns = 50'000'000;
  before.cpu_user_sampled_ns = 40'000'000;
  before.cpu_system_sampled_ns = 8'000'000;
  after = before;
  after.cpu_total_ns += 800'000;
  CpuSplit quiet = cpu_time_between(before, after);
  EXPECT_EQ(quiet.user_ns, 800'000u);
  EXPECT_EQ(quiet.system_ns, 0u);
  after.cpu_system_sampled_ns += 4'000'000;
  CpuSplit ticked = cpu_time_between(before, after);
  EXPECT_EQ(ticked.user_ns, 0u);
  EXPECT_EQ(ticked.system_ns, 800'000u);
  // Counters never go back; a reset group reads as nothing used.
  EXPECT_EQ(cpu_time_between(after, before).user_ns + cpu_time_between(after, before).system_ns, 0u);
}

}  // namespace
}  // namespace stoke
