#include "agent/memory_ledger.h"

#include <algorithm>

namespace stoke::agent {

const char* memory_holder_name(MemoryHolder holder) {
  switch (holder) {
    case MemoryHolder::kActivation: return "activations";
    case MemoryHolder::kIdle: return "idle";
    case MemoryHolder::kPrewarmed: return "prewarmed";
    case MemoryHolder::kZygote: return "zygotes";
    case MemoryHolder::kForkedAhead: return "forked_ahead";
  }
  return "?";
}

bool MemoryLedger::fits(uint64_t bytes, MemoryHolder holder) const {
  // Written as subtractions: a huge request must not wrap around.
  if (bytes > budget_ - reserved_) return false;
  if (holder == MemoryHolder::kZygote && bytes > zygote_budget_ - std::min(held(holder), zygote_budget_)) return false;
  return true;
}

bool MemoryLedger::reserve(MemoryHolder holder, uint64_t bytes) {
  if (!fits(bytes, holder)) return false;
  held_[index(holder)] += bytes;
  reserved_ += bytes;
  return true;
}

uint64_t MemoryLedger::take(MemoryHolder holder, uint64_t bytes, const char* what) {
  uint64_t& h = held_[index(holder)];
  uint64_t taken = std::min(bytes, h);
  if (taken < bytes) {
    ++errors_;
    last_error_ = std::string(what) + " " + std::to_string(bytes) + " bytes of " + memory_holder_name(holder) +
                  ", which held " + std::to_string(h);
    if (report_) report_(last_error_);
  }
  h -= taken;
  return taken;
}

void MemoryLedger::release(MemoryHolder holder, uint64_t bytes) { reserved_ -= take(holder, bytes, "released"); }

void MemoryLedger::transfer(MemoryHolder from, MemoryHolder to, uint64_t bytes) {
  held_[index(to)] += take(from, bytes, "transferred");
}

}  // namespace stoke::agent
