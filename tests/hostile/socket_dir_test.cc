// The API socket's directory as an attack surface: a stoked asked to listen in
// a directory others can write refuses to start (they could swap the path for
// a symlink between bind and chown/chmod, or squat it while the agent is
// down), and in a safe directory the socket appears with its final mode, with
// no staging directory left behind.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/hostile/bystander.h"
#include "tests/util/run_util.h"

namespace stoke {
namespace {

// Runs stoked against `socket_path` and returns how it ended (it is expected
// to refuse before serving; the timeout stops it otherwise).
test::RunResult start_stoked(const test::TempDir& dir, const std::string& socket_path) {
  std::string config = dir.file("stoked.conf");
  std::ofstream(config) << "state_dir: \"" << dir.file("state") << "\"\nsocket_path: \"" << socket_path
                        << "\"\nzygotes { enabled: false }\ncheckpoints: false\npools { python: 0 node: 0 }\n";
  return test::run_command({test::stoked_bin(), "--config", config}, "", 5000);
}

TEST(SocketDirectory, AgentRefusesToListenInADirectoryOthersCanWrite) {
  if (geteuid() != 0) GTEST_SKIP() << "stoked runs as root";
  test::TempDir dir;
  for (mode_t mode : {mode_t(0777), mode_t(01777), mode_t(0775)}) {
    std::string shared = dir.file("shared");
    std::filesystem::create_directory(shared);
    ASSERT_EQ(chmod(shared.c_str(), mode), 0);
    auto r = start_stoked(dir, shared + "/stoke.sock");
    EXPECT_FALSE(r.timed_out) << "stoked served from a directory of mode " << std::oct << mode;
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find("unsafe socket directory"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("writable by others"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(shared + "/stoke.sock"));
    std::filesystem::remove_all(shared);
  }
}

TEST(SocketDirectory, AgentRefusesADirectoryOwnedByAnotherUser) {
  if (geteuid() != 0) GTEST_SKIP() << "stoked runs as root";
  test::TempDir dir;
  std::string theirs = dir.file("theirs");
  std::filesystem::create_directory(theirs);
  ASSERT_EQ(chown(theirs.c_str(), 65534, 65534), 0);
  auto r = start_stoked(dir, theirs + "/stoke.sock");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("not owned by root"), std::string::npos) << r.err;
}

// A symlink in the socket's path that another user owns can be re-pointed
// between the checks and the bind (found in review after the first fix).
TEST(SocketDirectory, AgentRefusesASymlinkInThePathOwnedByAnotherUser) {
  if (geteuid() != 0) GTEST_SKIP() << "stoked runs as root";
  test::TempDir dir;
  std::string real = dir.file("real");
  std::filesystem::create_directory(real);
  ASSERT_EQ(chmod(real.c_str(), 0755), 0);
  std::string link = dir.file("link");
  std::filesystem::create_directory_symlink(real, link);
  ASSERT_EQ(lchown(link.c_str(), 65534, 65534), 0);
  auto r = start_stoked(dir, link + "/stoke.sock");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("symlink owned by uid 65534"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(real + "/stoke.sock"));
  // The same symlink owned by root is fine.
  ASSERT_EQ(lchown(link.c_str(), 0, 0), 0);
  std::string config = dir.file("stoked.conf");
  auto ok = test::run_command({test::stoked_bin(), "--config", config}, "", 1500);
  EXPECT_TRUE(ok.timed_out) << "stoked did not serve through a root-owned symlink: " << ok.err;
}

class SocketPlacement : public test::AgentTest {
 protected:
  std::string extra_config() override { return "socket_group: \"root\"\nzygotes { enabled: false }\ncheckpoints: false\n"; }
};

TEST_F(SocketPlacement, SocketAppearsWithItsFinalModeAndNoStagingDirectoryRemains) {
  struct stat st;
  ASSERT_EQ(lstat(agent_->socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 0u);
  std::string dir = agent_->socket().substr(0, agent_->socket().rfind('/'));
  for (auto& e : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().rfind(".stoke-", 0), std::string::npos)
        << "staging directory left behind: " << e.path();
  // And the agent serves on it.
  test::Bystander bystander(*agent_);
  auto reference = bystander.measure(20);
  EXPECT_EQ(reference.failures, 0u);
}

}  // namespace
}  // namespace stoke
