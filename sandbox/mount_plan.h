// The mount plan: the sandbox's filesystem as an ordered list of operations.
//
// The plan is data, built by the parent with ordinary C++ (strings, vectors);
// the sandbox child only walks the array and issues one raw system call per
// operation (child_setup.cc). Paths are absolute host paths under the new root
// directory, so the child needs no string handling at all.
//
// Binds are two-phase: the child clones every bind source with open_tree()
// while it is still host uid 0 (so it can walk into a root-owned 0700 dir such
// as a private temp dir), and attaches the clones with move_mount() once the
// tree is built. A bind by path after the switch to the unprivileged uid would
// fail with EACCES, and a parent-opened fd is a mount of another namespace,
// which mount(MS_BIND) refuses.
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <vector>

#include "rootfs/lean_rootfs.h"
#include "sandbox/base/result.h"
#include "sandbox/spec.h"

namespace stoke {

struct MountOp {
  enum Kind : int {
    kMountTmpfs,   // mount("tmpfs", target, "tmpfs", flags, data)
    kMountProc,    // mount("proc", target, "proc", flags, data)
    kBind,         // move_mount(clone of `source` made in phase one, target); `slot` = clone index
    kMakeReadOnly, // mount_setattr(target, AT_RECURSIVE if flags, MOUNT_ATTR_RDONLY)
    kMkdir,        // mkdir(target, mode); EEXIST is fine
    kTouch,        // open(target, O_CREAT) as a bind mount point
    kSymlink,      // symlink(source, target)
    kWriteFile,    // open(target, O_CREAT|O_EXCL) + write(data, data_len)
  };
  Kind kind;
  const char* source = nullptr;
  const char* target = nullptr;
  const char* data = nullptr;
  size_t data_len = 0;
  unsigned long flags = 0;
  unsigned mode = 0;
  int slot = -1;  // kBind: index into the plan's bind sources
};

const char* mount_op_name(MountOp::Kind kind);

// Owns the strings and fds the ops point into. Move-only; ops stay valid.
class MountPlan {
 public:
  MountPlan() = default;
  MountPlan(MountPlan&&) = default;
  MountPlan& operator=(MountPlan&&) = default;

  const std::string& new_root() const { return new_root_; }
  const std::vector<MountOp>& ops() const { return ops_; }
  // Host paths to clone with open_tree() before the ids change (slot order).
  const std::vector<const char*>& bind_sources() const { return bind_sources_; }
  // "bind /usr at /usr" for error messages.
  std::string describe(size_t index) const;

  // Builders (used by build_mount_plan; public for tests).
  void set_new_root(std::string root) { new_root_ = std::move(root); }
  Status add_rootfs_entry(const RootfsEntry& entry);
  void add_tmpfs(const std::string& path, const std::string& options, unsigned long flags);
  void add_proc(const std::string& path);
  Status add_bind(const std::string& host_source, const std::string& path, bool writable);
  void add_mkdir(const std::string& path, unsigned mode);
  void add_read_only(const std::string& path, bool recursive);
  void add_device(const std::string& name);
  void add_symlink(const std::string& target, const std::string& path);

 private:
  const char* keep(std::string s) { strings_.push_back(std::move(s)); return strings_.back().c_str(); }
  std::string under_root(const std::string& path) const { return new_root_ + path; }
  void push(MountOp op, std::string description) {
    ops_.push_back(op);
    descriptions_.push_back(std::move(description));
  }

  std::string new_root_;
  std::deque<std::string> strings_;  // deque: c_str() pointers stay valid on growth
  std::vector<const char*> bind_sources_;
  std::vector<MountOp> ops_;
  std::vector<std::string> descriptions_;
};

// The whole filesystem of one sandbox: lean rootfs, /dev, /proc, /tmp, the
// user's binds, then everything but /tmp, /dev/shm and rw binds made read-only.
Result<MountPlan> build_mount_plan(const SandboxSpec& spec, const std::string& new_root,
                                   const std::vector<RootfsEntry>& rootfs);

}  // namespace stoke
