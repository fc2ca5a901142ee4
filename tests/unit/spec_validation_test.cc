#include <gtest/gtest.h>

#include "sandbox/spec.h"

namespace stoke {
namespace {

SandboxSpec valid_spec() {
  SandboxSpec s;
  s.argv = {"/bin/true"};
  s.env = default_sandbox_env();
  s.host_uid = s.host_gid = 1'100'123;
  return s;
}

TEST(SpecValidation, DefaultSpecWithCommandIsValid) { EXPECT_TRUE(validate_spec(valid_spec()).ok()); }

TEST(SpecValidation, RejectsEmptyCommand) {
  auto s = valid_spec();
  s.argv.clear();
  EXPECT_FALSE(validate_spec(s).ok());
}

TEST(SpecValidation, RejectsHostRootOrSystemIds) {
  auto s = valid_spec();
  s.host_uid = 0;
  EXPECT_FALSE(validate_spec(s).ok());
  s.host_uid = 1'100'123;
  s.host_gid = 100;
  EXPECT_FALSE(validate_spec(s).ok());
}

TEST(SpecValidation, RejectsBindTargetsInsideSystemPaths) {
  for (const char* target : {"/usr/local/x", "/etc", "/etc/passwd", "/proc/x", "/dev/sda", "/", "/lib"}) {
    auto s = valid_spec();
    s.binds.push_back({"/srv", target, false});
    EXPECT_FALSE(validate_spec(s).ok()) << target;
  }
}

TEST(SpecValidation, AcceptsBindTargetsElsewhereIncludingLookalikes) {
  for (const char* target : {"/code", "/data/in", "/usrdata", "/tmp/x", "/etcetera"}) {
    auto s = valid_spec();
    s.binds.push_back({"/srv", target, false});
    EXPECT_TRUE(validate_spec(s).ok()) << target << ": " << validate_spec(s).error().message();
  }
}

TEST(SpecValidation, RejectsRelativeOrDotDotPaths) {
  for (const char* p : {"code", "/a/../etc", "/a/./b", "/a//b", "/a/"}) {
    auto s = valid_spec();
    s.binds.push_back({"/srv", p, false});
    EXPECT_FALSE(validate_spec(s).ok()) << p;
    auto w = valid_spec();
    w.workdir = p;
    EXPECT_FALSE(validate_spec(w).ok()) << p;
  }
}

TEST(SpecValidation, RejectsDuplicateBindTargets) {
  auto s = valid_spec();
  s.binds.push_back({"/srv", "/a", false});
  s.binds.push_back({"/opt", "/a", true});
  EXPECT_FALSE(validate_spec(s).ok());
}

TEST(SpecValidation, RejectsMalformedEnvAndHostname) {
  auto s = valid_spec();
  s.env.push_back("NOEQUALS");
  EXPECT_FALSE(validate_spec(s).ok());
  auto h = valid_spec();
  h.hostname = "bad host";
  EXPECT_FALSE(validate_spec(h).ok());
  h.hostname = std::string(65, 'a');
  EXPECT_FALSE(validate_spec(h).ok());
}

TEST(SpecValidation, RejectsDuplicateOrOutOfRangeFdTargets) {
  auto s = valid_spec();
  s.fds.push_back({5, 1});
  EXPECT_FALSE(validate_spec(s).ok());
  auto t = valid_spec();
  t.fds.push_back({5, 1000});
  EXPECT_FALSE(validate_spec(t).ok());
}

TEST(SpecValidation, RejectsTinyMemoryLimit) {
  auto s = valid_spec();
  s.limits.memory_bytes = 1024;
  EXPECT_FALSE(validate_spec(s).ok());
}

}  // namespace
}  // namespace stoke
