#include "sandbox/spawner.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>

#include <spdlog/spdlog.h>

#include "sandbox/base/file_util.h"
#include "sandbox/capabilities.h"
#include "sandbox/child_setup.h"
#include "sandbox/mount_plan.h"
#include "sandbox/seccomp_profile.h"

namespace stoke {
namespace {

constexpr size_t kChildStackSize = 256 * 1024;

// No CLONE_NEWNET: the child makes its network namespace itself, in parallel
// with the parent's work, or is born into a pooled one.
//
// Under ThreadSanitizer the child gets its own copy of memory instead of
// CLONE_VM: TSan keeps its per-thread state in the spawning thread's TLS, which
// a CLONE_VM child would use at the same time (docs/security.md). What such a
// build loses is only what the child writes for the parent to read (the
// trace's child steps, the last step named in a stalled-exec error), and the
// size-independent clone.
#if defined(__SANITIZE_THREAD__)
constexpr int kShareVm = 0;
#else
constexpr int kShareVm = CLONE_VM;
#endif
constexpr int kCloneFlags = kShareVm | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
                            CLONE_PIDFD | SIGCHLD;

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

int64_t monotonic_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

// Parent-phase stopwatch: each lap() records the time since the previous one.
class Laps {
 public:
  explicit Laps(SpawnTrace& trace) : trace_(trace), last_(std::chrono::steady_clock::now()) {}
  void lap(const char* name) {
    auto now = std::chrono::steady_clock::now();
    trace_.phases.emplace_back(name, ms_between(last_, now));
    last_ = now;
  }

 private:
  SpawnTrace& trace_;
  std::chrono::steady_clock::time_point last_;
};

// One control message to the child: a byte, plus fds (SCM_RIGHTS) if any.
Status send_to_child(int sock, const std::vector<int>& fds) {
  if (fds.size() > static_cast<size_t>(kMaxCgroupFds)) return plain_error("send to sandbox child", "too many fds");
  char byte = 1;
  struct iovec iov = {&byte, 1};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxCgroupFds)] = {};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n != 1) return sys_error("send to sandbox child");
  return {};
}

// The child's steps from the timestamps it left, counted from the moment the
// parent called clone (they overlap the parent's later phases, so they are
// listed apart), then "exec" up to `exec_seen_ns`.
void add_child_steps(SpawnTrace& trace, const int64_t* done_ns, int64_t clone_called_ns, int64_t exec_seen_ns) {
  int64_t prev = clone_called_ns;
  for (int step = 0; step < kStepCount; ++step) {
    if (done_ns[step] == 0 || step == kStepExec) continue;
    trace.phases.emplace_back(std::string("child: ") + child_step_name(step), (done_ns[step] - prev) / 1e6);
    prev = done_ns[step];
  }
  trace.phases.emplace_back("child: exec", (exec_seen_ns - prev) / 1e6);
}

std::vector<std::string> exec_candidates(const SandboxSpec& spec) {
  const std::string& prog = spec.argv[0];
  if (prog.find('/') != std::string::npos) return {prog};
  std::string path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
  for (const auto& kv : spec.env)
    if (kv.rfind("PATH=", 0) == 0) path = kv.substr(5);
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (dir.empty()) dir = ".";
    out.push_back(dir + "/" + prog);
    start = end + 1;
  }
  return out;
}

// Rlimits the child applies, clamped to what this process may grant.
std::vector<ChildRlimit> rlimits_for(const Rlimits& r) {
  std::vector<ChildRlimit> out;
  auto add = [&](int resource, uint64_t value) {
    struct rlimit64 current;
    if (getrlimit64(resource, &current) != 0) return;
    if (current.rlim_max != RLIM64_INFINITY && value > current.rlim_max) value = current.rlim_max;
    out.push_back({resource, {value, value}});
  };
  add(RLIMIT_NOFILE, r.nofile);
  add(RLIMIT_CORE, r.core);
  add(RLIMIT_FSIZE, r.fsize);
  add(RLIMIT_STACK, r.stack);
  return out;
}

Status write_id_maps(pid_t pid, const SandboxSpec& spec) {
  std::string base = "/proc/" + std::to_string(pid);
  STOKE_TRY(write_file(base + "/uid_map", block_id_map(spec.host_uid, spec.host_id_count)));
  STOKE_TRY(write_file(base + "/gid_map", block_id_map(spec.host_gid, spec.host_id_count)));
  return {};
}

