// The activation log: finished records appended before their reply and
// replayed into the registry at start. Records come back whole and in order
// after reopening; a torn or corrupt tail (a crash mid-append) ends the read
// without costing the records before it; clear() empties it.
#include "agent/activation_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "tests/util/run_util.h"

namespace stoke::agent {
namespace {

v1::Activation finished(int i, size_t result_bytes = 20) {
  v1::Activation a;
  a.set_activation_id("id-" + std::to_string(i));
  a.set_function("f");
  a.set_version(1);
  a.set_start_ms(1000 + i);
  a.set_end_ms(1001 + i);
  a.set_status(v1::SUCCESS);
  a.set_result_json("{\"r\":\"" + std::string(result_bytes, 'x') + "\"}");
  a.add_logs("line " + std::to_string(i));
  return a;
}

off_t size_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

TEST(ActivationLog, RecordsComeBackWholeAndInOrderAfterReopening) {
  test::TempDir dir;
  const std::string path = dir.file("activations.log");
  {
    auto log = ActivationLog::open(path);
    ASSERT_TRUE(log.ok()) << log.error().message();
    for (int i = 0; i < 50; ++i) ASSERT_TRUE((*log)->append(finished(i, i == 7 ? 1 << 20 : 20)).ok());
  }
  auto log = ActivationLog::open(path);
  ASSERT_TRUE(log.ok());
  auto all = (*log)->read_all();
  ASSERT_TRUE(all.ok()) << all.error().message();
  ASSERT_EQ(all->size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ((*all)[i].activation_id(), "id-" + std::to_string(i));
    EXPECT_EQ((*all)[i].SerializeAsString(), finished(i, i == 7 ? 1 << 20 : 20).SerializeAsString());
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "results and logs are the owner's alone";
  // Appends go after what was there.
  ASSERT_TRUE((*log)->append(finished(50)).ok());
  EXPECT_EQ((*log)->read_all()->size(), 51u);
  ASSERT_TRUE((*log)->clear().ok());
  EXPECT_EQ(size_of(path), 0);
  EXPECT_TRUE((*log)->read_all()->empty());
}

TEST(ActivationLog, ATornOrCorruptTailEndsTheReadAndKeepsWhatCameBefore) {
  std::string bytes;
  for (int i = 0; i < 3; ++i) bytes += encode_log_record(finished(i));
  const size_t whole = bytes.size();
  std::string torn = bytes + encode_log_record(finished(3)).substr(0, 30);  // cut mid-record
  size_t valid = 0;
  EXPECT_EQ(decode_log_records(torn, &valid).size(), 3u);
  EXPECT_EQ(valid, whole);
  std::string flipped = bytes + encode_log_record(finished(3));
  flipped[whole + 40] ^= 0x20;  // a byte of the 4th record's payload
  EXPECT_EQ(decode_log_records(flipped).size(), 3u);
  std::string garbage = bytes + std::string(100, 'z');
  EXPECT_EQ(decode_log_records(garbage).size(), 3u);
  EXPECT_TRUE(decode_log_records("").empty());
}

TEST(ActivationLog, AnAppendAfterATornOneWritesOverItAndBothNeighboursSurvive) {
  test::TempDir dir;
  const std::string path = dir.file("activations.log");
  auto log = ActivationLog::open(path);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->append(finished(0)).ok());
  // A crash-like torn write past the end (what a failed append can leave).
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::string part = encode_log_record(finished(99, 5000)).substr(0, 2000);
  ASSERT_EQ(::write(fd, part.data(), part.size()), static_cast<ssize_t>(part.size()));
  ::close(fd);
  ASSERT_TRUE((*log)->append(finished(1)).ok());  // over the torn bytes
  auto all = (*log)->read_all();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[1].activation_id(), "id-1");
}

}  // namespace
}  // namespace stoke::agent
