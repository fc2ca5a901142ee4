// The agent never trusts what a zygote answers (docs/security/zygote-trust.md).
//
// A function zygote runs the tenant's import-time code, so whatever it sends
// back for a fork is attacker-controlled: the fd may be a pipe that never
// becomes readable, a pidfd of some other process, or a pidfd of a child that
// skipped its isolation steps. Before the agent adopts a fork, it proves from
// the kernel's own view (fd type, /proc, cgroup.procs) that:
//
//   - the fd is a pidfd of a live process;
//   - that process is pid 1 of a pid namespace one level below its zygote's
//     (so it dies with the zygote and its namespace is not the zygote's);
//   - it is alone in the cgroup the agent made for it (every directory of it);
//   - its uid and gid are the zygote's host id;
//   - it has no capability in any set, no_new_privs, seccomp filter mode with
//     at least `min_seccomp_filters` filters stacked.
//
// Residual (written down in docs/security/zygote-trust.md): the filter *count*
// is what the kernel shows; which filter it is cannot be read without ptrace.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "sandbox/base/result.h"

namespace stoke::agent {

struct ForkExpectation {
  pid_t zygote_pid = -1;                // host pid of the zygote that forked it
  std::vector<std::string> group_dirs;  // the fork's own cgroup directories
  uint32_t host_uid = 0;                // its uid/gid as the host sees them
  int min_seccomp_filters = 1;
};

// Fields of /proc/<pid>/status a verification reads.
struct ProcessStatus {
  std::vector<pid_t> ns_pids;  // NSpid: the agent's view first, its own pid ns last
  std::vector<uint32_t> uids, gids;
  uint64_t cap_inh = ~0ULL, cap_prm = ~0ULL, cap_eff = ~0ULL, cap_bnd = ~0ULL, cap_amb = ~0ULL;
  int no_new_privs = -1, seccomp = -1, seccomp_filters = -1;
};

// Parses the text of /proc/<pid>/status (pure: unit-testable).
ProcessStatus parse_process_status(const std::string& text);

// Seccomp_filters of a process we trust (the runtime zygote at start): the
// base the counts of what it forks are checked against. -1 if unreadable.
int seccomp_filter_count(pid_t pid);

// Proves `fd` is a pidfd and its process is an instance set up as expected;
// returns its host pid. On any failure the caller must not adopt the fd.
Result<pid_t> verify_instance_fork(int fd, const ForkExpectation& expected);

// Proves `fd` is a pidfd of a live process inside `group_dirs` (every one):
// what the agent checks of a function zygote the runtime zygote
// forked (a process that never ran tenant code, but whose answer is checked
// all the same).
Result<pid_t> verify_pidfd_in_group(int fd, const std::vector<std::string>& group_dirs);


}  // namespace stoke::agent
