// Helpers shared by the cgroup v1 and v2 backends (cgroup_common.cc).
// Private to sandbox/: not part of the cgroup interface.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "sandbox/base/result.h"
#include "sandbox/base/unique_fd.h"

namespace stoke::cgroup_internal {

Result<std::map<std::string, std::string>> detect_self_dirs();
Status check_name(const std::string& what, const std::string& name);
Result<uint64_t> read_u64(const std::string& path);
Result<std::map<std::string, uint64_t>> read_keyed(const std::string& path);
Result<std::vector<int>> read_pids(const std::vector<std::string>& procs_files);
// SIGKILL every member until none is left (1 s budget), through pidfds that
// are checked to still be members: never a pid that was reused meanwhile.
Status kill_until_empty(const std::vector<std::string>& procs_files);
// Only waits (1 s budget) for the group to empty: after cgroup.kill.
Status wait_until_empty(const std::vector<std::string>& procs_files);
Result<bool> make_child_dir(const std::string& parent, const std::string& child,
                            const std::function<Status()>& make_parent);
// Whether an error means the (empty) parent group was removed by another
// owner under us: ENOENT, or ENODEV from a file of a group being removed
// (seen on cgroup v2's cgroup.subtree_control). Making it again helps.
bool parent_vanished(const Error& e);
// Backs off before a retry: 0.5 ms, 1 ms, 2 ms ... capped at 10 ms.
void sleep_briefly(int attempt);
Status remove_group_dir(const std::string& dir, const std::vector<std::string>& procs_files);
void remove_parent_if_empty(const std::string& dir);
Result<std::vector<std::string>> list_subdirs(const std::string& dir);
Result<unique_fd> open_for_attach(const std::string& path);

}  // namespace stoke::cgroup_internal
