// The node's memory budget as one ledger (pure logic, no I/O).
//
// Every byte counted against the budget is held by exactly one kind of
// holder: an activation (running, or waiting on a zygote or image with its
// memory admitted), an idle instance kept for the next warm call, a prewarmed
// runtime, a function zygote, or an instance a zygote forked ahead. The agent
// moves bytes between holders (an idle instance taken by an activation, an
// activation's instance parked) without changing the total, so
//
//     reserved = activations + idle + prewarmed + zygotes + forked_ahead <= budget
//     zygotes <= zygote budget
//
// holds by construction. Giving back more than a holder holds is an
// accounting bug elsewhere; it is counted (errors(), reported in the agent's
// status and checked by the tests) and the holder is clamped to zero instead
// of wrapping around.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace stoke::agent {

enum class MemoryHolder : uint8_t { kActivation, kIdle, kPrewarmed, kZygote, kForkedAhead };
inline constexpr size_t kMemoryHolders = 5;
// "activations", "idle", ... (the keys of the status's memory breakdown).
const char* memory_holder_name(MemoryHolder holder);

class MemoryLedger {
 public:
  MemoryLedger(uint64_t budget_bytes, uint64_t zygote_budget_bytes)
      : budget_(budget_bytes), zygote_budget_(zygote_budget_bytes) {}
  // Told each accounting error, in words (the agent logs it).
  void on_error(std::function<void(const std::string&)> report) { report_ = std::move(report); }

  // Would `bytes` more fit under the node budget (and, for a zygote, under the
  // zygote budget too)?
  bool fits(uint64_t bytes, MemoryHolder holder = MemoryHolder::kActivation) const;
  // Counts `bytes` for `holder` if they fit; false (nothing changed) if not.
  [[nodiscard]] bool reserve(MemoryHolder holder, uint64_t bytes);
  // `holder` gives `bytes` back to the budget.
  void release(MemoryHolder holder, uint64_t bytes);
  // What `from` held is now `to`'s; the total does not change, so it always fits.
  void transfer(MemoryHolder from, MemoryHolder to, uint64_t bytes);

  uint64_t reserved() const { return reserved_; }
  uint64_t held(MemoryHolder holder) const { return held_[index(holder)]; }
  uint64_t budget() const { return budget_; }
  uint64_t zygote_budget() const { return zygote_budget_; }
  // Releases or transfers of more than a holder held, since the agent started.
  uint64_t errors() const { return errors_; }
  // The last such error, in words ("" if none).
  const std::string& last_error() const { return last_error_; }

 private:
  static size_t index(MemoryHolder holder) { return static_cast<size_t>(holder); }
  // Takes up to `bytes` from `holder`; what it did not hold is an error.
  uint64_t take(MemoryHolder holder, uint64_t bytes, const char* what);

  uint64_t budget_, zygote_budget_;
  uint64_t reserved_ = 0;
  std::array<uint64_t, kMemoryHolders> held_{};
  uint64_t errors_ = 0;
  std::string last_error_;
  std::function<void(const std::string&)> report_;
};

}  // namespace stoke::agent
