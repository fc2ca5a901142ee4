#include "sandbox/seccomp_profile.h"

#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include <spdlog/spdlog.h>

#include "sandbox/base/file_util.h"

#include "sandbox/base/unique_fd.h"

namespace stoke {
namespace {

// What ordinary programs (CPython, Node.js, shells, coreutils, compiled
// functions) need. Anything not listed fails with EPERM. Names libseccomp does
// not know on this architecture are skipped.
constexpr const char* kAllowed[] = {
    "accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk", "capget",
    "clock_getres", "clock_gettime", "clock_nanosleep", "close", "close_range", "connect",
    "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait", "eventfd", "eventfd2", "execve",
    "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fallocate",
    "fchdir", "fchmod", "fchmodat", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr",
    "flistxattr", "flock", "fork", "fstat", "fstatfs", "fsync", "ftruncate", "futex",
    "futex_waitv", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "geteuid",
    "getgid", "getgroups", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
    "getppid", "getpriority", "getrandom", "getresgid", "getresuid", "getrlimit",
    "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt", "gettid",
    "gettimeofday", "getuid", "getxattr", "inotify_add_watch", "inotify_rm_watch", "kill", "lchown", "lgetxattr", "link",
    "linkat", "listen", "listxattr", "llistxattr", "lseek", "lstat", "madvise",
    "membarrier", "memfd_create", "mincore", "mkdir", "mkdirat", "mlock", "mlock2",
    "mlockall", "mmap", "mprotect", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd",
    "msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep",
    "newfstatat", "open", "openat", "openat2", "pause", "pidfd_getfd", "pidfd_open",
    "pidfd_send_signal", "pipe", "pipe2", "poll", "ppoll", "prctl", "pread64", "preadv",
    "preadv2", "pselect6", "pwrite64", "pwritev", "pwritev2", "read",
    "readahead", "readlink", "readlinkat", "readv", "recvfrom", "recvmmsg", "recvmsg",
    "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq",
    "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo", "sched_getaffinity",
    "sched_getattr", "sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "select", "semctl", "semget",
    "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto", "setfsgid",
    "setfsuid", "setgid", "setgroups", "setitimer", "setpgid", "setpriority", "setregid",
    "setresgid", "setresuid", "setreuid", "set_robust_list", "setsid",
    "setsockopt", "set_tid_address", "setuid", "shmat", "shmctl", "shmdt", "shmget",
    "shutdown", "sigaltstack", "signalfd", "signalfd4", "splice",
    "stat", "statfs", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
    "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_settime", "timerfd_create", "timerfd_gettime", "timerfd_settime",
    "times", "tkill", "truncate", "umask", "uname", "unlink", "unlinkat", "utime",
    "utimensat", "utimes", "vfork", "vmsplice", "wait4", "waitid", "write", "writev",
    "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    // Plain file and process calls that are easy to forget (`cd` is chdir).
    "chdir", "chmod", "chown", "fchmodat2", "ioprio_get", "ioprio_set",
    // Linux AIO (databases), NUMA policy, memory protection keys (V8), shadow
    // stacks (glibc with CET).
    "io_setup", "io_destroy", "io_submit", "io_getevents", "io_pgetevents", "io_cancel",
    "get_mempolicy", "set_mempolicy", "mbind", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "map_shadow_stack",
    // A program may restrict itself further; a filter can only narrow ours.
    "seccomp",
};

// Listed explicitly so a future widening of the allow-list cannot let them in.
const std::vector<std::string> kAlwaysDenied = {
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick", "mount_setattr", "unshare", "setns", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "ptrace", "process_vm_readv", "process_vm_writev",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "open_by_handle_at", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "clock_settime", "clock_adjtime", "settimeofday",
    "adjtimex", "chroot", "acct", "quotactl", "lookup_dcookie", "vhangup", "iopl", "ioperm",
    "syslog", "sethostname", "setdomainname", "mknod", "mknodat", "nfsservctl",
    "fanotify_init",
};

constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                     CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP | CLONE_NEWTIME;

// Arguments the kernel declares `int` or `unsigned int` are truncated to 32
// bits, but the filter sees the whole register: compare the low half only, or
// 0x1'00005412 would pass a check against TIOCSTI and still be TIOCSTI.
constexpr uint64_t kLow32 = 0xffffffffULL;

using RuleFn = std::function<Status(uint32_t action, const char* name, unsigned n, const scmp_arg_cmp* cmps)>;

// Syscalls allowed only for some arguments. Shared by every profile (a zygote
// runs tenant code too, and its instances get the default filter on top).
Status add_argument_rules(const RuleFn& rule) {
  // ioctl: everything but pushing bytes into a terminal's input queue
  // (TIOCSTI) and the VT console's grab bag (TIOCLINUX: selection paste, which
  // injects too). EIO is what a kernel with dev.tty.legacy_tiocsti=0 answers.
  // libseccomp drops conditional rules next to an unconditional one, so the
  // fallback ALLOW is written as an always-true comparison.
  for (unsigned long request : {static_cast<unsigned long>(TIOCSTI), static_cast<unsigned long>(TIOCLINUX)}) {
    scmp_arg_cmp is_request = SCMP_A1(SCMP_CMP_MASKED_EQ, kLow32, request);
    STOKE_TRY(rule(SCMP_ACT_ERRNO(EIO), "ioctl", 1, &is_request));
  }
  scmp_arg_cmp any_fd = SCMP_A0(SCMP_CMP_GE, 0);
  STOKE_TRY(rule(SCMP_ACT_ALLOW, "ioctl", 1, &any_fd));

  // socket: local, IPv4 and IPv6 stream/datagram sockets with their plain
  // protocols, and rtnetlink (getifaddrs, getaddrinfo's AI_ADDRCONFIG, Node's
  // os.networkInterfaces: it only reads the sandbox's own network namespace;
  // changing it needs CAP_NET_ADMIN over the namespace's owner, which no
  // sandbox has). Everything else is EPERM before the kernel looks at it, so
  // no family's module is autoloaded: AF_VSOCK (not namespaced: it reaches the
  // host and hypervisor), AF_ALG, AF_PACKET, SCTP/DCCP, NETLINK_KOBJECT_UEVENT
  // (host uevents in a pooled namespace), SOCK_RAW, SOCK_PACKET. The type is
  // compared under 0xf: SOCK_NONBLOCK and SOCK_CLOEXEC live above it.
  struct Allowed {
    int family, type, protocol;
  };
  constexpr Allowed kSockets[] = {
      {AF_UNIX, SOCK_STREAM, 0},         {AF_UNIX, SOCK_DGRAM, 0},          {AF_UNIX, SOCK_SEQPACKET, 0},
      {AF_INET, SOCK_STREAM, 0},         {AF_INET, SOCK_STREAM, IPPROTO_TCP},
      {AF_INET, SOCK_DGRAM, 0},          {AF_INET, SOCK_DGRAM, IPPROTO_UDP}, {AF_INET, SOCK_DGRAM, IPPROTO_ICMP},
      {AF_INET6, SOCK_STREAM, 0},        {AF_INET6, SOCK_STREAM, IPPROTO_TCP},
      {AF_INET6, SOCK_DGRAM, 0},         {AF_INET6, SOCK_DGRAM, IPPROTO_UDP},
      {AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6},
      {AF_NETLINK, SOCK_RAW, NETLINK_ROUTE}, {AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE},
  };
  for (const Allowed& a : kSockets) {
    scmp_arg_cmp cmps[] = {SCMP_A0(SCMP_CMP_MASKED_EQ, kLow32, static_cast<uint64_t>(a.family)),
                           SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, static_cast<uint64_t>(a.type)),
                           SCMP_A2(SCMP_CMP_MASKED_EQ, kLow32, static_cast<uint64_t>(a.protocol))};
    STOKE_TRY(rule(SCMP_ACT_ALLOW, "socket", 3, cmps));
  }
  // socketpair exists for AF_UNIX only, but other families are looked up (and
  // autoloaded) before the kernel says so.
  scmp_arg_cmp unix_only = SCMP_A0(SCMP_CMP_MASKED_EQ, kLow32, AF_UNIX);
  STOKE_TRY(rule(SCMP_ACT_ALLOW, "socketpair", 1, &unix_only));

