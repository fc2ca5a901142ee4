#include "agent/prewarm_pool.h"

namespace stoke::agent {

uint32_t PrewarmPool::missing(v1::Runtime runtime, uint32_t target) const {
  uint64_t have = ready(runtime);
  if (auto it = starting_.find(runtime); it != starting_.end()) have += it->second;
  return have >= target ? 0 : static_cast<uint32_t>(target - have);
}

void PrewarmPool::started(v1::Runtime runtime, std::optional<Entry> entry) {
  if (auto it = starting_.find(runtime); it != starting_.end() && it->second > 0) --it->second;
  if (entry) ready_[runtime].push_back(std::move(*entry));
}

std::optional<PrewarmPool::Entry> PrewarmPool::take_newest(v1::Runtime runtime) {
  auto it = ready_.find(runtime);
  if (it == ready_.end() || it->second.empty()) return std::nullopt;
  Entry entry = std::move(it->second.back());
  it->second.pop_back();
  return entry;
}

void PrewarmPool::put_back(v1::Runtime runtime, Entry entry) { ready_[runtime].push_back(std::move(entry)); }

std::optional<PrewarmPool::Entry> PrewarmPool::take_oldest(v1::Runtime runtime) {
  auto it = ready_.find(runtime);
  if (it == ready_.end() || it->second.empty()) return std::nullopt;
  Entry entry = std::move(it->second.front());
  it->second.erase(it->second.begin());
  return entry;
}

std::vector<PrewarmPool::Entry> PrewarmPool::take_all() {
  std::vector<Entry> out;
  for (auto& [runtime, list] : ready_)
    for (auto& entry : list) out.push_back(std::move(entry));
  ready_.clear();
  return out;
}

size_t PrewarmPool::ready(v1::Runtime runtime) const {
  auto it = ready_.find(runtime);
  return it == ready_.end() ? 0 : it->second.size();
}

size_t PrewarmPool::size() const {
  size_t n = 0;
  for (const auto& [runtime, list] : ready_) n += list.size();
  return n;
}

}  // namespace stoke::agent
