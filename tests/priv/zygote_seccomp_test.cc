// The zygotes' seccomp profiles, loaded for real in a forked child (as root,
// so a refusal is the filter's and not the kernel's): a function zygote, and
// so the tenant's import-time code, can make no namespace and mount nothing;
// its maker may clone a user namespace; an instance's default filter,
// stacked on top, takes setns and unshare away again.
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include <gtest/gtest.h>

#include "sandbox/seccomp_profile.h"

namespace stoke {
namespace {

// Runs `body` in a forked child after loading `profiles` in order (stacked);
// returns the child's exit code (body's return value), or -1.
int in_child_with(const std::vector<SeccompProfile>& profiles, int (*body)()) {
  std::vector<sock_fprog> progs;
  for (SeccompProfile p : profiles) {
    auto prog = seccomp_program(p);
    if (!prog.ok()) return -1;
    progs.push_back(prog.value()->fprog());
  }
  pid_t pid = fork();
  if (pid == 0) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(101);
    for (auto& p : progs)
      if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p, 0, 0) != 0) _exit(102);
    _exit(body());
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// 0: the call was refused with EPERM; 1: it succeeded; 2: another error.
int outcome(long rc) { return rc == 0 ? 1 : errno == EPERM ? 0 : 2; }

// clone(CLONE_NEWUSER), as a maker makes an instance's namespaces.
int clone_new_user() {
  long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) _exit(0);
  if (pid < 0) return errno == EPERM ? 0 : 2;
  waitpid(static_cast<pid_t>(pid), nullptr, 0);
  return 1;
}

TEST(ZygoteSeccomp, FunctionZygoteMakesNoNamespaceAndMountsNothingEvenAsRoot) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (the kernel would allow these to root)";
  const std::vector<SeccompProfile> zygote = {SeccompProfile::kFunctionZygote};
  EXPECT_EQ(in_child_with(zygote, [] { return outcome(unshare(CLONE_NEWUSER)); }), 0);
  EXPECT_EQ(in_child_with(zygote, [] { return outcome(unshare(CLONE_NEWNS)); }), 0);
  EXPECT_EQ(in_child_with(zygote, [] { return outcome(unshare(CLONE_NEWUTS)); }), 0);
  EXPECT_EQ(in_child_with(zygote, clone_new_user), 0) << "clone with CLONE_NEWUSER must be refused";
  EXPECT_EQ(in_child_with(zygote, [] { return outcome(syscall(SYS_mount, "none", "/", "tmpfs", 0, 0)); }), 0);
  EXPECT_EQ(in_child_with(zygote, [] { return outcome(syscall(SYS_sethostname, "x", 1)); }), 0);
  // What its instances need: a cgroup namespace of their own.
  EXPECT_EQ(in_child_with(zygote, [] { return outcome(unshare(CLONE_NEWCGROUP)); }), 1);
}

TEST(ZygoteSeccomp, MakerMayCloneAUserNamespace) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  int r = in_child_with({SeccompProfile::kZygoteMaker}, clone_new_user);
  EXPECT_EQ(r, 1) << "the maker clones each instance's user namespace";
}

TEST(ZygoteSeccomp, DefaultFilterStackedOnTheZygoteFiltersRefusesNamespacesAgain) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  EXPECT_EQ(in_child_with({SeccompProfile::kZygoteMaker, SeccompProfile::kFunctionZygote, SeccompProfile::kDefault},
                          [] { return outcome(unshare(CLONE_NEWCGROUP)); }),
            0);
  EXPECT_EQ(in_child_with({SeccompProfile::kFunctionZygote, SeccompProfile::kDefault},
                          [] { return outcome(syscall(SYS_setns, -1, 0)); }),
            0);
}

}  // namespace
}  // namespace stoke
