#include "sandbox/mount_plan.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "rootfs/lean_rootfs.h"

namespace stoke {
namespace {

SandboxSpec spec_with_bind(const std::string& target, bool writable) {
  SandboxSpec s;
  s.argv = {"/bin/true"};
  s.binds.push_back({"/usr/share", target, writable});
  return s;
}

size_t index_of(const MountPlan& plan, const std::string& description) {
  for (size_t i = 0; i < plan.ops().size(); ++i)
    if (plan.describe(i) == description) return i;
  return SIZE_MAX;
}

TEST(MountPlan, RootIsMountedFirstAndMadeReadOnlyLast) {
  auto plan = build_mount_plan(spec_with_bind("/data", false), "/R", host_lean_rootfs());
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  const auto& ops = plan->ops();
  ASSERT_GE(ops.size(), 3u);
  EXPECT_EQ(ops.front().kind, MountOp::kMountTmpfs);
  EXPECT_STREQ(ops.front().target, "/R");
  EXPECT_EQ(ops.back().kind, MountOp::kMakeReadOnly);
  EXPECT_STREQ(ops.back().target, "/R");
}

TEST(MountPlan, UserBindIsReadOnlyUnlessWritable) {
  auto ro = build_mount_plan(spec_with_bind("/data", false), "/R", {});
  ASSERT_TRUE(ro.ok());
  EXPECT_NE(index_of(*ro, "make /data read-only"), SIZE_MAX);
  auto rw = build_mount_plan(spec_with_bind("/data", true), "/R", {});
  ASSERT_TRUE(rw.ok());
  EXPECT_EQ(index_of(*rw, "make /data read-only"), SIZE_MAX);
  EXPECT_NE(index_of(*rw, "bind /usr/share at /data"), SIZE_MAX);
}

TEST(MountPlan, DeepBindTargetGetsItsParentsCreatedFirst) {
  auto plan = build_mount_plan(spec_with_bind("/a/b/c", false), "/R", {});
  ASSERT_TRUE(plan.ok());
  size_t a = index_of(*plan, "mkdir /a"), ab = index_of(*plan, "mkdir /a/b"), bind = index_of(*plan, "bind /usr/share at /a/b/c");
  ASSERT_NE(bind, SIZE_MAX);
  EXPECT_LT(a, ab);
  EXPECT_LT(ab, bind);
}

TEST(MountPlan, MissingBindSourceFailsBeforeAnythingRuns) {
  SandboxSpec s;
  s.argv = {"/bin/true"};
  s.binds.push_back({"/does/not/exist", "/x", false});
  auto plan = build_mount_plan(s, "/R", {});
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.error().message().find("/does/not/exist"), std::string::npos);
}

TEST(MountPlan, ProcIsMountedWithPidSubsetOnly) {
  auto plan = build_mount_plan(spec_with_bind("/data", false), "/R", {});
  ASSERT_TRUE(plan.ok());
  auto it = std::find_if(plan->ops().begin(), plan->ops().end(), [](const MountOp& op) { return op.kind == MountOp::kMountProc; });
  ASSERT_NE(it, plan->ops().end());
  EXPECT_STREQ(it->data, "subset=pid");
}

TEST(MountPlan, TmpIsSizedFromTheSpec) {
  SandboxSpec s;
  s.argv = {"/bin/true"};
  s.tmp_size_bytes = 8u << 20;
  auto plan = build_mount_plan(s, "/R", {});
  ASSERT_TRUE(plan.ok());
  auto it = std::find_if(plan->ops().begin(), plan->ops().end(),
                         [](const MountOp& op) { return op.kind == MountOp::kMountTmpfs && std::string(op.target) == "/R/tmp"; });
  ASSERT_NE(it, plan->ops().end());
  EXPECT_NE(std::string(it->data).find("size=8388608"), std::string::npos);
}

TEST(LeanRootfs, HasNoHostSecretsAndGeneratesIdentityFiles) {
  auto entries = host_lean_rootfs();
  bool passwd = false;
  for (const auto& e : entries) {
    EXPECT_NE(e.path, "/etc/shadow");
    EXPECT_NE(e.path, "/etc/gshadow");
    EXPECT_NE(e.path.rfind("/home", 0), 0u);
    EXPECT_NE(e.path.rfind("/root", 0), 0u);
    EXPECT_NE(e.path.rfind("/var", 0), 0u);
    if (e.path == "/etc/passwd") {
      passwd = true;
      EXPECT_EQ(e.kind, RootfsEntry::Kind::kFile) << "passwd must be generated, not the host's";
    }
  }
  EXPECT_TRUE(passwd);
}

TEST(LeanRootfs, MirrorsHostSymlinksAndSkipsMissingPaths) {
  char dir[] = "/tmp/stoke-lean-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string root = dir;
  ASSERT_EQ(mkdir((root + "/usr").c_str(), 0755), 0);
  ASSERT_EQ(symlink("usr/bin", (root + "/bin").c_str()), 0);
  auto entries = host_lean_rootfs({.hostname = "h", .host_root = root});
  bool usr = false, bin = false, lib = false;
  for (const auto& e : entries) {
    usr |= e.path == "/usr" && e.kind == RootfsEntry::Kind::kBindDir;
    bin |= e.path == "/bin" && e.kind == RootfsEntry::Kind::kSymlink && e.source == "usr/bin";
    lib |= e.path == "/lib";
  }
  EXPECT_TRUE(usr);
  EXPECT_TRUE(bin);
  EXPECT_FALSE(lib);
  unlink((root + "/bin").c_str());
  rmdir((root + "/usr").c_str());
  rmdir(root.c_str());
}

}  // namespace
}  // namespace stoke
