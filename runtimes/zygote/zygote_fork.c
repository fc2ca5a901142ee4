// libstoke_zygote.so: the fork half of stoke's Python zygotes (docs/zygotes.md).
//
// Loaded into a zygote's interpreter with ctypes.PyDLL (so it runs holding
// the GIL) and called once per fork. One call clones the zygote into fresh
// namespaces and, in the child, builds the isolation a cold sandbox has
// BEFORE any Python code runs there (Python's after-fork hooks run user code
// in a function zygote):
//
//   kind FUNCTION (from the runtime zygote):  clone(NEWUSER|NEWNS|NEWPID|NEWIPC|
//     NEWUTS|NEWNET) → the parent writes its id maps (only a process of the parent
//     user namespace may) → become root of
//     the new user namespace → join the function zygote's cgroup → /code bound
//     read-only, fresh /tmp, /dev/shm, /proc → hostname, loopback → keep only
//     the zygote capabilities → the function-zygote seccomp filter (stacked).
//   kind INSTANCE (from a function zygote):   clone(NEWNS|NEWPID|NEWIPC|NEWUTS|
//     NEWNET) → join the instance's cgroup + new cgroup namespace → fresh /tmp,
//     /dev/shm, /proc → hostname, loopback → every capability dropped →
//     no_new_privs → the default sandbox seccomp filter (stacked) → only fds
//     0..3 left. The parent waits for that to finish (or fail) and answers.
//
// Raw clone() instead of fork(): namespace flags and CLONE_PIDFD in one step.
// glibc's fork bookkeeping is redone by hand where it matters: the cached tid
// (CLONE_CHILD_SETTID on the address glibc registered), and Python's own
// before/after-fork protocol (PyOS_*Fork*), which reinitialises the GIL,
// threading state and import lock and reseeds `random`. The zygote is
// single-threaded, so no glibc lock can be held across the clone.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/securebits.h>
#include <linux/seccomp.h>
#include <net/if.h>
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
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

// Exported by the python3 executable that loads us (Debian builds it with
// -export-dynamic); declared here so the build needs no Python headers.
void PyOS_BeforeFork(void);
void PyOS_AfterFork_Parent(void);
void PyOS_AfterFork_Child(void);

enum { STOKE_FORK_FUNCTION = 1, STOKE_FORK_INSTANCE = 2 };

// Mirrored field by field by ctypes in stoke_zygote.py.
struct stoke_fork {
  int32_t kind;
  int32_t fds[4];         // become the child's fds 0..3 (-1: /dev/null)
  int32_t cgroup_fds[8];  // the child writes "0" to each: joins its own group
  int32_t cgroup_fd_count;
  int32_t map_id;         // FUNCTION: the caller's uid/gid its root is mapped to
  const char* hostname;
  const char* code_source;  // FUNCTION: bound read-only at /code
  uint64_t tmp_bytes;       // size of the fresh /tmp and /dev/shm
  const struct sock_filter* seccomp;
  uint32_t seccomp_len;     // instructions
  int32_t pidfd;            // out: the child's pidfd
  int32_t pid;              // out: the child's pid (caller's namespace)
  char error[256];          // out, on failure
};

// Capabilities a function zygote keeps (spec.h kZygoteCapabilities).
#define ZYGOTE_CAPS ((1ULL << CAP_SETGID) | (1ULL << CAP_SETUID) | (1ULL << CAP_SETPCAP) | \
                     (1ULL << CAP_NET_ADMIN) | (1ULL << CAP_SYS_CHROOT) | (1ULL << CAP_SYS_ADMIN))

// ---- in the child: report and die ---------------------------------------

static int status_fd = -1;
static int status_as_json = 0;  // a function zygote reports on its control socket

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char* fmt, ...) {
  char buf[256];
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 64, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof buf - 65) n = (int)sizeof buf - 65;  // what vsnprintf wrote, without its NUL
  n += snprintf(buf + n, sizeof buf - (size_t)n, ": %s", strerror(saved));
  if (n > (int)sizeof buf - 1) n = (int)sizeof buf - 1;  // snprintf says what it would have written
  if (status_fd >= 0 && status_as_json) {
    char json[600];
    int j = snprintf(json, sizeof json, "{\"error\": \"");
    for (int i = 0; i < n && j < (int)sizeof json - 4; ++i) {
      if (buf[i] == '"' || buf[i] == '\\') json[j++] = '\\';
      json[j++] = (buf[i] >= 0x20 && buf[i] < 0x7f) ? buf[i] : '?';
    }
    j += snprintf(json + j, sizeof json - (size_t)j, "\"}");
    ssize_t w = write(status_fd, json, (size_t)j);
    (void)w;
  } else if (status_fd >= 0) {
    ssize_t w = write(status_fd, buf, (size_t)n);
    (void)w;
  }
  _exit(127);
}

