// Percentiles for the benchmark binaries (nearest rank on a sorted copy).
#pragma once

#include <algorithm>
#include <vector>

namespace stoke::bench {

inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace stoke::bench
