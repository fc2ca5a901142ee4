// stoke-probe: runs inside a sandbox and reports what it sees as one JSON
// object on stdout. The priv tests use it to prove the isolation baseline
// (DESIGN.md §2) from the inside; it is also shipped in function bundles.
//
// Self-contained on purpose: libc, libstdc++ and the header-only nlohmann
// JSON, linked statically so it runs from any bind mount.
//
// Every syscall it tries that the sandbox must deny is called with arguments
// that make it harmless if it were allowed (bogus magic, invalid flags,
// nonexistent paths, null pointers), so running the probe on a host as root
// changes nothing. Calls that would change the probe itself if they
// succeeded (unshare, clone with namespace flags, personality) run in a
// throw-away child.
//
// Subcommands (exit 0 on success, 2 on bad usage):
//   isolation [--connect PORT]  the isolation report (see isolation_report)
//   fill-tmp                    fill /tmp/fill until a write fails
//   alloc MB                    allocate and touch MB MiB
//   fork-bomb                   fork until fork fails (max 100000), then sleep
//   spawn-sleepers N SECONDS    N orphaned, setsid()ed sleepers; then sleep
//   burn MS                     spin MS ms of CPU time
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

namespace {

using nlohmann::json;

constexpr int kUsageExit = 2;

// "EPERM" for EPERM; "E<n>" for numbers glibc has no name for.
std::string errno_name(int e) {
  if (e == 0) return "OK";
  if (const char* name = strerrorname_np(e)) return name;
  return "E" + std::to_string(e);
}

// The result of a raw syscall as "OK" or the errno name. A successful call
// that returned an fd has it closed again.
std::string outcome(long rc, bool returns_fd = false) {
  if (rc >= 0) {
    if (returns_fd) close(static_cast<int>(rc));
    return "OK";
  }
  return errno_name(errno);
}

// Runs fn in a forked child and returns its outcome: fn returns 0 for
// success or an errno value. For calls that would alter the caller.
std::string in_child(const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid < 0) return "fork:" + errno_name(errno);
  if (pid == 0) _exit(fn() & 0xff);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return errno_name(WEXITSTATUS(status));
  return "signal:" + std::to_string(WTERMSIG(status));
}

