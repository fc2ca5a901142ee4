// The agent never trusts what a zygote answers (docs/security/zygotes.md).
//
// A function zygote runs the tenant's import-time code, so whatever it sends
// back for a fork is attacker-controlled: the fd may be a pipe that never
// becomes readable, a pidfd of some other process, or a pidfd of a child that
// skipped its isolation steps. Before the agent adopts a fork, it proves from
// the kernel's own view (fd type, /proc, cgroup.procs) that:
//
//   - the fd is a pidfd of a live process;
//   - that process is in a pid namespace one level below the zygote's (the
//     maker's: the zygote cannot make one), so it dies with the zygote's
//     sandbox and sees none of it;
//   - the cgroup the agent made for it holds exactly two processes (in every
//     directory): the fork and the init of its pid namespace, which its maker
//     made (the init's parent is the maker) and which holds no capability;
//   - its uid and gid are the zygote's host id;
//   - it has no capability in any set, no_new_privs, seccomp filter mode with
//     at least `min_seccomp_filters` filters stacked.
//
// Residual (docs/security/zygotes.md): the filter *count* is what the kernel
// shows; which filter it is cannot be read without ptrace. The zygote's own
// filter, stacked by the maker before exec, is under every fork's.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "sandbox/base/result.h"

namespace stoke::agent {

struct ForkExpectation {
  pid_t maker_pid = -1;                 // host pid of the zygote sandbox's pid 1
  std::vector<std::string> group_dirs;  // the fork's own cgroup directories
  uint32_t host_uid = 0;                // its uid/gid as the host sees them
  int min_seccomp_filters = 1;
};

// Fields of /proc/<pid>/status a verification reads.
struct ProcessStatus {
  std::vector<pid_t> ns_pids;  // NSpid: the agent's view first, its own pid ns last
  pid_t ppid = -1;             // PPid, in the reader's pid namespace (0: outside it)
  std::vector<uint32_t> uids, gids;
  uint64_t cap_inh = ~0ULL, cap_prm = ~0ULL, cap_eff = ~0ULL, cap_bnd = ~0ULL, cap_amb = ~0ULL;
  int no_new_privs = -1, seccomp = -1, seccomp_filters = -1;
};

// Parses the text of /proc/<pid>/status (pure: unit-testable).
ProcessStatus parse_process_status(const std::string& text);

// PPid of `pid` as the agent sees it; -1 if unreadable.
pid_t parent_pid_of(pid_t pid);

// Seccomp_filters of a process we trust (a zygote's maker at start): the
// base the counts of what it forks are checked against. -1 if unreadable.
int seccomp_filter_count(pid_t pid);

// Proves `fd` is a pidfd and its process is an instance set up as expected;
// returns its host pid. On any failure the caller must not adopt the fd.
Result<pid_t> verify_instance_fork(int fd, const ForkExpectation& expected);

// Proves `fd` is a pidfd of a live process inside `group_dirs` (every one):
// what the agent checks of the zygote's own pidfd, sent before any tenant
// code ran (checked all the same).
Result<pid_t> verify_pidfd_in_group(int fd, const std::vector<std::string>& group_dirs);


}  // namespace stoke::agent
