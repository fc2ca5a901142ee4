// The API server's limits as pure decisions: connection admission per uid and
// in total, the output-queue rule, read back-pressure, and which directories
// may hold the API socket.
#include "agent/server_limits.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

namespace stoke::agent {
namespace {

using Admission = ConnectionCounter::Admission;

TEST(ConnectionCounter, OneUidIsStoppedAtItsCapWhileOthersStillGetIn) {
  ConnectionCounter c(10, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.admit(1000), Admission::kAdmitted);
  EXPECT_EQ(c.admit(1000), Admission::kOverPerUid);
  EXPECT_EQ(c.of(1000), 3u);
  EXPECT_EQ(c.admit(0), Admission::kAdmitted);
  EXPECT_EQ(c.total(), 4u);
}

TEST(ConnectionCounter, TotalCapAppliesAcrossUidsAndReleaseFreesASlot) {
  ConnectionCounter c(4, 3);
  for (uid_t u : {1u, 2u, 3u, 4u}) EXPECT_EQ(c.admit(u), Admission::kAdmitted);
  EXPECT_EQ(c.admit(5), Admission::kOverTotal);
  EXPECT_EQ(c.of(5), 0u) << "a refused uid must not be counted";
  c.release(2);
  EXPECT_EQ(c.of(2), 0u);
  EXPECT_EQ(c.admit(5), Admission::kAdmitted);
  EXPECT_EQ(c.total(), 4u);
}

TEST(ConnectionCounter, ReleasingAnUnknownUidChangesNothing) {
  ConnectionCounter c(4, 2);
  EXPECT_EQ(c.admit(7), Admission::kAdmitted);
  c.release(8);
  EXPECT_EQ(c.total(), 1u);
  c.release(7);
  c.release(7);
  EXPECT_EQ(c.total(), 0u);
}

TEST(OutputFits, OneReplyOfAnySizeAlwaysGoesAndMoreOnlyWithinTheCap) {
  EXPECT_TRUE(output_fits(0, 64u << 20, 1u << 20));
  EXPECT_TRUE(output_fits(100, 900, 1000));
  EXPECT_FALSE(output_fits(100, 901, 1000));
  EXPECT_FALSE(output_fits(1, 1000, 1000));
}

TEST(ReadPaused, PausedWhileDecodedFramesWaitOrTheInFlightCapIsReached) {
  EXPECT_FALSE(read_paused(0, 0, 32));
  EXPECT_FALSE(read_paused(0, 31, 32));
  EXPECT_TRUE(read_paused(0, 32, 32));
  EXPECT_TRUE(read_paused(1, 0, 32));
}

TEST(SocketDirProblem, RootOwnedDirectoryOnlyRootWritesIsFine) {
  EXPECT_FALSE(socket_dir_problem("/run/stoke", 0, S_IFDIR | 0711, true));
  EXPECT_FALSE(socket_dir_problem("/run/stoke", 0, S_IFDIR | 0755, true));
  EXPECT_FALSE(socket_dir_problem("/tmp/stoke-x", 0, S_IFDIR | 0700, true));
}

TEST(SocketDirProblem, SocketDirectoryWritableByOthersIsRefusedEvenWhenSticky) {
  auto sticky = socket_dir_problem("/tmp", 0, S_IFDIR | 01777, true);
  ASSERT_TRUE(sticky);
  EXPECT_NE(sticky->find("writable by others"), std::string::npos) << *sticky;
  EXPECT_TRUE(socket_dir_problem("/srv/sock", 0, S_IFDIR | 0775, true)) << "group-writable";
}

TEST(SocketDirProblem, StickyWorldWritableAncestorIsFineButNotANonStickyOne) {
  EXPECT_FALSE(socket_dir_problem("/tmp", 0, S_IFDIR | 01777, false));
  auto open = socket_dir_problem("/scratch", 0, S_IFDIR | 0777, false);
  ASSERT_TRUE(open);
  EXPECT_NE(open->find("not sticky"), std::string::npos) << *open;
}

TEST(SocketDirProblem, DirectoryOwnedBySomeoneElseIsRefused) {
  auto why = socket_dir_problem("/home/alice/run", 1000, S_IFDIR | 0700, true);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("not owned by root"), std::string::npos) << *why;
  EXPECT_TRUE(socket_dir_problem("/home/alice", 1000, S_IFDIR | 0755, false));
}

}  // namespace
}  // namespace stoke::agent
