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

// The default sandbox profile for the host architecture. The result is cached:
// later calls return the same program without recompiling.
Result<const SeccompProgram*> default_seccomp_program();

// Names of the syscalls the default profile always denies (for docs and tests).
const std::vector<std::string>& always_denied_syscalls();

}  // namespace stoke
