#include "tests/util/isolation_checks.h"

#include <string>

#include <gtest/gtest.h>

namespace stoke::test {

void expect_isolation_baseline(const nlohmann::json& r) {
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"})
    EXPECT_EQ(std::stoull(r.value(set, std::string("ff")), nullptr, 16), 0u) << set;
  EXPECT_EQ(r["NoNewPrivs"], 1);
  EXPECT_EQ(r["Seccomp"], 2);
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
