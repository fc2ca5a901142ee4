#include "sandbox/mount_plan.h"

#include <sys/mount.h>
#include <sys/stat.h>

namespace stoke {
namespace {

// Device nodes bound from the host into the sandbox's /dev. Not /dev/tty: it
// would open the host terminal of whoever started the agent or `stoke run`
// (the sandbox has no controlling tty anyway since it calls setsid).
constexpr const char* kDevices[] = {"null", "zero", "full", "random", "urandom"};

}  // namespace

const char* mount_op_name(MountOp::Kind kind) {
  switch (kind) {
    case MountOp::kMountTmpfs: return "mount tmpfs";
    case MountOp::kMountProc: return "mount proc";
    case MountOp::kBind: return "bind";
    case MountOp::kMakeReadOnly: return "make read-only";
    case MountOp::kMkdir: return "mkdir";
    case MountOp::kTouch: return "create mount point";
    case MountOp::kSymlink: return "symlink";
    case MountOp::kWriteFile: return "write file";
  }
  return "?";
}

std::string MountPlan::describe(size_t index) const {
  if (index >= descriptions_.size()) return "mount step " + std::to_string(index);
  return descriptions_[index];
}

void MountPlan::add_tmpfs(const std::string& path, const std::string& options, unsigned long flags) {
  push({.kind = MountOp::kMountTmpfs, .source = "tmpfs", .target = keep(under_root(path)),
        .data = keep(options), .flags = flags},
       "mount tmpfs at " + path);
}

void MountPlan::add_proc(const std::string& path) {
  // subset=pid: only the pid directories (and self); /proc/sys, kcore, keys,
  // sysrq-trigger and friends do not exist in the sandbox at all.
  push({.kind = MountOp::kMountProc, .source = "proc", .target = keep(under_root(path)),
        .data = "subset=pid", .flags = MS_NOSUID | MS_NODEV | MS_NOEXEC},
       "mount proc at " + path);
}

Status MountPlan::add_bind(const std::string& host_source, const std::string& path, bool writable) {
  // The parent only looks (as root) to learn file vs directory and to fail
  // early with a clear message; the child does the real lookup.
  struct stat st;
  if (::stat(host_source.c_str(), &st) != 0) return sys_error("bind source " + host_source);
  if (S_ISDIR(st.st_mode)) {
    add_mkdir(path, 0755);
  } else {
    push({.kind = MountOp::kTouch, .target = keep(under_root(path)), .mode = 0644},
         "create mount point " + path);
  }
  int slot = static_cast<int>(bind_sources_.size());
  bind_sources_.push_back(keep(host_source));
  push({.kind = MountOp::kBind, .source = bind_sources_.back(), .target = keep(under_root(path)), .slot = slot},
       "bind " + host_source + " at " + path);
  if (!writable) add_read_only(path, true);
  return {};
}

void MountPlan::add_mkdir(const std::string& path, unsigned mode) {
  push({.kind = MountOp::kMkdir, .target = keep(under_root(path)), .mode = mode}, "mkdir " + path);
}

void MountPlan::add_read_only(const std::string& path, bool recursive) {
  push({.kind = MountOp::kMakeReadOnly, .target = keep(under_root(path)), .flags = recursive ? 1UL : 0UL},
       "make " + path + " read-only");
}

void MountPlan::add_symlink(const std::string& target, const std::string& path) {
  push({.kind = MountOp::kSymlink, .source = keep(target), .target = keep(under_root(path))},
       "symlink " + path + " -> " + target);
}

void MountPlan::add_device(const std::string& name) {
  // Device nodes cannot be created in a user namespace; bind the host's.
  Status st = add_bind("/dev/" + name, "/dev/" + name, /*writable=*/true);
  (void)st;  // a minimal host may lack one of them; the sandbox then lacks it too
}

Status MountPlan::add_rootfs_entry(const RootfsEntry& e) {
  switch (e.kind) {
    case RootfsEntry::Kind::kBindDir:
    case RootfsEntry::Kind::kBindFile:
      return add_bind(e.source, e.path, /*writable=*/false);
    case RootfsEntry::Kind::kSymlink:
      add_symlink(e.source, e.path);
      return {};
    case RootfsEntry::Kind::kDir:
      add_mkdir(e.path, e.mode);
      return {};
    case RootfsEntry::Kind::kFile: {
      const char* data = keep(e.source);
      push({.kind = MountOp::kWriteFile, .target = keep(under_root(e.path)), .data = data,
            .data_len = e.source.size(), .mode = e.mode},
           "write " + e.path);
      return {};
    }
  }
  return {};
}

Result<MountPlan> build_mount_plan(const SandboxSpec& spec, const std::string& new_root,
                                   const std::vector<RootfsEntry>& rootfs) {
  MountPlan plan;
  plan.set_new_root(new_root);
  // The root itself: a small tmpfs holding mount points and generated files,
  // made read-only at the very end.
  plan.add_tmpfs("", "mode=0755,size=1m", MS_NOSUID | MS_NODEV);
  for (const auto& entry : rootfs) STOKE_TRY(plan.add_rootfs_entry(entry));

  plan.add_mkdir("/dev", 0755);
  plan.add_tmpfs("/dev", "mode=0755,size=64k", MS_NOSUID | MS_NOEXEC);
  for (const char* dev : kDevices) plan.add_device(dev);
  plan.add_symlink("/proc/self/fd", "/dev/fd");
  plan.add_symlink("/proc/self/fd/0", "/dev/stdin");
  plan.add_symlink("/proc/self/fd/1", "/dev/stdout");
  plan.add_symlink("/proc/self/fd/2", "/dev/stderr");
  plan.add_mkdir("/dev/shm", 01777);
  plan.add_tmpfs("/dev/shm", "mode=1777,size=" + std::to_string(spec.tmp_size_bytes),
                 MS_NOSUID | MS_NODEV | MS_NOEXEC);

  plan.add_mkdir("/proc", 0555);
  plan.add_proc("/proc");

  plan.add_mkdir("/tmp", 01777);
  plan.add_tmpfs("/tmp", "mode=1777,size=" + std::to_string(spec.tmp_size_bytes), MS_NOSUID | MS_NODEV);

  for (const auto& b : spec.binds) {
    // Create missing parents of the target on the root tmpfs.
    for (size_t pos = 1; (pos = b.target.find('/', pos)) != std::string::npos; ++pos)
      plan.add_mkdir(b.target.substr(0, pos), 0755);
    STOKE_TRY(plan.add_bind(b.source, b.target, b.writable));
  }

  // /dev's tmpfs (not its device binds, which stay writable like any /dev/null)
  // and the root tmpfs become read-only; /tmp, /dev/shm and rw binds stay writable.
  plan.add_read_only("/dev", false);
  plan.add_read_only("", false);
  return plan;
}

}  // namespace stoke
