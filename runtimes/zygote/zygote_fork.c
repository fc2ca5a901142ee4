// libstoke_zygote.so: the fork half of stoke's Python function zygotes
// (docs/zygotes.md). Loaded into the zygote's interpreter with ctypes.PyDLL (so
// it runs holding the GIL) and called once per instance.
//
// The zygote Z has no capability, no_new_privs and its own seccomp filter
// from before it ran any code (runtimes/zygote/maker.c). It cannot make a
// namespace. Each instance's namespaces were made ahead by the maker, which
// never runs tenant code: a placeholder init P in a user namespace C owned by
// Z's uid, with mount (fresh /tmp, /dev/shm, /proc), pid, uts, ipc and
// network namespaces owned by C. One fork:
//
//   Z  ── 1 byte on fd 4 ──▶ maker ── a pidfd of P ──▶ Z
//   Z: clone → I: setns(P's pidfd, user+mnt+pid+uts+ipc+net): I owns C, so it has
//      every capability in C and none anywhere else
//   I: clone(CLONE_PARENT) → the instance, pid 2 under P, Z's child; I reports its
//      pid and exits
//   instance: /code → the lockdown a cold sandbox ends with too
//      (sandbox/lockdown.h): joins its cgroup and moves P there too → new
//      cgroup namespace → every capability dropped → its own session → only
//      fds 0..3 left → the default seccomp filter stacked → "set up"
//
// Raw clone() instead of fork(): glibc's fork bookkeeping is redone by hand
// where it matters: the cached tid (CLONE_CHILD_SETTID on the address glibc
// registered), and Python's own before/after-fork protocol (PyOS_*Fork*),
// which reinitialises the GIL, threading state and import lock and reseeds
// `random`. The zygote is single-threaded, so no glibc lock can be held
// across the clone.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/lockdown.h"

// Exported by the python3 executable that loads us (Debian builds it with
// -export-dynamic); declared here so the build needs no Python headers.
void PyOS_BeforeFork(void);
void PyOS_AfterFork_Parent(void);
void PyOS_AfterFork_Child(void);


// Mirrored field by field by ctypes in stoke_zygote.py.
struct stoke_fork {
  int32_t fds[4];         // become the instance's fds 0..3 (-1: /dev/null)
  int32_t cgroup_fds[8];  // the instance writes "0" (itself) and "1" (P) to each
  int32_t cgroup_fd_count;
  const struct sock_filter* seccomp;  // the default sandbox filter
  uint32_t seccomp_len;               // instructions
  int32_t pidfd;                      // out: the instance's pidfd
  int32_t pid;                        // out: the instance's pid (the zygote's namespace)
  char error[256];                    // out, on failure
};

#define MAKER_FD 4  // the zygote's socket to its maker
#define INSTANCE_NAMESPACES (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET)

// ---- in the children: report and die ------------------------------------

static int status_fd = -1;

// The status pipe carries records, each written whole by one write(2) (all
// shorter than PIPE_BUF, so never interleaved): 'p' + int32 pid from the
// joiner, 'k' from the instance once set up, 'e' + length byte + words from a
// step that failed. The joiner and the instance write independently, so the
// records arrive in either order.
__attribute__((noreturn, format(printf, 1, 2))) static void die(const char* fmt, ...) {
  char buf[2 + 200];
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + 2, 140, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > 139) n = 139;  // what vsnprintf wrote, without its NUL
  n += snprintf(buf + 2 + n, sizeof buf - 2 - (size_t)n, ": %s", strerror(saved));
  if (n > (int)sizeof buf - 3) n = (int)sizeof buf - 3;  // snprintf says what it would have written
  buf[0] = 'e';
  buf[1] = (char)n;
  if (status_fd >= 0) {
    ssize_t w = write(status_fd, buf, (size_t)n + 2);
    (void)w;
  }
  _exit(127);
}

#define CHECK(call, ...) \
  do {                   \
    if ((call) < 0) die(__VA_ARGS__); \
  } while (0)

// The instance's setup: /code, then the lockdown every instance ends with,
// cold or forked (sandbox/lockdown.h): its cgroup (with the namespace's init)
// and cgroup namespace, no capability and no way back, the parent-death
// signal, no_new_privs, its own session (as a cold sandbox's, so kill(0, ...)
// reaches nothing of its zygote's), fds 0..3 and the status pipe only, the
// default seccomp filter stacked last. The interpreter's signal handlers and
// the zygote's rlimits stay: this is a fork, not an exec.
static void setup_instance(const struct stoke_fork* r) {
  CHECK(chdir("/code"), "chdir /code");
  struct stoke_fd_map fds[4];
  for (int i = 0; i < 4; ++i) {
    fds[i].source = r->fds[i];
    fds[i].target = i;
    if (fds[i].source < 0) {  // the descriptor is closed by the lockdown
      fds[i].source = open("/dev/null", O_RDWR | O_CLOEXEC);
      CHECK(fds[i].source, "open /dev/null");
    }
  }
  if (r->seccomp == NULL || r->seccomp_len == 0) die("no seccomp filter given%s", "");
  struct sock_fprog prog = {(unsigned short)r->seccomp_len, (struct sock_filter*)r->seccomp};
  struct stoke_lockdown_plan lock;
  memset(&lock, 0, sizeof lock);
  lock.cgroup_fds = r->cgroup_fds;
  lock.cgroup_fd_count = r->cgroup_fd_count;
  lock.move_pid_1 = 1;
  lock.last_cap = 63;  // each one this kernel has
  lock.parent_death_kill = 1;
  lock.fds = fds;
  lock.fd_count = 4;
  lock.fd_scratch_base = 512;
  lock.close_now = 1;
  lock.keep_fd = status_fd;
  lock.seccomp = &prog;
  struct stoke_lockdown_failure failure;
  if (stoke_lockdown(&lock, &failure) != 0) {
    errno = failure.err;
    if (failure.index >= 0) die("%s (%d)", stoke_lockdown_step_name(failure.step), failure.index);
    die("%s", stoke_lockdown_step_name(failure.step));
  }
}

