#include "tests/util/isolation_checks.h"

#include <linux/securebits.h>

#include <string>

#include <gtest/gtest.h>

namespace stoke::test {

void expect_isolation_baseline(const nlohmann::json& r) {
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"})
    EXPECT_EQ(std::stoull(r.value(set, std::string("ff")), nullptr, 16), 0u) << set;
  EXPECT_EQ(r["NoNewPrivs"], 1);
  EXPECT_EQ(r["Seccomp"], 2);
  // Root may not regain capabilities through execve or a uid change, locked.
  const int locked = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
                     SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
  EXPECT_EQ(r.value("securebits", 0) & locked, locked) << "securebits " << r.value("securebits", 0);
  EXPECT_EQ(r["own_session"], true);
  EXPECT_EQ(r["interfaces"], nlohmann::json::array({"lo"}));
  EXPECT_EQ(r["root_write"], "EROFS");
  EXPECT_EQ(r["etc_shadow"], false);
  EXPECT_EQ(r["root_home"], false);
  EXPECT_FALSE(r["env"].contains("STOKE_TEST_SECRET"));
  for (const char* call : {"mount", "unshare", "setns", "bpf", "ptrace", "keyctl", "clone_newuser"})
    EXPECT_EQ(r["denied"].value(call, std::string("?")), "EPERM") << call;
  EXPECT_EQ(r["denied"].value("clone3", std::string("?")), "ENOSYS");
  // The function's own process is pid 1; the probe, its child, sees only them.
  EXPECT_LE(r["visible_pids"].size(), 3u) << r["visible_pids"].dump();
}

}  // namespace stoke::test
