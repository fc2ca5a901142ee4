// What the running kernel offers that stoke relies on, probed once at start
// and reported by `stoke status`.
#pragma once

#include <map>
#include <string>

namespace stoke::agent {

// feature name -> available. Probes are harmless calls that fail with ENOSYS
// only when the kernel lacks the system call.
std::map<std::string, bool> probe_kernel_features();

}  // namespace stoke::agent
