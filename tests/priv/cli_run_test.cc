// `stoke run` refusals that need a particular caller.
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/util/run_util.h"

namespace stoke {
namespace {

TEST(StokeRunPrivileges, WithoutRootItSaysSoInOneSentenceAndExits125) {
  std::string why = test::priv_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t child = fork();
  if (child == 0) {
    dup2(out[1], 2);
    close(out[0]);
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(99);
    execl(test::stoke_bin().c_str(), "stoke", "run", "--", "/bin/true", nullptr);
    _exit(98);
  }
  close(out[1]);
  std::string err;
  char buf[512];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) err.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 125) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find("root"), std::string::npos) << err;
}

}  // namespace
}  // namespace stoke
