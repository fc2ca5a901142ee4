// What the agent runs with: the config file's values (agent/config.proto)
// resolved into plain types.
//
// config.proto is the one source of every default: AgentSettings has none of
// its own (its members start empty), and the default settings are
// settings_from_config(default_config(), ram). tests/unit/settings_test.cc
// changes each config field in turn and fails if the settings do not change
// with it: a setting that is parsed and then ignored cannot slip in.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/server.h"
#include "agent/server_limits.h"
#include "sandbox/id_map.h"

namespace stoke::agent {

struct AgentSettings {
  std::string state_dir;
  std::string socket_path;
  std::string socket_group;      // "" = root only (0600)
  int inherited_socket_fd = -1;  // from systemd socket activation (not a config value)
  AccessPolicy access;
  ServerLimits api_limits;  // caps on API clients (agent/server_limits.h)
  uint64_t default_memory_bytes{};
  uint64_t max_memory_bytes{};
  uint64_t default_timeout_ms{};
  uint64_t max_timeout_ms{};
  uint32_t default_concurrency{};
  uint32_t max_concurrency{};
  size_t max_payload_bytes{};
  size_t max_result_bytes{};
  size_t max_log_bytes{};
  size_t max_log_lines{};
  size_t max_queue_per_function{};
  uint64_t billing_unit_ms{};
  size_t worker_threads{};
  HostIdRange host_ids;
  std::string runtimes_dir;  // python/ and node/ runtime shims; "" = next to the binary
  std::chrono::milliseconds stop_grace{};
  // An instance idle this long after an activation is stopped; 0: never reused.
  std::chrono::milliseconds keep_alive{};
  // Sum of the reserved memory of all live sandboxes may not exceed this.
  uint64_t memory_budget_bytes{};
  std::chrono::milliseconds admission_wait{};
  // Prewarmed ("stem cell") instances kept per language runtime.
  uint32_t prewarm_python{};
  uint32_t prewarm_node{};
  // Python zygotes (docs/zygotes.md): a runtime zygote with these modules
  // imported, and a function zygote per Python function after its first
  // successful activation, within a memory budget (part of the node's).
  bool zygotes{};
  std::vector<std::string> zygote_preload;
  uint64_t zygote_memory_budget_bytes{};
  // Instances each function zygote keeps forked ahead (0: fork on demand).
  uint32_t zygote_forked_ahead{};
  // Checkpoint images of Python functions (docs/checkpoint.md): built after a
  // function's first successful activation, used for its cold starts.
  bool checkpoints{};
  // Disk (docs/security/storage.md, finding 14): code uploads as sent and
  // unpacked, and the retention of finished activation records (0: off).
  uint64_t max_code_bytes{};
  uint64_t max_code_unpacked_bytes{};
  std::chrono::seconds activation_max_age{};
  uint32_t activation_max_per_function{};
  uint64_t activation_max_bytes_per_function{};  // results + logs stored
  std::chrono::milliseconds activation_prune_interval{};
  // cgroup v2: a delegated group to make sandboxes' groups in ("" = beneath
  // the agent's own group).
  std::string cgroup_root;

  bool operator==(const AgentSettings&) const = default;
};

// The settings a (validated) config describes; `total_ram_bytes` resolves
// node_memory_budget_bytes 0 (3/4 of RAM).
AgentSettings settings_from_config(const AgentConfig& config, uint64_t total_ram_bytes);

// Config fields main() applies itself rather than through AgentSettings (the
// log level to spdlog, the watchdog to systemd), and fields that only may
// take their default: the settings test exempts exactly these.
inline constexpr const char* kConfigFieldsAppliedByMain[] = {"log_level", "watchdog"};
inline constexpr const char* kConfigFieldsFixedToTheirDefault[] = {"pools.exec"};

}  // namespace stoke::agent