// A raw clone with a namespace flag; a child that gets created exits at once.
std::string try_clone(unsigned long flag) {
  long rc = syscall(SYS_clone, flag | SIGCHLD, nullptr, nullptr, nullptr, 0L);
  if (rc == 0) _exit(0);
  if (rc < 0) return errno_name(errno);
  int status = 0;
  while (waitpid(static_cast<pid_t>(rc), &status, 0) < 0 && errno == EINTR) {
  }
  return "OK";
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool path_exists(const char* path) {
  struct stat st {};
  return lstat(path, &st) == 0;
}

std::vector<std::string> dir_entries(const char* path) {
  std::vector<std::string> names;
  DIR* dir = opendir(path);
  if (dir == nullptr) return names;
  while (dirent* ent = readdir(dir)) {
    if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
    names.emplace_back(ent->d_name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

bool parse_u64(const char* text, uint64_t max, uint64_t* out) {
  if (text == nullptr || *text < '0' || *text > '9') return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || v > max) return false;
  *out = v;
  return true;
}

bool parse_seconds(const char* text, double* out) {
  if (text == nullptr || *text == '\0') return false;
  errno = 0;
  char* end = nullptr;
  double v = strtod(text, &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(v) || v < 0 || v > 1e7) return false;
  *out = v;
  return true;
}

void sleep_seconds(double seconds) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(seconds);
  ts.tv_nsec = static_cast<long>((seconds - static_cast<double>(ts.tv_sec)) * 1e9);
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

[[noreturn]] void sleep_forever() {
  for (;;) pause();
}

void print(const json& j) {
  std::string text = j.dump() + "\n";
  fwrite(text.data(), 1, text.size(), stdout);
  fflush(stdout);
}

// ---- isolation ---------------------------------------------------------

// Each syscall the sandbox must always deny, called harmlessly.
json denied_syscalls() {
  json d = json::object();
  const char* nowhere = "/nonexistent-stoke-probe";
  const char* nowhere2 = "/nonexistent-stoke-probe-2";

  // Mount family.
  d["mount"] = outcome(syscall(SYS_mount, nullptr, nowhere, nullptr, 0UL, nullptr));
  d["umount2"] = outcome(syscall(SYS_umount2, nowhere, 0));
  d["pivot_root"] = outcome(syscall(SYS_pivot_root, nowhere, nowhere2));
#ifdef SYS_move_mount
  d["move_mount"] = outcome(syscall(SYS_move_mount, -1, nowhere, -1, nowhere2, 0U));
#else
  d["move_mount"] = "NOSYSNUM";
#endif
#ifdef SYS_open_tree
  d["open_tree"] = outcome(syscall(SYS_open_tree, -1, nowhere, 0U), true);
#else
  d["open_tree"] = "NOSYSNUM";
#endif
#ifdef SYS_fsopen
  d["fsopen"] = outcome(syscall(SYS_fsopen, nullptr, 0U), true);
#else
  d["fsopen"] = "NOSYSNUM";
#endif
#ifdef SYS_fsmount
  d["fsmount"] = outcome(syscall(SYS_fsmount, -1, 0U, 0U), true);
#else
  d["fsmount"] = "NOSYSNUM";
#endif
#ifdef SYS_fsconfig
  d["fsconfig"] = outcome(syscall(SYS_fsconfig, -1, 0U, nullptr, nullptr, 0));
#else
  d["fsconfig"] = "NOSYSNUM";
#endif
#ifdef SYS_fspick
  d["fspick"] = outcome(syscall(SYS_fspick, -1, nowhere, 0U), true);
#else
  d["fspick"] = "NOSYSNUM";
#endif
#ifdef SYS_mount_setattr
  // size 0 is below the first struct version: EINVAL if it got that far.
  d["mount_setattr"] = outcome(syscall(SYS_mount_setattr, -1, nowhere, 0U, nullptr, 0UL));
#else
  d["mount_setattr"] = "NOSYSNUM";
#endif

  // Namespaces.
  d["unshare"] = in_child([] {
    return syscall(SYS_unshare, CLONE_NEWUSER) == 0 ? 0 : errno;
  });
  d["setns"] = outcome(syscall(SYS_setns, -1, 0));
  d["clone_newuser"] = try_clone(CLONE_NEWUSER);
  d["clone_newns"] = try_clone(CLONE_NEWNS);
  d["clone_newnet"] = try_clone(CLONE_NEWNET);
#ifdef SYS_clone3
  // size 0 is below CLONE_ARGS_SIZE_VER0: EINVAL if it got that far.
  d["clone3"] = outcome(syscall(SYS_clone3, nullptr, 0UL));
#else
  d["clone3"] = "NOSYSNUM";
#endif

  // Kernel attack surface.
  d["bpf"] = outcome(syscall(SYS_bpf, -1, nullptr, 0U), true);
  d["perf_event_open"] = outcome(syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0UL), true);
  d["keyctl"] = outcome(syscall(SYS_keyctl, -1, 0UL, 0UL, 0UL, 0UL));
  d["add_key"] = outcome(syscall(SYS_add_key, nullptr, nullptr, nullptr, 0UL, 0));
  d["request_key"] = outcome(syscall(SYS_request_key, nullptr, nullptr, nullptr, 0));
  d["ptrace"] = outcome(syscall(SYS_ptrace, 2L /* PTRACE_PEEKDATA */, -1L, 0L, 0L));
  // Unknown flag bit 0x100 and too many segments: EINVAL past the cap check.
  d["kexec_load"] = outcome(syscall(SYS_kexec_load, 0UL, 0xffffUL, nullptr, 0x100UL));
#ifdef SYS_kexec_file_load
  d["kexec_file_load"] = outcome(syscall(SYS_kexec_file_load, -1, -1, 0UL, nullptr, 0x80000000UL));
#else
  d["kexec_file_load"] = "NOSYSNUM";
#endif
  d["init_module"] = outcome(syscall(SYS_init_module, nullptr, 0UL, ""));
  d["finit_module"] = outcome(syscall(SYS_finit_module, -1, "", 0));
  d["delete_module"] = outcome(syscall(SYS_delete_module, "stoke_probe_no_such_module", O_NONBLOCK));
  d["reboot"] = outcome(syscall(SYS_reboot, 0, 0, 0U, nullptr));  // bad magic: EINVAL
  d["swapon"] = outcome(syscall(SYS_swapon, nowhere, 0));
  d["swapoff"] = outcome(syscall(SYS_swapoff, nowhere));
  d["open_by_handle_at"] = outcome(syscall(SYS_open_by_handle_at, -1, nullptr, 0), true);
  d["userfaultfd"] = outcome(syscall(SYS_userfaultfd, -1), true);
#ifdef SYS_io_uring_setup
  d["io_uring_setup"] = outcome(syscall(SYS_io_uring_setup, 0U, nullptr), true);
  d["io_uring_enter"] = outcome(syscall(SYS_io_uring_enter, -1, 0U, 0U, 0U, nullptr, 0UL));
  d["io_uring_register"] = outcome(syscall(SYS_io_uring_register, -1, 0U, nullptr, 0U));
#else
  d["io_uring_setup"] = d["io_uring_enter"] = d["io_uring_register"] = "NOSYSNUM";
#endif

  // Clocks: null/invalid pointers, EFAULT if they got that far.
  d["clock_settime"] = outcome(syscall(SYS_clock_settime, CLOCK_REALTIME, nullptr));
  d["clock_adjtime"] = outcome(syscall(SYS_clock_adjtime, CLOCK_REALTIME, nullptr));
  d["settimeofday"] = outcome(syscall(SYS_settimeofday, nullptr, reinterpret_cast<void*>(1)));
  d["adjtimex"] = outcome(syscall(SYS_adjtimex, nullptr));

  // A non-default personality (ADDR_NO_RANDOMIZE), tried in a child.
  d["personality"] = in_child([] {
    return syscall(SYS_personality, 0x0040000UL) < 0 ? errno : 0;
  });
  d["chroot"] = outcome(syscall(SYS_chroot, "/"));

  // Privileged operations that must fail for lack of capabilities.
  if (mknod("/tmp/probe-node", S_IFCHR | 0600, makedev(1, 3)) == 0) {
    d["mknod"] = "OK";
    unlink("/tmp/probe-node");
  } else {
    d["mknod"] = errno_name(errno);
  }
  {
    char name[HOST_NAME_MAX + 1] = {};
    gethostname(name, sizeof(name) - 1);
    d["sethostname"] = outcome(sethostname(name, strlen(name)));  // same name: no change
  }
  {
    bool created = mkdir("/tmp/x", 0700) == 0;
    if (mount("tmpfs", "/tmp/x", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m") == 0) {
      d["mount_tmpfs"] = "OK";
      umount2("/tmp/x", MNT_DETACH);
    } else {
      d["mount_tmpfs"] = errno_name(errno);
    }
    if (created) rmdir("/tmp/x");
  }
  return d;
}

json status_fields() {
  json j = json::object();
  std::istringstream in(read_text("/proc/self/status"));
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    if (key == "CapInh" || key == "CapPrm" || key == "CapEff" || key == "CapBnd" ||
        key == "CapAmb") {
      j[key] = value;
    } else if (key == "NoNewPrivs" || key == "Seccomp") {
      j[key] = std::atoi(value.c_str());
    }
  }
  // Kept across execve, so they show what the instance's lockdown set.
  j["securebits"] = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
  // The session was made inside the sandbox (by the probe's parent, the
  // function's process, or the probe itself): a session from outside the
  // pid namespace would show as 0.
  pid_t sid = getsid(0);
  j["own_session"] = sid > 0 && (sid == getpid() || sid == getppid());
  return j;
}

// "pid:[4026531836]" -> 4026531836; null when unreadable.
json ns_inode(const char* name) {
  char link[128] = {};
  std::string path = std::string("/proc/self/ns/") + name;
  ssize_t n = readlink(path.c_str(), link, sizeof(link) - 1);
  if (n <= 0) return nullptr;
  const char* open = strchr(link, '[');
  if (open == nullptr) return nullptr;
  return static_cast<uint64_t>(strtoull(open + 1, nullptr, 10));
}

std::string try_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_name(errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // Loopback connects complete or fail at once; no timeout needed.
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  std::string result = rc == 0 ? std::string("ok") : errno_name(errno);
  close(fd);
  return result;
}

std::string try_create(const char* path) {
  int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return errno_name(errno);
  std::string result = "OK";
  if (write(fd, "probe\n", 6) != 6) result = errno_name(errno);
  close(fd);
  unlink(path);
  return result;
}

int cmd_isolation(int argc, char** argv) {
  int connect_port = -1;
  for (int i = 0; i < argc; ++i) {
    uint64_t port = 0;
    if (strcmp(argv[i], "--connect") == 0 && i + 1 < argc &&
        parse_u64(argv[i + 1], 65535, &port) && port > 0) {
      connect_port = static_cast<int>(port);
      ++i;
    } else {
      fprintf(stderr, "stoke-probe isolation: bad argument '%s' (usage: isolation [--connect PORT])\n",
              argv[i]);
      return kUsageExit;
    }
  }

  json r = json::object();
  r["pid"] = getpid();
  r["ppid"] = getppid();
  r["uid"] = getuid();
  r["gid"] = getgid();
  {
    std::vector<gid_t> groups(NGROUPS_MAX);
    int n = getgroups(static_cast<int>(groups.size()), groups.data());
    groups.resize(n > 0 ? static_cast<size_t>(n) : 0);
    r["groups"] = groups;
  }
  {
    std::vector<long> pids;
    for (const auto& name : dir_entries("/proc")) {
      if (std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
        pids.push_back(std::atol(name.c_str()));
    }
    std::sort(pids.begin(), pids.end());
    r["visible_pids"] = pids;
  }
  {
    json names = json::array();
    if (struct if_nameindex* ifs = if_nameindex()) {
      for (struct if_nameindex* p = ifs; p->if_index != 0 && p->if_name != nullptr; ++p)
        names.push_back(p->if_name);
      if_freenameindex(ifs);
    }
    r["interfaces"] = names;
  }
  if (connect_port > 0) r["connect"] = try_connect(static_cast<uint16_t>(connect_port));

  r.update(status_fields());
  r["denied"] = denied_syscalls();
  r["allowed"] = {
      {"personality_query", outcome(syscall(SYS_personality, 0xffffffffUL))},
  };

  r["root_write"] = try_create("/probe-write-test");
  r["etc_shadow"] = path_exists("/etc/shadow");
  r["root_home"] = path_exists("/root");
  r["home"] = path_exists("/home");
  r["sys"] = !dir_entries("/sys").empty();
  r["proc_sys"] = path_exists("/proc/sys");
  r["proc_kcore"] = path_exists("/proc/kcore");
  r["dev"] = dir_entries("/dev");
  r["tmp_write"] = try_create(("/tmp/probe-tmp-write." + std::to_string(getpid())).c_str());

  json env = json::object();
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    auto eq = entry.find('=');
    if (eq == std::string::npos) env[entry] = "";
    else env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  r["env"] = env;

  {
    utsname u{};
    r["hostname"] = uname(&u) == 0 ? std::string(u.nodename) : std::string();
  }
  {
    char cwd[PATH_MAX] = {};
    r["cwd"] = getcwd(cwd, sizeof(cwd)) != nullptr ? std::string(cwd) : errno_name(errno);
  }
  {
    std::string mountinfo = read_text("/proc/self/mountinfo");
    r["mountinfo_lines"] = std::count(mountinfo.begin(), mountinfo.end(), '\n');
  }
  r["cgroup"] = read_text("/proc/self/cgroup");
  r["pidns_inode"] = ns_inode("pid");
  r["netns_inode"] = ns_inode("net");
  r["mntns_inode"] = ns_inode("mnt");
  r["userns_inode"] = ns_inode("user");
  r["ipcns_inode"] = ns_inode("ipc");
  r["utsns_inode"] = ns_inode("uts");
  r["cgroupns_inode"] = ns_inode("cgroup");
  r["uid_map"] = read_text("/proc/self/uid_map");
  r["gid_map"] = read_text("/proc/self/gid_map");

  print(r);
  return 0;
}

// ---- limits ------------------------------------------------------------

int cmd_fill_tmp(int argc, char**) {
  if (argc != 0) {
    fprintf(stderr, "stoke-probe fill-tmp: takes no arguments\n");
    return kUsageExit;
  }
  constexpr size_t kChunk = 1 << 20;
  std::vector<char> chunk(kChunk, 'f');
  uint64_t written = 0;
  int err = 0;
  int fd = open("/tmp/fill", O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    err = errno;
  } else {
    for (;;) {
      size_t off = 0;
      while (off < kChunk) {
        ssize_t n = write(fd, chunk.data() + off, kChunk - off);
        if (n < 0) {
          if (errno == EINTR) continue;
          err = errno;
          break;
        }
        off += static_cast<size_t>(n);
        written += static_cast<uint64_t>(n);
      }
      if (err != 0) break;
    }
    close(fd);
  }
  print({{"written_bytes", written}, {"error", errno_name(err)}});
  return 0;
}

int cmd_alloc(int argc, char** argv) {
  uint64_t mb = 0;
  if (argc != 1 || !parse_u64(argv[0], 1 << 20, &mb)) {
    fprintf(stderr, "stoke-probe alloc: usage: alloc MB\n");
    return kUsageExit;
  }
  size_t bytes = static_cast<size_t>(mb) << 20;
  char* p = static_cast<char*>(malloc(bytes > 0 ? bytes : 1));
  if (p == nullptr) {
    fprintf(stderr, "stoke-probe alloc: malloc of %llu MiB failed\n",
            static_cast<unsigned long long>(mb));
    return 1;
  }
  memset(p, 0x5a, bytes);  // touch every page
  // Keep the compiler from dropping the memset.
  asm volatile("" : : "r"(p) : "memory");
  print({{"allocated_mb", mb}});
  free(p);
  return 0;
}

int cmd_fork_bomb(int argc, char**) {
  if (argc != 0) {
    fprintf(stderr, "stoke-probe fork-bomb: takes no arguments\n");
    return kUsageExit;
  }
  constexpr uint64_t kMaxForks = 100000;
  uint64_t forked = 0;
  int err = 0;
  fflush(nullptr);
  while (forked < kMaxForks) {
    pid_t pid = fork();
    if (pid < 0) {
      err = errno;
      break;
    }
    if (pid == 0) {
      // Each child forks once more; both stay around until killed.
      fork();
      sleep_forever();
    }
    ++forked;
  }
  json j = {{"forked", forked}};
  j["fork_error"] = err == 0 ? json(nullptr) : json(errno_name(err));
  print(j);
  sleep_forever();
}

int cmd_spawn_sleepers(int argc, char** argv) {
  uint64_t n = 0;
  double seconds = 0;
  if (argc != 2 || !parse_u64(argv[0], 1000, &n) || !parse_seconds(argv[1], &seconds)) {
    fprintf(stderr, "stoke-probe spawn-sleepers: usage: spawn-sleepers N SECONDS\n");
    return kUsageExit;
  }
  json pids = json::array();
  fflush(nullptr);
  for (uint64_t i = 0; i < n; ++i) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
      perror("stoke-probe spawn-sleepers: pipe");
      return 1;
    }
    pid_t child = fork();
    if (child < 0) {
      perror("stoke-probe spawn-sleepers: fork");
      return 1;
    }
    if (child == 0) {
      close(fds[0]);
      pid_t grandchild = fork();
      if (grandchild == 0) {
        close(fds[1]);
        setsid();
        sleep_seconds(seconds);
        _exit(0);
      }
      ssize_t ignored = write(fds[1], &grandchild, sizeof(grandchild));
      (void)ignored;
      _exit(grandchild > 0 ? 0 : 1);
    }
    close(fds[1]);
    pid_t grandchild = -1;
    ssize_t got = read(fds[0], &grandchild, sizeof(grandchild));
    close(fds[0]);
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (got == static_cast<ssize_t>(sizeof(grandchild)) && grandchild > 0) pids.push_back(grandchild);
  }
  print({{"pids", pids}});
  sleep_seconds(seconds);
  return 0;
}

double process_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

int cmd_burn(int argc, char** argv) {
  uint64_t ms = 0;
  if (argc != 1 || !parse_u64(argv[0], 86400000, &ms)) {
    fprintf(stderr, "stoke-probe burn: usage: burn MS\n");
    return kUsageExit;
  }
  double start = process_cpu_ms();
  volatile uint64_t sink = 0;
  while (process_cpu_ms() - start < static_cast<double>(ms)) {
    for (int i = 0; i < 10000; ++i) sink = sink + static_cast<uint64_t>(i);
  }
  print({{"burned_ms", ms}});
  return 0;
}

// The oom_score_adj a child forked as the very first thing inherits: what an
// exec function that forks before anything else leaves its children with.
int oom_of_first_child(int argc, char** argv) {
  (void)argc;
  (void)argv;
  int p[2];
  if (pipe(p) != 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    char buf[32] = {};
    int fd = open("/proc/self/oom_score_adj", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    (void)!write(p[1], buf, n > 0 ? static_cast<size_t>(n) : 0);
    _exit(0);
  }
  close(p[1]);
  char buf[32] = {};
  ssize_t n = read(p[0], buf, sizeof buf - 1);
  waitpid(child, nullptr, 0);
  if (n <= 0) return 1;
  std::ifstream own("/proc/self/oom_score_adj");
  int own_value = 0;
  own >> own_value;
  print({{"first_child_oom_score_adj", std::atoi(buf)}, {"own_oom_score_adj", own_value}});
  return 0;
}

void usage() {
  fprintf(stderr,
          "usage: stoke-probe isolation [--connect PORT]\n"
          "       stoke-probe fill-tmp\n"
          "       stoke-probe alloc MB\n"
          "       stoke-probe fork-bomb\n"
          "       stoke-probe spawn-sleepers N SECONDS\n"
          "       stoke-probe burn MS\n"
          "       stoke-probe oom-of-first-child\n");
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything else (the point is what a fork at the first instruction sees).
  if (argc >= 2 && strcmp(argv[1], "oom-of-first-child") == 0) return oom_of_first_child(argc, argv);
  if (argc < 2) {
    usage();
    return kUsageExit;
  }
  std::string cmd = argv[1];
  int rest_argc = argc - 2;
  char** rest = argv + 2;
  try {
    if (cmd == "isolation") return cmd_isolation(rest_argc, rest);
    if (cmd == "fill-tmp") return cmd_fill_tmp(rest_argc, rest);
    if (cmd == "alloc") return cmd_alloc(rest_argc, rest);
    if (cmd == "fork-bomb") return cmd_fork_bomb(rest_argc, rest);
    if (cmd == "spawn-sleepers") return cmd_spawn_sleepers(rest_argc, rest);
    if (cmd == "burn") return cmd_burn(rest_argc, rest);
  } catch (const std::exception& e) {
    fprintf(stderr, "stoke-probe %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
  fprintf(stderr, "stoke-probe: unknown subcommand '%s'\n", cmd.c_str());
  usage();
  return kUsageExit;
}
