// Cgroup limits and accounting behind one interface, with a v1 and a v2 backend
// chosen at runtime (this host is v1 "hybrid"; production hosts are mostly v2).
//
// Groups live beneath the cgroup the caller itself is in, under a directory named
// "stoke" (v1: in every hierarchy we use; v2: in the unified tree). A group is
// created with its limits already written, and the files the child must write
// "0" to are opened ahead of time: a task that writes 0 to its own group's
// `tasks` (v1) / `cgroup.procs` (v2) file attaches itself without the global
// threadgroup-lock stall that writing a pid from outside takes (DESIGN §2).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"

namespace stoke {

struct CgroupLimits {
  uint64_t memory_bytes = 0;  // 0: no limit. Swap is always off for the group.
  double cpus = 0;            // 0: no quota; 1.5 = one and a half CPUs of quota.
  uint64_t pids = 0;          // 0: no limit.
};

struct CgroupUsage {
  // CPU time, precise (v1 cpuacct.usage, v2 cpu.stat usage_usec), split
  // between user and system in the proportion of the kernel's own split.
  uint64_t cpu_user_ns = 0;
  uint64_t cpu_system_ns = 0;
  uint64_t cpu_total_ns = 0;
  // The kernel's user/system figures as read. On v1 they advance only when a
  // scheduler tick lands (4 ms steps at HZ=250): a short activation's delta
  // is usually 0, so deltas are split with split_cpu_time() instead.
  uint64_t cpu_user_sampled_ns = 0;
  uint64_t cpu_system_sampled_ns = 0;
  uint64_t memory_peak_bytes = 0;
  uint64_t oom_kills = 0;  // processes the OOM killer took inside the group
  // Most tasks (processes and threads) the group held at once, for its life
  // (pids.peak, Linux 6.1+ on v2; 0 where the kernel has none).
  uint64_t pids_peak = 0;
};

// One sandbox's group (in v1: one directory per hierarchy used).
class CgroupGroup {
 public:
  virtual ~CgroupGroup() = default;
  virtual const std::string& name() const = 0;
  // Fds (O_WRONLY|O_CLOEXEC) the child writes "0" to, in order, to join the group.
  virtual std::vector<int> attach_fds() const = 0;
  virtual Result<CgroupUsage> usage() const = 0;
  // Change the limits of a live group (a prewarmed sandbox taken by a function
  // gets the function's). Lowering memory below current usage fails (EBUSY).
  virtual Status set_limits(const CgroupLimits& limits) = 0;
  // Start peak memory over from the current usage (a reused sandbox reports
  // the peak of each activation). A kernel that cannot is not an error.
  virtual Status reset_peak() = 0;
  // pids of the processes in the group (host pid namespace).
  virtual Result<std::vector<int>> pids() const = 0;
  // SIGKILL everything inside, repeating until the group is empty or ~1 s passed.
  virtual Status kill_all() = 0;
  // Close the attach fds and remove the directories (retries briefly on EBUSY).
  // Idempotent; the destructor calls it and ignores the result.
  virtual Status destroy() = 0;
  // Directories that make up this group (for tests and leak checks).
  virtual std::vector<std::string> paths() const = 0;
};

struct CgroupOptions {
  // Which backend: "auto" (detect from /sys/fs/cgroup), "v1" or "v2".
  std::string version = "auto";
  // Name of the directory stoke creates beneath the caller's own cgroup.
  std::string parent_name = "stoke";
  // The caller's group, when it is not the caller's own: a fake cgroupfs in
  // tests, or on v2 a group delegated to the agent (config cgroup_root). When
  // set, these replace what is read from /proc/self/mountinfo and
  // /proc/self/cgroup.
  //   v1: controller name ("memory", "cpu", "cpuacct", "pids") -> directory that
  //       stands for the caller's own group in that hierarchy.
  //   v2: v2_self_dir is the caller's own group directory.
  std::map<std::string, std::string> v1_self_dirs;
  std::string v2_self_dir;
  // v2 only: when the caller's group has processes and controllers cannot be
  // enabled for children (no-internal-processes rule), move the caller into a
  // leaf "<parent_name>/supervisor" first. The agent wants this; tests may not.
  bool v2_move_self_to_leaf = true;
  // Leave the parent directory in place when a group is destroyed (a long-lived
  // owner such as the spawner removes it once, at the end, with
  // remove_empty_parents) instead of removing and re-creating it per group.
  // A group destroyed after its backend removes the parent itself if empty.
  bool keep_parent = false;
};

class CgroupBackend {
 public:
  virtual ~CgroupBackend() = default;
  virtual std::string_view version() const = 0;  // "v1" or "v2"
  // The controllers its groups use, of memory, cpu, cpuacct (v1) and pids:
  // what this host gives it (v2: the delegated group's cgroup.controllers).
  virtual std::vector<std::string> controllers() const = 0;
  // Create a fresh group named `name` (unique per sandbox) with limits set.
  virtual Result<std::unique_ptr<CgroupGroup>> create(const std::string& name,
                                                      const CgroupLimits& limits) = 0;
  // Names of groups that exist under stoke's parent directory (crash recovery).
  virtual Result<std::vector<std::string>> list() const = 0;
  // Kill and remove a group left behind by a crashed owner.
  virtual Status remove_stale(const std::string& name) = 0;
  // The directory or directories that hold stoke's groups.
  virtual std::vector<std::string> parent_dirs() const = 0;
  // rmdir the parent directories if no group is left in them.
  virtual void remove_empty_parents() = 0;
};

// Detect the host's cgroup layout (or obey options.version) and open a backend.
Result<std::unique_ptr<CgroupBackend>> open_cgroup_backend(const CgroupOptions& options = {});

// Backends, exposed for tests that pin one.
Result<std::unique_ptr<CgroupBackend>> open_cgroup_v1(const CgroupOptions& options);
Result<std::unique_ptr<CgroupBackend>> open_cgroup_v2(const CgroupOptions& options);

// Pure parsers (unit-tested).
// "/proc/self/cgroup" text -> controller -> path ("" key for the v2 "0::" line).
std::map<std::string, std::string> parse_proc_self_cgroup(std::string_view text);
// "/proc/self/mountinfo" text -> controller -> mount point of its v1 hierarchy,
// plus key "" -> mount point of the cgroup2 filesystem, if any.
std::map<std::string, std::string> parse_cgroup_mounts(std::string_view mountinfo);
// "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
std::map<std::string, uint64_t> parse_flat_keyed(std::string_view text);

// Precise CPU time split between user and system in the proportion of the
// sampled figures, as the kernel's cputime_adjust() does; with no sample at
// all (no tick landed), all of it counts as user time.
struct CpuSplit {
  uint64_t user_ns = 0;
  uint64_t system_ns = 0;
};
CpuSplit split_cpu_time(uint64_t total_ns, uint64_t user_sampled_ns, uint64_t system_sampled_ns);
// The CPU time of `now` since `before` (both of one group), split as above.
CpuSplit cpu_time_between(const CgroupUsage& before, const CgroupUsage& now);

}  // namespace stoke
