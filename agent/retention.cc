// Retention of activation records (docs/security/storage.md, finding 14):
// every record holds a result and logs of up to a few MiB, and a function that
// is invoked in a loop would otherwise fill the state filesystem (shared with
// code and images) without bound. The event loop only schedules; deleting
// runs on a worker, in short batches, so API calls that need the registry
// wait at most one batch.
#include <spdlog/spdlog.h>

#include "agent/agent.h"
#include "agent/agent_internal.h"

namespace stoke::agent {

namespace {
constexpr uint32_t kPruneBatch = 500;
}  // namespace

void Agent::prune_activations_tick() {
  if (stopping_) return;
  const int64_t max_age_ms = static_cast<int64_t>(settings_.activation_max_age.count()) * 1000;
  const uint32_t per_function = settings_.activation_max_per_function;
  const uint64_t bytes_per_function = settings_.activation_max_bytes_per_function;
  auto again = [this] {
    if (!stopping_) loop_->timer(settings_.activation_prune_interval, [this](int) { prune_activations_tick(); });
  };
  if (max_age_ms <= 0 && per_function == 0 && bytes_per_function == 0) return;  // retention off: kept forever
  const int64_t started_before = max_age_ms > 0 ? detail::now_ms() - max_age_ms : 0;
  workers_->submit([this, started_before, per_function, bytes_per_function, again](Worker&) {
    uint64_t total = 0;
    for (;;) {
      auto n = registry_->prune_activations(started_before, per_function, kPruneBatch);
      if (n.ok() && *n < kPruneBatch) {
        auto by_bytes = registry_->prune_activations_over_bytes(bytes_per_function, kPruneBatch - *n);
        n = by_bytes.ok() ? Result<uint64_t>(*n + *by_bytes) : by_bytes;
      }
      if (!n.ok()) {
        spdlog::warn("activation retention: {}", n.error().message());
        break;
      }
      total += *n;
      if (*n < kPruneBatch) break;
    }
    if (total > 0) spdlog::info("activation retention: deleted {} finished activation record(s)", total);
    loop_->post(again);
  });
}

}  // namespace stoke::agent
