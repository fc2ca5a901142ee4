#include "sandbox/seccomp_profile.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace stoke {
namespace {

TEST(SeccompProfile, CompilesOnceAndIsCached) {
  auto a = default_seccomp_program();
  ASSERT_TRUE(a.ok()) << a.error().message();
  auto b = default_seccomp_program();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a.value(), b.value());
  EXPECT_GT(a.value()->instructions.size(), 50u);
  EXPECT_LT(a.value()->instructions.size(), 4096u);  // BPF_MAXINSNS
}

TEST(SeccompProfile, AlwaysDeniedSetCoversTheBaseline) {
  const auto& denied = always_denied_syscalls();
  for (const char* name : {"mount", "umount2", "pivot_root", "unshare", "setns", "bpf", "perf_event_open", "keyctl",
                           "add_key", "request_key", "ptrace", "kexec_load", "init_module", "finit_module",
                           "reboot", "swapon", "open_by_handle_at", "userfaultfd", "io_uring_setup",
                           "clock_settime", "settimeofday", "move_mount", "open_tree", "fsopen"})
    EXPECT_NE(std::find(denied.begin(), denied.end(), name), denied.end()) << name;
}

}  // namespace
}  // namespace stoke
