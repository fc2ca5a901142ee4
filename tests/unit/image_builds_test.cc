// The restore source's bookkeeping: one build per function at a time, its
// waiters handed back in order, refused versions not tried again (until the
// function changes), image files remembered as checked by inode.
#include "agent/image_builds.h"

#include <gtest/gtest.h>

namespace stoke::agent {
namespace {

TEST(ImageBuilds, OneBuildPerFunctionAtATimeAndItsWaitersComeBackInOrder) {
  ImageBuilds<int> b;
  EXPECT_TRUE(b.may_build("f", 1));
  EXPECT_FALSE(b.wait("f", 1)) << "nothing to wait for";
  b.started("f", 1);
  EXPECT_FALSE(b.may_build("f", 1));
  EXPECT_FALSE(b.may_build("f", 2)) << "one at a time per function, whatever the version";
  EXPECT_TRUE(b.may_build("g", 1));
  EXPECT_TRUE(b.building("f", 1));
  EXPECT_FALSE(b.building("f", 2));
  EXPECT_TRUE(b.wait("f", 10));
  EXPECT_TRUE(b.wait("f", 11));
  EXPECT_EQ(b.finished("f"), (std::vector<int>{10, 11}));
  EXPECT_TRUE(b.finished("f").empty());
  EXPECT_TRUE(b.may_build("f", 2));
  EXPECT_EQ(b.builds(), 0u);
}

TEST(ImageBuilds, ARefusedVersionIsNotTriedAgainUntilTheFunctionChanges) {
  ImageBuilds<int> b;
  b.started("f", 1);
  b.finished("f");
  b.refuse("f", 1, "uses threads");
  b.refuse("f.x", 1, "another function, whose name starts the same");
  EXPECT_TRUE(b.refused("f", 1));
  EXPECT_FALSE(b.may_build("f", 1));
  EXPECT_TRUE(b.may_build("f", 2));
  // Deleted and created again: version 1 is new code.
  b.forget_refusals("f");
  EXPECT_FALSE(b.refused("f", 1));
  EXPECT_TRUE(b.may_build("f", 1));
  EXPECT_TRUE(b.refused("f.x", 1)) << "only that function's refusals go";
}

TEST(ImageBuilds, CheckedImageFilesAreRememberedByInodeUntilForgotten) {
  ImageBuilds<int> b;
  EXPECT_FALSE(b.verified("/img/a\nkey").has_value());
  b.set_verified("/img/a\nkey", 1234);
  EXPECT_EQ(b.verified("/img/a\nkey").value(), 1234u);
  b.forget_verified("/img/a\nkey");
  EXPECT_FALSE(b.verified("/img/a\nkey").has_value());
}

}  // namespace
}  // namespace stoke::agent