  // inotify: every instance is charged to the user namespace's owner at each
  // level up to the host, and sandbox namespaces are owned by root, so all
  // sandboxes and every root daemon share fs.inotify.max_user_instances (128).
  // ENOSYS is what a kernel without inotify answers; watchers fall back to
  // polling or report "not supported" on it.
  STOKE_TRY(rule(SCMP_ACT_ERRNO(ENOSYS), "inotify_init", 0, nullptr));
  STOKE_TRY(rule(SCMP_ACT_ERRNO(ENOSYS), "inotify_init1", 0, nullptr));

  // Rlimits: any but RLIMIT_CORE, which the spawner pins at 1: a pipe
  // core_pattern (systemd-coredump, apport) dumps whatever the limit unless it
  // is exactly 1, so a function lowering it to 0 would reach the host's helper.
  for (int resource = 0; resource < RLIM_NLIMITS; ++resource) {
    if (resource == RLIMIT_CORE) continue;
    scmp_arg_cmp set = SCMP_A0(SCMP_CMP_MASKED_EQ, kLow32, static_cast<uint64_t>(resource));
    STOKE_TRY(rule(SCMP_ACT_ALLOW, "setrlimit", 1, &set));
    scmp_arg_cmp pr = SCMP_A1(SCMP_CMP_MASKED_EQ, kLow32, static_cast<uint64_t>(resource));
    STOKE_TRY(rule(SCMP_ACT_ALLOW, "prlimit64", 1, &pr));
  }
  scmp_arg_cmp query_only = SCMP_A2(SCMP_CMP_EQ, 0);  // new_limit == NULL
  STOKE_TRY(rule(SCMP_ACT_ALLOW, "prlimit64", 1, &query_only));
  return {};
}

struct CtxDeleter {
  void operator()(scmp_filter_ctx c) const { seccomp_release(c); }
};

Result<SeccompProgram> compile_profile(SeccompProfile profile) {
  std::unique_ptr<void, CtxDeleter> ctx(seccomp_init(SCMP_ACT_ERRNO(EPERM)));
  if (!ctx) return plain_error("seccomp_init", "libseccomp could not allocate a filter");
  // A binary tree of syscall numbers instead of a linear chain.
  seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2);
  // The filter is loaded after no_new_privs by the sandbox itself.
  seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0);

  auto rule = [&](uint32_t action, const char* name, unsigned n = 0,
                  const scmp_arg_cmp* cmps = nullptr) -> Status {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return {};  // not on this architecture
    int rc = seccomp_rule_add_array(ctx.get(), action, nr, n, cmps);
    if (rc < 0) return sys_error(std::string("seccomp rule for ") + name, -rc);
    return {};
  };

  for (const char* name : kAllowed) STOKE_TRY(rule(SCMP_ACT_ALLOW, name));
  STOKE_TRY(add_argument_rules(RuleFn(rule)));

  // clone: without namespace flags (fork/threads are fine), except for the
  // maker, which clones each instance's user namespace and the rest.
  scmp_arg_cmp no_ns = SCMP_A0(SCMP_CMP_MASKED_EQ, kNamespaceFlags, 0);
  if (profile == SeccompProfile::kZygoteMaker) STOKE_TRY(rule(SCMP_ACT_ALLOW, "clone"));
  else STOKE_TRY(rule(SCMP_ACT_ALLOW, "clone", 1, &no_ns));
  if (profile == SeccompProfile::kZygoteMaker) {
    for (const char* name : {"mount", "umount2", "sethostname", "capset", "setns"})
      STOKE_TRY(rule(SCMP_ACT_ALLOW, name));
    scmp_arg_cmp no_userns = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, 0);
    STOKE_TRY(rule(SCMP_ACT_ALLOW, "unshare", 1, &no_userns));
  } else if (profile == SeccompProfile::kFunctionZygote) {
    // An instance joins the namespaces its maker made (the zygote itself has
    // no capability to use setns with anything else), enters a cgroup
    // namespace of its own, and drops the capabilities it has in them. The
    // tenant's import-time code runs under this filter without capabilities:
    // unshare(CLONE_NEWCGROUP) and capset give it nothing.
    STOKE_TRY(rule(SCMP_ACT_ALLOW, "setns"));
    STOKE_TRY(rule(SCMP_ACT_ALLOW, "capset"));
    scmp_arg_cmp cgroup_only = SCMP_A0(SCMP_CMP_MASKED_EQ, kLow32, CLONE_NEWCGROUP);
    STOKE_TRY(rule(SCMP_ACT_ALLOW, "unshare", 1, &cgroup_only));
  }
  // clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc
  // fall back to clone, whose flags we can check.
  STOKE_TRY(rule(SCMP_ACT_ERRNO(ENOSYS), "clone3"));
  // personality: only the default domain and the query value (0xffffffff).
  for (uint64_t p : {uint64_t{PER_LINUX}, uint64_t{0xffffffff}}) {
    scmp_arg_cmp eq = SCMP_A0(SCMP_CMP_EQ, p);
    STOKE_TRY(rule(SCMP_ACT_ALLOW, "personality", 1, &eq));
  }
  // mknod: FIFOs and sockets only (mkfifo is mknod); device nodes never.
  for (uint64_t type : {uint64_t{S_IFIFO}, uint64_t{S_IFSOCK}}) {
    scmp_arg_cmp a1 = SCMP_A1(SCMP_CMP_MASKED_EQ, S_IFMT, type);
    STOKE_TRY(rule(SCMP_ACT_ALLOW, "mknod", 1, &a1));
    scmp_arg_cmp a2 = SCMP_A2(SCMP_CMP_MASKED_EQ, S_IFMT, type);
    STOKE_TRY(rule(SCMP_ACT_ALLOW, "mknodat", 1, &a2));
  }
  // The always-denied set falls to the EPERM default (libseccomp refuses rules
  // whose action equals the default). Guard against a careless widening of
  // kAllowed letting one of them in.
  for (const char* name : kAllowed)
    for (const auto& denied : kAlwaysDenied)
      if (denied == name) return plain_error("seccomp profile", std::string(name) + " is both allowed and always denied");

  // Export the BPF through a memfd (libseccomp 2.5 only exports to an fd).
  unique_fd mem(memfd_create("stoke-seccomp", MFD_CLOEXEC));
  if (!mem) return sys_error("memfd_create for seccomp export");
  int rc = seccomp_export_bpf(ctx.get(), mem.get());
  if (rc < 0) return sys_error("seccomp_export_bpf", -rc);
  off_t size = lseek(mem.get(), 0, SEEK_END);
  if (size <= 0 || size % sizeof(sock_filter) != 0)
    return plain_error("seccomp export", "unexpected BPF size " + std::to_string(size));
  SeccompProgram prog;
  prog.instructions.resize(static_cast<size_t>(size) / sizeof(sock_filter));
  if (pread(mem.get(), prog.instructions.data(), static_cast<size_t>(size), 0) != size)
    return sys_error("read back seccomp BPF");
  return prog;
}

