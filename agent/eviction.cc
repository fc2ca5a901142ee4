#include "agent/eviction.h"

#include <algorithm>
#include <numeric>

namespace stoke::agent {

std::vector<size_t> choose_evictions(const std::vector<PooledMemory>& pool, const std::string& function, uint64_t free,
                                     uint64_t need) {
  if (need <= free) return {};
  std::vector<size_t> order;
  for (size_t i = 0; i < pool.size(); ++i) {
    const PooledMemory& p = pool[i];
    if (p.busy) continue;
    if ((p.kind == PooledMemory::kForkedAhead || p.kind == PooledMemory::kZygote) && p.function == function) continue;
    order.push_back(i);
  }
  // By kind in the order above, then oldest first; the index breaks ties so
  // the choice does not depend on the sort.
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const PooledMemory &x = pool[a], &y = pool[b];
    if (x.kind != y.kind) return x.kind < y.kind;
    if (x.since != y.since) return x.since < y.since;
    return a < b;
  });
  std::vector<size_t> chosen;
  uint64_t room = free;
  for (size_t i : order) {
    if (room >= need) break;
    chosen.push_back(i);
    room += pool[i].bytes;
  }
  if (room < need) return {};  // not even all of it: give nothing up
  return chosen;
}

}  // namespace stoke::agent