// ---- in the zygote ----------------------------------------------------------

// A pidfd of a placeholder init from the maker, or -1 with r->error set.
static int namespaces_from_maker(struct stoke_fork* r) {
  char request = 'n';
  if (send(MAKER_FD, &request, 1, MSG_NOSIGNAL) != 1) {
    snprintf(r->error, sizeof r->error, "ask the maker for namespaces: %s", strerror(errno));
    return -1;
  }
  char answer[200];
  struct iovec iov = {answer, sizeof answer - 1};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * 2)];
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = recvmsg(MAKER_FD, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  int fd = -1;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); n > 0 && c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int got;
      memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
      if (fd < 0) fd = got;
      else close(got);
    }
  }
  if (n == 1 && answer[0] == 'k' && fd >= 0) return fd;
  if (fd >= 0) close(fd);
  if (n <= 0) snprintf(r->error, sizeof r->error, "the maker is gone: %s", n < 0 ? strerror(errno) : "EOF");
  else {
    answer[n] = '\0';
    snprintf(r->error, sizeof r->error, "the maker: %s", answer);
  }
  return -1;
}

// >0 in the parent (the instance's pid; r->pidfd set), 0 in the instance once
// it is fully set up, -1 in the parent on failure (r->error says why).
__attribute__((visibility("default"))) int stoke_zygote_fork(struct stoke_fork* r) {
  r->error[0] = '\0';
  r->pidfd = r->pid = -1;
  int ns = namespaces_from_maker(r);
  if (ns < 0) return -1;
  int status[2];
  if (pipe2(status, O_CLOEXEC) != 0) {
    snprintf(r->error, sizeof r->error, "status pipe: %s", strerror(errno));
    close(ns);
    return -1;
  }
  void* tid_address = NULL;
  if (prctl(PR_GET_TID_ADDRESS, &tid_address, 0, 0, 0) != 0) tid_address = NULL;
  const unsigned long tid_flags = tid_address ? CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID : 0;

  PyOS_BeforeFork();
  long joiner = syscall(SYS_clone, SIGCHLD | tid_flags, NULL, NULL, tid_address, 0);
  if (joiner == 0) {
    close(status[0]);
    status_fd = status[1];
    CHECK(setns(ns, INSTANCE_NAMESPACES), "join the namespaces the maker made");
    close(ns);
    // Into the new pid namespace (setns only set it for children), as the
    // zygote's child: the zygote reaps it, and it dies with the zygote.
    long pid = syscall(SYS_clone, CLONE_PARENT | SIGCHLD | tid_flags, NULL, NULL, tid_address, 0);
    if (pid == 0) {
      setup_instance(r);
      ssize_t w = write(status_fd, "k", 1);
      (void)w;
      close(status_fd);
      status_fd = -1;
      PyOS_AfterFork_Child();
      return 0;
    }
    CHECK(pid, "clone into the instance's pid namespace");
    char message[1 + sizeof(int32_t)] = {'p'};
    int32_t p32 = (int32_t)pid;
    memcpy(message + 1, &p32, sizeof p32);
    ssize_t w = write(status_fd, message, sizeof message);
    (void)w;
    _exit(0);
  }
  int clone_errno = errno;
  PyOS_AfterFork_Parent();
  close(ns);
  close(status[1]);
  if (joiner < 0) {
    close(status[0]);
    snprintf(r->error, sizeof r->error, "clone: %s", strerror(clone_errno));
    return -1;
  }
  // Until every writer is gone (see die() for the records).
  char buf[512];
  size_t got = 0;
  for (;;) {
    ssize_t n = read(status[0], buf + got, sizeof buf - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
    if (got == sizeof buf) break;
  }
  close(status[0]);
  int wstatus;
  while (waitpid((pid_t)joiner, &wstatus, 0) < 0 && errno == EINTR) {
  }
  int32_t pid = -1;
  int set_up = 0;
  char failure[201] = "";
  for (size_t at = 0; at < got;) {
    if (buf[at] == 'k') {
      set_up = 1;
      at += 1;
    } else if (buf[at] == 'p' && got - at >= 1 + sizeof pid) {
      memcpy(&pid, buf + at + 1, sizeof pid);
      at += 1 + sizeof pid;
    } else if (buf[at] == 'e' && got - at >= 2 && got - at >= 2 + (size_t)(unsigned char)buf[at + 1]) {
      size_t len = (unsigned char)buf[at + 1];
      if (failure[0] == '\0') {
        memcpy(failure, buf + at + 2, len);
        failure[len] = '\0';
      }
      at += 2 + len;
    } else {
      snprintf(failure, sizeof failure, "unreadable status from the instance's setup");
      break;
    }
  }
  if (pid > 0 && set_up && failure[0] == '\0') {
    // Our child (CLONE_PARENT) and not reaped: the pid cannot be reused yet.
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
      snprintf(r->error, sizeof r->error, "pidfd_open of the instance: %s", strerror(errno));
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      return -1;
    }
    r->pid = pid;
    r->pidfd = pidfd;
    return (int)pid;
  }
  if (failure[0] == '\0') snprintf(r->error, sizeof r->error, "the instance died while being set up");
  else snprintf(r->error, sizeof r->error, "instance setup: %s", failure);
  if (pid > 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  return -1;
}