// ---- on-disk cache -------------------------------------------------------
// Compiling the profile costs ~1.2 ms, as much as a whole sandbox spawn, which
// a one-shot `stoke run` would pay every time. The BPF only depends on the
// profile, libseccomp's syscall tables and the architecture, so it is kept
// under /run (tmpfs: gone at reboot) keyed by a hash of all three.

// Bump when a conditional rule in compile_profile() changes.
constexpr int kProfileRevision = 2;

std::string cache_key() {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  auto mix = [&](std::string_view text) {
    for (unsigned char c : text) h = (h ^ c) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
  };
  for (const char* name : kAllowed) mix(name);
  for (const auto& name : kAlwaysDenied) mix(name);
  const scmp_version* v = seccomp_version();
  mix(std::to_string(kProfileRevision) + "/" + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
      std::to_string(v->micro) + "/" + std::to_string(seccomp_arch_native()));
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::optional<SeccompProgram> load_cached(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return std::nullopt;
  struct stat st;
  // Only a file root wrote and nobody else can change is trusted.
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) != 0 ||
      st.st_size <= 0 || st.st_size % static_cast<off_t>(sizeof(sock_filter)) != 0 ||
      st.st_size > static_cast<off_t>(BPF_MAXINSNS * sizeof(sock_filter)))
    return std::nullopt;
  SeccompProgram prog;
  prog.instructions.resize(static_cast<size_t>(st.st_size) / sizeof(sock_filter));
  if (pread(fd.get(), prog.instructions.data(), static_cast<size_t>(st.st_size), 0) != st.st_size)
    return std::nullopt;
  return prog;
}

}  // namespace

