// The zygote source's state with fake zygotes: which zygote serves an
// activation (its version, made from the function as it is now), which start
// result is still wanted, which ready zygote yields first, and which versions
// are never tried again.
#include "agent/zygote_pool.h"

#include <gtest/gtest.h>

namespace stoke::agent {
namespace {

struct FakeZygote {
  bool up = true;
  bool alive() const { return up; }
};
struct FakeInstance {};
struct FakeSpec {
  int memory = 0;
};
using Pool = ZygotePool<FakeZygote, FakeInstance, FakeSpec, int>;
using Clock = Pool::Clock;

TEST(ZygotePool, OnlyAReadyZygoteOfTheSameVersionAndGenerationServes) {
  Pool p;
  const auto t0 = Clock::now();
  p.starting("f", 2, 64, /*generation=*/5, FakeSpec{64}, t0);
  EXPECT_FALSE(p.ready_for("f", 2, 5)) << "still starting";
  EXPECT_TRUE(p.starting_or_alive("f", 2)) << "a second start would be a waste";
  p.find("f")->zygote = std::make_shared<FakeZygote>();
  EXPECT_TRUE(p.ready_for("f", 2, 5));
  EXPECT_FALSE(p.ready_for("f", 1, 5)) << "an older version's activation";
  EXPECT_FALSE(p.ready_for("f", 2, 6)) << "the function changed since the zygote was made";
  EXPECT_FALSE(p.ready_for("g", 2, 5));
  EXPECT_FALSE(p.starting_or_alive("f", 3)) << "a new version needs its own";
  p.find("f")->zygote->up = false;
  EXPECT_FALSE(p.starting_or_alive("f", 2)) << "a dead zygote is replaced";
}

TEST(ZygotePool, AStartThatWasRetiredOrReplacedMeanwhileIsNotWanted) {
  Pool p;
  const auto t0 = Clock::now();
  const uint64_t first = p.starting("f", 1, 64, 0, {}, t0).start;
  EXPECT_NE(p.waiting_for("f", first), nullptr);
  p.take("f");  // retired while it started
  EXPECT_EQ(p.waiting_for("f", first), nullptr);
  const uint64_t second = p.starting("f", 1, 64, 0, {}, t0).start;
  EXPECT_NE(first, second);
  EXPECT_EQ(p.waiting_for("f", first), nullptr) << "the old start must not fill the new entry";
  ASSERT_NE(p.waiting_for("f", second), nullptr);
  p.find("f")->zygote = std::make_shared<FakeZygote>();
  EXPECT_EQ(p.waiting_for("f", second), nullptr) << "already given a zygote";
}

TEST(ZygotePool, TheLeastRecentlyUsedReadyZygoteYieldsFirstAndStartingOnesNever) {
  Pool p;
  const auto t0 = Clock::now();
  EXPECT_FALSE(p.least_recently_used_ready().has_value());
  p.starting("old-but-starting", 1, 64, 0, {}, t0 - std::chrono::seconds(9));
  EXPECT_FALSE(p.least_recently_used_ready().has_value()) << "its start is already paid for";
  for (const char* fn : {"a", "b", "c"}) {
    p.starting(fn, 1, 64, 0, {}, t0);
    p.find(fn)->zygote = std::make_shared<FakeZygote>();
  }
  p.find("a")->last_used = t0 + std::chrono::seconds(3);
  p.find("b")->last_used = t0 + std::chrono::seconds(1);
  p.find("c")->last_used = t0 + std::chrono::seconds(2);
  EXPECT_EQ(p.least_recently_used_ready(), "b");
  p.take("b");
  EXPECT_EQ(p.least_recently_used_ready(), "c");
}

TEST(ZygotePool, TakingAnEntryHandsBackItsWaitersAndInstancesForkedAhead) {
  Pool p;
  auto& e = p.starting("f", 1, 64, 0, FakeSpec{64}, Clock::now());
  e.waiting = {1, 2};
  e.ahead.push_back(std::make_unique<FakeInstance>());
  e.ahead.push_back(std::make_unique<FakeInstance>());
  p.starting("g", 1, 64, 0, {}, Clock::now()).ahead.push_back(std::make_unique<FakeInstance>());
  EXPECT_EQ(p.forked_ahead(), 3u);
  auto taken = p.take("f");
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->waiting, (std::vector<int>{1, 2}));
  EXPECT_EQ(taken->ahead.size(), 2u);
  EXPECT_EQ(taken->spec.memory, 64);
  EXPECT_EQ(p.forked_ahead(), 1u);
  EXPECT_FALSE(p.take("f").has_value());
  EXPECT_EQ(p.functions(), (std::vector<std::string>{"g"}));
}

TEST(ZygotePool, ARefusedVersionIsNotTriedAgainUntilTheFunctionChanges) {
  Pool p;
  p.refuse("f", 1);
  p.refuse("f.x", 1);  // another function whose name starts the same
  EXPECT_TRUE(p.refused("f", 1));
  EXPECT_FALSE(p.refused("f", 2));
  // Deleted and created again: its version 1 is new code.
  p.forget_refusals("f");
  EXPECT_FALSE(p.refused("f", 1));
  EXPECT_TRUE(p.refused("f.x", 1));
}

}  // namespace
}  // namespace stoke::agent
