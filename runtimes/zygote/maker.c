// stoke-zygote-maker: pid 1 of a function zygote's sandbox (docs/zygotes.md,
// docs/security/zygotes.md #8). It never runs tenant code.
//
//   stoke-zygote-maker TMP_BYTES -- /usr/bin/python3 /runtime/python/stoke_zygote.py [MODULE...]
//
// The agent spawns it with the zygote capabilities and the maker's seccomp
// profile, fd 3 = the zygote's control socket (passed through to the zygote)
// and fd 4 = a file holding the zygote's seccomp filter (BPF). It:
//
//  1. forks the zygote Z, which, before it execs Python and so before any
//     tenant code exists in it, drops every capability (bounding set
//     included), keeps no_new_privs and stacks its filter (kFunctionZygote:
//     the default filter plus setns, unshare(CLONE_NEWCGROUP) and capset).
//     Z's fd 4 is a socket to the maker. A fresh exec per function zygote:
//     its own ASLR, canary, AT_RANDOM and hash secret.
//  2. prepares each instance's namespaces ahead: a placeholder init P, cloned
//     into a new user namespace C (root of C = our own id, so C is owned by
//     Z's euid too), with new mount, pid, uts, ipc and network namespaces owned
//     by C. P makes the instance's fresh /tmp, /dev/shm and /proc, sets the
//     hostname and brings loopback up, drops its capabilities and then only
//     reaps, as init of the instance's pid namespace.
//  3. answers each of Z's requests (one byte) with a pidfd of one P. Z's fork
//     joins P's namespaces with setns(pidfd): the ownership rule gives a
//     process whose euid owns C every capability in C and none outside.
//
// The maker exits when Z does (and the kernel then ends the whole sandbox).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CONTROL_FD 3
#define FILTER_FD 4
#define MAKER_FD 4     // in the zygote: its socket to us
#define AHEAD 2        // namespace sets kept ready
#define MAX_FILTER (4096 * sizeof(struct sock_filter))

static void say(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  ssize_t w = write(2, buf, (size_t)n);
  (void)w;
}

// ---- the zygote: everything dropped before exec -----------------------------

static void drop_all_capabilities(void) {
  for (int cap = 0; cap < 64; ++cap)
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) {
      say("stoke-zygote-maker: drop capability %d from the bounding set: %s", cap, strerror(errno));
      _exit(127);
    }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) {
    say("stoke-zygote-maker: clear ambient capabilities: %s", strerror(errno));
    _exit(127);
  }
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  if (syscall(SYS_capset, &header, data) < 0) {
    say("stoke-zygote-maker: drop capabilities: %s", strerror(errno));
    _exit(127);
  }
}

static pid_t start_zygote(char** argv, int socket_end, const struct sock_filter* filter, size_t instructions) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  // The zygote: fds 0..3 as the agent gave them, 4 = our socket.
  if ((socket_end == MAKER_FD ? fcntl(MAKER_FD, F_SETFD, 0) : dup3(socket_end, MAKER_FD, 0)) < 0) _exit(127);
  if (syscall(SYS_close_range, MAKER_FD + 1, ~0U, 0) < 0) _exit(127);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != 1) _exit(127);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  drop_all_capabilities();
  struct sock_fprog prog = {(unsigned short)instructions, (struct sock_filter*)filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) {
    say("stoke-zygote-maker: the zygote's seccomp filter: %s", strerror(errno));
    _exit(127);
  }
  execv(argv[0], argv);
  say("stoke-zygote-maker: exec %s: %s", argv[0], strerror(errno));
  _exit(127);
}

// ---- placeholder inits: one instance's namespaces each ------------------------

struct prepared {
  int pidfd;
  pid_t pid;
};
static struct prepared ready[AHEAD];
static int ready_count = 0;
static uint64_t tmp_bytes = 64ULL << 20;
static struct sock_filter zygote_filter[4096];  // from FILTER_FD
static size_t zygote_filter_len = 0;            // instructions

// In P: reports the failed step on `status` and exits.
__attribute__((noreturn)) static void placeholder_fail(int status, const char* step) {
  char buf[200];
  int n = snprintf(buf, sizeof buf, "%s: %s", step, strerror(errno));
  if (n > 0) {
    ssize_t w = write(status, buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1));
    (void)w;
  }
  _exit(1);
}

