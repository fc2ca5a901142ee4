#include "agent/idle_pool.h"

#include <algorithm>

namespace stoke::agent {

uint64_t IdlePool::park(const std::string& function, Entry entry, uint32_t max_idle, std::vector<Entry>& evicted) {
  entry.id = next_id_++;
  const uint64_t id = entry.id;
  auto& list = by_function_[function];
  list.push_back(std::move(entry));
  ++size_;
  const size_t cap = std::max<uint32_t>(max_idle, 1);
  if (list.size() > cap) {
    const size_t over = list.size() - cap;
    for (size_t i = 0; i < over; ++i) evicted.push_back(std::move(list[i]));
    list.erase(list.begin(), list.begin() + static_cast<std::ptrdiff_t>(over));
    size_ -= over;
  }
  return id;
}

std::optional<IdlePool::Entry> IdlePool::take(const std::string& function, uint32_t version, uint64_t memory_bytes,
                                              std::vector<Entry>& stale) {
  auto it = by_function_.find(function);
  if (it == by_function_.end()) return std::nullopt;
  auto& list = it->second;
  while (!list.empty()) {
    Entry entry = std::move(list.back());
    list.pop_back();
    --size_;
    if (entry.version == version && entry.memory_bytes == memory_bytes) return entry;
    stale.push_back(std::move(entry));
  }
  return std::nullopt;
}

std::optional<IdlePool::Entry> IdlePool::take_by_id(const std::string& function, uint64_t id) {
  auto it = by_function_.find(function);
  if (it == by_function_.end()) return std::nullopt;
  auto& list = it->second;
  auto found = std::find_if(list.begin(), list.end(), [id](const Entry& e) { return e.id == id; });
  if (found == list.end()) return std::nullopt;
  Entry entry = std::move(*found);
  list.erase(found);
  --size_;
  if (list.empty()) by_function_.erase(it);
  return entry;
}

std::vector<IdlePool::Entry> IdlePool::take_function(const std::string& function) {
  std::vector<Entry> out;
  auto it = by_function_.find(function);
  if (it == by_function_.end()) return out;
  out = std::move(it->second);
  by_function_.erase(it);
  size_ -= out.size();
  return out;
}

std::vector<IdlePool::Entry> IdlePool::take_all() {
  std::vector<Entry> out;
  for (auto& [function, list] : by_function_)
    for (auto& entry : list) out.push_back(std::move(entry));
  by_function_.clear();
  size_ = 0;
  return out;
}

std::vector<IdlePool::Entry> IdlePool::take_expired(Clock::time_point now) {
  std::vector<Entry> out;
  for (auto it = by_function_.begin(); it != by_function_.end();) {
    auto& list = it->second;
    // Least recently parked first: the expired ones are a prefix.
    size_t n = 0;
    while (n < list.size() && list[n].parked + keep_alive_ <= now) ++n;
    for (size_t i = 0; i < n; ++i) out.push_back(std::move(list[i]));
    list.erase(list.begin(), list.begin() + static_cast<std::ptrdiff_t>(n));
    size_ -= n;
    if (list.empty()) it = by_function_.erase(it);
    else ++it;
  }
  return out;
}

std::optional<IdlePool::Clock::time_point> IdlePool::next_expiry() const {
  std::optional<Clock::time_point> next;
  for (const auto& [function, list] : by_function_)
    if (!list.empty() && (!next || list.front().parked < *next)) next = list.front().parked;
  if (next) *next += keep_alive_;
  return next;
}

bool IdlePool::has(const std::string& function) const {
  auto it = by_function_.find(function);
  return it != by_function_.end() && !it->second.empty();
}

}  // namespace stoke::agent
