#include "sandbox/child_setup.h"

#include <fcntl.h>
#include <stddef.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>

#include "sandbox/base/raw_syscall.h"

// glibc 2.36's <sys/mount.h> lacks mount_setattr's struct; <linux/mount.h> has
// it but clashes with glibc's header, so declare the one struct we need.
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

namespace stoke {
namespace {

struct MountAttr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

[[noreturn]] void fail(const ChildPlan* plan, int32_t step, int32_t index, long ret) {
  ChildError e{kChildErrorMagic, step, index, static_cast<int32_t>(-ret)};
  raw::call(SYS_write, plan->error_fd, &e, sizeof e);
  for (;;) raw::call(SYS_exit_group, 127);
}

inline void done(const ChildPlan* plan, ChildStep step) {
  if (plan->step_done_ns == nullptr) return;
  struct timespec ts;
  raw::call(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
  plan->step_done_ns[step] = ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

inline void check(const ChildPlan* plan, int32_t step, long ret, int32_t index = -1) {
  if (ret < 0) fail(plan, step, index, ret);
}

void run_mount_op(const ChildPlan* plan, const MountOp& op, int32_t index) {
  long r = 0;
  switch (op.kind) {
    case MountOp::kMountTmpfs:
      r = raw::call(SYS_mount, "tmpfs", op.target, "tmpfs", op.flags, op.data);
      break;
    case MountOp::kMountProc:
      r = raw::call(SYS_mount, "proc", op.target, "proc", op.flags, op.data);
      break;
    case MountOp::kBind:
      r = raw::call(SYS_move_mount, plan->bind_fds[op.slot], "", AT_FDCWD, op.target,
                    MOVE_MOUNT_F_EMPTY_PATH);
      if (r == 0) raw::call(SYS_close, plan->bind_fds[op.slot]);
      break;
    case MountOp::kMakeReadOnly: {
      MountAttr attr{MOUNT_ATTR_RDONLY, 0, 0, 0};
      r = raw::call(SYS_mount_setattr, AT_FDCWD, op.target, op.flags ? AT_RECURSIVE : 0, &attr,
                    sizeof attr);
      break;
    }
    case MountOp::kMkdir:
      r = raw::call(SYS_mkdirat, AT_FDCWD, op.target, op.mode);
      if (r == -EEXIST) r = 0;
      break;
    case MountOp::kTouch:
      r = raw::call(SYS_openat, AT_FDCWD, op.target, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, op.mode);
      if (r >= 0) r = raw::call(SYS_close, r);
      break;
    case MountOp::kSymlink:
      r = raw::call(SYS_symlinkat, op.source, AT_FDCWD, op.target);
      break;
    case MountOp::kWriteFile: {
      r = raw::call(SYS_openat, AT_FDCWD, op.target, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, op.mode);
      if (r < 0) break;
      long fd = r;
      size_t off = 0;
      while (off < op.data_len) {
        r = raw::call(SYS_write, fd, op.data + off, op.data_len - off);
        if (r < 0) break;
        off += static_cast<size_t>(r);
      }
      raw::call(SYS_close, fd);
      if (r > 0) r = 0;
      break;
    }
  }
  check(plan, kStepMount, r, index);
}

void new_network_namespace(const ChildPlan* plan) {
  check(plan, kStepNetwork, raw::call(SYS_unshare, CLONE_NEWNET));
  long s = raw::call(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  check(plan, kStepNetwork, s);
  struct ifreq ifr = {};
  ifr.ifr_name[0] = 'l';
  ifr.ifr_name[1] = 'o';
  check(plan, kStepNetwork, raw::call(SYS_ioctl, s, SIOCGIFFLAGS, &ifr));
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  check(plan, kStepNetwork, raw::call(SYS_ioctl, s, SIOCSIFFLAGS, &ifr));
  raw::call(SYS_close, s);
}

// One message from the parent; fds (if any) land in `fds`. Returns how many.
int receive(const ChildPlan* plan, ChildStep step, int* fds) {
  char byte = 0;
  struct iovec iov = {&byte, 1};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxCgroupFds)] = {};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  long r = raw::call(SYS_recvmsg, plan->control_fd, &msg, MSG_CMSG_CLOEXEC);
  if (r != 1) fail(plan, step, -1, r < 0 ? r : -EPIPE);  // EOF: the parent gave up
  int n = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* data = reinterpret_cast<const int*>(CMSG_DATA(c));
    for (size_t i = 0; i < count && n < kMaxCgroupFds; ++i) fds[n++] = data[i];
  }
  return n;
}

}  // namespace

const char* child_step_name(int32_t step) {
  switch (static_cast<ChildStep>(step)) {
    case kStepOomScore: return "set oom_score_adj";
    case kStepNetwork: return "new network namespace";
    case kStepCloneBindSource: return "clone bind source";
    case kStepWaitForIdMaps: return "wait for id maps";
    case kStepBecomeRoot: return "become root in user namespace";
    case kStepPrivateMounts: return "make mounts private";
    case kStepMount: return "mount";
    case kStepPivotRoot: return "pivot_root";
    case kStepHostname: return "set hostname";
    case kStepWorkdir: return "change to workdir";
    case kStepWaitForCgroup: return "wait for cgroup";
    case kStepJoinCgroup:
    case kStepCgroupNamespace:
    case kStepDropCapabilities:
    case kStepParentDeathSignal:
    case kStepNoNewPrivs:
    case kStepNewSession:
    case kStepResetSignals:
    case kStepFds:
    case kStepRlimits:
    case kStepSeccomp:
      return stoke_lockdown_step_name(step - kStepJoinCgroup);
    case kStepExec: return "exec";
    case kStepCount: break;
  }
  return "unknown step";
}

int sandbox_child_main(void* arg) {
  const ChildPlan* plan = static_cast<const ChildPlan*>(arg);
  long r;

  // Only the parent may hold its ends: if it dies, our reads must see EOF
  // (else a child whose parent died before "cgroup" would wait forever).
  for (int fd : plan->parent_ends)
    if (fd >= 0) raw::call(SYS_close, fd);

  // 0. Not the spawner's OOM protection: the sandbox is what should die first.
  if (plan->oom_score_adj != nullptr) {
    long fd = raw::call(SYS_openat, AT_FDCWD, "/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    check(plan, kStepOomScore, fd);
    size_t len = 0;
    while (plan->oom_score_adj[len] != '\0') ++len;
    check(plan, kStepOomScore, raw::call(SYS_write, fd, plan->oom_score_adj, len));
    raw::call(SYS_close, fd);
  }
  done(plan, kStepOomScore);

  // 1. Network: the one expensive namespace, made while the parent writes our
  //    id maps. Creating it needs no maps: we hold every capability in our new
  //    user namespace from birth.
  if (plan->new_netns) new_network_namespace(plan);
  done(plan, kStepNetwork);

  // 2. Clone bind sources while still host uid 0: a root-owned 0700 directory
  //    is walkable by its owner, and the clones belong to our mount namespace.
  for (size_t i = 0; i < plan->bind_count; ++i) {
    r = raw::call(SYS_open_tree, AT_FDCWD, plan->bind_sources[i],
                  OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    check(plan, kStepCloneBindSource, r, static_cast<int32_t>(i));
    plan->bind_fds[i] = static_cast<int>(r);
  }
  done(plan, kStepCloneBindSource);

  // 3. uid/gid 0 inside = the unprivileged host id, once the parent has
  //    written the maps; no supplementary groups (root's host groups would
  //    otherwise still grant file access).
  int unused[kMaxCgroupFds];
  receive(plan, kStepWaitForIdMaps, unused);
  // The parent may have pushed us to another CPU for the parallel start (it
  // does so before sending "maps"); from here on the sandbox gets every CPU
  // the spawner may use.
  if (plan->cpu_mask != nullptr) raw::call(SYS_sched_setaffinity, 0, plan->cpu_mask_size, plan->cpu_mask);
  done(plan, kStepWaitForIdMaps);
  check(plan, kStepBecomeRoot, raw::call(SYS_setgroups, 0, 0L));
  check(plan, kStepBecomeRoot, raw::call(SYS_setresgid, 0, 0, 0));
  check(plan, kStepBecomeRoot, raw::call(SYS_setresuid, 0, 0, 0));
  raw::call(SYS_umask, 0);  // modes in the plan are exact
  done(plan, kStepBecomeRoot);

  // 4. Filesystem: nothing we mount may propagate anywhere, then the plan.
  check(plan, kStepPrivateMounts, raw::call(SYS_mount, 0L, "/", 0L, MS_REC | MS_PRIVATE, 0L));
  done(plan, kStepPrivateMounts);
  for (size_t i = 0; i < plan->mount_count; ++i)
    run_mount_op(plan, plan->mounts[i], static_cast<int32_t>(i));
  done(plan, kStepMount);

  // 5. Switch root and detach the old one entirely.
  check(plan, kStepPivotRoot, raw::call(SYS_chdir, plan->new_root));
  check(plan, kStepPivotRoot, raw::call(SYS_pivot_root, ".", "."));
  check(plan, kStepPivotRoot, raw::call(SYS_umount2, ".", MNT_DETACH));
  check(plan, kStepPivotRoot, raw::call(SYS_chdir, "/"));
  done(plan, kStepPivotRoot);

  check(plan, kStepHostname, raw::call(SYS_sethostname, plan->hostname, plan->hostname_len));
  done(plan, kStepHostname);
  check(plan, kStepWorkdir, raw::call(SYS_chdir, plan->workdir));
  done(plan, kStepWorkdir);

  // 6. The cgroup the parent made meanwhile arrives as its attach files.
  int cgroup_fds[kMaxCgroupFds];
  int cgroup_fd_count = receive(plan, kStepWaitForCgroup, cgroup_fds);
  done(plan, kStepWaitForCgroup);

  // 7. The lockdown every instance ends with (sandbox/lockdown.h): cgroup and
  //    cgroup namespace, no capabilities and no way back, its own session,
  //    default signals, exactly its fds, rlimits, seccomp last.
  raw::call(SYS_umask, 022);  // 0 since step 3, for the plan's exact modes
  static_assert(sizeof(FdMapping) == sizeof(stoke_fd_map) && offsetof(FdMapping, source) == 0 &&
                    offsetof(FdMapping, target) == offsetof(stoke_fd_map, target),
                "FdMapping is layout-compatible with the lockdown's fd map");
  stoke_lockdown_plan lock = {};
  lock.cgroup_fds = cgroup_fds;
  lock.cgroup_fd_count = cgroup_fd_count;
  lock.last_cap = plan->last_cap;
  lock.keep_caps = plan->keep_caps;
  lock.parent_death_kill = plan->parent_death_kill;
  lock.reset_signals = 1;
  lock.fds = reinterpret_cast<const stoke_fd_map*>(plan->fds);
  lock.fd_count = plan->fd_count;
  lock.fd_scratch_base = plan->fd_scratch_base;
  lock.close_now = 0;  // the cgroup fds and the rest close at execve
  lock.keep_fd = -1;
  lock.rlimits = plan->rlimits;
  lock.rlimit_count = plan->rlimit_count;
  lock.seccomp = plan->seccomp;
  lock.step_done_ns = plan->step_done_ns != nullptr ? plan->step_done_ns + kStepJoinCgroup : nullptr;
  stoke_lockdown_failure failure = {};
  if (stoke_lockdown(&lock, &failure) != 0)
    fail(plan, kStepJoinCgroup + failure.step, failure.index, -static_cast<long>(failure.err));

  // 8. Unblock signals (the parent blocked them around clone) and exec.
  unsigned long empty_mask = 0;
  raw::call(SYS_rt_sigprocmask, SIG_SETMASK, &empty_mask, 0L, 8);
  long first_error = -ENOENT;
  for (size_t i = 0; i < plan->exec_candidate_count; ++i) {
    r = raw::call(SYS_execve, plan->exec_candidates[i], plan->argv, plan->envp);
    // Keep searching PATH past "not here"; remember "here but not executable".
    if (r == -EACCES) first_error = r;
    if (r != -ENOENT && r != -ENOTDIR && r != -EACCES) {
      first_error = r;
      break;
    }
  }
  fail(plan, kStepExec, 0, first_error);
}

}  // namespace stoke
