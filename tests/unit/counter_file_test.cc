// CounterFile, the kept-open counter of a cgroup: a read is the whole file
// however long it is (one pread when it fits the buffer, read on by offset
// when it does not), and it is produced anew each time. Regular files stand
// in for cgroupfs here; the privileged cgroup suites read the real ones.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "sandbox/cgroup_internal.h"
#include "tests/util/run_util.h"

namespace stoke::cgroup_internal {
namespace {

std::string pattern(size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>('a' + i % 26));
  return s;
}

void write_whole(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc | std::ios::binary) << text;
}

TEST(CounterFile, ReadsFilesShorterEqualAndLongerThanItsBufferWhole) {
  test::TempDir dir;
  for (size_t n : {0ul, 1ul, 20ul, 4095ul, 4096ul, 4097ul, 8192ul, 10000ul}) {
    std::string path = dir.file("counter" + std::to_string(n));
    write_whole(path, pattern(n));
    CounterFile f(path, false);
    auto text = f.read();
    ASSERT_TRUE(text.ok()) << text.error().message();
    EXPECT_EQ(*text, pattern(n)) << n << " bytes";
  }
}

TEST(CounterFile, ReadAgainSeesTheFileAsItIsNowThroughTheSameFd) {
  test::TempDir dir;
  std::string path = dir.file("usage");
  write_whole(path, "123\n");
  CounterFile f(path, true);
  auto first = f.read_u64();
  ASSERT_TRUE(first.ok()) << first.error().message();
  EXPECT_EQ(*first, 123u);
  ASSERT_TRUE(f.write("4567890\n").ok());  // pwrite at 0 through the kept fd
  auto second = f.read_u64();
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_EQ(*second, 4567890u);
}

TEST(CounterFile, AbsentFileIsENOENTAndStaysSo) {
  test::TempDir dir;
  CounterFile f(dir.file("pids.peak"), false);
  auto r = f.read();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().err, ENOENT);
  write_whole(dir.file("pids.peak"), "7\n");  // the kernel does not grow files later: not retried
  EXPECT_FALSE(f.read().ok());
}

}  // namespace
}  // namespace stoke::cgroup_internal
