// The warm source's policy: which idle instance serves, which never serves
// again, how many a function keeps, when the keep-alive ends. Entries carry
// no instance: the pool never looks inside one.
#include "agent/idle_pool.h"

#include <gtest/gtest.h>

#include <vector>

namespace stoke::agent {
namespace {

using Clock = IdlePool::Clock;
using std::chrono::seconds;
constexpr uint64_t MiB = 1ULL << 20;

const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);

IdlePool::Entry entry(uint32_t version, int parked_s, uint64_t mib = 64) {
  return IdlePool::Entry{nullptr, version, mib * MiB, t0 + seconds(parked_s), 0};
}

std::vector<uint64_t> ids(const std::vector<IdlePool::Entry>& entries) {
  std::vector<uint64_t> out;
  for (const auto& e : entries) out.push_back(e.id);
  return out;
}

TEST(IdlePool, TheMostRecentlyParkedInstanceOfTheVersionServesFirst) {
  IdlePool pool;
  std::vector<IdlePool::Entry> out;
  pool.park("f", entry(1, 0), 4, out);
  uint64_t newer = pool.park("f", entry(1, 1), 4, out);
  ASSERT_TRUE(out.empty());
  std::vector<IdlePool::Entry> stale;
  auto got = pool.take("f", 1, 64 * MiB, stale);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->id, newer) << "its caches are the warmest";
  EXPECT_TRUE(stale.empty());
  EXPECT_EQ(pool.size(), 1u);
  EXPECT_FALSE(pool.take("g", 1, 64 * MiB, stale).has_value()) << "another function's instance never serves";
}

TEST(IdlePool, AnInstanceOfAnotherVersionOrMemoryLimitNeverServesAndComesOutAsStale) {
  IdlePool pool;
  std::vector<IdlePool::Entry> out;
  uint64_t old_version = pool.park("f", entry(1, 0), 4, out);
  uint64_t other_limit = pool.park("f", entry(2, 1, 128), 4, out);
  std::vector<IdlePool::Entry> stale;
  EXPECT_FALSE(pool.take("f", 2, 64 * MiB, stale).has_value());
  EXPECT_EQ(ids(stale), (std::vector<uint64_t>{other_limit, old_version}));
  EXPECT_EQ(pool.size(), 0u);
  EXPECT_FALSE(pool.has("f"));
}

TEST(IdlePool, AFunctionKeepsAtMostItsConcurrencyAndTheLeastRecentlyParkedGo) {
  IdlePool pool;
  std::vector<IdlePool::Entry> out;
  uint64_t a = pool.park("f", entry(1, 0), 2, out);
  uint64_t b = pool.park("f", entry(1, 1), 2, out);
  pool.park("f", entry(1, 2), 2, out);
  EXPECT_EQ(ids(out), std::vector<uint64_t>{a});
  out.clear();
  pool.park("f", entry(1, 3), 1, out);  // the cap went down (a new concurrency)
  EXPECT_EQ(out.size(), 2u);
  EXPECT_EQ(out.front().id, b);
  EXPECT_EQ(pool.size(), 1u);
  out.clear();
  pool.park("g", entry(1, 4), 0, out);
  EXPECT_TRUE(out.empty()) << "a cap of 0 still keeps one";
  EXPECT_EQ(pool.size(), 2u);
}

TEST(IdlePool, TheKeepAliveEndsEachEntryAtItsOwnTimeAndNotBefore) {
  IdlePool pool;
  pool.set_keep_alive(seconds(10));
  std::vector<IdlePool::Entry> out;
  EXPECT_FALSE(pool.next_expiry().has_value());
  uint64_t first = pool.park("f", entry(1, 0), 4, out);
  uint64_t second = pool.park("g", entry(1, 5), 4, out);
  pool.park("f", entry(1, 7), 4, out);
  ASSERT_TRUE(pool.next_expiry().has_value());
  EXPECT_EQ(*pool.next_expiry(), t0 + seconds(10));
  EXPECT_TRUE(pool.take_expired(t0 + seconds(9)).empty());
  EXPECT_EQ(ids(pool.take_expired(t0 + seconds(10))), std::vector<uint64_t>{first});
  EXPECT_EQ(*pool.next_expiry(), t0 + seconds(15));
  EXPECT_EQ(ids(pool.take_expired(t0 + seconds(16))), std::vector<uint64_t>{second});
  EXPECT_FALSE(pool.has("g"));
  EXPECT_EQ(pool.size(), 1u);
  EXPECT_EQ(pool.take_expired(t0 + seconds(17)).size(), 1u);
  EXPECT_FALSE(pool.next_expiry().has_value());
  EXPECT_EQ(pool.size(), 0u);
}

TEST(IdlePool, AnInstanceTakenAndParkedAgainStartsANewKeepAlive) {
  IdlePool pool;
  pool.set_keep_alive(seconds(10));
  std::vector<IdlePool::Entry> out, stale;
  pool.park("f", entry(1, 0), 1, out);
  auto got = pool.take("f", 1, 64 * MiB, stale);
  ASSERT_TRUE(got.has_value());
  got->parked = t0 + seconds(8);
  pool.park("f", std::move(*got), 1, out);
  EXPECT_TRUE(pool.take_expired(t0 + seconds(12)).empty());
  EXPECT_EQ(*pool.next_expiry(), t0 + seconds(18));
}

TEST(IdlePool, EvictionTakesExactlyTheEntryItChose) {
  IdlePool pool;
  std::vector<IdlePool::Entry> out;
  pool.park("f", entry(1, 0), 4, out);
  uint64_t middle = pool.park("f", entry(1, 1), 4, out);
  pool.park("f", entry(1, 2), 4, out);
  auto got = pool.take_by_id("f", middle);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->id, middle);
  EXPECT_FALSE(pool.take_by_id("f", middle).has_value()) << "taken once";
  EXPECT_FALSE(pool.take_by_id("g", 1).has_value());
  EXPECT_EQ(pool.size(), 2u);
  std::vector<uint64_t> seen;
  pool.for_each([&](const std::string& fn, const IdlePool::Entry& e) {
    EXPECT_EQ(fn, "f");
    seen.push_back(e.id);
  });
  EXPECT_EQ(seen.size(), 2u);
}

TEST(IdlePool, AChangedFunctionOrAStoppingAgentTakesEverything) {
  IdlePool pool;
  std::vector<IdlePool::Entry> out;
  pool.park("f", entry(1, 0), 4, out);
  pool.park("f", entry(1, 1), 4, out);
  pool.park("g", entry(3, 2), 4, out);
  EXPECT_EQ(pool.take_function("f").size(), 2u);
  EXPECT_TRUE(pool.take_function("f").empty());
  EXPECT_EQ(pool.size(), 1u);
  EXPECT_EQ(pool.take_all().size(), 1u);
  EXPECT_EQ(pool.size(), 0u);
  EXPECT_FALSE(pool.next_expiry().has_value());
}

TEST(IdlePool, IdsAreNeverReused) {
  IdlePool pool;
  std::vector<IdlePool::Entry> out, stale;
  uint64_t a = pool.park("f", entry(1, 0), 1, out);
  auto got = pool.take("f", 1, 64 * MiB, stale);
  ASSERT_TRUE(got.has_value());
  uint64_t b = pool.park("f", std::move(*got), 1, out);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace stoke::agent
