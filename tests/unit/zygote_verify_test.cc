// The agent's reading of a zygote fork's /proc/<pid>/status and its bound on
// the nesting of a zygote's JSON answers (agent/zygote_verify.h).
#include <string>

#include <gtest/gtest.h>

#include "agent/zygote_verify.h"

namespace stoke::agent {
namespace {

TEST(ZygoteVerify, ParsesTheFieldsAForkIsCheckedOn) {
  ProcessStatus st = parse_process_status(
      "Name:\tpython3\nNSpid:\t4711\t2\t1\nUid:\t1164512\t1164512\t1164512\t1164512\n"
      "Gid:\t1164512\t1164512\t1164512\t1164512\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n"
      "CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"
      "Seccomp:\t2\nSeccomp_filters:\t3\n");
  EXPECT_EQ(st.ns_pids, (std::vector<pid_t>{4711, 2, 1}));
  EXPECT_EQ(st.uids, (std::vector<uint32_t>(4, 1164512)));
  EXPECT_EQ(st.cap_eff, 0u);
  EXPECT_EQ(st.cap_bnd, 0u);
  EXPECT_EQ(st.no_new_privs, 1);
  EXPECT_EQ(st.seccomp, 2);
  EXPECT_EQ(st.seccomp_filters, 3);
}

TEST(ZygoteVerify, MissingFieldsReadAsFailingValues) {
  ProcessStatus st = parse_process_status("Name:\tx\nCapEff:\t00000000002411c0\n");
  EXPECT_EQ(st.cap_eff, 0x2411c0u);
  EXPECT_NE(st.cap_bnd, 0u);  // absent: never taken as "no capabilities"
  EXPECT_EQ(st.no_new_privs, -1);
  EXPECT_EQ(st.seccomp, -1);
  EXPECT_TRUE(st.ns_pids.empty());
}

}  // namespace
}  // namespace stoke::agent
