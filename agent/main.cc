// stoked: the stoke agent.
//
//   stoked [--config FILE] [--state-dir DIR] [--socket PATH]
//
// Runs as root. Logs to stderr (journald picks it up under systemd). Reports
// readiness, status, watchdog pings and stopping to systemd when started by it.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "agent/agent.h"
#include "agent/config.h"
#include "agent/systemd.h"
#include "api/wire/protocol.h"

namespace {

constexpr const char* kUsage =
    "usage: stoked [--config FILE] [--state-dir DIR] [--socket PATH]\n"
    "  --config FILE     protobuf text-format config (default /etc/stoke/stoked.conf if it exists)\n"
    "  --state-dir DIR   registry, code and images (default /var/lib/stoke)\n"
    "  --socket PATH     API socket (default /run/stoke/stoke.sock)\n";

stoke::agent::AgentSettings settings_from(const stoke::agent::AgentConfig& c) {
  stoke::agent::AgentSettings s;
  s.state_dir = c.state_dir();
  s.socket_path = c.socket_path();
  s.socket_group = c.socket_group();
  s.access.allowed_uids.insert(c.allowed_uids().begin(), c.allowed_uids().end());
  s.access.allowed_gids.insert(c.allowed_gids().begin(), c.allowed_gids().end());
  s.api_limits.max_connections = c.api_limits().max_connections();
  s.api_limits.max_connections_per_uid = c.api_limits().max_connections_per_uid();
  s.api_limits.max_requests_in_flight = c.api_limits().max_requests_in_flight();
  s.api_limits.max_output_bytes = c.api_limits().max_output_bytes();
  s.api_limits.max_buffered_bytes = c.api_limits().max_buffered_bytes();
  s.api_limits.frame_timeout = std::chrono::milliseconds(c.api_limits().frame_timeout_ms());
  s.default_memory_bytes = c.default_memory_bytes();
  s.default_timeout_ms = c.default_timeout_ms();
  s.max_timeout_ms = c.max_timeout_ms();
  s.default_concurrency = c.default_concurrency();
  s.max_payload_bytes = c.max_payload_bytes();
  s.max_result_bytes = c.max_result_bytes();
  s.max_log_bytes = c.max_log_bytes();
  s.max_log_lines = c.max_log_lines();
  s.billing_unit_ms = c.billing_unit_ms();
  s.worker_threads = c.worker_threads();
  s.host_ids.first = c.host_uid_range_first();
  s.host_ids.count = c.host_uid_range_count();
  s.runtimes_dir = c.runtimes_dir();
  s.keep_alive = std::chrono::milliseconds(c.keep_alive_ms());
  s.admission_wait = std::chrono::milliseconds(c.admission_wait_ms());
  s.prewarm_python = c.pools().python();
  s.prewarm_node = c.pools().node();
  s.zygotes = c.zygotes().enabled();
  if (c.zygotes().preload_size() > 0) s.zygote_preload.assign(c.zygotes().preload().begin(), c.zygotes().preload().end());
  s.zygote_memory_budget_bytes = c.zygotes().memory_budget_bytes();
  s.zygote_forked_ahead = c.zygotes().forked_ahead();
  s.checkpoints = c.checkpoints();
  s.max_code_bytes = c.max_code_bytes();
  s.max_code_unpacked_bytes = c.max_code_unpacked_bytes();
  s.activation_max_age = std::chrono::seconds(c.activation_max_age_s());
  s.activation_max_per_function = c.activation_max_per_function();
  s.activation_max_bytes_per_function = c.activation_max_bytes_per_function();
  s.cgroup_root = c.cgroup_root();
  s.activation_prune_interval = std::chrono::milliseconds(c.activation_prune_interval_ms());
  auto ram = stoke::agent::total_ram_bytes();
  s.memory_budget_bytes = stoke::agent::node_memory_budget(c, ram.ok() ? ram.value() : (8ULL << 30));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<std::string> config_path;
  stoke::agent::ConfigOverrides overrides;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> std::optional<std::string> {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "stoked: %s needs a value\n%s", name, kUsage);
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "--config") config_path = value("--config");
    else if (a == "--state-dir") overrides.state_dir = value("--state-dir");
    else if (a == "--socket") overrides.socket_path = value("--socket");
    else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--version") {
      std::printf("stoked %s (protocol %u)\n", stoke::wire::kAgentVersion, stoke::wire::kProtocolVersion);
      return 0;
    } else {
      std::fprintf(stderr, "stoked: unknown option '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }

  auto config = stoke::agent::load_config(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "stoked: %s\n", config.error().message().c_str());
    return 2;
  }
  if (auto s = stoke::agent::apply_overrides(config.value(), overrides); !s.ok()) {
    std::fprintf(stderr, "stoked: %s\n", s.error().message().c_str());
    return 2;
  }
  // Logs go to stderr: the terminal, or journald under systemd.
  spdlog::set_default_logger(spdlog::stderr_color_mt("stoked"));
  spdlog::set_level(spdlog::level::from_str(config->log_level()));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  if (geteuid() != 0) {
    std::fprintf(stderr, "stoked: must run as root (it creates namespaces, cgroups and mounts)\n");
    return 1;
  }

  // Signals are taken by the event loop (signalfd): block them in every thread
  // before any thread exists.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  stoke::agent::AgentSettings settings = settings_from(config.value());
  auto inherited = stoke::agent::systemd::listen_fds_from_systemd();
  if (!inherited.ok()) {
    std::fprintf(stderr, "stoked: %s\n", inherited.error().message().c_str());
    return 1;
  }
  if (!inherited->empty()) settings.inherited_socket_fd = inherited->front();

  auto agent = stoke::agent::Agent::start(settings);
  if (!agent.ok()) {
    std::fprintf(stderr, "stoked: %s\n", agent.error().message().c_str());
    (void)stoke::agent::systemd::notify_status("failed to start: " + agent.error().message());
    return 1;
  }
  if (config->watchdog()) {
    if (auto interval = stoke::agent::systemd::watchdog_interval()) {
      agent.value()->set_heartbeat(std::chrono::duration_cast<std::chrono::milliseconds>(*interval),
                                   [] { (void)stoke::agent::systemd::notify_watchdog(); });
    }
  }
  agent.value()->set_stopping_hook([] { (void)stoke::agent::systemd::notify_stopping(); });
  (void)stoke::agent::systemd::notify_ready("serving on " + settings.socket_path);
  auto ran = agent.value()->run();
  agent.value().reset();  // tears down every sandbox, joins the workers
  if (!ran.ok()) {
    std::fprintf(stderr, "stoked: %s\n", ran.error().message().c_str());
    return 1;
  }
  spdlog::info("stopped");
  return 0;
}
