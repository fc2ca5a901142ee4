// Loading stoked's configuration: a protobuf text-format file (schema and every
// default in agent/config.proto), checked as a whole before the agent starts,
// so a bad value stops the agent with one sentence naming the field instead of
// surfacing later as a strange failure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "agent/config.pb.h"
#include "sandbox/base/result.h"

namespace stoke::agent {

using config::AgentConfig;

// Where the packaged config is installed (packaging/README.md).
inline constexpr const char* kDefaultConfigPath = "/etc/stoke/stoked.conf";

// The built-in defaults (the proto's [default = ...] values); always valid.
AgentConfig default_config();

// Parses text-format `text` into a config and validates it. `source` names the
// text in errors ("stoked.conf:7:1: ... has no field named \"foo\"").
Result<AgentConfig> parse_config(std::string_view text, std::string_view source);

// Loads the configuration:
// - `path` given: that file must exist and parse (a missing file is an error:
//   the operator asked for it by name).
// - no `path`: `default_path` if it exists (so the packaged file works without
//   flags), otherwise the built-in defaults.
Result<AgentConfig> load_config(const std::optional<std::string>& path,
                                const std::string& default_path = kDefaultConfigPath);

// Every cross-field and range check; the error names the field and the bound,
// e.g. "config: default_timeout_ms (90000) must not exceed max_timeout_ms (60000)".
Status validate_config(const AgentConfig& cfg);

// Command-line flags win over the file (--state-dir, --socket).
struct ConfigOverrides {
  std::optional<std::string> state_dir;
  std::optional<std::string> socket_path;
};
// Applies the overrides set in `o` and validates the result.
Status apply_overrides(AgentConfig& cfg, const ConfigOverrides& o);

// node_memory_budget_bytes resolved: the configured value, or 3/4 of
// `total_ram_bytes` when it is 0.
uint64_t node_memory_budget(const AgentConfig& cfg, uint64_t total_ram_bytes);
// The machine's RAM (sysinfo), for the above.
Result<uint64_t> total_ram_bytes();


// The valid log_level names, in increasing severity.
inline constexpr const char* kLogLevels[] = {"trace", "debug", "info", "warn",
                                            "error", "critical", "off"};

}  // namespace stoke::agent
