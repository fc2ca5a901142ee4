// stoke-bench-restore: restore of a checkpointed Python process through the
// sandbox library, as the agent would do it (pooled network namespaces).
//
//   - restore latency: spawn of stoke-restore -> the restored Python's first
//     line on stdout, N times (p50/p99); a cold start of the same Python with
//     the same imports, for comparison;
//   - memory: PSS and USS (sums of /proc/PID/smaps_rollup) of 1, 4 and 16
//     idle restored instances;
//   - the image's size and what it takes on disk.
//
// The image is made by tests/priv/restore_driver.py (json, re, decimal, email,
// http.client imported) checkpointing itself in a sandbox. Prints JSON.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sandbox/id_map.h"
#include "sandbox/spawner.h"
#include "tests/bench/stats.h"
#include "tests/util/restore_util.h"
#include "tests/util/run_util.h"

using namespace stoke;
using stoke::bench::percentile;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// kB fields of /proc/PID/smaps_rollup.
struct Rollup {
  uint64_t pss_kb = 0, uss_kb = 0, rss_kb = 0;
};

Rollup rollup(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
  Rollup r;
  std::string key;
  uint64_t kb;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    if (!(in >> key >> kb)) continue;
    if (key == "Pss:") r.pss_kb += kb;
    if (key == "Rss:") r.rss_kb += kb;
    if (key == "Private_Clean:" || key == "Private_Dirty:") r.uss_kb += kb;
  }
  return r;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "stoke-bench-restore: %s\n", what.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 200;
  int cold_runs = 20;
  std::string json_path;
  bool netns_pool = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--cold-runs") && i + 1 < argc) cold_runs = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--no-netns-pool")) netns_pool = false;
    else {
      std::fprintf(stderr, "usage: stoke-bench-restore [--runs N] [--cold-runs N] [--json PATH] [--no-netns-pool]\n");
      return 2;
    }
  }
  if (runs < 10) die("need --runs >= 10");
  if (geteuid() != 0) die("needs root (namespaces, cgroups)");
  SpawnerOptions options;
  if (netns_pool) {
    auto pool = NetnsPool::create(4, 24);
    if (!pool.ok()) die(pool.error().message());
    options.netns_pool = pool.value();
  }
  auto spawner = Spawner::create(options);
  if (!spawner.ok()) die(spawner.error().message());
  test::TempDir dir;
  auto image = test::make_driver_image(*spawner.value(), dir.file("images"));
  if (!image.ok()) die(image.error().message());
  const SandboxSpec spec = test::restore_test_spec(host_id_for(HostIdRange{}, static_cast<uint64_t>(getpid())));

  // Restore latency: spawn -> first line (the restored process's reply).
  std::vector<double> first_reply_ms, total_ms;
  // Where the time goes: spawn -> restorer runs -> hands over -> Python replies -> we read it.
  std::vector<double> to_restorer_ms, restorer_ms, python_ms, reply_read_ms;
  auto mono_s = [](Clock::time_point t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); };
  for (int i = 0; i < runs + 10; ++i) {
    auto t0 = Clock::now();
    auto inst = test::Instance::restore(*spawner.value(), spec, image->path);
    if (!inst.ok()) die(inst.error().message());
    auto hello = inst.value()->read_json();
    if (!hello.ok()) die(hello.error().message());
    double first = ms_since(t0);
    auto t_read = Clock::now();
    auto st = inst.value()->wait();
    if (!st.ok() || st->exit_code != 0) die("restored instance did not exit cleanly: " + inst.value()->drain_stderr());
    if (i < 10) continue;  // warm-up
    first_reply_ms.push_back(first);
    const auto& h = hello.value();
    to_restorer_ms.push_back((h.value("restorer_started", 0.0) - mono_s(t0)) * 1e3);
    restorer_ms.push_back((h.value("restorer_handed_over", 0.0) - h.value("restorer_started", 0.0)) * 1e3);
    python_ms.push_back((h.value("python_replied", 0.0) - h.value("restorer_handed_over", 0.0)) * 1e3);
    reply_read_ms.push_back((mono_s(t_read) - h.value("python_replied", 0.0)) * 1e3);
    total_ms.push_back(ms_since(t0));
  }

  // Cold start of the same Python and imports, for comparison.
  std::vector<double> cold_ms;
  SandboxSpec cold = spec;
  cold.argv = {"/usr/bin/python3", "-c",
               "import json, re, decimal, email, http.client, sys; print('{\"cold\": true}', flush=True)"};
  for (int i = 0; i < cold_runs + 2; ++i) {
    auto t0 = Clock::now();
    auto inst = test::Instance::spawn(*spawner.value(), cold);
    if (!inst.ok()) die(inst.error().message());
    if (!inst.value()->read_json().ok()) die("cold python gave no reply");
    double first = ms_since(t0);
    (void)inst.value()->wait();
    if (i >= 2) cold_ms.push_back(first);
  }

  // Memory of idle restored instances.
  nlohmann::json memory = nlohmann::json::array();
  for (int count : {1, 4, 16}) {
    std::vector<std::unique_ptr<test::Instance>> idle;
    for (int i = 0; i < count; ++i) {
      auto inst = test::Instance::restore(*spawner.value(), spec, image->path);
      if (!inst.ok()) die(inst.error().message());
      if (!inst.value()->read_json().ok()) die("restored instance gave no reply");
      idle.push_back(std::move(inst.value()));
    }
    Rollup sum;
    for (auto& inst : idle) {
      Rollup r = rollup(inst->sandbox().pid());
      sum.pss_kb += r.pss_kb;
      sum.uss_kb += r.uss_kb;
      sum.rss_kb += r.rss_kb;
    }
    memory.push_back({{"instances", count},
                      {"pss_mb_total", sum.pss_kb / 1024.0},
                      {"pss_mb_per_instance", sum.pss_kb / 1024.0 / count},
                      {"uss_mb_per_instance", sum.uss_kb / 1024.0 / count},
                      {"rss_mb_per_instance", sum.rss_kb / 1024.0 / count}});
    for (auto& inst : idle) (void)inst->wait();
  }

  nlohmann::json j = {
      {"what", "restore of a checkpointed python3 (json, re, decimal, email, http.client) in a fresh stoke sandbox"},
      {"netns_pool", netns_pool},
      {"n", runs},
      {"restore_first_reply_ms", {{"p50", percentile(first_reply_ms, 0.5)}, {"p99", percentile(first_reply_ms, 0.99)}}},
      {"restore_phases_p50_ms", {{"spawn_to_restorer", percentile(to_restorer_ms, 0.5)},
                                 {"restorer", percentile(restorer_ms, 0.5)},
                                 {"python_to_first_reply", percentile(python_ms, 0.5)},
                                 {"reply_to_reader", percentile(reply_read_ms, 0.5)}}},
      {"restore_to_reaped_ms", {{"p50", percentile(total_ms, 0.5)}, {"p99", percentile(total_ms, 0.99)}}},
      {"cold_first_reply_ms", {{"n", cold_runs}, {"p50", percentile(cold_ms, 0.5)}, {"p99", percentile(cold_ms, 0.99)}}},
      {"memory", memory},
      {"image", {{"size_mb", image->size_bytes / 1048576.0},
                 {"on_disk_mb", image->disk_bytes / 1048576.0},
                 {"dumped_mb", image->manifest.layout().dumped_bytes() / 1048576.0},
                 {"vmas", image->manifest.layout().vma_count()}}},
  };
  std::printf("%s\n", j.dump(2).c_str());
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}