// How long a killed sandbox's pid 1 gets to be gone before wait() gives up.
constexpr std::chrono::milliseconds kKillGrace{5'000};

// PIDFD_GET_INFO (Linux 6.15): the exit status of a process we are not the
// parent of, available once its parent has reaped it. Declared here because
// Debian 12's kernel headers predate it.
struct PidfdInfo {
  uint64_t mask, cgroupid;
  uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
  int32_t exit_code;
};
constexpr unsigned long kPidfdGetInfo = _IOWR(0xFF, 11, PidfdInfo);
constexpr uint64_t kPidfdInfoExit = 1u << 3;

// The wait status of an exited process we did not parent, or -1 when the
// kernel cannot tell (too old) or its parent does not reap it within `tries` ms.
int exit_status_of_adopted(int pidfd, int tries = 1000) {
  for (; tries > 0; --tries) {
    PidfdInfo info{};
    info.mask = kPidfdInfoExit;
    if (ioctl(pidfd, kPidfdGetInfo, &info) != 0) return -1;  // ENOTTY: kernel < 6.15
    if (info.mask & kPidfdInfoExit) return info.exit_code;
    usleep(1000);  // its parent (a zygote) reaps it in a moment
  }
  return -1;
}

pid_t pid_of_pidfd(int pidfd) {
  auto text = read_file("/proc/self/fdinfo/" + std::to_string(pidfd));
  if (!text.ok()) return -1;
  size_t at = text->find("\nPid:");
  return at == std::string::npos ? -1 : static_cast<pid_t>(std::atoi(text->c_str() + at + 5));
}

// Reap a child that failed during setup (it exits right after reporting).
void reap(int pidfd) {
  siginfo_t info;
  while (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) != 0 &&
         errno == EINTR) {
  }
}

// Groups are named sb-<spawner pid>-<n>. A spawner that died without tearing
// down (kill -9, crash) leaves empty groups whose <pid> no longer exists:
// nothing owns them any more, so the next spawner removes them.
void collect_stale_groups(CgroupBackend& cgroups) {
  auto names = cgroups.list();
  if (!names.ok()) return;
  for (const auto& name : names.value()) {
    int pid = 0, n = 0;
    char tail = 0;
    if (std::sscanf(name.c_str(), "sb-%d-%d%c", &pid, &n, &tail) != 2 || pid <= 0) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // owner alive (or pid reused)
    Status removed = cgroups.remove_stale(name);
    if (removed.ok()) spdlog::info("removed cgroup {} left by dead process {}", name, pid);
    else spdlog::warn("cannot remove stale cgroup {}: {}", name, removed.error().message());
  }
}

// Gives a CLONE_VM child that has not exec'd yet its own oom_score_adj.
//
// While it shares our mm the kernel writes the new value to every process
// sharing it (__set_oom_adj with MMF_MULTIPROCESS): this agent too. So from
// raise() until this object is destroyed — which the spawner does as soon as
// the child has exec'd (or failed) — the agent runs with the sandbox's value,
// and the destructor writes the agent's own back (that write no longer reaches
// the exec'd child, but reaches any other not-yet-exec'd child, which gets the
// agent's value it would have inherited anyway). One window at a time per
// process, so two spawners cannot restore each other's children to the
// protected value mid-way. The window is the child's last steps (join cgroup,
// drop privileges, seccomp, exec): well under a millisecond.
//
// Raising after exec instead leaves a window the function controls: an exec
// function that forks in its first instruction keeps the protection in its
// children (the review's finding #16).
class OomRaise {
 public:
  // Holds the window's lock and remembers the agent's value as it is now.
  OomRaise() : lock_(mutex()), own_(read_own()) {}
  ~OomRaise() {
    if (!raised_) return;
    Status restored = write_file("/proc/self/oom_score_adj", std::to_string(own_));
    if (!restored.ok()) spdlog::error("restore the agent's oom_score_adj: {}", restored.error().message());
  }
  OomRaise(const OomRaise&) = delete;
  OomRaise& operator=(const OomRaise&) = delete;

  int own() const { return own_; }

  Status raise(pid_t child, int value) {
    raised_ = true;  // a partial write may already have propagated
    return write_file("/proc/" + std::to_string(child) + "/oom_score_adj", std::to_string(value));
  }

