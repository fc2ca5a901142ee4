// The soak: a long mixed load against one stoked, watching the agent's RSS and
// open fds for growth. Shared by scripts/soak (build/bin/stoke-soak, long) and
// a short version in ctest (tests/hostile/soak_test.cc).
//
// Load: warm invocations of a trivial Python function, pipelined over several
// connections; and starts by kind (cold, zygote, restore, prewarm) of other
// functions, with failures mixed in (an application error, a crash, a
// timeout, a result that is not JSON) — each with its expected status, so an
// unexplained error is one whose status differs from what was asked for.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace stoke::soak {

// What the measured ("warm") calls are: warm calls of a Python or a Node
// function, or calls that each get a new instance forked from the function's
// zygote or restored from its image (scripts/bench throughput's mixes).
enum class MeasuredRuntime { kPython, kNode };
enum class MeasuredStart { kWarm, kZygote, kRestore };

struct SoakOptions {
  std::string socket;
  MeasuredRuntime measured_runtime = MeasuredRuntime::kPython;
  MeasuredStart measured_start = MeasuredStart::kWarm;
  pid_t agent_pid = -1;        // for /proc/<pid>/status and /proc/<pid>/fd
  uint64_t warm_invocations = 100000;
  uint64_t starts = 1000;       // non-warm starts, kinds in turn
  unsigned connections = 4;
  unsigned in_flight = 8;       // per connection
  unsigned start_threads = 2;   // starts run on this many connections side by side
  double warmup_fraction = 0.1;  // samples before this share of the work are not the baseline
  std::function<void(const std::string&)> progress;  // a line now and then (may be empty)
};

struct ResourceSample {
  double at_fraction;  // of the whole run
  uint64_t rss_kib;
  uint64_t fds;
};

struct SoakResult {
  uint64_t warm_ok = 0, starts_ok = 0;
  uint64_t expected_failures = 0;  // failures we asked for and got
  std::vector<std::string> unexplained;  // first few, described
  uint64_t unexplained_count = 0;
  double warm_per_second = 0;
  // Client-side latency of a warm call (send to reply; pipelined calls
  // include their wait behind the others on the connection).
  double warm_p50_ms = 0, warm_p99_ms = 0;
  // The agent's CPU time (user + system, all its threads; /proc/<pid>/stat)
  // while the warm calls ran, per warm call. With starts beside them it
  // includes their work too.
  double agent_cpu_us_per_warm = 0;
  std::vector<ResourceSample> samples;
  // Growth of the last sample over the baseline: for RSS the first sample
  // after warm-up, for fds the median of those after warm-up.
  double rss_growth = 0, fd_growth = 0;
  uint64_t baseline_rss_kib = 0, final_rss_kib = 0, baseline_fds = 0, final_fds = 0;
  std::string error;  // setup failed (functions could not be created)
};

SoakResult run_soak(const SoakOptions& options);

// "rss 41234 KiB → 41500 KiB (+0.6%), fds 37 → 37 (+0.0%), …" for reports.
std::string describe(const SoakResult& r);

ResourceSample sample_process(pid_t pid, double at_fraction);
// user + system CPU time of the process, all threads, in microseconds.
double process_cpu_us(pid_t pid);

}  // namespace stoke::soak
