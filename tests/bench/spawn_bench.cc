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

#include "sandbox/id_map.h"
#include "sandbox/spawner.h"

using namespace stoke;

namespace {

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 500;
  std::string json_path;
  std::vector<std::string> command = {"/bin/true"};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--")) { command.assign(argv + i + 1, argv + argc); break; }
    else { std::fprintf(stderr, "usage: stoke-bench-spawn [--runs N] [--json PATH] [-- CMD...]\n"); return 2; }
  }
  if (runs < 10 || command.empty()) { std::fprintf(stderr, "stoke-bench-spawn: need --runs >= 10 and a command\n"); return 2; }
  auto spawner = Spawner::create();
  if (!spawner.ok()) { std::fprintf(stderr, "stoke-bench-spawn: %s\n", spawner.error().message().c_str()); return 1; }
  SandboxSpec spec;
  spec.argv = command;
  spec.env = default_sandbox_env();
  spec.host_uid = spec.host_gid = host_id_for(HostIdRange{}, static_cast<uint64_t>(getpid()));

  std::vector<double> spawn_ms, total_ms;
  for (int i = 0; i < runs + 20; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto sb = spawner.value()->spawn(spec);
    if (!sb.ok()) { std::fprintf(stderr, "spawn: %s\n", sb.error().message().c_str()); return 1; }
    auto t1 = std::chrono::steady_clock::now();
    auto st = sb.value()->wait();
    auto t2 = std::chrono::steady_clock::now();
    if (!st.ok() || st->shell_code() != 0) { std::fprintf(stderr, "sandbox failed\n"); return 1; }
    if (i < 20) continue;  // warm-up
    spawn_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    total_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
  }
  nlohmann::json j = {
      {"what", "library spawn of " + command[0] + ": spawn (to execve) and total (spawn -> exit -> reaped -> cgroup removed)"},
      {"n", runs},
      {"spawn_ms", {{"p50", percentile(spawn_ms, 0.5)}, {"p99", percentile(spawn_ms, 0.99)}}},
      {"total_ms", {{"p50", percentile(total_ms, 0.5)}, {"p99", percentile(total_ms, 0.99)}}},
  };
  std::printf("library spawn (%d runs of %s)\n", runs, command[0].c_str());
  std::printf("  spawn to execve        p50 %7.3f ms   p99 %7.3f ms\n", percentile(spawn_ms, 0.5), percentile(spawn_ms, 0.99));
  std::printf("  spawn -> exit -> reaped p50 %7.3f ms   p99 %7.3f ms\n", percentile(total_ms, 0.5), percentile(total_ms, 0.99));
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}
