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

Status in_group(pid_t pid, const std::vector<std::string>& group_dirs, bool alone) {
  const std::string what = "check the zygote's fork";
  if (group_dirs.empty()) return plain_error(what, "no cgroup to check against");
  for (const auto& dir : group_dirs) {
    auto procs = read_file(dir + "/cgroup.procs");
    if (!procs.ok()) return procs.error().context(what);
    std::istringstream in(*procs);
    std::vector<long> members;
    long p;
    while (in >> p) members.push_back(p);
    bool found = std::find(members.begin(), members.end(), pid) != members.end();
    if (!found || (alone && members.size() != 1))
      return plain_error(what, std::string("the fork is not ") + (alone ? "alone " : "") + "in its cgroup " + dir +
                                   " (" + std::to_string(members.size()) + " process(es) there)");
  }
  return {};
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

int seccomp_filter_count(pid_t pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/status");
  return text.ok() ? parse_process_status(*text).seccomp_filters : -1;
}

Result<pid_t> verify_pidfd_in_group(int fd, const std::vector<std::string>& group_dirs) {
  auto pid = pid_of_proven_pidfd(fd);
  if (!pid.ok()) return pid.error();
  STOKE_TRY(in_group(*pid, group_dirs, /*alone=*/false));
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
  auto zygote_text = read_file("/proc/" + std::to_string(expected.zygote_pid) + "/status");
  if (!zygote_text.ok()) return zygote_text.error().context(what + " (its zygote)");
  ProcessStatus zygote = parse_process_status(*zygote_text);

  auto refuse = [&](const std::string& why) -> Result<pid_t> {
    return plain_error(what, "the fork (pid " + std::to_string(*pid) + ") " + why);
  };
  // Its own pid namespace, directly below the zygote's, and pid 1 there.
  if (zygote.ns_pids.empty() || st.ns_pids.size() != zygote.ns_pids.size() + 1 || st.ns_pids.back() != 1)
    return refuse("is not pid 1 of a new pid namespace below its zygote's");
  std::string own_ns = ns_link(*pid, "pid"), zygote_ns = ns_link(expected.zygote_pid, "pid");
  if (own_ns.empty() || zygote_ns.empty() || own_ns == zygote_ns) return refuse("shares its zygote's pid namespace");
  for (uint32_t id : st.uids)
    if (id != expected.host_uid) return refuse("runs as host uid " + std::to_string(id));
  for (uint32_t id : st.gids)
    if (id != expected.host_uid) return refuse("runs as host gid " + std::to_string(id));
  if (st.uids.size() != 4 || st.gids.size() != 4) return refuse("has no readable uid/gid");
  if (st.cap_inh != 0 || st.cap_prm != 0 || st.cap_eff != 0 || st.cap_bnd != 0 || st.cap_amb != 0)
    return refuse("kept capabilities");
  if (st.no_new_privs != 1) return refuse("has no no_new_privs");
  if (st.seccomp != 2 || st.seccomp_filters < expected.min_seccomp_filters)
    return refuse("has " + std::to_string(st.seccomp_filters) + " seccomp filter(s), at least " +
                  std::to_string(expected.min_seccomp_filters) + " expected");
  STOKE_TRY(in_group(*pid, expected.group_dirs, /*alone=*/true));
  if (!still_alive(fd)) return refuse("exited while being checked");
  return *pid;
}

}  // namespace stoke::agent
