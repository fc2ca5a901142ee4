// The last N samples of a latency, and their percentiles: what the status
// reports of the agent's own time per warm invocation. Pure; the loop's.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace stoke::agent {

class LatencyWindow {
 public:
  explicit LatencyWindow(size_t capacity = 4096) : capacity_(capacity == 0 ? 1 : capacity) {
    samples_.reserve(capacity_);
  }

  void add(double value) {
    if (samples_.size() < capacity_) samples_.push_back(value);
    else samples_[next_] = value;  // the oldest goes
    next_ = (next_ + 1) % capacity_;
    ++total_;
  }

  size_t size() const { return samples_.size(); }
  uint64_t total() const { return total_; }  // ever added

  // The p-th percentile (0..100, nearest rank) of the samples kept; 0 when empty.
  double percentile(double p) const {
    if (samples_.empty()) return 0;
    std::vector<double> s = samples_;
    p = std::clamp(p, 0.0, 100.0);
    size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(s.size())));
    size_t i = rank == 0 ? 0 : rank - 1;
    std::nth_element(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(i), s.end());
    return s[i];
  }

 private:
  size_t capacity_;
  std::vector<double> samples_;
  size_t next_ = 0;
  uint64_t total_ = 0;
};

}  // namespace stoke::agent
