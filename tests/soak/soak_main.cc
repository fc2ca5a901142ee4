// stoke-soak: the long soak against a running stoked (scripts/soak starts a
// private one and passes its socket and pid). Prints progress and a summary;
// --json writes the figures. Exit 0 only when no error is unexplained and the
// agent's RSS and fd count grew less than --max-growth after warm-up.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/soak/soak_driver.h"

int main(int argc, char** argv) {
  stoke::soak::SoakOptions o;
  double max_growth = 0.05;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "stoke-soak: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--socket") o.socket = next();
    else if (a == "--pid") o.agent_pid = std::stoi(next());
    else if (a == "--warm") o.warm_invocations = std::stoull(next());
    else if (a == "--starts") o.starts = std::stoull(next());
    else if (a == "--connections") o.connections = std::stoul(next());
    else if (a == "--in-flight") o.in_flight = std::stoul(next());
    else if (a == "--start-threads") o.start_threads = std::stoul(next());
    else if (a == "--max-growth") max_growth = std::stod(next());
    else if (a == "--json") json_path = next();
    else if (a == "--runtime") {
      std::string v = next();
      if (v == "python") o.measured_runtime = stoke::soak::MeasuredRuntime::kPython;
      else if (v == "node") o.measured_runtime = stoke::soak::MeasuredRuntime::kNode;
      else {
        std::fprintf(stderr, "stoke-soak: --runtime takes python or node\n");
        return 2;
      }
    } else if (a == "--measured-start") {
      std::string v = next();
      if (v == "warm") o.measured_start = stoke::soak::MeasuredStart::kWarm;
      else if (v == "zygote") o.measured_start = stoke::soak::MeasuredStart::kZygote;
      else if (v == "restore") o.measured_start = stoke::soak::MeasuredStart::kRestore;
      else {
        std::fprintf(stderr, "stoke-soak: --measured-start takes warm, zygote or restore\n");
        return 2;
      }
    }
    else {
      std::fprintf(stderr,
                   "usage: stoke-soak --socket PATH --pid AGENT_PID [--warm N] [--starts N] [--connections N]\n"
                   "                  [--in-flight N] [--start-threads N] [--max-growth 0.05] [--json FILE]\n"
                   "                  [--runtime python|node] [--measured-start warm|zygote|restore]\n"
                   "--warm N calls are measured: warm calls of a trivial function in that runtime, or\n"
                   "calls that each get a new instance from its zygote or image (Python only).\n");
      return 2;
    }
  }
  if (o.socket.empty() || o.agent_pid <= 0) {
    std::fprintf(stderr, "stoke-soak: --socket and --pid are required\n");
    return 2;
  }
  if (o.measured_runtime == stoke::soak::MeasuredRuntime::kNode &&
      o.measured_start != stoke::soak::MeasuredStart::kWarm) {
    std::fprintf(stderr, "stoke-soak: zygotes and images are Python's: --measured-start needs --runtime python\n");
    return 2;
  }
  o.progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  auto r = stoke::soak::run_soak(o);
  std::printf("%s\n", stoke::soak::describe(r).c_str());
  if (!json_path.empty()) {
    nlohmann::json j = {{"warm_ok", r.warm_ok},
                        {"warm_per_second", r.warm_per_second},
                        {"warm_p50_ms", r.warm_p50_ms},
                        {"warm_p99_ms", r.warm_p99_ms},
                        {"agent_cpu_us_per_warm", r.agent_cpu_us_per_warm},
                        {"starts_ok", r.starts_ok},
                        {"expected_failures", r.expected_failures},
                        {"unexplained", r.unexplained_count},
                        {"rss_kib", {{"baseline", r.baseline_rss_kib}, {"final", r.final_rss_kib}}},
                        {"fds", {{"baseline", r.baseline_fds}, {"final", r.final_fds}}},
                        {"rss_growth", r.rss_growth},
                        {"fd_growth", r.fd_growth}};
    nlohmann::json samples = nlohmann::json::array();
    for (auto& s : r.samples) samples.push_back({s.at_fraction, s.rss_kib, s.fds});
    j["samples"] = samples;
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  bool ok = r.error.empty() && r.unexplained_count == 0 && r.rss_growth < max_growth && r.fd_growth < max_growth;
  return ok ? 0 : 1;
}