 private:
  static int read_own() {
    auto adj = read_file("/proc/self/oom_score_adj");
    return adj.ok() ? std::atoi(adj->c_str()) : 0;
  }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  std::unique_lock<std::mutex> lock_;
  int own_;
  bool raised_ = false;
};

}  // namespace

// ---- Sandbox -------------------------------------------------------------

Sandbox::~Sandbox() {
  // A spawn that failed before clone has no process to wait for.
  if (!reaped_ && pidfd_) {
    (void)kill();
    (void)wait(std::chrono::steady_clock::now() + kKillGrace);
  }
}

Status Sandbox::kill() {
  if (reaped_) return {};
  if (syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0) != 0 && errno != ESRCH)
    return sys_error("kill sandbox " + id_);
  killed_ = true;
  return {};
}

Result<ExitStatus> Sandbox::wait(std::optional<std::chrono::steady_clock::time_point> deadline) {
  if (status_) return *status_;
  if (!pidfd_) return plain_error("wait for sandbox " + id_, "it has no process (its spawn failed)");
  ExitStatus st;
  for (;;) {
    int timeout_ms = -1;
    if (deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
      timeout_ms = left.count() < 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
    }
    pollfd p{pidfd_.get(), POLLIN, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("poll sandbox " + id_);
    if (n > 0) break;
    if (st.timed_out) {
      // Killed and still not gone after the grace: give up rather than block
      // the caller forever (the destructor tries again, bounded too).
      return plain_error("wait for sandbox " + id_, "pid 1 did not exit within " +
                                                        std::to_string(kKillGrace.count()) + " ms of SIGKILL");
    }
    // Deadline passed: pid 1 dies, and with it the whole pid namespace; the
    // cgroup is emptied too, in case pid 1 is not what holds the rest.
    st.timed_out = true;
    Status killed = kill();
    (void)group_->kill_all();
    if (!killed.ok()) return killed.error();
    deadline = std::chrono::steady_clock::now() + kKillGrace;
  }
  if (adopted_) {
    // Killed by us: its status is that kill, whether or not its parent (a
    // zygote that runs tenant code) ever reaps it; do not wait on that parent.
    int wstatus = exit_status_of_adopted(pidfd_.get(), killed_ ? 1 : 1000);
    if (wstatus < 0 && killed_) st.signal = SIGKILL;
    else if (wstatus < 0) st.exit_code = -1;
    else if (WIFSIGNALED(wstatus)) st.signal = WTERMSIG(wstatus);
    else st.exit_code = WEXITSTATUS(wstatus);
  } else {
    siginfo_t info{};
    for (;;) {
      if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info, WEXITED) == 0) break;
      if (errno != EINTR) return sys_error("wait for sandbox " + id_);
    }
    if (info.si_code == CLD_EXITED) {
      st.exit_code = info.si_status;
    } else {
      st.signal = info.si_status;
    }
  }
  reaped_ = true;
  st.wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count();
  auto usage = group_->usage();
  if (usage.ok()) {
    st.usage = usage.value();
    st.oom = st.usage.oom_kills > 0;
  } else {
    spdlog::warn("sandbox {}: reading usage failed: {}", id_, usage.error().message());
  }
  status_ = st;
  STOKE_TRY(teardown());
  return st;
}

