// stoked: the stoke agent.
//
//   stoked [--config FILE] [--state-dir DIR] [--socket PATH]
//
// Runs as root. Logs to stderr (journald picks it up under systemd). Reports
// readiness, status, watchdog pings and stopping to systemd when started by it.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
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
  // Every instance holds a dozen fds (pipes, pidfd, its cgroup's attach and
  // counter files) and every client one: the soft fd limit goes up to the
  // hard one (the agent uses epoll, never select). Sandboxes get their own
  // limit from the spawner.
  if (struct rlimit nofile; getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &nofile) != 0) spdlog::warn("cannot raise the fd limit: {}", std::strerror(errno));
  }

  auto ram = stoke::agent::total_ram_bytes();
  stoke::agent::AgentSettings settings =
      stoke::agent::settings_from_config(config.value(), ram.ok() ? ram.value() : (8ULL << 30));
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
