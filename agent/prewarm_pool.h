// The prewarm source: sandboxes with a language runtime started and no code
// yet ("stem cells"), per runtime, kept at a target count.
//
// Bookkeeping only, like the idle pool (agent/idle_pool.h): the agent starts
// what missing() asks for, pools what comes up, and retires what comes back
// out. The newest serves (it has been idle the shortest); the oldest yields
// its memory first. Unit-tested with empty entries (tests/unit/prewarm_pool_test.cc).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "agent/instance.h"
#include "proto/stoke/v1/api.pb.h"

namespace stoke::agent {

class PrewarmPool {
 public:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::unique_ptr<Instance> instance;
    uint64_t memory_bytes = 0;  // what the ledger holds for it
    Clock::time_point since;    // pooled (ready) since
  };

  // How many more to start for `runtime` to reach `target`, counting those
  // already starting.
  uint32_t missing(v1::Runtime runtime, uint32_t target) const;
  void starting(v1::Runtime runtime) { ++starting_[runtime]; }
  // One that was starting is done starting: pooled (`entry`) or not (none).
  void started(v1::Runtime runtime, std::optional<Entry> entry);

  std::optional<Entry> take_newest(v1::Runtime runtime);
  // A taken entry the taker could not use after all: back where it was.
  void put_back(v1::Runtime runtime, Entry entry);
  std::optional<Entry> take_oldest(v1::Runtime runtime);  // it yields its memory
  std::vector<Entry> take_all();

  size_t ready(v1::Runtime runtime) const;
  size_t size() const;
  template <typename F>
  void for_each(F&& f) const {  // f(runtime, entry), oldest first per runtime
    for (const auto& [runtime, list] : ready_)
      for (const auto& entry : list) f(runtime, entry);
  }

 private:
  std::map<v1::Runtime, std::vector<Entry>> ready_;  // per runtime, oldest first
  std::map<v1::Runtime, uint32_t> starting_;
};

}  // namespace stoke::agent
