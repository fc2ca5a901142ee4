// open_private_file: the agent's own state files (the registry, the running
// journal, the activation log) are opened with exactly their mode, an older
// wider one tightened, and never through a symlink, a FIFO or a device.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>

#include "sandbox/base/file_util.h"
#include "tests/util/run_util.h"

namespace stoke {
namespace {

unsigned mode_of(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0;
}

TEST(PrivateFile, IsCreatedWithExactlyItsModeAndAWiderOneIsTightened) {
  test::TempDir dir;
  const mode_t old_umask = ::umask(0);  // the mode must not depend on the umask
  auto fresh = open_private_file(dir.file("new"), 0600);
  ::umask(old_umask);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message();
  EXPECT_EQ(mode_of(dir.file("new")), 0600u);
  std::ofstream(dir.file("wide")) << "kept";
  ASSERT_EQ(::chmod(dir.file("wide").c_str(), 0644), 0);
  auto wide = open_private_file(dir.file("wide"), 0600);
  ASSERT_TRUE(wide.ok()) << wide.error().message();
  EXPECT_EQ(mode_of(dir.file("wide")), 0600u);
  char buf[8] = {};
  EXPECT_EQ(::pread(wide->get(), buf, sizeof buf, 0), 4) << "opened for reading, contents kept";
  EXPECT_EQ(::pwrite(wide->get(), "x", 1, 4), 1) << "and for writing";
  EXPECT_EQ(::fcntl(wide->get(), F_GETFL) & O_NONBLOCK, 0);
}

TEST(PrivateFile, RefusesASymlinkAFifoAndADirectoryUnderTheName) {
  test::TempDir dir;
  std::ofstream(dir.file("target")) << "x";
  ASSERT_EQ(::chmod(dir.file("target").c_str(), 0644), 0);
  ASSERT_EQ(::symlink(dir.file("target").c_str(), dir.file("link").c_str()), 0);
  EXPECT_FALSE(open_private_file(dir.file("link"), 0600).ok());
  EXPECT_EQ(mode_of(dir.file("target")), 0644u) << "the symlink's target was touched";
  ASSERT_EQ(::mkfifo(dir.file("fifo").c_str(), 0644), 0);
  EXPECT_FALSE(open_private_file(dir.file("fifo"), 0600).ok()) << "a FIFO must be refused, not block";
  ASSERT_EQ(::mkdir(dir.file("dir").c_str(), 0755), 0);
  EXPECT_FALSE(open_private_file(dir.file("dir"), 0600).ok());
}

}  // namespace
}  // namespace stoke