static int loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
  if (rc == 0) {
    ifr.ifr_flags |= IFF_UP;
    rc = ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  int saved = errno;
  close(s);
  errno = saved;
  return rc;
}

__attribute__((noreturn)) static void placeholder(int go, int status) {
  char byte;
  if (read(go, &byte, 1) != 1) _exit(1);  // the maker gave up before the id maps
  close(go);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) placeholder_fail(status, "parent death signal");
  // Nothing this namespace mounts travels back, and nothing comes in.
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) placeholder_fail(status, "make mounts private");
  char opts[64];
  snprintf(opts, sizeof opts, "mode=1777,size=%llu", (unsigned long long)tmp_bytes);
  if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) placeholder_fail(status, "mount /tmp");
  if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0)
    placeholder_fail(status, "mount /dev/shm");
  // This pid namespace's processes only, as in a cold sandbox.
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "subset=pid") < 0)
    placeholder_fail(status, "mount /proc");
  if (sethostname("stoke", 5) < 0) placeholder_fail(status, "set hostname");
  if (loopback_up() < 0) placeholder_fail(status, "bring loopback up");
  if (chdir("/") < 0) placeholder_fail(status, "chdir /");
  // Its work is done: it keeps no capability (the instance joins C and gets
  // its own there through the ownership rule, not from P) and no more
  // syscalls than the zygote. Then it must be dumpable: setns() through a
  // pidfd checks ptrace read access, and the zygote has no capability to
  // override a non-dumpable target. Its memory is a copy of the maker's,
  // which never holds anything of the tenant's.
  drop_all_capabilities();
  struct sock_fprog prog = {(unsigned short)zygote_filter_len, zygote_filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) placeholder_fail(status, "no_new_privs");
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) placeholder_fail(status, "seccomp filter");
  if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) placeholder_fail(status, "dumpable");
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  if (write(status, "k", 1) != 1) _exit(1);
  syscall(SYS_close_range, 0, ~0U, 0);
  // Init of the instance's pid namespace: reap what the instance orphans.
  for (;;) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    siginfo_t info;
    sigwaitinfo(&chld, &info);
  }
}

static int write_text(const char* path, const char* text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  int saved = errno;
  close(fd);
  errno = saved;
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

// Makes one namespace set; 0, or -1 with `error` filled.
static int prepare_one(char* error, size_t error_len) {
  int go[2], status[2];
  if (pipe2(go, O_CLOEXEC) < 0) {
    snprintf(error, error_len, "pipe: %s", strerror(errno));
    return -1;
  }
  if (pipe2(status, O_CLOEXEC) < 0) {
    snprintf(error, error_len, "pipe: %s", strerror(errno));
    close(go[0]);
    close(go[1]);
    return -1;
  }
  int pidfd = -1;
  long pid = syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC |
                                    CLONE_NEWNET | CLONE_PIDFD | SIGCHLD,
                     NULL, &pidfd, NULL, 0);
  if (pid == 0) {
    close(go[1]);
    close(status[0]);
    placeholder(go[0], status[1]);
  }
  int saved = errno;
  close(go[0]);
  close(status[1]);
  if (pid < 0) {
    snprintf(error, error_len, "clone the namespaces of an instance: %s", strerror(saved));
    close(go[1]);
    close(status[0]);
    return -1;
  }
  // Root of C is our own id (the only one this sandbox has).
  static const char* const files[] = {"uid_map", "setgroups", "gid_map"};
  static const char* const texts[] = {"0 0 1\n", "deny", "0 0 1\n"};
  int mapped = 0;
  for (int i = 0; i < 3 && mapped == 0; ++i) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/%s", pid, files[i]);
    if (write_text(path, texts[i]) != 0) {
      snprintf(error, error_len, "write %s of an instance's user namespace: %s", files[i], strerror(errno));
      mapped = -1;
    }
  }
  if (mapped == 0 && write(go[1], "g", 1) != 1) {
    snprintf(error, error_len, "start a placeholder init: %s", strerror(errno));
    mapped = -1;
  }
  close(go[1]);
  char answer[200];
  ssize_t n = mapped == 0 ? read(status[0], answer, sizeof answer - 1) : -1;
  close(status[0]);
  if (n == 1 && answer[0] == 'k') {
    ready[ready_count].pidfd = pidfd;
    ready[ready_count].pid = (pid_t)pid;
    ++ready_count;
    return 0;
  }
  if (mapped == 0) {
    if (n > 0) {
      answer[n] = '\0';
      snprintf(error, error_len, "set up an instance's namespaces: %s", answer);
    } else {
      snprintf(error, error_len, "set up an instance's namespaces: the placeholder init died");
    }
  }
  syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
  close(pidfd);
  return -1;  // reaped by the SIGCHLD loop
}

