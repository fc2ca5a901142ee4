#include "sandbox/seccomp_profile.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

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

namespace stoke {
namespace {

bool same_program(const SeccompProgram& a, const SeccompProgram& b) {
  return a.instructions.size() == b.instructions.size() &&
         std::memcmp(a.instructions.data(), b.instructions.data(), a.instructions.size() * sizeof(sock_filter)) == 0;
}

std::string only_file_in(const std::string& dir) {
  std::string found;
  for (const auto& e : std::filesystem::directory_iterator(dir)) found = e.path();
  return found;
}

TEST(SeccompCache, FirstUseStoresTheFilterAndLaterUsesReadTheSameBytes) {
  if (geteuid() != 0) GTEST_SKIP() << "the cache trusts only root-owned files";
  char dir[] = "/tmp/stoke-seccomp-cache-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  auto fresh = compile_default_seccomp_program();
  ASSERT_TRUE(fresh.ok());
  auto first = load_or_compile_seccomp_program(dir);
  ASSERT_TRUE(first.ok());
  std::string file = only_file_in(dir);
  ASSERT_FALSE(file.empty()) << "nothing was cached";
  auto second = load_or_compile_seccomp_program(dir);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(same_program(*first, *fresh));
  EXPECT_TRUE(same_program(*second, *fresh));
  std::filesystem::remove_all(dir);
}

TEST(SeccompCache, WritableOrDamagedCacheFileIsIgnored) {
  if (geteuid() != 0) GTEST_SKIP() << "the cache trusts only root-owned files";
  char dir[] = "/tmp/stoke-seccomp-cache-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  ASSERT_TRUE(load_or_compile_seccomp_program(dir).ok());
  std::string file = only_file_in(dir);
  auto fresh = compile_default_seccomp_program();
  // An "allow everything" program planted in a world-writable cache file.
  sock_filter allow_all = BPF_STMT(BPF_RET | BPF_K, 0x7fff0000U);
  {
    std::ofstream f(file, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(&allow_all), sizeof allow_all);
  }
  chmod(file.c_str(), 0666);
  auto loaded = load_or_compile_seccomp_program(dir);
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(same_program(*loaded, *fresh)) << "a writable cache file was trusted";
  // Root-owned but a size that is no whole number of instructions.
  {
    std::ofstream f(file, std::ios::binary | std::ios::trunc);
    f.write("abc", 3);
  }
  chmod(file.c_str(), 0644);
  loaded = load_or_compile_seccomp_program(dir);
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(same_program(*loaded, *fresh)) << "a damaged cache file was trusted";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace stoke
