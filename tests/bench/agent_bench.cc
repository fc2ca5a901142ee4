// stoke-bench-agent: the agent end to end, from a client on its socket.
//   - cold invoke of an exec-runtime echo function: client-observed latency,
//     and the parts the activation record gives (init = sandbox spawn);
//   - the API round trip of a trivial request (status).
// Prints p50/p99 and writes JSON. Run through `scripts/bench agent`, which
// starts a private stoked for it.
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

#include "api/wire/client.h"
#include "sandbox/base/file_util.h"

using namespace stoke;
using stoke::bench::percentile;

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

nlohmann::json summary(const std::vector<double>& v) {
  return {{"p50", percentile(v, 0.5)}, {"p99", percentile(v, 0.99)}, {"n", v.size()}};
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket, code, json_path;
  int runs = 200;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--socket") && i + 1 < argc) socket = argv[++i];
    else if (!std::strcmp(argv[i], "--code") && i + 1 < argc) code = argv[++i];
    else if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: stoke-bench-agent --socket PATH --code ECHO_EXECUTABLE [--runs N] [--json PATH]\n");
      return 2;
    }
  }
  if (socket.empty() || code.empty() || runs < 10) {
    std::fprintf(stderr, "stoke-bench-agent: need --socket, --code and --runs >= 10\n");
    return 2;
  }
  auto client = wire::Client::connect(socket, "stoke-bench-agent");
  if (!client.ok()) {
    std::fprintf(stderr, "stoke-bench-agent: %s\n", client.error().message().c_str());
    return 1;
  }
  auto bytes = read_file(code);
  if (!bytes.ok()) {
    std::fprintf(stderr, "stoke-bench-agent: %s\n", bytes.error().message().c_str());
    return 1;
  }
  v1::Request create;
  create.mutable_create_function()->set_name("bench-echo");
  auto* cfg = create.mutable_create_function()->mutable_config();
  cfg->set_runtime(v1::EXEC);
  cfg->set_code(bytes.value());
  cfg->set_code_format(v1::SINGLE_FILE);
  cfg->set_code_file_name("echo");
  cfg->set_memory_bytes(128ULL << 20);
  auto made = client->call(create);
  if (!made.ok() || (made->has_error() && made->error().code() != v1::Error::ALREADY_EXISTS && made->error().code() != v1::Error::OK)) {
    std::fprintf(stderr, "stoke-bench-agent: create failed\n");
    return 1;
  }

  std::vector<double> invoke_ms, init_ms, duration_ms, status_ms;
  for (int i = 0; i < runs + 10; ++i) {
    v1::Request inv;
    inv.mutable_invoke()->set_function("bench-echo");
    inv.mutable_invoke()->set_params_json("{\"i\":" + std::to_string(i) + "}");
    auto t0 = std::chrono::steady_clock::now();
    auto r = client->call(inv);
    double ms = ms_since(t0);
    if (!r.ok() || !r->has_activation() || r->activation().status() != v1::SUCCESS) {
      std::fprintf(stderr, "stoke-bench-agent: invoke %d failed: %s\n", i,
                   r.ok() ? (r->has_error() ? r->error().message().c_str() : "the activation did not succeed") : r.error().message().c_str());
      return 1;
    }
    if (i < 10) continue;  // warm-up
    invoke_ms.push_back(ms);
    init_ms.push_back(r->activation().init_ms());
    duration_ms.push_back(r->activation().duration_ms());
  }
  for (int i = 0; i < runs + 10; ++i) {
    v1::Request st;
    st.mutable_get_status();
    auto t0 = std::chrono::steady_clock::now();
    auto r = client->call(st);
    double ms = ms_since(t0);
    if (!r.ok()) return 1;
    if (i >= 10) status_ms.push_back(ms);
  }
  // Warm: a Python function whose instance stays after each activation.
  v1::Request py;
  py.mutable_create_function()->set_name("bench-py");
  auto* pcfg = py.mutable_create_function()->mutable_config();
  pcfg->set_runtime(v1::PYTHON);
  pcfg->set_code("def main(args):\n    return {'n': args.get('i', 0)}\n");
  pcfg->set_code_format(v1::SINGLE_FILE);
  pcfg->set_code_file_name("main.py");
  pcfg->set_memory_bytes(128ULL << 20);
  (void)client->call(py);
  std::vector<double> warm_ms, warm_duration_ms, py_cold_ms;
  for (int i = 0; i < runs + 10; ++i) {
    v1::Request inv;
    inv.mutable_invoke()->set_function("bench-py");
    inv.mutable_invoke()->set_params_json("{\"i\":" + std::to_string(i) + "}");
    auto t0 = std::chrono::steady_clock::now();
    auto r = client->call(inv);
    double ms = ms_since(t0);
    if (!r.ok() || !r->has_activation() || r->activation().status() != v1::SUCCESS) {
      std::fprintf(stderr, "stoke-bench-agent: python invoke %d failed\n", i);
      return 1;
    }
    if (r->activation().start_kind() == v1::COLD) py_cold_ms.push_back(ms);
    if (i < 10 || r->activation().start_kind() != v1::WARM) continue;
    warm_ms.push_back(ms);
    warm_duration_ms.push_back(r->activation().duration_ms());
  }
  // Prewarm: a new function's first call takes a stem cell (the pool refills
  // in the background; wait for it between calls).
  std::vector<double> prewarm_ms, prewarm_duration_ms;
  for (int i = 0; i < std::min(runs, 60); ++i) {
    for (int tries = 0; tries < 200; ++tries) {
      v1::Request st;
      st.mutable_get_status();
      auto s = client->call(st);
      if (s.ok() && s->status().pools().count("prewarm_python") && s->status().pools().at("prewarm_python") > 0) break;
      usleep(5000);
    }
    v1::Request make = py;
    make.mutable_create_function()->set_name("bench-pw-" + std::to_string(i));
    (void)client->call(make);
    v1::Request inv;
    inv.mutable_invoke()->set_function("bench-pw-" + std::to_string(i));
    auto t0 = std::chrono::steady_clock::now();
    auto r = client->call(inv);
    double ms = ms_since(t0);
    if (r.ok() && r->has_activation() && r->activation().start_kind() == v1::PREWARM) {
      prewarm_ms.push_back(ms);
      prewarm_duration_ms.push_back(r->activation().duration_ms());
    }
  }
  std::vector<double> overhead;
  for (size_t i = 0; i < invoke_ms.size(); ++i) overhead.push_back(invoke_ms[i] - init_ms[i]);
  std::printf("agent, %d runs each (exec echo function, every invoke a cold start)\n", runs);
  std::printf("  %-44s %8s %8s\n", "", "p50 ms", "p99 ms");
  std::printf("  %-44s %8.3f %8.3f\n", "cold invoke, client-observed", percentile(invoke_ms, 0.5), percentile(invoke_ms, 0.99));
  std::printf("  %-44s %8.3f %8.3f\n", "  of which sandbox spawn (initMs)", percentile(init_ms, 0.5), percentile(init_ms, 0.99));
  std::printf("  %-44s %8.3f %8.3f\n", "  everything else (invoke - initMs)", percentile(overhead, 0.5), percentile(overhead, 0.99));
  std::printf("  %-44s %8.3f %8.3f\n", "status round trip", percentile(status_ms, 0.5), percentile(status_ms, 0.99));
  if (!py_cold_ms.empty())
    std::printf("  %-44s %8.3f %8s\n", "python cold invoke (first call)", py_cold_ms[0], "");
  if (!prewarm_ms.empty())
    std::printf("  %-44s %8.3f %8.3f   (%zu runs)\n", "python prewarm start (new function's first call)",
                percentile(prewarm_ms, 0.5), percentile(prewarm_ms, 0.99), prewarm_ms.size());
  if (!prewarm_ms.empty())
    std::printf("  %-44s %8.3f %8.3f\n", "  in the agent (durationMs)", percentile(prewarm_duration_ms, 0.5),
                percentile(prewarm_duration_ms, 0.99));
  std::printf("  %-44s %8.3f %8.3f\n", "python warm invoke, client-observed", percentile(warm_ms, 0.5), percentile(warm_ms, 0.99));
  std::printf("  %-44s %8.3f %8.3f\n", "  in the agent (durationMs)", percentile(warm_duration_ms, 0.5), percentile(warm_duration_ms, 0.99));
  nlohmann::json j = {{"invoke_ms", summary(invoke_ms)},
                      {"init_ms", summary(init_ms)},
                      {"invoke_minus_init_ms", summary(overhead)},
                      {"activation_duration_ms", summary(duration_ms)},
                      {"status_round_trip_ms", summary(status_ms)},
                      {"python_warm_invoke_ms", summary(warm_ms)},
                      {"python_prewarm_start_ms", summary(prewarm_ms)},
                      {"python_prewarm_duration_ms", summary(prewarm_duration_ms)},
                      {"python_warm_duration_ms", summary(warm_duration_ms)}};
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return 0;
}
