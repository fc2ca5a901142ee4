// The prewarm source's policy: how many to start, which one serves, which
// one yields its memory. Entries carry no instance: the pool never looks inside one.
#include "agent/prewarm_pool.h"

#include <gtest/gtest.h>

namespace stoke::agent {
namespace {

using Clock = PrewarmPool::Clock;
const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);

PrewarmPool::Entry entry(int since_s, uint64_t memory = 1) {
  return PrewarmPool::Entry{nullptr, memory, t0 + std::chrono::seconds(since_s)};
}

TEST(PrewarmPool, ThoseStartingCountTowardsTheTargetUntilTheyAreDone) {
  PrewarmPool pool;
  EXPECT_EQ(pool.missing(v1::PYTHON, 2), 2u);
  pool.starting(v1::PYTHON);
  EXPECT_EQ(pool.missing(v1::PYTHON, 2), 1u) << "one on its way";
  pool.starting(v1::PYTHON);
  EXPECT_EQ(pool.missing(v1::PYTHON, 2), 0u);
  pool.started(v1::PYTHON, entry(0));
  EXPECT_EQ(pool.missing(v1::PYTHON, 2), 0u) << "pooled now";
  pool.started(v1::PYTHON, std::nullopt);
  EXPECT_EQ(pool.missing(v1::PYTHON, 2), 1u) << "it did not come up: start another";
  EXPECT_EQ(pool.missing(v1::NODE, 2), 2u) << "runtimes have their own";
  EXPECT_EQ(pool.missing(v1::PYTHON, 0), 0u);
}

TEST(PrewarmPool, TheNewestServesAndTheOldestYieldsItsMemory) {
  PrewarmPool pool;
  for (int i = 0; i < 3; ++i) {
    pool.starting(v1::PYTHON);
    pool.started(v1::PYTHON, entry(i, static_cast<uint64_t>(i)));
  }
  auto newest = pool.take_newest(v1::PYTHON);
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(newest->memory_bytes, 2u);
  auto oldest = pool.take_oldest(v1::PYTHON);
  ASSERT_TRUE(oldest.has_value());
  EXPECT_EQ(oldest->memory_bytes, 0u);
  EXPECT_EQ(pool.ready(v1::PYTHON), 1u);
  EXPECT_FALSE(pool.take_newest(v1::NODE).has_value());
  EXPECT_FALSE(pool.take_oldest(v1::NODE).has_value());
}

TEST(PrewarmPool, AnEntryPutBackServesNextAgain) {
  PrewarmPool pool;
  pool.started(v1::NODE, entry(0, 7));
  pool.started(v1::NODE, entry(1, 8));
  auto taken = pool.take_newest(v1::NODE);
  ASSERT_TRUE(taken.has_value());
  pool.put_back(v1::NODE, std::move(*taken));  // its taker could not reserve the memory
  EXPECT_EQ(pool.take_newest(v1::NODE)->memory_bytes, 8u);
}

TEST(PrewarmPool, StoppingTakesEveryEntryOfEveryRuntime) {
  PrewarmPool pool;
  pool.started(v1::PYTHON, entry(0));
  pool.started(v1::NODE, entry(1));
  pool.started(v1::NODE, entry(2));
  EXPECT_EQ(pool.size(), 3u);
  size_t seen = 0;
  pool.for_each([&](v1::Runtime, const PrewarmPool::Entry&) { ++seen; });
  EXPECT_EQ(seen, 3u);
  EXPECT_EQ(pool.take_all().size(), 3u);
  EXPECT_EQ(pool.size(), 0u);
  EXPECT_EQ(pool.ready(v1::NODE), 0u);
}

}  // namespace
}  // namespace stoke::agent
