#include "agent/settings.h"

namespace stoke::agent {

AgentSettings settings_from_config(const AgentConfig& c, uint64_t total_ram_bytes) {
  using std::chrono::milliseconds;
  AgentSettings s;
  s.state_dir = c.state_dir();
  s.socket_path = c.socket_path();
  s.socket_group = c.socket_group();
  s.access.allowed_uids.insert(c.allowed_uids().begin(), c.allowed_uids().end());
  s.access.allowed_gids.insert(c.allowed_gids().begin(), c.allowed_gids().end());
  s.access.key_required_uids.insert(c.key_required_uids().begin(), c.key_required_uids().end());
  const config::ApiLimits& l = c.api_limits();
  s.api_limits.max_connections = l.max_connections();
  s.api_limits.max_connections_per_uid = l.max_connections_per_uid();
  s.api_limits.max_requests_in_flight = l.max_requests_in_flight();
  s.api_limits.max_output_bytes = l.max_output_bytes();
  s.api_limits.max_buffered_bytes = l.max_buffered_bytes();
  s.api_limits.frame_timeout = milliseconds(l.frame_timeout_ms());
  s.default_memory_bytes = c.default_memory_bytes();
  s.max_memory_bytes = c.max_memory_bytes();
  s.default_timeout_ms = c.default_timeout_ms();
  s.max_timeout_ms = c.max_timeout_ms();
  s.default_concurrency = c.default_concurrency();
  s.max_concurrency = c.max_concurrency();
  s.max_payload_bytes = c.max_payload_bytes();
  s.max_result_bytes = c.max_result_bytes();
  s.max_log_bytes = c.max_log_bytes();
  s.max_log_lines = c.max_log_lines();
  s.max_queue_per_function = c.max_queue_per_function();
  s.billing_unit_ms = c.billing_unit_ms();
  s.worker_threads = c.worker_threads();
  s.host_ids.first = c.host_uid_range_first();
  s.host_ids.count = c.host_uid_range_count();
  s.runtimes_dir = c.runtimes_dir();
  s.stop_grace = milliseconds(c.stop_grace_ms());
  s.keep_alive = milliseconds(c.keep_alive_ms());
  s.memory_budget_bytes = node_memory_budget(c, total_ram_bytes);
  s.admission_wait = milliseconds(c.admission_wait_ms());
  s.prewarm_python = c.pools().python();
  s.prewarm_node = c.pools().node();
  s.zygotes = c.zygotes().enabled();
  // The proto cannot give a repeated field a default: it is this list.
  if (c.zygotes().preload_size() > 0)
    s.zygote_preload.assign(c.zygotes().preload().begin(), c.zygotes().preload().end());
  else
    s.zygote_preload = {"json", "re", "decimal", "email.parser", "http.client"};
  s.zygote_memory_budget_bytes = c.zygotes().memory_budget_bytes();
  s.zygote_forked_ahead = c.zygotes().forked_ahead();
  s.checkpoints = c.checkpoints();
  s.max_code_bytes = c.max_code_bytes();
  s.max_code_unpacked_bytes = c.max_code_unpacked_bytes();
  s.activation_max_age = std::chrono::seconds(c.activation_max_age_s());
  s.activation_max_per_function = c.activation_max_per_function();
  s.activation_max_bytes_per_function = c.activation_max_bytes_per_function();
  s.activation_prune_interval = milliseconds(c.activation_prune_interval_ms());
  s.cgroup_root = c.cgroup_root();
  return s;
}

}  // namespace stoke::agent
