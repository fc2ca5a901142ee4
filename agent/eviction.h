// Which platform-owned memory yields to an activation (pure logic, unit-tested
// without root in tests/unit/eviction_test.cc).
//
// When an activation's memory does not fit the node's budget, the platform's
// own instances give theirs up, in this order, until it fits:
//   1. idle instances, least recently parked first (any function's: the
//      requester's own idle ones were offered to it first and did not fit);
//   2. prewarmed runtimes, oldest first (they are refilled when memory allows);
//   3. instances other functions' zygotes forked ahead of demand;
//   4. other functions' ready zygotes nobody waits on, least recently used.
// The requesting function's own zygote and its forks ahead are what make its
// next starts fast: they never yield to it. If all of it together would not
// make room, nothing is given up (the activation waits for running ones to
// finish, and the pools are still there for the next calls).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace stoke::agent {

struct PooledMemory {
  enum Kind { kIdle, kPrewarmed, kForkedAhead, kZygote } kind = kIdle;
  std::string function;  // whose ("" for a prewarmed runtime)
  // Parked (idle), started (prewarmed, forked ahead), or last used (zygote).
  std::chrono::steady_clock::time_point since;
  uint64_t bytes = 0;
  bool busy = false;  // a zygote starting, forking, or with activations waiting on it: never taken
};

// Indexes into `pool` of what to give up, in the order to give it up; empty
// when `need` already fits in `free`, or cannot be made to fit.
std::vector<size_t> choose_evictions(const std::vector<PooledMemory>& pool, const std::string& function, uint64_t free,
                                     uint64_t need);

}  // namespace stoke::agent
