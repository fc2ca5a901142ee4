// Which platform-owned memory yields to an activation, and in what order.
#include "agent/eviction.h"

#include <gtest/gtest.h>

#include <vector>

namespace stoke::agent {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t MiB = 1ULL << 20;

PooledMemory item(PooledMemory::Kind kind, const std::string& fn, int age_s, uint64_t mib, bool busy = false) {
  return PooledMemory{kind, fn, Clock::time_point{} + std::chrono::seconds(1000 - age_s), mib * MiB, busy};
}

TEST(Eviction, NothingYieldsWhenTheRequestFits) {
  std::vector<PooledMemory> pool = {item(PooledMemory::kIdle, "a", 10, 64)};
  EXPECT_TRUE(choose_evictions(pool, "b", 128 * MiB, 128 * MiB).empty());
}

TEST(Eviction, IdleThenPrewarmedThenForkedAheadThenZygotesEachOldestFirst) {
  std::vector<PooledMemory> pool = {
      item(PooledMemory::kZygote, "z", 50, 64),     item(PooledMemory::kPrewarmed, "", 5, 64),
      item(PooledMemory::kIdle, "a", 1, 64),        item(PooledMemory::kForkedAhead, "z", 3, 64),
      item(PooledMemory::kIdle, "b", 30, 64),       item(PooledMemory::kPrewarmed, "", 20, 64),
      item(PooledMemory::kZygote, "y", 100, 64),
  };
  EXPECT_EQ(choose_evictions(pool, "f", 0, 7 * 64 * MiB), (std::vector<size_t>{4, 2, 5, 1, 3, 6, 0}));
  EXPECT_EQ(choose_evictions(pool, "f", 0, 100 * MiB), (std::vector<size_t>{4, 2})) << "only until it fits";
}

TEST(Eviction, TheRequestersOwnZygoteAndForksAheadNeverYieldToIt) {
  std::vector<PooledMemory> pool = {item(PooledMemory::kZygote, "f", 100, 64),
                                    item(PooledMemory::kForkedAhead, "f", 100, 64),
                                    item(PooledMemory::kIdle, "f", 1, 64)};
  EXPECT_EQ(choose_evictions(pool, "f", 0, 64 * MiB), std::vector<size_t>{2}) << "its own idle instance may";
  EXPECT_TRUE(choose_evictions(pool, "f", 0, 128 * MiB).empty()) << "the rest is not for it to take";
  EXPECT_EQ(choose_evictions(pool, "g", 0, 192 * MiB), (std::vector<size_t>{2, 1, 0}));
}

TEST(Eviction, BusyZygotesAreNeverTaken) {
  std::vector<PooledMemory> pool = {item(PooledMemory::kZygote, "z", 100, 64, /*busy=*/true),
                                    item(PooledMemory::kZygote, "y", 1, 64)};
  EXPECT_EQ(choose_evictions(pool, "f", 0, 64 * MiB), std::vector<size_t>{1});
}

TEST(Eviction, NothingIsGivenUpWhenEvenAllOfItWouldNotMakeRoom) {
  std::vector<PooledMemory> pool = {item(PooledMemory::kIdle, "a", 10, 64), item(PooledMemory::kPrewarmed, "", 10, 64)};
  EXPECT_TRUE(choose_evictions(pool, "f", 32 * MiB, 256 * MiB).empty());
  EXPECT_EQ(choose_evictions(pool, "f", 32 * MiB, 160 * MiB), (std::vector<size_t>{0, 1})) << "free memory counts";
}

}  // namespace
}  // namespace stoke::agent
