// Per-function concurrency, the first step of admission: at most
// `concurrency` activations of a function hold a slot (an instance) at once;
// the rest wait in arrival order, at most `max_queue` of them, and are let in
// as slots come back. Memory is the second step (the memory ledger).
//
// Pure and generic over what waits (the agent queues its activations), so
// the queueing policy is unit-tested without root
// (tests/unit/function_slots_test.cc).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace stoke::agent {

template <typename T>
class FunctionSlots {
 public:
  enum class Admit {
    kRun,      // it holds a slot now
    kQueued,   // it waits for one
    kRefused,  // the function's queue is full
  };

  // `concurrency` is that of the function version the item is for (at least
  // 1); a version with a lower one waits until the running count is below it.
  Admit admit(const std::string& function, T item, uint32_t concurrency, size_t max_queue) {
    Slots& s = by_function_[function];
    if (s.running < std::max<uint32_t>(concurrency, 1)) {
      ++s.running;
      return Admit::kRun;
    }
    if (s.waiting.size() >= max_queue) {
      if (s.running == 0 && s.waiting.empty()) by_function_.erase(function);
      return Admit::kRefused;
    }
    s.waiting.emplace_back(std::move(item), concurrency);
    return Admit::kQueued;
  }

  // A holder of a slot is done: those waiting that now get one, in order.
  std::vector<T> release(const std::string& function) {
    std::vector<T> admitted;
    auto it = by_function_.find(function);
    if (it == by_function_.end()) return admitted;
    Slots& s = it->second;
    if (s.running > 0) --s.running;
    while (!s.waiting.empty() && s.running < std::max<uint32_t>(s.waiting.front().second, 1)) {
      admitted.push_back(std::move(s.waiting.front().first));
      s.waiting.pop_front();
      ++s.running;
    }
    if (s.running == 0 && s.waiting.empty()) by_function_.erase(it);
    return admitted;
  }

  // Every waiting item, out of the queues (the agent stops); slots held stay counted.
  std::vector<T> take_all_waiting() {
    std::vector<T> out;
    for (auto it = by_function_.begin(); it != by_function_.end();) {
      for (auto& [item, concurrency] : it->second.waiting) out.push_back(std::move(item));
      it->second.waiting.clear();
      if (it->second.running == 0) it = by_function_.erase(it);
      else ++it;
    }
    return out;
  }

  uint32_t running(const std::string& function) const {
    auto it = by_function_.find(function);
    return it == by_function_.end() ? 0 : it->second.running;
  }
  size_t waiting(const std::string& function) const {
    auto it = by_function_.find(function);
    return it == by_function_.end() ? 0 : it->second.waiting.size();
  }
  // Functions with a slot held or an item waiting (an idle function costs nothing).
  size_t functions() const { return by_function_.size(); }

 private:
  struct Slots {
    uint32_t running = 0;
    std::deque<std::pair<T, uint32_t>> waiting;  // with its concurrency
  };
  std::unordered_map<std::string, Slots> by_function_;
};

}  // namespace stoke::agent
