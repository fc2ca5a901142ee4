// The host-lean rootfs: what a sandbox's filesystem is made of.
//
// Host /usr (and the /bin, /lib... links or directories beside it) read-only,
// plus a curated /etc: a few files bound from the host that programs need
// (dynamic loader cache, time zone, certificates) and generated passwd, group,
// hosts and resolv.conf. Nothing else of the host: no /home, /root, /var,
// /etc/shadow, /run. This file only describes the tree; sandbox/ builds it.
#pragma once

#include <string>
#include <vector>

namespace stoke {

struct RootfsEntry {
  enum class Kind {
    kBindDir,   // bind host `source` (a directory) at `path`, read-only, recursively
    kBindFile,  // bind host `source` (a file) at `path`, read-only
    kSymlink,   // symlink at `path` pointing to `source`
    kFile,      // regular file at `path` whose content is `source`
    kDir,       // empty directory at `path`
  };
  Kind kind;
  std::string path;    // absolute, inside the sandbox
  std::string source;  // host path, link target or file content (see kind)
  unsigned mode = 0644;
};

struct LeanRootfsOptions {
  std::string hostname = "sandbox";
  // Host root to read from (tests point this at a fake tree).
  std::string host_root = "/";
};

// The entries in creation order (parents before children). Host paths that do
// not exist are left out, so the same code serves merged-/usr and older layouts.
std::vector<RootfsEntry> host_lean_rootfs(const LeanRootfsOptions& options = {});

// Top-level sandbox paths whose contents come from the host read-only; a user
// bind may not be placed inside them (validate_spec uses this).
const std::vector<std::string>& lean_rootfs_system_paths();

}  // namespace stoke
