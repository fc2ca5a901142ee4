// The zygote source's state: at most one function zygote per function (of one
// version), with what waits for it and the instances it forked ahead; the
// versions whose code may not have a zygote; the block of host ids zygotes
// take theirs from. The agent's zygote_pool.cc starts, forks and retires
// zygotes on workers and keeps the memory ledger; this class only remembers,
// and answers the questions that policy asks (ready for this activation?
// which zygote was used least recently? was this start superseded?).
//
// Pure and generic over the zygote, instance, spec and waiter types, so the
// policy is unit-tested without root with fakes (tests/unit/zygote_pool_test.cc).
// Loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace stoke::agent {

// Zygote: has alive(). Instance: forked ahead, held by unique_ptr. Spec: what
// forks ahead are made for. Waiter: an activation.
template <typename Zygote, typename Instance, typename Spec, typename Waiter>
class ZygotePool {
 public:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::shared_ptr<Zygote> zygote;  // null while it starts
    uint32_t version = 0;
    uint64_t start = 0;          // which start made it (a superseded start's result is dropped)
    uint64_t memory_bytes = 0;   // reserved for the zygote itself
    uint64_t generation = 0;     // of the function when it was started
    Clock::time_point since, last_used;
    std::vector<Waiter> waiting;  // --start zygote, until it is ready
    // Forked ahead of demand (Android's "USAP" pool): never served, fresh
    // namespaces and cgroup, each with its memory reserved.
    std::vector<std::unique_ptr<Instance>> ahead;
    bool forking_ahead = false;
    std::vector<Waiter> waiting_ahead;  // for the fork in flight
    Spec spec;                          // what forks ahead are made for
  };

  // ---- entries -------------------------------------------------------------
  Entry* find(const std::string& function) {
    auto it = entries_.find(function);
    return it == entries_.end() ? nullptr : &it->second;
  }
  const Entry* find(const std::string& function) const {
    auto it = entries_.find(function);
    return it == entries_.end() ? nullptr : &it->second;
  }
  // A zygote of this version is ready (alive is checked when forking) and
  // was made from the function as it is now (`generation`).
  bool ready_for(const std::string& function, uint32_t version, uint64_t generation) const {
    const Entry* e = find(function);
    return e != nullptr && e->zygote && e->version == version && e->generation == generation;
  }
  // This version's zygote is starting, or ready and alive: nothing to do.
  bool starting_or_alive(const std::string& function, uint32_t version) const {
    const Entry* e = find(function);
    return e != nullptr && e->version == version && (!e->zygote || e->zygote->alive());
  }
  // A new entry for a zygote about to start (none may exist for `function`).
  Entry& starting(const std::string& function, uint32_t version, uint64_t memory_bytes, uint64_t generation,
                  Spec spec, Clock::time_point now) {
    Entry& e = entries_[function];
    e.version = version;
    e.start = ++starts_;
    e.memory_bytes = memory_bytes;
    e.generation = generation;
    e.since = e.last_used = now;
    e.spec = std::move(spec);
    return e;
  }
  // The start `start` of `function` is still the one its entry waits for
  // (not retired, replaced, or already given a zygote meanwhile).
  Entry* waiting_for(const std::string& function, uint64_t start) {
    Entry* e = find(function);
    return e != nullptr && !e->zygote && e->start == start ? e : nullptr;
  }
  // Removes the entry: the caller retires what it holds.
  std::optional<Entry> take(const std::string& function) {
    auto it = entries_.find(function);
    if (it == entries_.end()) return std::nullopt;
    Entry e = std::move(it->second);
    entries_.erase(it);
    return e;
  }
  // The ready zygote used least recently (starting ones are not stopped:
  // their start is already paid for); nullopt when none is ready.
  std::optional<std::string> least_recently_used_ready() const {
    const std::string* best = nullptr;
    Clock::time_point when{};
    for (const auto& [fn, e] : entries_)
      if (e.zygote && (best == nullptr || e.last_used < when)) {
        best = &fn;
        when = e.last_used;
      }
    if (best == nullptr) return std::nullopt;
    return *best;
  }
  std::vector<std::string> functions() const {
    std::vector<std::string> out;
    out.reserve(entries_.size());
    for (const auto& [fn, e] : entries_) out.push_back(fn);
    return out;
  }
  size_t forked_ahead() const {
    size_t n = 0;
    for (const auto& [fn, e] : entries_) n += e.ahead.size();
    return n;
  }
  void for_each(const std::function<void(const std::string&, const Entry&)>& f) const {
    for (const auto& [fn, e] : entries_) f(fn, e);
  }
  size_t size() const { return entries_.size(); }

  // ---- refusals --------------------------------------------------------------
  // This version's code cannot have a zygote (its start was refused, or its
  // fork failed the agent's checks): not tried again.
  void refuse(const std::string& function, uint32_t version) { refused_.insert(key(function, version)); }
  bool refused(const std::string& function, uint32_t version) const { return refused_.count(key(function, version)) > 0; }
  // The function changed (updated, deleted): a new version, or a new
  // function of the same name starting again at version 1, is tried afresh.
  void forget_refusals(const std::string& function) {
    const std::string prefix = function + "@";
    for (auto it = refused_.lower_bound(prefix); it != refused_.end() && it->compare(0, prefix.size(), prefix) == 0;)
      it = refused_.erase(it);
  }

 private:
  static std::string key(const std::string& function, uint32_t version) {
    return function + "@" + std::to_string(version);
  }
  std::unordered_map<std::string, Entry> entries_;  // by function
  std::set<std::string> refused_;                   // "fn@version"
  uint64_t starts_ = 0;
};

}  // namespace stoke::agent
