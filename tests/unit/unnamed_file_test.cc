// Unnamed temp files (checkpoint dumps): O_TMPFILE where the filesystem has
// it, and the named-then-unlinked fallback where it has not (overlayfs before
// Linux 6.6, the state dir in most containers; issue 12). Both leave no name
// in the directory, are private to the agent and are usable for reading and
// writing. The overlay case itself runs in the v2 VM (scripts/test-v2).
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "sandbox/base/file_util.h"
#include "tests/util/run_util.h"

namespace stoke {
namespace {

size_t entries_in(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++n;
  }
  return n;
}

void expect_private_and_usable(int fd) {
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_nlink, 0u) << "the file has a name";
  ASSERT_EQ(::pwrite(fd, "dump", 4, 0), 4);
  char back[4] = {};
  ASSERT_EQ(::pread(fd, back, 4, 0), 4);
  EXPECT_EQ(std::string(back, 4), "dump");
}

TEST(UnnamedFile, LeavesNoNameInItsDirectoryAndIsPrivate) {
  test::TempDir dir;
  auto fd = unnamed_file_in(dir.path());
  ASSERT_TRUE(fd.ok()) << fd.error().message();
  expect_private_and_usable(fd->get());
  EXPECT_EQ(entries_in(dir.path()), 0u);
}

TEST(UnnamedFile, FallbackWithoutOTmpfileAlsoLeavesNoName) {
  test::TempDir dir;
  auto fd = named_then_unlinked_file_in(dir.path());
  ASSERT_TRUE(fd.ok()) << fd.error().message();
  expect_private_and_usable(fd->get());
  EXPECT_EQ(entries_in(dir.path()), 0u);
}

TEST(UnnamedFile, AMissingDirectoryIsAClearError) {
  auto fd = unnamed_file_in("/nonexistent-stoke-dir");
  ASSERT_FALSE(fd.ok());
  EXPECT_NE(fd.error().message().find("/nonexistent-stoke-dir"), std::string::npos) << fd.error().message();
}

}  // namespace
}  // namespace stoke
