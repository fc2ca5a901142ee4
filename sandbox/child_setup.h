// The sandbox child: everything that runs between clone() and execve().
//
// Parent/child handshake (the only one; keep this diagram true). The two sides
// work in parallel: the child builds its network namespace and filesystem
// while the parent writes the id maps and creates the cgroup.
//
//   parent (spawner thread)                      child (clone(CLONE_VM|NEW*))
//   ───────────────────────                      ───────────────────────────
//   build ChildPlan, socketpair, error pipe
//   clone ─────────────────────────────────────▶ new netns + lo up (unless pooled)
//   write /proc/PID/{uid,gid}_map                clone bind sources (still host root)
//   send "maps" (1 byte) ──────────────────────▶ wait for "maps"
//   create the cgroup (limits set)               become root in the user ns; mounts;
//                                                pivot_root; hostname; rlimits
//   send "cgroup" + its fds (SCM_RIGHTS) ─────▶ wait for "cgroup"; join it by
//                                                writing "0"; new cgroup ns; drop
//   read(error_fd) [blocks]                      caps; no_new_privs; seccomp
//     ◀──────────── ChildError (16 bytes) ───────┤ a step fails: exit_group(127)
//     ◀──────────── EOF (execve closed the ──────┘ execve succeeds
//                   CLOEXEC pipe)
//
// If the parent dies or gives up, the child's recvmsg sees EOF and it exits.
//
// The child shares the parent's memory (CLONE_VM, so a 500 MB agent does not
// pay a page-table copy) and so may use nothing but raw system calls on data
// the plan already holds: no malloc, no errno, no locks, no C++ exceptions.
#pragma once

#include <linux/filter.h>
#include <sys/resource.h>

#include <cstddef>
#include <cstdint>

#include "sandbox/lockdown.h"
#include "sandbox/mount_plan.h"
#include "sandbox/spec.h"

namespace stoke {

// Steps in the order the child runs them; the names appear in error messages.
enum ChildStep : int32_t {
  kStepOomScore,
  kStepNetwork,          // unshare(CLONE_NEWNET) + loopback up, unless pooled
  kStepCloneBindSource,  // index = bind slot
  kStepWaitForIdMaps,
  kStepBecomeRoot,
  kStepPrivateMounts,
  kStepMount,  // index = MountOp
  kStepPivotRoot,
  kStepHostname,
  kStepWorkdir,
  kStepWaitForCgroup,
  // The lockdown (sandbox/lockdown.h), shared with zygote instances: its
  // steps, in its order.
  kStepJoinCgroup,
  kStepCgroupNamespace,
  kStepDropCapabilities,
  kStepParentDeathSignal,
  kStepNoNewPrivs,
  kStepNewSession,  // setsid: no controlling terminal
  kStepResetSignals,
  kStepFds,
  kStepRlimits,  // after kStepFds: staging fds above a low RLIMIT_NOFILE fails
  kStepSeccomp,
  kStepExec,
  kStepCount,
};
const char* child_step_name(int32_t step);
static_assert(kStepSeccomp - kStepJoinCgroup == STOKE_LOCKDOWN_SECCOMP &&
                  kStepFds - kStepJoinCgroup == STOKE_LOCKDOWN_FDS &&
                  kStepExec - kStepJoinCgroup == STOKE_LOCKDOWN_STEP_COUNT,
              "ChildStep lists the lockdown's steps in its order");

// Fixed-size record the child writes on failure.
struct ChildError {
  uint32_t magic;  // kChildErrorMagic
  int32_t step;    // ChildStep
  int32_t index;   // mount op index, fd index, ... (-1 if none)
  int32_t err;     // errno
};
inline constexpr uint32_t kChildErrorMagic = 0x53544b45;  // "STKE"

// Most fds the "cgroup" message carries (one per v1 hierarchy).
inline constexpr int kMaxCgroupFds = STOKE_LOCKDOWN_MAX_CGROUP_FDS;

using ChildRlimit = stoke_rlimit;

// Everything the child needs, prepared by the parent. Plain pointers into
// storage the parent keeps alive until the child has exec'd or died.
struct ChildPlan {
  int control_fd = -1;  // SOCK_SEQPACKET: "maps", then "cgroup" with its fds
  int error_fd = -1;    // write end, O_CLOEXEC
  // The parent's ends of those two, which the child's copy of the fd table
  // also holds: closed first, so that the parent's death is an EOF here.
  int parent_ends[2] = {-1, -1};
  bool new_netns = true;  // false: already in a pooled namespace (lo up)
  // Written to /proc/self/oom_score_adj first thing, when not null (only
  // raising is allowed unprivileged; the spawner checks it is a raise).
  const char* oom_score_adj = nullptr;
  // The CPUs the sandbox may use. The parent may push the new child to another
  // CPU so both sides run at once; the child restores this mask once "maps"
  // arrives (the push always comes before it).
  const void* cpu_mask = nullptr;
  size_t cpu_mask_size = 0;
  const char* const* bind_sources = nullptr;  // phase one: open_tree() each...
  int* bind_fds = nullptr;                     // ...into these slots
  size_t bind_count = 0;
  const MountOp* mounts = nullptr;
  size_t mount_count = 0;
  const char* new_root = nullptr;
  const char* hostname = nullptr;
  size_t hostname_len = 0;
  const char* workdir = "/";
  const ChildRlimit* rlimits = nullptr;
  size_t rlimit_count = 0;
  int last_cap = 40;
  uint64_t keep_caps = 0;  // stay in bounding/permitted/effective (zygotes only)
  const sock_fprog* seccomp = nullptr;
  const FdMapping* fds = nullptr;
  size_t fd_count = 0;
  int fd_scratch_base = 1000;  // fds are staged above this before being placed
  bool parent_death_kill = true;
  // execve: try each candidate path in turn (PATH search done by the parent).
  const char* const* exec_candidates = nullptr;
  size_t exec_candidate_count = 0;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  // When set, the child stores CLOCK_MONOTONIC ns at the end of each step
  // (indexed by ChildStep) so the parent can attribute spawn latency.
  int64_t* step_done_ns = nullptr;
};

// clone() entry point; `arg` is a ChildPlan*. Never returns.
int sandbox_child_main(void* arg);

}  // namespace stoke
