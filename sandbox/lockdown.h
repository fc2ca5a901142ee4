// The last isolation steps of every instance, whichever way it was made.
//
// A cold sandbox (sandbox/child_setup.cc, between clone and execve) and an
// instance forked from a Python function's zygote (runtimes/zygote/
// zygote_fork.c, inside the zygote's interpreter) both end their setup with
// stoke_lockdown(): join the cgroup, a cgroup namespace of their own, every
// capability dropped with no way back, the parent-death signal, no_new_privs,
// a session of their own, exactly the fds they should hold, their rlimits,
// and the seccomp filter last. One source, so the two paths cannot drift
// apart; what differs between them is data in struct stoke_lockdown_plan (a zygote
// instance keeps its interpreter's signal handlers and rlimits, and closes
// what it must not hold now, since no execve follows).
//
// Plain C that also compiles as C++, header-only, raw system calls only: the
// cold child shares the agent's memory (CLONE_VM) and may not touch errno,
// malloc or locks. Each step's failure is reported, never handled here.
#pragma once

#ifndef _GNU_SOURCE
#error "sandbox/lockdown.h needs _GNU_SOURCE (struct rlimit64, CLONE_NEWCGROUP)"
#endif

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>

#include "sandbox/base/raw_syscall.h"

#ifdef __cplusplus
extern "C" {
#endif

// In the order stoke_lockdown() takes them. sandbox/child_setup.h's ChildStep
// lists the same steps in the same order (checked there at compile time).
enum stoke_lockdown_step {
  STOKE_LOCKDOWN_JOIN_CGROUP,
  STOKE_LOCKDOWN_CGROUP_NAMESPACE,
  STOKE_LOCKDOWN_DROP_CAPABILITIES,
  STOKE_LOCKDOWN_PARENT_DEATH_SIGNAL,
  STOKE_LOCKDOWN_NO_NEW_PRIVS,
  STOKE_LOCKDOWN_NEW_SESSION,
  STOKE_LOCKDOWN_RESET_SIGNALS,
  STOKE_LOCKDOWN_FDS,
  STOKE_LOCKDOWN_RLIMITS,  // after the fds: staging them above a low RLIMIT_NOFILE fails
  STOKE_LOCKDOWN_SECCOMP,
  STOKE_LOCKDOWN_STEP_COUNT
};

static inline const char* stoke_lockdown_step_name(int step) {
  switch (step) {
    case STOKE_LOCKDOWN_JOIN_CGROUP: return "join cgroup";
    case STOKE_LOCKDOWN_CGROUP_NAMESPACE: return "new cgroup namespace";
    case STOKE_LOCKDOWN_DROP_CAPABILITIES: return "drop capabilities";
    case STOKE_LOCKDOWN_PARENT_DEATH_SIGNAL: return "set parent-death signal";
    case STOKE_LOCKDOWN_NO_NEW_PRIVS: return "set no_new_privs";
    case STOKE_LOCKDOWN_NEW_SESSION: return "new session (setsid)";
    case STOKE_LOCKDOWN_RESET_SIGNALS: return "reset signals";
    case STOKE_LOCKDOWN_FDS: return "place file descriptors";
    case STOKE_LOCKDOWN_RLIMITS: return "set rlimits";
    case STOKE_LOCKDOWN_SECCOMP: return "load seccomp filter";
    default: return "unknown step";
  }
}

// Layout-compatible with sandbox/spec.h's FdMapping.
struct stoke_fd_map {
  int source;
  int target;
};

struct stoke_rlimit {
  int resource;
  struct rlimit64 value;
};

// At most this many fds are placed (targets) in one lockdown.
#define STOKE_LOCKDOWN_MAX_FDS 16
#define STOKE_LOCKDOWN_MAX_CGROUP_FDS 8

struct stoke_lockdown_plan {
  // The cgroup's attach files (one per v1 hierarchy, one on v2): "0" (the
  // caller itself) is written to each, then "1" too when move_pid_1 is set (a
  // zygote instance takes the init of its pid namespace along).
  const int* cgroup_fds;
  int cgroup_fd_count;
  int move_pid_1;
  // Capabilities 0..last_cap leave the bounding set; keep_caps (a zygote's
  // sandbox only) stay, as ambient ones. The securebits lock root out of
  // regaining any through execve or a uid change.
  int last_cap;
  uint64_t keep_caps;
  int parent_death_kill;
  // Every signal back to its default (a fresh exec's view). A zygote
  // instance keeps the handlers its interpreter installed.
  int reset_signals;
  // fds[i].source becomes fds[i].target; every other fd goes: now when
  // close_now is set (no execve follows; keep_fd stays too), else at execve.
  const struct stoke_fd_map* fds;
  size_t fd_count;
  int fd_scratch_base;  // sources are staged above this first
  int close_now;
  int keep_fd;  // -1: none
  const struct stoke_rlimit* rlimits;
  size_t rlimit_count;
  const struct sock_fprog* seccomp;  // required
  // When set, CLOCK_MONOTONIC ns at the end of each step (by step).
  int64_t* step_done_ns;
};

struct stoke_lockdown_failure {
  int step;   // enum stoke_lockdown_step
  int index;  // fd, cgroup file, capability, signal or rlimit index; -1 if none
  int err;    // errno
};

static inline void stoke_lockdown_done_(const struct stoke_lockdown_plan* l, int step) {
  if (l->step_done_ns == NULL) return;
  struct timespec ts;
  STOKE_RAW2(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
  l->step_done_ns[step] = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int stoke_lockdown_failed_(struct stoke_lockdown_failure* f, int step, int index, long ret) {
  f->step = step;
  f->index = index;
  f->err = (int)-ret;
  return -1;
}

static inline long stoke_lockdown_drop_capabilities_(const struct stoke_lockdown_plan* l, int* index) {
  long r;
  for (int cap = 0; cap <= l->last_cap && cap < 64; ++cap) {
    if (l->keep_caps & (1ULL << cap)) continue;
    r = STOKE_RAW2(SYS_prctl, PR_CAPBSET_DROP, cap);
    // EINVAL: a capability this kernel does not have (a caller that does not
    // know the kernel's last one passes 63).
    if (r < 0 && r != -EINVAL) return *index = cap, r;
  }
  r = STOKE_RAW2(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL);
  if (r < 0) return r;
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  for (int i = 0; i < 2; ++i) data[i].effective = data[i].permitted = data[i].inheritable = 0;
  if (l->keep_caps != 0) {
    // Kept through execve: the securebits below stop root from regaining
    // capabilities, so they must be ambient (which needs them permitted and
    // inheritable first).
    for (int i = 0; i < 2; ++i)
      data[i].permitted = data[i].effective = data[i].inheritable = (uint32_t)(l->keep_caps >> (32 * i));
    r = STOKE_RAW2(SYS_capset, &header, data);
    if (r < 0) return r;
    for (int cap = 0; cap <= l->last_cap && cap < 64; ++cap) {
      if ((l->keep_caps & (1ULL << cap)) == 0) continue;
      r = STOKE_RAW3(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap);
      if (r < 0) return *index = cap, r;
    }
  }
  // Root inside the sandbox must not regain capabilities through execve or
  // uid changes; lock that in before the capability sets go to zero. (Setting
  // bits already set and locked, as a zygote instance inherits them from its
  // zygote, is allowed.)
  unsigned long bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
                       SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
  r = STOKE_RAW2(SYS_prctl, PR_SET_SECUREBITS, bits);
  if (r < 0) return r;
  if (l->keep_caps == 0) {
    r = STOKE_RAW2(SYS_capset, &header, data);
    if (r < 0) return r;
  }
  return 0;
}

// The kernel's struct sigaction (not glibc's): handler, flags, restorer, mask.
struct stoke_kernel_sigaction_ {
  unsigned long handler;
  unsigned long flags;
  unsigned long restorer;
  unsigned long mask;
};

static inline long stoke_lockdown_reset_signals_(int* index) {
  struct stoke_kernel_sigaction_ dfl = {0, 0, 0, 0};  // SIG_DFL, no flags, empty mask
  for (int sig = 1; sig <= 64; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    long r = STOKE_RAW4(SYS_rt_sigaction, sig, &dfl, 0L, 8);
    if (r < 0 && r != -EINVAL) return *index = sig, r;
  }
  return 0;
}

static inline long stoke_lockdown_place_fds_(const struct stoke_lockdown_plan* l, int* index) {
  // Stage every source above the scratch base first, so a mapping like 4->3
  // plus 3->4 cannot clobber a source before it is used.
  int staged[STOKE_LOCKDOWN_MAX_FDS];
  size_t count = l->fd_count < STOKE_LOCKDOWN_MAX_FDS ? l->fd_count : STOKE_LOCKDOWN_MAX_FDS;
  long r;
  for (size_t i = 0; i < count; ++i) {
    r = STOKE_RAW3(SYS_fcntl, l->fds[i].source, F_DUPFD_CLOEXEC, l->fd_scratch_base);
    if (r < 0) return *index = (int)i, r;
    staged[i] = (int)r;
  }
  if (!l->close_now) {
    // Everything else is closed at execve...
    r = STOKE_RAW3(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
    if (r < 0) return r;
  }
  // ...but exactly the mapped fds (dup3 without O_CLOEXEC).
  for (size_t i = 0; i < count; ++i) {
    r = STOKE_RAW3(SYS_dup3, staged[i], l->fds[i].target, 0);
    if (r < 0) return *index = (int)i, r;
  }
  if (l->close_now) {
    // No execve follows: close every fd that is neither a target nor keep_fd
    // now (the staged copies included), gap by gap in ascending order.
    int kept[STOKE_LOCKDOWN_MAX_FDS + 1];
    size_t n = 0;
    for (size_t i = 0; i < count; ++i) kept[n++] = l->fds[i].target;
    if (l->keep_fd >= 0) kept[n++] = l->keep_fd;
    for (size_t i = 1; i < n; ++i)  // insertion sort: at most 17
      for (size_t j = i; j > 0 && kept[j - 1] > kept[j]; --j) {
        int t = kept[j];
        kept[j] = kept[j - 1];
        kept[j - 1] = t;
      }
    unsigned int from = 0;
    for (size_t i = 0; i < n; ++i) {
      if (kept[i] < 0 || (unsigned int)kept[i] < from) continue;
      if ((unsigned int)kept[i] > from) {
        r = STOKE_RAW3(SYS_close_range, from, (unsigned int)kept[i] - 1, 0);
        if (r < 0) return r;
      }
      from = (unsigned int)kept[i] + 1;
    }
    r = STOKE_RAW3(SYS_close_range, from, ~0U, 0);
    if (r < 0) return r;
  }
  return 0;
}

// 0 once every step is done; -1 with *failure filled in at the first that
// failed (the caller reports it and exits: a half-locked process must not run).
static inline int stoke_lockdown(const struct stoke_lockdown_plan* l, struct stoke_lockdown_failure* failure) {
  long r;
  int index = -1;

  // The cgroup first: from here on everything the process does is counted
  // and limited. Moving itself (writing "0") avoids the v1 lock stall of a
  // parent moving it.
  int cgroups = l->cgroup_fd_count < STOKE_LOCKDOWN_MAX_CGROUP_FDS ? l->cgroup_fd_count : STOKE_LOCKDOWN_MAX_CGROUP_FDS;
  for (int i = 0; i < cgroups; ++i) {
    r = STOKE_RAW3(SYS_write, l->cgroup_fds[i], "0", 1);
    if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_JOIN_CGROUP, i, r);
  }
  // The init of the pid namespace goes along: its cgroup's kill then ends
  // the whole namespace, and nothing of it stays in the zygote's group.
  for (int i = 0; l->move_pid_1 && i < cgroups; ++i) {
    r = STOKE_RAW3(SYS_write, l->cgroup_fds[i], "1", 1);
    if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_JOIN_CGROUP, i, r);
  }
  stoke_lockdown_done_(l, STOKE_LOCKDOWN_JOIN_CGROUP);
  r = STOKE_RAW1(SYS_unshare, CLONE_NEWCGROUP);  // rooted at the group just joined
  if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_CGROUP_NAMESPACE, -1, r);
  stoke_lockdown_done_(l, STOKE_LOCKDOWN_CGROUP_NAMESPACE);

  r = stoke_lockdown_drop_capabilities_(l, &index);
  if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_DROP_CAPABILITIES, index, r);
  stoke_lockdown_done_(l, STOKE_LOCKDOWN_DROP_CAPABILITIES);
  // Only now: a change of euid (becoming root in a user namespace) clears the
  // parent-death signal.
  if (l->parent_death_kill) {
    r = STOKE_RAW2(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
    if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_PARENT_DEATH_SIGNAL, -1, r);
  }
  stoke_lockdown_done_(l, STOKE_LOCKDOWN_PARENT_DEATH_SIGNAL);
  r = STOKE_RAW2(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1);
  if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_NO_NEW_PRIVS, -1, r);
  stoke_lockdown_done_(l, STOKE_LOCKDOWN_NO_NEW_PRIVS);
  // A session of its own: no controlling terminal, so TIOCSTI (typing into a
  // terminal's input) is refused on any tty fd it may hold, /dev/tty opens
  // nothing, job-control signals do not reach it, and kill(0, ...) reaches
  // nothing outside it.
  r = STOKE_RAW0(SYS_setsid);
  if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_NEW_SESSION, -1, r);
  stoke_lockdown_done_(l, STOKE_LOCKDOWN_NEW_SESSION);
  if (l->reset_signals) {
    r = stoke_lockdown_reset_signals_(&index);
    if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_RESET_SIGNALS, index, r);
  }
  stoke_lockdown_done_(l, STOKE_LOCKDOWN_RESET_SIGNALS);
  r = stoke_lockdown_place_fds_(l, &index);
  if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_FDS, index, r);
  stoke_lockdown_done_(l, STOKE_LOCKDOWN_FDS);
  // After the fds: staging them above the parent's highest fd would be
  // refused under a low RLIMIT_NOFILE (F_DUPFD fails with EINVAL at or above
  // it). Lowering the limit leaves fds already open alone.
  for (size_t i = 0; i < l->rlimit_count; ++i) {
    r = STOKE_RAW4(SYS_prlimit64, 0, l->rlimits[i].resource, &l->rlimits[i].value, 0L);
    if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_RLIMITS, (int)i, r);
  }
  stoke_lockdown_done_(l, STOKE_LOCKDOWN_RLIMITS);
  // Last: the filter may refuse what the steps above needed.
  if (l->seccomp == NULL) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_SECCOMP, -1, -EINVAL);
  r = STOKE_RAW3(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, l->seccomp);
  if (r < 0) return stoke_lockdown_failed_(failure, STOKE_LOCKDOWN_SECCOMP, -1, r);
  stoke_lockdown_done_(l, STOKE_LOCKDOWN_SECCOMP);
  return 0;
}

#ifdef __cplusplus
}  // extern "C"
#endif