static int send_prepared(int sock) {
  char error[256] = "";
  if (ready_count == 0 && prepare_one(error, sizeof error) != 0) {
    return send(sock, error, strlen(error), MSG_NOSIGNAL) < 0 ? -1 : 0;
  }
  struct prepared p = ready[--ready_count];
  char ok = 'k';
  struct iovec iov = {&ok, 1};
  char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof control);
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &p.pidfd, sizeof(int));
  ssize_t sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
  close(p.pidfd);  // the zygote holds it now (or nobody: P stays ours to reap)
  if (sent < 0) syscall(SYS_kill, p.pid, SIGKILL);
  return sent < 0 ? -1 : 0;
}

// ---- main loop ------------------------------------------------------------------

static const char* usage = "usage: stoke-zygote-maker TMP_BYTES -- ZYGOTE_ARGV...";

int main(int argc, char** argv) {
  if (argc < 4 || strcmp(argv[2], "--") != 0) {
    say("%s", usage);
    return 2;
  }
  char* end = NULL;
  tmp_bytes = strtoull(argv[1], &end, 10);
  if (end == argv[1] || *end != '\0' || tmp_bytes == 0) {
    say("%s", usage);
    return 2;
  }
  // Z runs as our uid without capabilities: it must not read our memory.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

  ssize_t got = pread(FILTER_FD, zygote_filter, sizeof zygote_filter, 0);
  if (got <= 0 || got % (ssize_t)sizeof(struct sock_filter) != 0 || got >= (ssize_t)sizeof zygote_filter) {
    say("stoke-zygote-maker: no usable seccomp filter on fd %d", FILTER_FD);
    return 2;
  }
  zygote_filter_len = (size_t)got / sizeof(struct sock_filter);
  close(FILTER_FD);

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  int sv[2];
  if (sigfd < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    say("stoke-zygote-maker: signalfd/socketpair: %s", strerror(errno));
    return 1;
  }
  pid_t zygote = start_zygote(argv + 3, sv[1], zygote_filter, zygote_filter_len);
  if (zygote < 0) {
    say("stoke-zygote-maker: fork the zygote: %s", strerror(errno));
    return 1;
  }
  close(sv[1]);
  close(CONTROL_FD);  // the zygote's, not ours
  int sock = sv[0];

  for (;;) {
    struct pollfd fds[2] = {{sock, POLLIN, 0}, {sigfd, POLLIN, 0}};
    // Idle: make the next namespace set now, off the fork's path.
    int timeout = ready_count < AHEAD ? 0 : -1;
    int n = poll(fds, 2, timeout);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return 1;
    if (n == 0) {
      char error[256];
      if (prepare_one(error, sizeof error) != 0) {
        say("stoke-zygote-maker: %s", error);
        // Made at request time instead (the error then goes to the zygote);
        // wait for one rather than spin.
        fds[0].revents = 0;
        if (poll(fds, 2, -1) < 0 && errno != EINTR) return 1;
      }
    }
    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sigfd, &si, sizeof si) == sizeof si) {
      }
      int wstatus;
      pid_t dead;
      while ((dead = waitpid(-1, &wstatus, WNOHANG)) > 0)
        if (dead == zygote) return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    }
    if (fds[0].revents & POLLIN) {
      char request;
      ssize_t r = recv(sock, &request, 1, 0);
      if (r == 0) return 0;  // the zygote is gone
      if (r < 0 && errno != EINTR && errno != EAGAIN) return 1;
      if (r == 1 && send_prepared(sock) < 0) return 1;
    } else if (fds[0].revents & (POLLHUP | POLLERR)) {
      return 0;
    }
  }
}
