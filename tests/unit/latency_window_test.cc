// LatencyWindow: nearest-rank percentiles over the most recent samples.
#include "agent/latency_window.h"

#include <gtest/gtest.h>

namespace stoke::agent {
namespace {

TEST(LatencyWindow, PercentilesAreNearestRankOfTheSamples) {
  LatencyWindow w(1000);
  EXPECT_EQ(w.percentile(50), 0);
  for (int i = 1; i <= 100; ++i) w.add(i);
  EXPECT_EQ(w.percentile(50), 50);
  EXPECT_EQ(w.percentile(99), 99);
  EXPECT_EQ(w.percentile(100), 100);
  EXPECT_EQ(w.percentile(0), 1);
  EXPECT_EQ(w.size(), 100u);
}

TEST(LatencyWindow, KeepsOnlyTheMostRecentSamples) {
  LatencyWindow w(10);
  for (int i = 0; i < 10; ++i) w.add(1000);  // old and slow
  for (int i = 0; i < 10; ++i) w.add(5);     // recent and fast: they replace them all
  EXPECT_EQ(w.size(), 10u);
  EXPECT_EQ(w.total(), 20u);
  EXPECT_EQ(w.percentile(99), 5);
}

}  // namespace
}  // namespace stoke::agent
