// The warm source: instances kept after an activation for the next call of
// the same function version.
//
// Bookkeeping only — no event loop, no sandbox, no memory ledger: the agent
// parks and takes instances, retires whatever comes back out (an entry over
// the function's cap, of an older version, past its keep-alive), and runs one
// timer for the earliest keep-alive end instead of one per parked instance
// (which cost a timer and its cancellation on the loop per warm call). The
// pool never looks inside an instance, so its policy is unit-tested with
// empty ones (tests/unit/idle_pool_test.cc).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/instance.h"

namespace stoke::agent {

class IdlePool {
 public:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::unique_ptr<Instance> instance;
    uint32_t version = 0;       // of the function it served
    uint64_t memory_bytes = 0;  // its limit (and what the ledger holds for it)
    Clock::time_point parked;   // when it became idle
    uint64_t id = 0;            // given by park()
  };

  void set_keep_alive(Clock::duration keep_alive) { keep_alive_ = keep_alive; }

  // Keeps `entry` as its function's most recently used, and returns its id.
  // A function keeps at most max(max_idle, 1): more could never all be used
  // at once. Those over the cap go out to `evicted`, least recently parked first.
  uint64_t park(const std::string& function, Entry entry, uint32_t max_idle, std::vector<Entry>& evicted);

  // The function's most recently parked instance (its caches are the
  // warmest) of exactly this version and memory limit. Entries met on the way
  // that are of another version or limit never serve again: out to `stale`.
  std::optional<Entry> take(const std::string& function, uint32_t version, uint64_t memory_bytes,
                            std::vector<Entry>& stale);
  // One entry, by id (eviction under the memory budget).
  std::optional<Entry> take_by_id(const std::string& function, uint64_t id);
  std::vector<Entry> take_function(const std::string& function);  // it changed or was deleted
  std::vector<Entry> take_all();                                   // the agent stops
  // Entries whose keep-alive has ended by `now` (parked + keep_alive <= now).
  std::vector<Entry> take_expired(Clock::time_point now);
  // When the next keep-alive ends; none when the pool is empty.
  std::optional<Clock::time_point> next_expiry() const;

  bool has(const std::string& function) const;
  size_t size() const { return size_; }
  template <typename F>
  void for_each(F&& f) const {  // f(function, entry)
    for (const auto& [function, list] : by_function_)
      for (const auto& entry : list) f(function, entry);
  }

 private:
  Clock::duration keep_alive_ = std::chrono::minutes(10);
  // Per function, least recently parked first. A list emptied by take()
  // stays: its instance comes back to it after the call (no map churn per call).
  std::unordered_map<std::string, std::vector<Entry>> by_function_;
  uint64_t next_id_ = 1;
  size_t size_ = 0;
};

}  // namespace stoke::agent