bool Sandbox::alive() const {
  if (reaped_ || !pidfd_) return false;
  pollfd p{pidfd_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

std::unique_ptr<Sandbox> Sandbox::adopt(std::string id, unique_fd pidfd, std::unique_ptr<CgroupGroup> group) {
  std::unique_ptr<Sandbox> sb(new Sandbox());
  sb->id_ = std::move(id);
  sb->pid_ = pid_of_pidfd(pidfd.get());
  sb->pidfd_ = std::move(pidfd);
  sb->group_ = std::move(group);
  sb->started_ = std::chrono::steady_clock::now();
  sb->adopted_ = true;
  return sb;
}

Status Sandbox::teardown() {
  // pid 1 is gone, so the kernel has killed its whole pid namespace. destroy()
  // removes the cgroup, killing anything still inside first (rmdir says EBUSY).
  Status removed = group_->destroy();
  pidfd_.reset();
  // Every process of the sandbox is dead once its cgroup is gone, so its
  // network namespace can serve the next sandbox.
  if (removed.ok() && netns_pool_ && netns_) netns_pool_->release(netns_owner_, std::move(netns_));
  netns_.reset();
  if (!removed.ok()) return removed.error().context("teardown of sandbox " + id_);
  return {};
}

// ---- Spawner -------------------------------------------------------------

Result<std::unique_ptr<Spawner>> Spawner::create(const SpawnerOptions& options) {
  std::unique_ptr<Spawner> s(new Spawner());
  s->options_ = options;
  CgroupOptions cgroup_options = options.cgroup;
  cgroup_options.keep_parent = true;  // removed once, in ~Spawner
  auto cg = open_cgroup_backend(cgroup_options);
  if (!cg.ok()) return cg.error().context("open cgroups");
  s->cgroups_ = std::move(cg.value());
  collect_stale_groups(*s->cgroups_);
  auto seccomp = default_seccomp_program(options.seccomp_cache_dir);  // compile once, up front
  if (!seccomp.ok()) return seccomp.error().context("compile seccomp filter");
  STOKE_TRY(make_dirs(options.new_root_dir, 0755));
  s->last_cap_ = last_capability();
  s->stack_size_ = kChildStackSize;
  s->stack_ = mmap(nullptr, s->stack_size_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (s->stack_ == MAP_FAILED) {
    s->stack_ = nullptr;
    return sys_error("allocate child stack");
  }
  return s;
}

Spawner::~Spawner() {
  if (stack_ != nullptr) munmap(stack_, stack_size_);
  // Sandboxes still alive keep their groups (and so the parent) until they end.
  if (cgroups_) cgroups_->remove_empty_parents();
}

Status Spawner::check_host_ids(uint32_t uid, uint32_t gid) {
  std::lock_guard<std::mutex> lock(mu_);
  return check_host_ids_locked(uid, gid);
}

Status Spawner::check_host_ids_locked(uint32_t uid, uint32_t gid) {
  STOKE_TRY(check_host_id_range(uid, gid));
  uint64_t ids = (uint64_t{uid} << 32) | gid;
  if (checked_ids_.count(ids) == 0) {
    STOKE_TRY(check_not_host_account(uid, gid));
    checked_ids_.insert(ids);
  }
  return {};
}

const std::vector<RootfsEntry>& Spawner::rootfs_for(const std::string& hostname) {
  if (cached_rootfs_.empty() || cached_hostname_ != hostname) {
    LeanRootfsOptions o = options_.rootfs;
    o.hostname = hostname;
    cached_rootfs_ = host_lean_rootfs(o);
    cached_hostname_ = hostname;
  }
  return cached_rootfs_;
}

Result<std::unique_ptr<Sandbox>> Spawner::spawn(const SandboxSpec& spec) {
  auto started = std::chrono::steady_clock::now();
  std::unique_ptr<Sandbox> sb(new Sandbox());
  Laps laps(sb->trace_);
  STOKE_TRY(validate_spec(spec));
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t i = 0; i < spec.host_id_count; ++i)
    STOKE_TRY(check_host_ids_locked(spec.host_uid + i, spec.host_gid + i));
  // One counter per process: every spawner in it shares the name space.
  static std::atomic<uint64_t> counter{0};
  sb->id_ = "sb-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
  sb->started_ = started;
  laps.lap("validate");

  auto plan = build_mount_plan(spec, options_.new_root_dir, rootfs_for(spec.hostname));
  if (!plan.ok()) return plan.error().context("prepare sandbox filesystem");
  auto seccomp = spec.zygote ? seccomp_program(SeccompProfile::kZygoteMaker)
                             : default_seccomp_program(options_.seccomp_cache_dir);
  if (!seccomp.ok()) return seccomp.error();
  sock_fprog fprog = seccomp.value()->fprog();

  laps.lap("mount plan");
  if (options_.netns_pool) {
    // Per function (host uid): what a namespace keeps after its sandbox
    // (TIME_WAIT sockets, tcp_metrics) must not reach another tenant.
    auto ns = options_.netns_pool->acquire(spec.host_uid);
    if (!ns.ok()) {
      sb->reaped_ = true;
      return ns.error().context("network namespace");
    }
    sb->netns_ = std::move(ns.value());
    sb->netns_owner_ = spec.host_uid;
    sb->netns_pool_ = options_.netns_pool;
  }

  // Everything the child will point at lives in this frame until it has exec'd.
  std::vector<std::string> candidates = exec_candidates(spec);
  std::vector<const char*> candidate_ptrs;
  for (auto& c : candidates) candidate_ptrs.push_back(c.c_str());
  std::vector<char*> argv, envp;
  for (auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  std::vector<ChildRlimit> rlimits = rlimits_for(spec.rlimits);

  int control[2], error_pipe[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control) != 0) {
    sb->reaped_ = true;
    return sys_error("create control socket");
  }
  unique_fd control_parent(control[0]), control_child(control[1]);
  if (pipe2(error_pipe, O_CLOEXEC) != 0) {
    sb->reaped_ = true;
    return sys_error("create error pipe");
  }
  unique_fd error_read(error_pipe[0]), error_write(error_pipe[1]);

  int max_source_fd = 0;
  for (const auto& m : spec.fds) max_source_fd = std::max(max_source_fd, m.source);

  ChildPlan cp;
  cp.control_fd = control_child.get();
  cp.error_fd = error_write.get();
  cp.parent_ends[0] = control_parent.get();
  cp.parent_ends[1] = error_read.get();
  cp.new_netns = !sb->netns_;  // pooled ones come with lo up
  // oom_score_adj is not written by the child: until it execs, it shares this
  // process's mm, and the kernel copies a new value to every process sharing
  // the mm (__set_oom_adj). It is raised from here just before "cgroup" (see
  // OomRaise), not after exec: an exec'd function could fork first and leave
  // children with the spawner's protection.
  std::vector<int> bind_fds(plan->bind_sources().size(), -1);
  cp.bind_sources = plan->bind_sources().data();
  cp.bind_fds = bind_fds.data();
  cp.bind_count = bind_fds.size();
  cp.mounts = plan->ops().data();
  cp.mount_count = plan->ops().size();
  cp.new_root = plan->new_root().c_str();
  cp.hostname = spec.hostname.c_str();
  cp.hostname_len = spec.hostname.size();
  cp.workdir = spec.workdir.c_str();
  cp.rlimits = rlimits.data();
  cp.rlimit_count = rlimits.size();
  cp.last_cap = last_cap_;
  if (spec.zygote) cp.keep_caps = kZygoteCapabilities;
  cp.seccomp = &fprog;
  cp.fds = spec.fds.data();
  cp.fd_count = spec.fds.size();
  cp.fd_scratch_base = std::max(1000, max_source_fd + 1);
  cp.parent_death_kill = spec.kill_with_parent;
  cp.exec_candidates = candidate_ptrs.data();
  cp.exec_candidate_count = candidate_ptrs.size();
  cp.argv = argv.data();
  cp.envp = envp.data();
  int64_t step_done_ns[kStepCount] = {};
  cp.step_done_ns = step_done_ns;
  cpu_set_t allowed, elsewhere;
  bool push_elsewhere = false;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) > 1) {
    elsewhere = allowed;
    int here = sched_getcpu();
    if (here >= 0) CPU_CLR(here, &elsewhere);
    push_elsewhere = CPU_COUNT(&elsewhere) > 0;
    cp.cpu_mask = &allowed;
    cp.cpu_mask_size = sizeof allowed;
  }
  laps.lap("prepare child plan");

  // The oom_score_adj window (see OomRaise) opens before the clone, not after:
  // a child cloned by another worker while this spawn waits for its child's
  // execve inherits (until its own execve) the write end of this spawn's exec
  // pipe, which then never closes; had that other worker's child been made
  // before it waited for this window, the two would wait on each other until
  // the timeout below. Found under systemd (OOMScoreAdjust=-500), where every
  // spawn raises: concurrent starts stalled 5 s and one of them failed.
  std::optional<OomRaise> oom_raise;
  oom_raise.emplace();
  if (spec.oom_score_adj <= oom_raise->own()) oom_raise.reset();

  // No signal handler of ours may run on the child's stack before execve.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int pidfd = -1;
  pid_t pid;
  int clone_errno = 0;
  int64_t clone_called_ns = 0;
  {
    // The child is born into the pooled network namespace; this thread goes
    // straight back to its own when the scope ends.
    std::unique_ptr<NetnsPool::Scope> in_netns;
    if (sb->netns_) {
      auto scope = options_.netns_pool->enter(sb->netns_.get());
      if (!scope.ok()) {
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        sb->reaped_ = true;
        return scope.error();
      }
      in_netns = std::move(scope.value());
    }
    clone_called_ns = monotonic_ns();
    pid = clone(sandbox_child_main, static_cast<char*>(stack_) + stack_size_, kCloneFlags, &cp, &pidfd);
    clone_errno = errno;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    sb->reaped_ = true;
    return sys_error("clone sandbox (user, pid, mount, ipc, uts namespaces)", clone_errno);
  }
  laps.lap("clone");
  // A new task starts on its parent's CPU and would wait there until this
  // thread blocks; move it to an idle one so both halves run in parallel.
  if (push_elsewhere) sched_setaffinity(pid, sizeof elsewhere, &elsewhere);
  sb->pid_ = pid;
  sb->pidfd_.reset(pidfd);
  control_child.reset();
  error_write.reset();
  laps.lap("push child to another cpu");

  // From here on a failure kills the child (it may be blocked waiting for us)
  // and reaps it before returning.
  auto fail_spawn = [&](Error e) -> Error {
    (void)sb->kill();
    reap(sb->pidfd_.get());
    sb->reaped_ = true;
    if (sb->group_) (void)sb->group_->destroy();
    return e;
  };

  if (Status maps = write_id_maps(pid, spec); !maps.ok()) return fail_spawn(maps.error().context("map ids"));
  if (Status sent = send_to_child(control_parent.get(), {}); !sent.ok()) return fail_spawn(sent.error());
  laps.lap("id maps");
  // Fault injection (tests): the spawner dies between its two messages; the
  // child must notice and exit rather than wait forever.
  if (const char* fault = std::getenv("STOKE_FAULT"); fault && std::string_view(fault) == "spawner-exit-after-maps")
    std::_Exit(77);

  // The cgroup is made while the child builds its filesystem.
  auto group = cgroups_->create(sb->id_, spec.limits);
  if (!group.ok()) return fail_spawn(group.error().context("create cgroup"));
  sb->group_ = std::move(group.value());
  // Inherited unless it differs; lowering would need CAP_SYS_RESOURCE. The
  // agent's value was read when the window opened, not at create(): someone
  // may have changed it.
  if (oom_raise) {
    if (Status raised = oom_raise->raise(pid, spec.oom_score_adj); !raised.ok())
      return fail_spawn(raised.error().context("raise the sandbox's oom_score_adj"));
    laps.lap("oom_score_adj");
  }
  if (Status sent = send_to_child(control_parent.get(), sb->group_->attach_fds()); !sent.ok())
    return fail_spawn(sent.error());
  laps.lap("cgroup");

  // The child's last steps run inside the oom window (one at a time per
  // process): bound them, so one stalled child cannot stall every spawn.
  constexpr int kLastStepsMs = 5000;
  pollfd last{error_read.get(), POLLIN, 0};
  int ready;
  do ready = ::poll(&last, 1, kLastStepsMs);
  while (ready < 0 && errno == EINTR);
  if (ready == 0) {
    // Where it stands: the last step it finished (the array is shared with
    // the child, which writes each step's time as it completes it).
    std::string last_step = "none";
    for (int step = 0; step < kStepCount; ++step)
      if (__atomic_load_n(&step_done_ns[step], __ATOMIC_RELAXED) != 0) last_step = child_step_name(step);
    return fail_spawn(plain_error("sandbox setup", "the child did not exec within " + std::to_string(kLastStepsMs) +
                                                       " ms (last step done: " + last_step + ")"));
  }
  ChildError ce{};
  ssize_t n;
  do {
    n = ::read(error_read.get(), &ce, sizeof ce);
  } while (n < 0 && errno == EINTR);
  if (n == 0) {
    oom_raise.reset();  // the child has its own mm now: restore ours
    add_child_steps(sb->trace_, step_done_ns, clone_called_ns, monotonic_ns());
    spdlog::debug("sandbox {} started: pid {} in {:.3f} ms", sb->id_, pid,
                  ms_between(started, std::chrono::steady_clock::now()));
    return sb;
  }
  if (n != static_cast<ssize_t>(sizeof ce) || ce.magic != kChildErrorMagic)
    return fail_spawn(plain_error("sandbox setup", "child died without a report"));

  std::string step = child_step_name(ce.step);
  if (ce.step == kStepMount) step = plan->describe(static_cast<size_t>(ce.index));
  if (ce.step == kStepExec) step = "exec " + spec.argv[0];
  if (ce.step == kStepCloneBindSource)
    step = std::string("clone bind source ") + plan->bind_sources()[static_cast<size_t>(ce.index)];
  return fail_spawn(Error{"sandbox setup failed at '" + step + "'", ce.err, {},
                          ce.step == kStepExec ? ErrorCause::kExec : ErrorCause::kUnspecified});
}

}  // namespace stoke
