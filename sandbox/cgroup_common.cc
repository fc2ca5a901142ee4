// What both cgroup backends share: the parsers of /proc/self/{cgroup,mountinfo}
// and of flat "key value" files, discovery of the caller's own groups, the
// directory and kill loops, and the choice of backend.
//
// Helpers shared with cgroup_v1.cc / cgroup_v2.cc live in namespace
// stoke::cgroup_internal, declared in cgroup_internal.h.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <set>

#include "sandbox/base/file_util.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

namespace stoke {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// Calls fn(line) for each line of text (without the '\n').
template <typename Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    fn(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

std::vector<std::string_view> split_ws(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

bool parse_u64(std::string_view s, uint64_t* out) {
  s = trim(s);
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && s.size() - i >= 4 && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Super options of a v1 cgroup mount that are not controller names.
bool is_v1_mount_option(std::string_view opt) {
  static const char* const kOptions[] = {
      "rw",   "ro",  "noprefix", "clone_children", "xattr",  "cpuset_v2_mode", "favordynmods",
      "none", "all", "relatime", "noatime",        "nosuid", "nodev",          "noexec"};
  for (const char* o : kOptions)
    if (opt == o) return true;
  // "release_agent=/x" and friends; "name=systemd" names a hierarchy and is kept.
  return opt.find('=') != std::string_view::npos && opt.substr(0, 5) != "name=";
}

struct MountEntry {
  std::string mount_point;
  std::string root;  // the mount's root inside the hierarchy (field 4 of mountinfo)
};

// controller -> its hierarchy's first mount; "" -> the first cgroup2 mount.
std::map<std::string, MountEntry> parse_cgroup_mount_entries(std::string_view mountinfo) {
  std::map<std::string, MountEntry> out;
  for_each_line(mountinfo, [&](std::string_view line) {
    std::vector<std::string_view> f = split_ws(line);
    // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
    auto sep = std::find(f.begin(), f.end(), std::string_view("-"));
    if (sep == f.end() || sep - f.begin() < 6 || f.end() - sep < 4) return;
    std::string_view fstype = sep[1];
    std::string_view super_opts = sep[3];
    MountEntry entry{unescape_mountinfo(f[4]), unescape_mountinfo(f[3])};
    // The first mount of a hierarchy wins, except that one of its whole tree (root
    // "/") beats an earlier bind mount of a subtree.
    auto add = [&](const std::string& key) {
      auto [it, inserted] = out.emplace(key, entry);
      if (!inserted && it->second.root != "/" && entry.root == "/") it->second = entry;
    };
    if (fstype == "cgroup2") {
      add("");
      return;
    }
    if (fstype != "cgroup") return;
    while (!super_opts.empty()) {
      size_t comma = super_opts.find(',');
      std::string_view opt = super_opts.substr(0, comma);
      if (!opt.empty() && !is_v1_mount_option(opt)) add(std::string(opt));
      if (comma == std::string_view::npos) break;
      super_opts.remove_prefix(comma + 1);
    }
  });
  return out;
}

// Where the group at `path` (as /proc/self/cgroup shows it) is reachable through a
// mount whose root is `root`; "" when the mount does not contain it.
std::string dir_through_mount(const MountEntry& m, std::string_view path) {
  if (path.empty() || path.front() != '/') return {};
  if (m.root == "/") return path == "/" ? m.mount_point : m.mount_point + std::string(path);
  if (path == m.root) return m.mount_point;
  if (path.size() > m.root.size() && path.substr(0, m.root.size()) == m.root && path[m.root.size()] == '/')
    return m.mount_point + std::string(path.substr(m.root.size()));
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------
// Pure parsers.

std::map<std::string, std::string> parse_proc_self_cgroup(std::string_view text) {
  std::map<std::string, std::string> out;
  for_each_line(text, [&](std::string_view line) {
    // hierarchy-id:controller-list:path (the path itself may contain ':').
    size_t c1 = line.find(':');
    if (c1 == std::string_view::npos) return;
    size_t c2 = line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) return;
    std::string_view controllers = line.substr(c1 + 1, c2 - c1 - 1);
    std::string_view path = line.substr(c2 + 1);
    if (!path.empty() && path.back() == '\r') path.remove_suffix(1);
    if (path.empty() || path.front() != '/') return;
    if (controllers.empty()) {
      out.emplace("", std::string(path));
      return;
    }
    while (!controllers.empty()) {
      size_t comma = controllers.find(',');
      std::string_view c = controllers.substr(0, comma);
      if (!c.empty()) out.emplace(std::string(c), std::string(path));
      if (comma == std::string_view::npos) break;
      controllers.remove_prefix(comma + 1);
    }
  });
  return out;
}

std::map<std::string, std::string> parse_cgroup_mounts(std::string_view mountinfo) {
  std::map<std::string, std::string> out;
  for (auto& [controller, entry] : parse_cgroup_mount_entries(mountinfo)) out[controller] = entry.mount_point;
  return out;
}

std::map<std::string, uint64_t> parse_flat_keyed(std::string_view text) {
  std::map<std::string, uint64_t> out;
  for_each_line(text, [&](std::string_view line) {
    std::vector<std::string_view> f = split_ws(trim(line));
    if (f.size() != 2) return;
    uint64_t v = 0;
    if (!parse_u64(f[1], &v)) return;
    out.emplace(std::string(f[0]), v);
  });
  return out;
}

// ---------------------------------------------------------------------------
// Helpers shared with the backends.

namespace cgroup_internal {

Result<std::map<std::string, std::string>> detect_self_dirs() {
  auto cg = read_file("/proc/self/cgroup");
  if (!cg) return cg.error();
  auto mi = read_file("/proc/self/mountinfo");
  if (!mi) return mi.error();
  std::map<std::string, std::string> paths = parse_proc_self_cgroup(*cg);
  std::map<std::string, MountEntry> mounts = parse_cgroup_mount_entries(*mi);
  std::map<std::string, std::string> out;
  for (auto& [controller, path] : paths) {
    auto m = mounts.find(controller);
    if (m == mounts.end()) continue;
    std::string dir = dir_through_mount(m->second, path);
    if (dir.empty()) {
      spdlog::debug("cgroup: own group '{}' of controller '{}' is outside its mount {} (root {})", path,
                    controller.empty() ? "cgroup2" : controller, m->second.mount_point, m->second.root);
      continue;
    }
    out[controller] = dir;
  }
  return out;
}

Status check_name(const std::string& what, const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.size() > 200 ||
      name.find_first_of(std::string_view("/\n\0", 3)) != std::string::npos)
    return plain_error("cgroup: invalid " + what + " '" + name + "'",
                       "must be a single non-empty path component of at most 200 characters");
  return {};
}

Result<uint64_t> read_u64(const std::string& path) {
  auto text = read_file(path);
  if (!text) return text.error();
  uint64_t v = 0;
  if (!parse_u64(*text, &v))
    return plain_error("parse " + path, "not a number: '" + std::string(trim(*text)) + "'");
  return v;
}

Status CounterFile::open_once() {
  if (fd_) return {};
  if (open_errno_ != 0) return sys_error("open " + path_, open_errno_);
  int fd = ::open(path_.c_str(), (writable_ ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0 && writable_ && (errno == EACCES || errno == EROFS || errno == EPERM))
    fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    open_errno_ = errno;
    return sys_error("open " + path_);
  }
  fd_.reset(fd);
  return {};
}

Result<std::string> CounterFile::read() {
  STOKE_TRY(open_once());
  // Counter files are a line or a few. cgroupfs (kernfs seq_file) fills a
  // read until the file ends or the buffer is full, so a read shorter than
  // the buffer is the whole file: one pread per counter, not a second one to
  // see the end. A full buffer is read on, by offset.
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::pread(fd_.get(), buf, sizeof buf, static_cast<off_t>(out.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read " + path_);
    }
    out.append(buf, static_cast<size_t>(n));
    if (static_cast<size_t>(n) < sizeof buf) break;
  }
  return out;
}

Result<uint64_t> CounterFile::read_u64() {
  auto text = read();
  if (!text) return text.error();
  uint64_t v = 0;
  if (!parse_u64(*text, &v))
    return plain_error("parse " + path_, "not a number: '" + std::string(trim(*text)) + "'");
  return v;
}

Result<std::map<std::string, uint64_t>> CounterFile::read_keyed() {
  auto text = read();
  if (!text) return text.error();
  return parse_flat_keyed(*text);
}

Status CounterFile::write(std::string_view data) {
  STOKE_TRY(open_once());
  ssize_t n = ::pwrite(fd_.get(), data.data(), data.size(), 0);
  if (n < 0) return sys_error("write '" + std::string(data) + "' to " + path_);
  if (static_cast<size_t>(n) != data.size()) return plain_error("write " + path_, "short write");
  return {};
}

void CounterFile::close() {
  fd_.reset();
  open_errno_ = ENOENT;
}

Result<std::map<std::string, uint64_t>> read_keyed(const std::string& path) {
  auto text = read_file(path);
  if (!text) return text.error();
  return parse_flat_keyed(*text);
}

// Union of the pids listed in the given cgroup.procs/tasks files, sorted.
// A missing file (group already gone) counts as empty.
Result<std::vector<int>> read_pids(const std::vector<std::string>& procs_files) {
  std::set<int> pids;
  for (const std::string& path : procs_files) {
    auto text = read_file(path);
    if (!text) {
      if (text.error().err == ENOENT) continue;
      return text.error();
    }
    for_each_line(*text, [&](std::string_view line) {
      uint64_t v = 0;
      if (parse_u64(line, &v) && v > 0 && v <= static_cast<uint64_t>(INT32_MAX))
        pids.insert(static_cast<int>(v));
    });
  }
  return std::vector<int>(pids.begin(), pids.end());
}

bool parent_vanished(const Error& e) { return e.err == ENOENT || e.err == ENODEV; }

void sleep_briefly(int attempt) {
  // 0.5 ms, 1 ms, 2 ms ... capped at 10 ms.
  long us = std::min(500L << std::min(attempt, 5), 10000L);
  struct timespec ts {
    0, us * 1000
  };
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

constexpr auto kBudget = std::chrono::seconds(1);

namespace {

// SIGKILL to each of `pids` that is still a member. A pid read from
// cgroup.procs may exit, be reaped and be reused by a host process before we
// signal it, so plain kill(pid) could hit a stranger. A pidfd pins one
// process: open it first, then check the pid is still listed. If it is, the
// pidfd is the member (a reused pid's new owner would not be listed — and if
// it were, it is a member too); if the member dies afterwards, signalling its
// pidfd fails with ESRCH instead of reaching whoever gets the number next.
Status kill_members(const std::vector<std::string>& procs_files, const std::vector<int>& pids) {
  std::vector<std::pair<int, unique_fd>> opened;
  for (int pid : pids) {
    unique_fd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!fd) {
      // Gone already (ESRCH), or being released (EINVAL): nothing to kill.
      if (errno == ESRCH || errno == EINVAL) continue;
      // Out of fds (a fork bomb lists many members): signal the ones opened
      // so far; kill_all reads the group again and comes back for the rest.
      if (errno == EMFILE || errno == ENFILE) break;
      return sys_error("cgroup kill_all: pidfd_open " + std::to_string(pid));
    }
    opened.emplace_back(pid, std::move(fd));
  }
  auto still = read_pids(procs_files);
  if (!still) return still.error().context("cgroup kill_all");
  for (auto& [pid, fd] : opened) {
    if (!std::binary_search(still->begin(), still->end(), pid)) continue;
    if (::syscall(SYS_pidfd_send_signal, fd.get(), SIGKILL, nullptr, 0) != 0 && errno != ESRCH)
      return sys_error("cgroup kill_all: kill " + std::to_string(pid));
  }
  return {};
}

// Until the listed files are empty (or 1 s has passed): with `signal` each
// round SIGKILLs the members (kill_members), else only waits (cgroup.kill did it).
Status empty_group(const std::vector<std::string>& procs_files, bool signal) {
  auto deadline = std::chrono::steady_clock::now() + kBudget;
  for (int attempt = 0;; ++attempt) {
    auto pids = read_pids(procs_files);
    if (!pids) return pids.error().context("cgroup kill_all");
    if (pids->empty()) return {};
    if (std::chrono::steady_clock::now() > deadline)
      return plain_error("cgroup kill_all " + (procs_files.empty() ? std::string() : procs_files.front()),
                         std::to_string(pids->size()) + " process(es) still inside after 1 s of SIGKILL");
    if (signal) STOKE_TRY(kill_members(procs_files, *pids));
    sleep_briefly(attempt);
  }
}

}  // namespace

Status kill_until_empty(const std::vector<std::string>& procs_files) { return empty_group(procs_files, true); }

Status wait_until_empty(const std::vector<std::string>& procs_files) { return empty_group(procs_files, false); }

// mkdir parent/child. On ENOENT (a concurrent destroy removed the empty parent
// between our mkdirs) recreate the parent with make_parent() and try again — a
// few times, as another owner may keep emptying it.
// Returns true when created, false when it already existed.
Result<bool> make_child_dir(const std::string& parent, const std::string& child,
                            const std::function<Status()>& make_parent) {
  std::string dir = parent + "/" + child;
  // Another owner may remove the (empty) parent between our mkdirs, again and
  // again under load: keep re-creating it, for a bounded number of rounds.
  for (int attempt = 0;; ++attempt) {
    if (::mkdir(dir.c_str(), 0755) == 0) return true;
    if (errno == EEXIST) return false;
    if (errno != ENOENT || attempt >= 100) return sys_error("mkdir " + dir);
    spdlog::debug("cgroup: {} vanished under us; recreating it", parent);
    Status made = make_parent();
    if (!made.ok() && (!parent_vanished(made.error()) || attempt >= 100)) return made.error();
  }
}

// rmdir a group, retrying on EBUSY for about a second (killing what is inside).
Status remove_group_dir(const std::string& dir, const std::vector<std::string>& procs_files) {
  auto deadline = std::chrono::steady_clock::now() + kBudget;
  for (int attempt = 0;; ++attempt) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return {};
    int e = errno;
    if (e != EBUSY || std::chrono::steady_clock::now() > deadline) return sys_error("rmdir " + dir, e);
    auto pids = read_pids(procs_files);
    if (pids && !pids->empty()) {
      spdlog::debug("cgroup: rmdir {}: {} process(es) still inside; killing", dir, pids->size());
      STOKE_TRY(kill_until_empty(procs_files));
    }
    sleep_briefly(attempt);
  }
}

// rmdir stoke's parent directory when no group uses it any more.
void remove_parent_if_empty(const std::string& dir) {
  if (::rmdir(dir.c_str()) == 0) {
    spdlog::debug("cgroup: removed empty parent {}", dir);
    return;
  }
  if (errno != ENOTEMPTY && errno != EBUSY && errno != ENOENT && errno != EEXIST)
    spdlog::debug("cgroup: cannot remove parent {}: {}", dir, std::strerror(errno));
}

// Names of the subdirectories of dir; a missing dir has none.
Result<std::vector<std::string>> list_subdirs(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return sys_error("opendir " + dir);
  }
  while (struct dirent* ent = ::readdir(d)) {
    std::string name = ent->d_name;
    if (name == "." || name == "..") continue;
    bool is_dir = ent->d_type == DT_DIR;
    if (ent->d_type == DT_UNKNOWN) {
      struct stat st;
      is_dir = ::fstatat(::dirfd(d), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    }
    if (is_dir) out.push_back(std::move(name));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// Opens path O_WRONLY|O_CLOEXEC (the child's attach file).
Result<unique_fd> open_for_attach(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return sys_error("open " + path);
  return fd;
}

}  // namespace cgroup_internal

// ---------------------------------------------------------------------------
// Choosing a backend.

Result<std::unique_ptr<CgroupBackend>> open_cgroup_backend(const CgroupOptions& options) {
  std::string version = options.version;
  if (version == "auto") {
    if (const char* env = std::getenv("STOKE_CGROUP_VERSION"); env != nullptr && *env != '\0') {
      version = env;
      if (version != "v1" && version != "v2")
        return plain_error("cgroup: STOKE_CGROUP_VERSION='" + version + "'", "expected v1 or v2");
      spdlog::debug("cgroup: STOKE_CGROUP_VERSION forces {}", version);
    } else {
      struct statfs sfs;
      if (::statfs("/sys/fs/cgroup", &sfs) != 0) return sys_error("cgroup: statfs /sys/fs/cgroup");
      version = static_cast<unsigned long>(sfs.f_type) == CGROUP2_SUPER_MAGIC ? "v2" : "v1";
      spdlog::debug("cgroup: /sys/fs/cgroup is {}; using the {} backend",
                    version == "v2" ? "cgroup2fs" : "not cgroup2fs", version);
    }
  }
  if (version == "v1") return open_cgroup_v1(options);
  if (version == "v2") return open_cgroup_v2(options);
  return plain_error("cgroup: version '" + options.version + "'", "expected auto, v1 or v2");
}

CpuSplit split_cpu_time(uint64_t total_ns, uint64_t user_sampled_ns, uint64_t system_sampled_ns) {
  const unsigned __int128 sampled = static_cast<unsigned __int128>(user_sampled_ns) + system_sampled_ns;
  if (sampled == 0) return {total_ns, 0};
  auto user = static_cast<uint64_t>(static_cast<unsigned __int128>(total_ns) * user_sampled_ns / sampled);
  return {user, total_ns - user};
}

CpuSplit cpu_time_between(const CgroupUsage& before, const CgroupUsage& now) {
  auto since = [](uint64_t a, uint64_t b) { return b > a ? b - a : 0; };
  return split_cpu_time(since(before.cpu_total_ns, now.cpu_total_ns),
                        since(before.cpu_user_sampled_ns, now.cpu_user_sampled_ns),
                        since(before.cpu_system_sampled_ns, now.cpu_system_sampled_ns));
}

}  // namespace stoke