#define CHECK(call, ...) \
  do {                   \
    if ((call) < 0) die(__VA_ARGS__); \
  } while (0)

static void place_fds(const struct stoke_fork* r) {
  int staged[4];
  for (int i = 0; i < 4; ++i) {
    int src = r->fds[i];
    int opened = -1;
    if (src < 0) src = opened = open("/dev/null", O_RDWR | O_CLOEXEC);
    CHECK(src, "open /dev/null");
    staged[i] = fcntl(src, F_DUPFD_CLOEXEC, 512);
    CHECK(staged[i], "stage fd %d", i);
    if (opened >= 0) close(opened);
  }
  for (int i = 0; i < 4; ++i) CHECK(dup3(staged[i], i, 0), "place fd %d", i);
  for (int i = 0; i < 4; ++i) close(staged[i]);
}

static void join_cgroup(const struct stoke_fork* r) {
  for (int i = 0; i < r->cgroup_fd_count && i < 8; ++i)
    CHECK(write(r->cgroup_fds[i], "0", 1), "join cgroup (fd %d)", i);
  CHECK(unshare(CLONE_NEWCGROUP), "new cgroup namespace");
}

// ---- network namespaces made ahead (function zygotes) ---------------------
// Creating a network namespace is the slowest part of a fork's clone (0.3 ms
// p50, milliseconds at p99). A function zygote makes a few ahead, between
// forks, each with loopback up; an instance joins one with setns. Each is
// used once: never shared, never reused.

#define NETNS_POOL_MAX 4
static int netns_pool[NETNS_POOL_MAX];
static int netns_pool_count = 0;
static int own_netns = -1;

static int loopback_up_here(void) {
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

// Fills the pool up to `target` (at most NETNS_POOL_MAX). Returns how many
// are ready, or -1 with errno (the caller then forks with CLONE_NEWNET).
__attribute__((visibility("default"))) int stoke_zygote_prepare_netns(int target) {
  if (target > NETNS_POOL_MAX) target = NETNS_POOL_MAX;
  if (own_netns < 0) {
    own_netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (own_netns < 0) return -1;
  }
  while (netns_pool_count < target) {
    if (unshare(CLONE_NEWNET) != 0) return -1;
    int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    int saved = errno;
    int up = fd >= 0 ? loopback_up_here() : -1;
    if (up != 0 && fd >= 0) saved = errno;
    if (setns(own_netns, CLONE_NEWNET) != 0) abort();  // never stay in an instance's namespace
    if (fd < 0 || up != 0) {
      if (fd >= 0) close(fd);
      errno = saved;
      return -1;
    }
    netns_pool[netns_pool_count++] = fd;
  }
  return netns_pool_count;
}

static void fresh_mounts(const struct stoke_fork* r) {
  char opts[64];
  snprintf(opts, sizeof opts, "mode=1777,size=%llu", (unsigned long long)r->tmp_bytes);
  CHECK(mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts), "mount /tmp");
  CHECK(mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts), "mount /dev/shm");
  // Its own pid namespace's processes only, as in a cold sandbox.
  CHECK(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "subset=pid"), "mount /proc");
}

static void loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  CHECK(s, "socket for loopback");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  CHECK(ioctl(s, SIOCGIFFLAGS, &ifr), "read loopback flags");
  ifr.ifr_flags |= IFF_UP;
  CHECK(ioctl(s, SIOCSIFFLAGS, &ifr), "bring loopback up");
  close(s);
}

