#include "agent/kernel_features.h"

#include <liburing.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

namespace stoke::agent {
namespace {

// A system call exists when calling it with invalid arguments fails with
// anything but ENOSYS.
bool syscall_exists(long nr, long a1 = -1, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0) {
  errno = 0;
  long r = syscall(nr, a1, a2, a3, a4, a5);
  return r >= 0 || errno != ENOSYS;
}

long read_long(const char* path) {
  std::ifstream f(path);
  long v = -1;
  f >> v;
  return v;
}

}  // namespace

std::map<std::string, bool> probe_kernel_features() {
  std::map<std::string, bool> f;
  io_uring ring;
  bool uring = io_uring_queue_init(2, &ring, 0) == 0;
  if (uring) io_uring_queue_exit(&ring);
  f["io_uring"] = uring;
  f["pidfd_open"] = syscall_exists(SYS_pidfd_open, 0, ~0L);            // bad flags: EINVAL
  f["pidfd_send_signal"] = syscall_exists(SYS_pidfd_send_signal);      // bad fd: EBADF
  f["clone3"] = syscall_exists(SYS_clone3, 0, 0);                      // size 0: EINVAL
  f["open_tree"] = syscall_exists(SYS_open_tree, -1, 0, ~0L);          // EBADF/EINVAL
  f["move_mount"] = syscall_exists(SYS_move_mount, -1, 0, -1, 0, ~0L);
  f["mount_setattr"] = syscall_exists(SYS_mount_setattr, -1, 0, 0, 0, 0);
  f["close_range"] = syscall_exists(SYS_close_range, ~0L, 0, ~0L);     // bad flags: EINVAL
  f["user_namespaces"] = read_long("/proc/sys/user/max_user_namespaces") > 0;
  f["seccomp_filter"] = syscall_exists(SYS_seccomp, ~0L, 0, 0);        // bad op: EINVAL
  f["cgroup_v2_unified"] = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0;
  return f;
}

}  // namespace stoke::agent
