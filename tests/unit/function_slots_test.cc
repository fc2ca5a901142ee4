// Per-function concurrency and queueing, the first step of admission.
#include "agent/function_slots.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace stoke::agent {
namespace {

using Slots = FunctionSlots<int>;
using Admit = Slots::Admit;

TEST(FunctionSlots, UpToTheConcurrencyRunAtOnceThenTheyWaitInArrivalOrder) {
  Slots s;
  EXPECT_EQ(s.admit("f", 1, 2, 10), Admit::kRun);
  EXPECT_EQ(s.admit("f", 2, 2, 10), Admit::kRun);
  EXPECT_EQ(s.admit("f", 3, 2, 10), Admit::kQueued);
  EXPECT_EQ(s.admit("f", 4, 2, 10), Admit::kQueued);
  EXPECT_EQ(s.running("f"), 2u);
  EXPECT_EQ(s.waiting("f"), 2u);
  EXPECT_EQ(s.release("f"), std::vector<int>{3});
  EXPECT_EQ(s.release("f"), std::vector<int>{4});
  EXPECT_TRUE(s.release("f").empty());
  EXPECT_TRUE(s.release("f").empty());
  EXPECT_EQ(s.functions(), 0u) << "a function with nothing running or waiting costs nothing";
}

TEST(FunctionSlots, FunctionsDoNotShareSlots) {
  Slots s;
  EXPECT_EQ(s.admit("f", 1, 1, 10), Admit::kRun);
  EXPECT_EQ(s.admit("g", 2, 1, 10), Admit::kRun);
  EXPECT_EQ(s.admit("f", 3, 1, 10), Admit::kQueued);
  EXPECT_TRUE(s.release("g").empty()) << "g's slot lets none of f's in";
  EXPECT_EQ(s.release("f"), std::vector<int>{3});
}

TEST(FunctionSlots, AFullQueueRefusesAndLeavesTheQueueAsItWas) {
  Slots s;
  EXPECT_EQ(s.admit("f", 1, 1, 2), Admit::kRun);
  EXPECT_EQ(s.admit("f", 2, 1, 2), Admit::kQueued);
  EXPECT_EQ(s.admit("f", 3, 1, 2), Admit::kQueued);
  EXPECT_EQ(s.admit("f", 4, 1, 2), Admit::kRefused);
  EXPECT_EQ(s.waiting("f"), 2u);
  EXPECT_EQ(s.release("f"), std::vector<int>{2});
  EXPECT_EQ(s.admit("f", 5, 1, 2), Admit::kQueued) << "room again";
}

TEST(FunctionSlots, AQueueOfZeroRefusesWhateverCannotRunNow) {
  Slots s;
  EXPECT_EQ(s.admit("f", 1, 1, 0), Admit::kRun);
  EXPECT_EQ(s.admit("f", 2, 1, 0), Admit::kRefused);
  EXPECT_EQ(s.admit("g", 3, 1, 0), Admit::kRun);
}

TEST(FunctionSlots, AVersionWithALowerConcurrencyWaitsUntilTheRunningCountIsBelowIt) {
  Slots s;
  // Version 1 (concurrency 3) has three running; version 2 (concurrency 1) arrives.
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(s.admit("f", i, 3, 10), Admit::kRun);
  EXPECT_EQ(s.admit("f", 10, 1, 10), Admit::kQueued);
  EXPECT_EQ(s.admit("f", 11, 3, 10), Admit::kQueued) << "behind it: arrival order holds";
  EXPECT_TRUE(s.release("f").empty()) << "two still run: more than version 2 allows";
  EXPECT_TRUE(s.release("f").empty());
  EXPECT_EQ(s.release("f"), (std::vector<int>{10, 11})) << "none running: 10 gets in, then 11 beside it";
}

TEST(FunctionSlots, AConcurrencyOfZeroMeansOne) {
  Slots s;
  EXPECT_EQ(s.admit("f", 1, 0, 10), Admit::kRun);
  EXPECT_EQ(s.admit("f", 2, 0, 10), Admit::kQueued);
  EXPECT_EQ(s.release("f"), std::vector<int>{2});
}

TEST(FunctionSlots, StoppingTakesEveryWaitingItemAndKeepsTheHeldSlotsCounted) {
  Slots s;
  s.admit("f", 1, 1, 10);
  s.admit("f", 2, 1, 10);
  s.admit("g", 3, 1, 10);
  s.admit("g", 4, 1, 10);
  auto waiting = s.take_all_waiting();
  std::sort(waiting.begin(), waiting.end());
  EXPECT_EQ(waiting, (std::vector<int>{2, 4}));
  EXPECT_EQ(s.running("f"), 1u);
  EXPECT_EQ(s.waiting("f"), 0u);
  EXPECT_TRUE(s.release("f").empty());
  EXPECT_TRUE(s.release("g").empty());
  EXPECT_EQ(s.functions(), 0u);
}

}  // namespace
}  // namespace stoke::agent