static void limit_capabilities(uint64_t keep) {
  for (int cap = 0; cap < 64; ++cap)
    if (!(keep & (1ULL << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
      die("drop capability %d from the bounding set", cap);
  CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities");
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  for (int i = 0; i < 2; ++i) data[i].permitted = data[i].effective = (uint32_t)(keep >> (32 * i));
  CHECK(syscall(SYS_capset, &header, data), "set capabilities");
}

static void lock_securebits(void) {
  // A new user namespace starts with default securebits: lock root out of
  // capability regain again, as the sandbox child does.
  unsigned long bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                       SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                       SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
  CHECK(prctl(PR_SET_SECUREBITS, bits, 0, 0, 0), "lock securebits");
}

static void load_seccomp(const struct stoke_fork* r) {
  if (r->seccomp == NULL || r->seccomp_len == 0) die("no seccomp filter given%s", "");
  struct sock_fprog prog = {(unsigned short)r->seccomp_len, (struct sock_filter*)r->seccomp};
  CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");
  CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0), "load seccomp filter");
}

static void close_other_fds(void) {
  if (status_as_json) status_fd = 3;  // placed there by now
  // Everything but 0..3 and the status pipe (closed by the caller last).
  if (status_fd > 4) CHECK(syscall(SYS_close_range, 4, status_fd - 1, 0), "close inherited fds");
  CHECK(syscall(SYS_close_range, status_fd + 1, ~0U, 0), "close inherited fds");
}

static int go_fd = -1;  // FUNCTION: one byte arrives once the parent wrote the id maps

static void setup_function_zygote(const struct stoke_fork* r) {
  char go;
  if (read(go_fd, &go, 1) != 1) die("wait for id maps (the parent gave up)");
  close(go_fd);
  CHECK(setresgid(0, 0, 0), "become root group of the new user namespace");
  CHECK(setresuid(0, 0, 0), "become root of the new user namespace");
  lock_securebits();
  CHECK(setsid(), "new session");
  CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "parent death signal");
  join_cgroup(r);
  if (r->code_source != NULL && r->code_source[0] != '\0') {
    CHECK(mount(r->code_source, "/code", NULL, MS_BIND, NULL), "bind %s at /code", r->code_source);
    CHECK(mount(NULL, "/code", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL),
          "make /code read-only");
  }
  fresh_mounts(r);
  CHECK(sethostname(r->hostname, strlen(r->hostname)), "set hostname");
  loopback_up();
  CHECK(chdir("/code"), "chdir /code");
  limit_capabilities(ZYGOTE_CAPS);
  load_seccomp(r);
}

static void setup_instance(const struct stoke_fork* r, int netns) {
  // A session (and process group) of its own, as a cold sandbox's: no
  // controlling terminal, and kill(0, ...) reaches nothing of its zygote's.
  CHECK(setsid(), "new session");
  CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "parent death signal");
  join_cgroup(r);
  fresh_mounts(r);
  CHECK(sethostname(r->hostname, strlen(r->hostname)), "set hostname");
  if (netns >= 0) CHECK(setns(netns, CLONE_NEWNET), "join a prepared network namespace");
  else loopback_up();
  limit_capabilities(0);
  load_seccomp(r);
}

static int write_file(const char* path, const char* text, char* error, size_t error_len) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : write(fd, text, strlen(text));
  int saved = errno;
  if (fd >= 0) close(fd);
  if (n == (ssize_t)strlen(text)) return 0;
  snprintf(error, error_len, "write %s: %s", path, strerror(saved));
  return -1;
}

// Root of the child's new user namespace = `id` of ours (a process of the
// parent namespace must write this; the agent, two levels up, may not).
static int write_id_maps(pid_t pid, int id, char* error, size_t error_len) {
  char path[64], map[64];
  snprintf(map, sizeof map, "0 %d 1\n", id);
  snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
  if (write_file(path, map, error, error_len) != 0) return -1;
  snprintf(path, sizeof path, "/proc/%d/setgroups", (int)pid);
  if (write_file(path, "deny", error, error_len) != 0) return -1;
  snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
  return write_file(path, map, error, error_len);
}