Result<SeccompProgram> load_or_compile_seccomp_program(const std::string& cache_dir) {
  std::string path;
  if (!cache_dir.empty()) {
    path = cache_dir + "/seccomp-default-" + cache_key() + ".bpf";
    if (auto cached = load_cached(path)) return std::move(*cached);
  }
  auto prog = compile_profile(SeccompProfile::kDefault);
  if (prog.ok() && !path.empty() && make_dirs(cache_dir, 0755).ok()) {
    std::string_view bytes(reinterpret_cast<const char*>(prog->instructions.data()),
                           prog->instructions.size() * sizeof(sock_filter));
    Status stored = write_file_atomic(path, bytes, 0644);
    if (!stored.ok()) spdlog::debug("seccomp cache not written: {}", stored.error().message());
  }
  return prog;
}

Result<const SeccompProgram*> default_seccomp_program(const std::string& cache_dir) {
  static std::mutex mu;
  static std::optional<Result<SeccompProgram>> cached;
  std::lock_guard<std::mutex> lock(mu);
  if (!cached) cached.emplace(load_or_compile_seccomp_program(cache_dir));
  if (!cached->ok()) return cached->error();
  return &cached->value();
}

const std::vector<std::string>& always_denied_syscalls() { return kAlwaysDenied; }

Result<SeccompProgram> compile_default_seccomp_program() { return compile_profile(SeccompProfile::kDefault); }

Result<const SeccompProgram*> seccomp_program(SeccompProfile profile) {
  if (profile == SeccompProfile::kDefault) return default_seccomp_program();
  static std::mutex mu;
  static std::map<SeccompProfile, Result<SeccompProgram>> cached;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cached.find(profile);
  if (it == cached.end()) it = cached.emplace(profile, compile_profile(profile)).first;
  if (!it->second.ok()) return it->second.error();
  return &it->second.value();
}

}  // namespace stoke
