// stoke-bench-spawn: the sandbox library's spawn path alone, in one process:
// spawn -> /bin/true exits -> reaped (and its cgroup removed), N times.
// Prints p50/p99 and writes JSON. Run through `scripts/bench spawn`.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/bench/stats.h"

#include "sandbox/id_map.h"
#include "sandbox/spawner.h"

using namespace stoke;
using stoke::bench::percentile;

namespace {

}  // namespace

int main(int argc, char** argv) {
  int runs = 500;
  std::string json_path;
  std::vector<std::string> command = {"/bin/true"};
  bool netns_pool = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--no-netns-pool")) netns_pool = false;
    else if (!std::strcmp(argv[i], "--")) { command.assign(argv + i + 1, argv + argc); break; }
    else { std::fprintf(stderr, "usage: stoke-bench-spawn [--runs N] [--json PATH] [--no-netns-pool] [-- CMD...]\n"); return 2; }
  }
  if (runs < 10 || command.empty()) { std::fprintf(stderr, "stoke-bench-spawn: need --runs >= 10 and a command\n"); return 2; }
  SpawnerOptions options;
  if (netns_pool) {
    // As the agent runs it: namespaces made ahead, reused after each sandbox.
    auto pool = NetnsPool::create(4, 16);
    if (!pool.ok()) { std::fprintf(stderr, "stoke-bench-spawn: %s\n", pool.error().message().c_str()); return 1; }
    options.netns_pool = pool.value();
  }
  auto spawner = Spawner::create(options);
  if (!spawner.ok()) { std::fprintf(stderr, "stoke-bench-spawn: %s\n", spawner.error().message().c_str()); return 1; }
  SandboxSpec spec;
  spec.argv = command;
  spec.env = default_sandbox_env();
  spec.host_uid = spec.host_gid = host_id_for(HostIdRange{}, static_cast<uint64_t>(getpid()));

  std::vector<double> spawn_ms, total_ms;
  std::vector<std::string> phase_names;
  std::vector<std::vector<double>> phase_ms;
  for (int i = 0; i < runs + 20; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto sb = spawner.value()->spawn(spec);
    if (!sb.ok()) { std::fprintf(stderr, "spawn: %s\n", sb.error().message().c_str()); return 1; }
    auto t1 = std::chrono::steady_clock::now();
    auto st = sb.value()->wait();
    auto t2 = std::chrono::steady_clock::now();
    if (!st.ok() || st->shell_code() != 0) { std::fprintf(stderr, "sandbox failed\n"); return 1; }
    if (i < 20) continue;  // warm-up
    const auto& phases = sb.value()->trace().phases;
    for (const auto& [name, ms] : phases) {
      auto it = std::find(phase_names.begin(), phase_names.end(), name);
      if (it == phase_names.end()) {
        phase_names.push_back(name);
        phase_ms.emplace_back();
        it = phase_names.end() - 1;
      }
      phase_ms[static_cast<size_t>(it - phase_names.begin())].push_back(ms);
    }
    spawn_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    total_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
  }
  nlohmann::json j = {
      {"what", "library spawn of " + command[0] + ": spawn (to execve) and total (spawn -> exit -> reaped -> cgroup removed)"},
      {"netns_pool", netns_pool},
      {"n", runs},
      {"spawn_ms", {{"p50", percentile(spawn_ms, 0.5)}, {"p99", percentile(spawn_ms, 0.99)}}},
      {"total_ms", {{"p50", percentile(total_ms, 0.5)}, {"p99", percentile(total_ms, 0.99)}}},
  };
  std::printf("library spawn (%d runs of %s, %s)\n", runs, command[0].c_str(),
              netns_pool ? "pooled network namespaces" : "fresh network namespace each");
  std::printf("  spawn to execve        p50 %7.3f ms   p99 %7.3f ms\n", percentile(spawn_ms, 0.5), percentile(spawn_ms, 0.99));
  std::printf("  spawn -> exit -> reaped p50 %7.3f ms   p99 %7.3f ms\n", percentile(total_ms, 0.5), percentile(total_ms, 0.99));
  std::printf("  where spawn time goes (median ms per phase):\n");
  nlohmann::json phases_json = nlohmann::json::object();
  for (size_t k = 0; k < phase_names.size(); ++k) {
    double p50 = percentile(phase_ms[k], 0.5);
    phases_json[phase_names[k]] = p50;
    std::printf("    %-40s %7.3f\n", phase_names[k].c_str(), p50);
  }
  j["phases_p50_ms"] = phases_json;
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}
