// The host uid table (agent/host_uids.h): one id per function, persisted,
// a deleted function's id never reused in the same run, and reused from an
// earlier run only once the range has no fresh id left.
#include <unistd.h>

#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "agent/host_uids.h"
#include "tests/util/run_util.h"

namespace stoke::agent {
namespace {

// A table path in a private temp dir, removed with the test.
class TablePath {
 public:
  const std::string& str() const { return path_; }
 private:
  test::TempDir dir_;
  std::string path_ = dir_.file("host_uids");
};

TEST(HostUids, OneIdPerFunctionKeptAcrossAReopen) {
  TablePath path;
  HostIdRange range{2'000'000, 100};
  uint32_t a, b;
  {
    auto t = HostUids::open(path.str(), range);
    ASSERT_TRUE(t.ok()) << t.error().message();
    a = (*t)->uid_for("a").value();
    b = (*t)->uid_for("b").value();
    EXPECT_NE(a, b);
    EXPECT_EQ((*t)->uid_for("a").value(), a);
  }
  auto t = HostUids::open(path.str(), range);
  ASSERT_TRUE(t.ok()) << t.error().message();
  EXPECT_EQ((*t)->uid_for("a").value(), a);
  EXPECT_EQ((*t)->uid_for("b").value(), b);
}

TEST(HostUids, ADeletedFunctionsIdIsNotReusedInTheSameRun) {
  TablePath path;
  auto t = HostUids::open(path.str(), HostIdRange{2'000'000, 2});
  ASSERT_TRUE(t.ok());
  uint32_t a = (*t)->uid_for("a").value();
  ASSERT_TRUE((*t)->release("a").ok());
  uint32_t again = (*t)->uid_for("a").value();
  EXPECT_NE(again, a);
  ASSERT_TRUE((*t)->release("a").ok());
  // Both ids retired in this run: the range is exhausted, not recycled.
  EXPECT_FALSE((*t)->uid_for("c").ok());
}

TEST(HostUids, IdsRetiredInAnEarlierRunAreReusedOnlyWhenNoFreshOneIsLeft) {
  TablePath path;
  HostIdRange range{2'000'000, 2};
  uint32_t a;
  {
    auto t = HostUids::open(path.str(), range);
    a = (*t)->uid_for("a").value();
    ASSERT_TRUE((*t)->release("a").ok());
  }
  auto t = HostUids::open(path.str(), range);
  uint32_t b = (*t)->uid_for("b").value();
  EXPECT_NE(b, a) << "a fresh id comes first";
  EXPECT_EQ((*t)->uid_for("c").value(), a) << "then one retired before this run";
}

TEST(HostUids, AForeignFileIsRefused) {
  TablePath path;
  std::ofstream(path.str()) << "something else\n";
  EXPECT_FALSE(HostUids::open(path.str(), HostIdRange{2'000'000, 10}).ok());
}

}  // namespace
}  // namespace stoke::agent
