#include "agent/zygote_verify.h"

#include <poll.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "sandbox/base/file_util.h"

namespace stoke::agent {
namespace {

// Magic numbers of the filesystems a pidfd's inode lives on: pidfs (Linux
// 6.9+), or the anonymous inode filesystem before that.
constexpr long kPidfsMagic = 0x50494446;
constexpr long kAnonInodeMagic = 0x09041934;

std::vector<uint64_t> numbers_after(const std::string& line, size_t at, int base) {
  std::vector<uint64_t> out;
  std::istringstream in(line.substr(at));
  std::string word;
  while (in >> word) out.push_back(std::strtoull(word.c_str(), nullptr, base));
  return out;
}

// The fd's process, in the agent's pid namespace, if `fd` is a pidfd; the
// type is proven by the filesystem the inode lives on, before anything is
// asked of the fd (an ioctl on an arbitrary fd type could mean anything).
Result<pid_t> pid_of_proven_pidfd(int fd) {
  const std::string what = "check the zygote's fork";
  struct statfs fs {};
  if (::fstatfs(fd, &fs) != 0) return sys_error(what + ": fstatfs");
  if (fs.f_type != kPidfsMagic) {
    char link[64] = {};
    std::string self = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = ::readlink(self.c_str(), link, sizeof link - 1);
    if (fs.f_type != kAnonInodeMagic || n <= 0 || std::string(link, static_cast<size_t>(n)) != "anon_inode:[pidfd]")
      return plain_error(what, "the zygote answered with an fd that is not a pidfd");
  }
  auto info = read_file("/proc/self/fdinfo/" + std::to_string(fd));
  if (!info.ok()) return info.error().context(what);
  size_t at = info->find("\nPid:");
  if (at == std::string::npos) return plain_error(what, "the zygote answered with an fd that is not a pidfd");
  long pid = std::strtol(info->c_str() + at + 5, nullptr, 10);
  if (pid <= 0) return plain_error(what, "the zygote's fork is already gone");
  return static_cast<pid_t>(pid);
}

bool still_alive(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

// The processes of every directory of the fork's cgroup; each must hold `pid`.
Result<std::vector<pid_t>> members_with(pid_t pid, const std::vector<std::string>& group_dirs) {
  const std::string what = "check the zygote's fork";
  if (group_dirs.empty()) return plain_error(what, "no cgroup to check against");
  std::vector<pid_t> first;
  for (const auto& dir : group_dirs) {
    auto procs = read_file(dir + "/cgroup.procs");
    if (!procs.ok()) return procs.error().context(what);
    std::istringstream in(*procs);
    std::vector<pid_t> members;
    long p;
    while (in >> p) members.push_back(static_cast<pid_t>(p));
    std::sort(members.begin(), members.end());
    if (std::find(members.begin(), members.end(), pid) == members.end())
      return plain_error(what, "the fork is not in its cgroup " + dir);
    if (dir == group_dirs.front()) first = members;
    else if (members != first)
      return plain_error(what, "the fork's cgroup holds different processes in " + dir);
  }
  return first;
}

std::string ns_link(pid_t pid, const char* ns) {
  char link[128] = {};
  std::string path = "/proc/" + std::to_string(pid) + "/ns/" + ns;
  ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
  return n > 0 ? std::string(link, static_cast<size_t>(n)) : std::string();
}

}  // namespace

ProcessStatus parse_process_status(const std::string& text) {
  ProcessStatus st;
  std::istringstream in(text);
  std::string line;
  auto field = [&](const char* key) -> size_t {
    std::string k = std::string(key) + ":";
    return line.compare(0, k.size(), k) == 0 ? k.size() : 0;
  };
  auto hex = [&](size_t at) {
    auto v = numbers_after(line, at, 16);
    return v.size() == 1 ? v[0] : ~0ULL;
  };
  auto dec = [&](size_t at) {
    auto v = numbers_after(line, at, 10);
    return v.size() == 1 ? static_cast<int>(v[0]) : -1;
  };
  while (std::getline(in, line)) {
    size_t at;
    if ((at = field("NSpid"))) {
      for (uint64_t v : numbers_after(line, at, 10)) st.ns_pids.push_back(static_cast<pid_t>(v));
    } else if ((at = field("PPid"))) {
      st.ppid = dec(at);
    } else if ((at = field("Uid"))) {
      for (uint64_t v : numbers_after(line, at, 10)) st.uids.push_back(static_cast<uint32_t>(v));
    } else if ((at = field("Gid"))) {
      for (uint64_t v : numbers_after(line, at, 10)) st.gids.push_back(static_cast<uint32_t>(v));
    } else if ((at = field("CapInh"))) {
      st.cap_inh = hex(at);
    } else if ((at = field("CapPrm"))) {
      st.cap_prm = hex(at);
    } else if ((at = field("CapEff"))) {
      st.cap_eff = hex(at);
    } else if ((at = field("CapBnd"))) {
      st.cap_bnd = hex(at);
    } else if ((at = field("CapAmb"))) {
      st.cap_amb = hex(at);
    } else if ((at = field("NoNewPrivs"))) {
      st.no_new_privs = dec(at);
    } else if ((at = field("Seccomp_filters"))) {
      st.seccomp_filters = dec(at);
    } else if ((at = field("Seccomp"))) {
      st.seccomp = dec(at);
    }
  }
  return st;
}

pid_t parent_pid_of(pid_t pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/status");
  return text.ok() ? parse_process_status(*text).ppid : -1;
}

int seccomp_filter_count(pid_t pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/status");
  return text.ok() ? parse_process_status(*text).seccomp_filters : -1;
}

Result<pid_t> verify_pidfd_in_group(int fd, const std::vector<std::string>& group_dirs) {
  auto pid = pid_of_proven_pidfd(fd);
  if (!pid.ok()) return pid.error();
  auto members = members_with(*pid, group_dirs);
  if (!members.ok()) return members.error();
  // Read by pid, then proven to be the same process: a pid is not reused
  // while its process has not exited.
  if (!still_alive(fd)) return plain_error("check the zygote's fork", "it exited while being checked");
  return *pid;
}

Result<pid_t> verify_instance_fork(int fd, const ForkExpectation& expected) {
  const std::string what = "check the zygote's fork";
  auto pid = pid_of_proven_pidfd(fd);
  if (!pid.ok()) return pid.error();
  auto text = read_file("/proc/" + std::to_string(*pid) + "/status");
  if (!text.ok()) return text.error().context(what);
  ProcessStatus st = parse_process_status(*text);
  auto maker_text = read_file("/proc/" + std::to_string(expected.maker_pid) + "/status");
  if (!maker_text.ok()) return maker_text.error().context(what + " (its zygote's maker)");
  ProcessStatus maker = parse_process_status(*maker_text);

  auto refuse = [&](const std::string& why) -> Result<pid_t> {
    return plain_error(what, "the fork (pid " + std::to_string(*pid) + ") " + why);
  };
  auto no_caps = [](const ProcessStatus& p) {
    return p.cap_inh == 0 && p.cap_prm == 0 && p.cap_eff == 0 && p.cap_bnd == 0 && p.cap_amb == 0;
  };
  auto ids_are = [&](const ProcessStatus& p) {
    if (p.uids.size() != 4 || p.gids.size() != 4) return false;
    for (uint32_t id : p.uids)
      if (id != expected.host_uid) return false;
    for (uint32_t id : p.gids)
      if (id != expected.host_uid) return false;
    return true;
  };
  // Its own pid namespace, directly below the sandbox's (the zygote's and
  // its maker's), which the zygote cannot make: its maker made it.
  if (maker.ns_pids.empty() || st.ns_pids.size() != maker.ns_pids.size() + 1)
    return refuse("is not in a new pid namespace below its zygote's");
  std::string own_ns = ns_link(*pid, "pid"), maker_ns = ns_link(expected.maker_pid, "pid");
  if (own_ns.empty() || maker_ns.empty() || own_ns == maker_ns) return refuse("shares its zygote's pid namespace");
  if (!ids_are(st)) return refuse("does not run as the zygote's host uid and gid");
  if (!no_caps(st)) return refuse("kept capabilities");
  if (st.no_new_privs != 1) return refuse("has no no_new_privs");
  if (st.seccomp != 2 || st.seccomp_filters < expected.min_seccomp_filters)
    return refuse("has " + std::to_string(st.seccomp_filters) + " seccomp filter(s), at least " +
                  std::to_string(expected.min_seccomp_filters) + " expected");

  // Its cgroup: the fork and the init of its pid namespace, nothing else.
  auto members = members_with(*pid, expected.group_dirs);
  if (!members.ok()) return members.error();
  if (members->size() != 2) return refuse("is not alone with its namespace's init in its cgroup");
  pid_t init = members->front() == *pid ? members->back() : members->front();
  auto init_text = read_file("/proc/" + std::to_string(init) + "/status");
  if (!init_text.ok()) return init_text.error().context(what + " (its namespace's init)");
  ProcessStatus init_st = parse_process_status(*init_text);
  if (init_st.ns_pids.size() != st.ns_pids.size() || init_st.ns_pids.back() != 1 ||
      ns_link(init, "pid") != own_ns)
    return refuse("shares its cgroup with a process that is not its pid namespace's init");
  if (init_st.ppid != expected.maker_pid) return refuse("has a pid namespace init its zygote's maker did not make");
  if (!ids_are(init_st) || !no_caps(init_st)) return refuse("has a pid namespace init with other ids or capabilities");
  if (!still_alive(fd)) return refuse("exited while being checked");
  return *pid;
}

}  // namespace stoke::agent
