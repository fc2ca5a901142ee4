// The sandbox's seccomp filter: an allow-list in the spirit of container
// defaults, EPERM for everything else, and a set that is always denied.
//
// Compiled once per profile with libseccomp into classic BPF (binary-tree
// layout, so the kernel checks ~log2(n) comparisons per syscall) and cached;
// the sandbox child only has to hand the ready program to seccomp(2).
#pragma once

#include <linux/filter.h>

#include <string>
#include <vector>

#include "sandbox/base/result.h"

namespace stoke {

struct SeccompProgram {
  std::vector<sock_filter> instructions;
  sock_fprog fprog() const {
    return sock_fprog{static_cast<unsigned short>(instructions.size()),
                      const_cast<sock_filter*>(instructions.data())};
  }
};

// Where compiled filters are kept between processes (root-owned, tmpfs).
inline constexpr const char* kSeccompCacheDir = "/run/stoke/cache";

// The default sandbox profile for the host architecture. Cached in memory (later
// calls return the same program) and, unless cache_dir is empty, on disk.
Result<const SeccompProgram*> default_seccomp_program(const std::string& cache_dir = kSeccompCacheDir);

// Which filter: every sandbox gets the default one. A function zygote's
// sandbox (agent/zygote.h, docs/zygotes.md) has two more:
//  - kZygoteMaker, for its pid 1, which never runs tenant code and builds
//    each instance's namespaces ahead: the default allow-list plus mount,
//    umount2, sethostname, capset, setns, unshare without a user namespace and
//    clone with any namespace flag;
//  - kFunctionZygote, stacked by the zygote itself before it execs Python
//    (so the tenant's import-time code runs under it): the default profile
//    plus setns (into the namespaces its maker made), unshare of a cgroup
//    namespace only, and capset (which can only lower capabilities). Its
//    instances stack kDefault on top.
enum class SeccompProfile { kDefault, kZygoteMaker, kFunctionZygote };
// Compiled once per process (kDefault: as default_seccomp_program()).
Result<const SeccompProgram*> seccomp_program(SeccompProfile profile);

// Compile afresh, bypassing both caches (tests compare it with the cache).
Result<SeccompProgram> compile_default_seccomp_program();
// The on-disk cache alone: read a trusted cached copy from cache_dir, else
// compile and store it there (atomically). No in-memory caching.
Result<SeccompProgram> load_or_compile_seccomp_program(const std::string& cache_dir);

// Names of the syscalls the default profile always denies (for docs and tests).
const std::vector<std::string>& always_denied_syscalls();

}  // namespace stoke
