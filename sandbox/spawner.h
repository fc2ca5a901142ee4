// Spawner: turns a SandboxSpec into a running, fully isolated process.
//
// One spawn = fresh cgroup (limits set ahead) + clone(CLONE_VM|CLONE_NEWUSER|
// NEWPID|NEWNS|NEWNET|NEWIPC|NEWUTS) on a preallocated stack + the child steps
// of child_setup.h + execve. CLONE_VM means the spawning process's size does
// not matter (no page-table copy) and it may be multithreaded: the child only
// issues raw syscalls on a plan prepared in advance.
//
// A Spawner serialises its own spawns (it owns one child stack); use one per
// thread for parallel spawning. Sandboxes are independent of their Spawner
// once spawned, but must not outlive the process that spawned them.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "rootfs/lean_rootfs.h"
#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"
#include "sandbox/cgroup.h"
#include "sandbox/id_map.h"
#include "sandbox/netns_pool.h"
#include "sandbox/spec.h"

namespace stoke {

struct ExitStatus {
  int exit_code = 0;       // valid when signal == 0
  int signal = 0;          // the signal that killed the sandbox's pid 1
  bool timed_out = false;  // killed because the deadline passed
  bool oom = false;        // the OOM killer acted inside the sandbox's cgroup
  double wall_ms = 0;      // spawn start to reaped
  CgroupUsage usage;
  // Shell convention: the exit code, or 128 + signal.
  int shell_code() const { return signal != 0 ? 128 + signal : exit_code; }
};

// Where a spawn's time went: the parent's phases in order, then the child's
// steps from the end of clone (they run in parallel with the parent's "id maps"
// and "cgroup"), then "exec" (last child step to the new program running).
// Milliseconds.
struct SpawnTrace {
  std::vector<std::pair<std::string, double>> phases;
};

class Sandbox {
 public:
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  const std::string& id() const { return id_; }
  pid_t pid() const { return pid_; }      // host pid of the sandbox's pid 1
  int pidfd() const { return pidfd_.get(); }
  CgroupGroup& cgroup() { return *group_; }
  const SpawnTrace& trace() const { return trace_; }

  // Wait for pid 1 to exit. Past `deadline` the whole sandbox is killed and the
  // status says timed_out. Then usage is read and the cgroup removed: after
  // wait returns, nothing of the sandbox is left. Call once.
  Result<ExitStatus> wait(std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt);
  // SIGKILL pid 1: the kernel then kills every process in its pid namespace.
  Status kill();
  // pid 1 has not exited (a poll of its pidfd; no blocking, no reaping).
  bool alive() const;

  // A sandbox another process built (a zygote's fork, agent/zygote.h): its
  // pid 1 is known by `pidfd` and lives in `group`. It is not our child, so
  // wait() takes its exit status from the pidfd (PIDFD_GET_INFO, Linux 6.15+)
  // once its own parent has reaped it; older kernels report exit code -1.
  static std::unique_ptr<Sandbox> adopt(std::string id, unique_fd pidfd, std::unique_ptr<CgroupGroup> group);

 private:
  friend class Spawner;
  Sandbox() = default;
  Status teardown();

  std::string id_;
  pid_t pid_ = -1;
  unique_fd pidfd_;
  std::unique_ptr<CgroupGroup> group_;
  std::chrono::steady_clock::time_point started_;
  std::shared_ptr<NetnsPool> netns_pool_;  // where netns_ goes back after teardown
  unique_fd netns_;
  uint32_t netns_owner_ = 0;  // the host uid it was acquired for
  SpawnTrace trace_;
  bool reaped_ = false;
  bool adopted_ = false;  // not our child: see adopt()
  bool killed_ = false;   // kill() sent SIGKILL: the exit status is known to be that
  std::optional<ExitStatus> status_;
};

struct SpawnerOptions {
  CgroupOptions cgroup;
  // Empty directory the new root is mounted on inside each sandbox's own mount
  // namespace (never mounted on in the host's namespace).
  std::string new_root_dir = "/run/stoke/sandbox-root";
  LeanRootfsOptions rootfs;
  // Pooled network namespaces (loopback up, reused after each sandbox). When
  // null, each sandbox gets a fresh one from clone(CLONE_NEWNET).
  std::shared_ptr<NetnsPool> netns_pool;
  // Compiled seccomp filters are kept here between processes ("" = never).
  std::string seccomp_cache_dir = "/run/stoke/cache";
};

class Spawner {
 public:
  static Result<std::unique_ptr<Spawner>> create(const SpawnerOptions& options = {});
  ~Spawner();

  Result<std::unique_ptr<Sandbox>> spawn(const SandboxSpec& spec);
  // The host ids are unprivileged and name no host user or group (the
  // passwd/group lookup is remembered per spawner; spawn checks this too).
  Status check_host_ids(uint32_t uid, uint32_t gid);
  CgroupBackend& cgroups() { return *cgroups_; }

 private:
  Spawner() = default;
  const std::vector<RootfsEntry>& rootfs_for(const std::string& hostname);
  Status check_host_ids_locked(uint32_t uid, uint32_t gid);

  SpawnerOptions options_;
  std::unique_ptr<CgroupBackend> cgroups_;
  std::mutex mu_;
  void* stack_ = nullptr;
  size_t stack_size_ = 0;
  int last_cap_ = 40;
  std::set<uint64_t> checked_ids_;  // (uid << 32 | gid) known not to be host accounts
  std::string cached_hostname_;
  std::vector<RootfsEntry> cached_rootfs_;
};

}  // namespace stoke
