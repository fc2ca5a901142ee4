// Helpers shared by the cgroup v1 and v2 backends (cgroup_common.cc).
// Private to sandbox/: not part of the cgroup interface.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <map>
#include <string>
#include <string_view>
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

// With CgroupOptions::keep_parent the backend removes its (shared) parent
// once, when it is destroyed (remove_empty_parents), not after each group. A
// group that outlives its backend — an instance torn down after the spawner
// that made it, as the agent's last pooled instances are at its exit — must
// then try the parent itself, or the parent stays behind empty. The backend
// holds this flag true while it lives; a group holds it to know.
using BackendAlive = std::shared_ptr<std::atomic<bool>>;
// Whether a group being destroyed tries its parent: always without
// keep_parent (null flag), else only once its backend is gone.
inline bool group_removes_parent(const std::shared_ptr<const std::atomic<bool>>& kept_by) {
  return !kept_by || !kept_by->load();
}

// A counter file of a group (cpuacct.usage, memory.peak, ...) opened once and
// read again with pread(2) at offset 0, which makes cgroupfs produce it anew.
// A warm activation reads several of them per call; a path walk through
// cgroupfs for each cost more than the read. cgroup v2's memory.peak needs it
// too: since Linux 6.12 a write resets the peak for reads through the same fd
// only. Not thread-safe: a group's counters are read by one thread at a time.
class CounterFile {
 public:
  CounterFile() = default;
  // writable: open read-write (for a reset); falls back to read-only when refused.
  CounterFile(std::string path, bool writable) : path_(std::move(path)), writable_(writable) {}
  const std::string& path() const { return path_; }
  // The file's text now. ENOENT when the file is absent (also remembered: the
  // kernel does not grow files later) or after close().
  Result<std::string> read();
  Result<uint64_t> read_u64();
  Result<std::map<std::string, uint64_t>> read_keyed();
  // One write(2) through the same fd.
  Status write(std::string_view data);
  void close();

 private:
  Status open_once();
  std::string path_;
  bool writable_ = false;
  unique_fd fd_;
  int open_errno_ = 0;  // a failed open is not retried
};

}  // namespace stoke::cgroup_internal