// >0 in the parent (the child's pid; r->pidfd set), 0 in the child once it is
// fully set up, -1 in the parent on failure (r->error says why).
__attribute__((visibility("default"))) int stoke_zygote_fork(struct stoke_fork* r) {
  r->error[0] = '\0';
  r->pidfd = r->pid = -1;
  if (r->kind != STOKE_FORK_FUNCTION && r->kind != STOKE_FORK_INSTANCE) {
    snprintf(r->error, sizeof r->error, "unknown fork kind %d", r->kind);
    return -1;
  }
  int status[2];
  if (pipe2(status, O_CLOEXEC) != 0) {
    snprintf(r->error, sizeof r->error, "status pipe: %s", strerror(errno));
    return -1;
  }
  void* tid_address = NULL;
  if (prctl(PR_GET_TID_ADDRESS, &tid_address, 0, 0, 0) != 0) tid_address = NULL;
  unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_PIDFD |
                        (tid_address ? CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID : 0) | SIGCHLD;
  if (r->kind == STOKE_FORK_FUNCTION) flags |= CLONE_NEWUSER;
  int netns = -1;
  if (r->kind == STOKE_FORK_INSTANCE && netns_pool_count > 0) {
    netns = netns_pool[--netns_pool_count];
    flags &= ~(unsigned long)CLONE_NEWNET;
  }

  int go[2] = {-1, -1};
  if (r->kind == STOKE_FORK_FUNCTION && pipe2(go, O_CLOEXEC) != 0) {
    snprintf(r->error, sizeof r->error, "go pipe: %s", strerror(errno));
    close(status[0]);
    close(status[1]);
    return -1;
  }

  PyOS_BeforeFork();
  int pidfd = -1;
  long pid = syscall(SYS_clone, flags, NULL, &pidfd, tid_address, 0);
  if (pid == 0) {
    close(status[0]);
    status_fd = status[1];
    status_as_json = 0;  // statics are inherited: a function zygote's instance is not one
    if (r->kind == STOKE_FORK_FUNCTION) {
      status_fd = r->fds[3];  // nobody waits on the pipe: report to the agent
      status_as_json = 1;
      close(status[1]);
      close(go[1]);
      go_fd = go[0];
    }
    netns_pool_count = 0;  // the pool is the zygote's (closed below)
    own_netns = -1;
    if (r->kind == STOKE_FORK_FUNCTION) setup_function_zygote(r);
    else setup_instance(r, netns);
    place_fds(r);
    close_other_fds();
    if (r->kind == STOKE_FORK_INSTANCE) {
      ssize_t w = write(status_fd, "k", 1);
      (void)w;
    }
    if (!status_as_json) close(status_fd);
    status_fd = -1;
    PyOS_AfterFork_Child();
    return 0;
  }
  int clone_errno = errno;
  PyOS_AfterFork_Parent();
  if (netns >= 0) close(netns);  // used (or, if clone failed, dropped)
  close(status[1]);
  if (pid < 0) {
    close(status[0]);
    snprintf(r->error, sizeof r->error, "clone: %s", strerror(clone_errno));
    return -1;
  }
  r->pid = (int32_t)pid;
  r->pidfd = pidfd;
  // An instance answers once set up (one byte) or failed (a message). A
  // function zygote first waits for the agent, so its answer comes later, on
  // its own control socket.
  if (r->kind == STOKE_FORK_FUNCTION) {
    close(status[0]);
    close(go[0]);
    int mapped = write_id_maps((pid_t)pid, r->map_id, r->error, sizeof r->error);
    if (mapped == 0 && write(go[1], "g", 1) != 1) {
      snprintf(r->error, sizeof r->error, "start the function zygote: %s", strerror(errno));
      mapped = -1;
    }
    close(go[1]);
    if (mapped != 0) {
      syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
      close(pidfd);
      r->pidfd = -1;
      return -1;
    }
    return (int)pid;
  }
  char buf[200];
  ssize_t n;
  do n = read(status[0], buf, sizeof buf - 1);
  while (n < 0 && errno == EINTR);
  close(status[0]);
  if (n == 1 && buf[0] == 'k') return (int)pid;
  if (n <= 0) snprintf(r->error, sizeof r->error, "the instance died while being set up");
  else {
    buf[n] = '\0';
    snprintf(r->error, sizeof r->error, "instance setup: %s", buf);
  }
  // It has exited (or is about to): its pidfd goes back to nobody.
  close(pidfd);
  r->pidfd = -1;
  return -1;
}
