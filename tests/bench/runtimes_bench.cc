// stoke-bench-runtimes: the start paths of one Python function, end to end,
// from a client on a private stoked's socket. Run through `scripts/bench
// runtimes`, which starts the agent(s), runs the CRIU peer and prints the table
// (docs/benchmarks.md).
//
//   --latency KINDS  any of cold,prewarm,zygote,restore,warm: client-observed
//                    time from sending Invoke to receiving the activation, and
//                    the activation's initMs. zygote and restore are measured
//                    back to back and paced (--gap-ms between requests). With
//                    cold, the host's python3 (same imports, and bare) is
//                    timed after each cold call: the cold target's reference.
//   --memory SETS    any of zygote,cold,restore: PSS and USS (sums of
//                    /proc/PID/smaps_rollup) of N idle instances started that
//                    way: zygote 1 and 16, cold 16, restore 1, 4 and 16.
//
// The function imports json, re, decimal, email.parser and http.client, counts
// its calls (a warm call must see the previous one's count) and sleeps when
// asked (so N concurrent calls need N instances). A kind the agent refuses with
// FAILED_PRECONDITION is reported as not available, with the agent's message.
// Prints progress on stderr; everything measured goes into the JSON file.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/bench/stats.h"

#include "api/wire/client.h"

using namespace stoke;
using stoke::bench::percentile;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kFunctionCode =
    "import json, re, decimal, email.parser, http.client, time\n"
    "\n"
    "calls = 0\n"
    "\n"
    "\n"
    "def main(args):\n"
    "    global calls\n"
    "    calls += 1\n"
    "    if args.get('sleep_ms'):\n"
    "        time.sleep(args['sleep_ms'] / 1000.0)\n"
    "    return {'calls': calls}\n";

constexpr uint64_t kFunctionMemory = 128ULL << 20;
constexpr int kIdleSleepMs = 300;  // each memory-set call: all N run at once

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }
void sleep_ms(double ms) {
  if (ms > 0) std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(ms * 1000)));
}

std::string kind_name(v1::StartKind k) {
  switch (k) {
    case v1::COLD: return "cold";
    case v1::PREWARM: return "prewarm";
    case v1::ZYGOTE: return "zygote";
    case v1::RESTORE: return "restore";
    case v1::WARM: return "warm";
    default: return "unspecified";
  }
}

struct Options {
  std::string socket, state_dir, json_path, zygote_mode = "forked ahead";
  pid_t stoked_pid = 0;
  int runs = 200, warmup = 5, blocks = 4, prewarm_runs = 60, prewarm_python = 2;
  double gap_ms = 5;
  std::set<std::string> latency, memory;
};

// ---- one call ---------------------------------------------------------------

struct Call {
  bool ok = false;            // the activation succeeded
  bool refused = false;       // FAILED_PRECONDITION: this start path is not available
  std::string message;        // why not ok
  double ms = 0;              // client-observed
  v1::Activation activation;
};

Call invoke(wire::Client& client, const std::string& function, v1::StartKind start, const std::string& params = "") {
  v1::Request r;
  r.mutable_invoke()->set_function(function);
  r.mutable_invoke()->set_params_json(params);
  r.mutable_invoke()->set_start(start);
  Call c;
  auto t0 = Clock::now();
  auto resp = client.call(std::move(r));
  c.ms = ms_since(t0);
  if (!resp.ok()) {
    c.message = "the connection to the agent broke: " + resp.error().message();
  } else if (resp->has_error() && resp->error().code() != v1::Error::OK) {
    c.refused = resp->error().code() == v1::Error::FAILED_PRECONDITION;
    c.message = v1::Error::Code_Name(resp->error().code()) + ": " + resp->error().message();
    if (c.refused) c.message = resp->error().message();
  } else if (!resp->has_activation()) {
    c.message = "the agent answered without an activation";
  } else {
    c.activation = resp->activation();
    c.ok = c.activation.status() == v1::SUCCESS;
    if (!c.ok)
      c.message = "activation " + v1::ActivationStatus_Name(c.activation.status()) + ": " + c.activation.result_json();
  }
  return c;
}

// calls in the function's result, or -1.
long result_calls(const v1::Activation& a) {
  try {
    return nlohmann::json::parse(a.result_json()).value("calls", -1L);
  } catch (const nlohmann::json::exception&) {
    return -1;
  }
}

// ---- /proc ------------------------------------------------------------------------

struct Rollup {
  uint64_t pss_kb = 0, uss_kb = 0, rss_kb = 0;
  bool ok = false;
};

Rollup rollup(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
  Rollup r;
  std::string line, key;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    uint64_t kb;
    if (!(in >> key >> kb)) continue;
    r.ok = true;
    if (key == "Pss:") r.pss_kb += kb;
    if (key == "Rss:") r.rss_kb += kb;
    if (key == "Private_Clean:" || key == "Private_Dirty:") r.uss_kb += kb;
  }
  return r;
}

pid_t ppid_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(s.substr(close + 2));
  char state;
  pid_t ppid = 0;
  in >> state >> ppid;
  return ppid;
}

std::string cmdline_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

std::string exe_of(pid_t pid) {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec);
  return ec ? "" : p.string();
}

bool is_restored(pid_t pid) { return exe_of(pid).find("stoke-restore") != std::string::npos; }

bool descends_from(pid_t pid, pid_t ancestor) {
  for (int depth = 0; pid > 1 && depth < 64; ++depth) {
    pid = ppid_of(pid);
    if (pid == ancestor) return true;
  }
  return false;
}

std::vector<pid_t> all_pids() {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit)) out.push_back(std::stoi(name));
  }
  return out;
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (pid_t p : all_pids())
    if (ppid_of(p) == parent) out.push_back(p);
  return out;
}

bool runs_function(pid_t pid) {
  std::string cmd = cmdline_of(pid);
  return cmd.find("stoke_runtime.py") != std::string::npos && cmd.find("--prewarm") == std::string::npos;
}

// The sandbox in which the agent builds a checkpoint image runs
// `stoke_runtime.py --checkpoint ...` (restored copies keep that command line
// but have the restorer as their exe).
bool builds_image(pid_t pid) {
  return cmdline_of(pid).find("--checkpoint") != std::string::npos && !is_restored(pid);
}

bool image_build_running(pid_t stoked) {
  for (pid_t p : children_of(stoked))
    if (builds_image(p)) return true;
  return false;
}

// Instances of `kind` as they can be told apart from outside: zygote-started
// ones are children of the function's zygote; cold ones are children of
// stoked running stoke_runtime.py (not a prewarm stem cell); restored ones
// show the same command line with the restorer as their exe (children of
// stoked; any descendant is accepted, should they come from a template).
std::set<pid_t> instances(const std::string& kind, pid_t stoked, pid_t zygote) {
  std::set<pid_t> out;
  if (kind == "zygote") {
    if (zygote > 0)
      for (pid_t p : children_of(zygote)) out.insert(p);
  } else if (kind == "cold") {
    for (pid_t p : children_of(stoked))
      if (runs_function(p) && !is_restored(p) && !builds_image(p)) out.insert(p);
  } else {
    for (pid_t p : all_pids())
      if (is_restored(p) && runs_function(p) && descends_from(p, stoked)) out.insert(p);
  }
  return out;
}

// ---- functions and status ------------------------------------------------------

struct Agent {
  wire::Client client;
  const Options& opt;

  std::string define(const std::string& name, uint32_t concurrency, bool update) {
    v1::Request r;
    v1::FunctionConfig* cfg = update ? r.mutable_update_function()->mutable_config()
                                     : r.mutable_create_function()->mutable_config();
    if (update) r.mutable_update_function()->set_name(name);
    else r.mutable_create_function()->set_name(name);
    cfg->set_runtime(v1::PYTHON);
    cfg->set_code(kFunctionCode);
    cfg->set_code_format(v1::SINGLE_FILE);
    cfg->set_code_file_name("main.py");
    cfg->set_memory_bytes(kFunctionMemory);
    cfg->set_concurrency(concurrency);
    auto resp = client.call(std::move(r));
    if (!resp.ok()) return resp.error().message();
    if (resp->has_error() && resp->error().code() != v1::Error::OK) {
      if (!update && resp->error().code() == v1::Error::ALREADY_EXISTS) return define(name, concurrency, true);
      return (update ? "update " : "create ") + name + ": " + resp->error().message();
    }
    return "";
  }
  std::string create(const std::string& name, uint32_t concurrency) { return define(name, concurrency, false); }
  void remove(const std::string& name) {
    v1::Request r;
    r.mutable_delete_function()->set_name(name);
    (void)client.call(std::move(r));
  }

  std::optional<v1::Status> status() {
    v1::Request r;
    r.mutable_get_status();
    auto resp = client.call(std::move(r));
    if (!resp.ok() || !resp->has_status()) return std::nullopt;
    return resp->status();
  }

  static uint32_t pool(const v1::Status& s, const std::string& name) {
    auto it = s.pools().find(name);
    return it == s.pools().end() ? 0 : it->second;
  }

  // Waits (at most 10 s) until nothing runs, the prewarm pool is full again
  // and no checkpoint image is being built, then a little longer for teardown
  // in the background to finish.
  void settle(double extra_ms = 20) {
    auto t0 = Clock::now();
    while (ms_since(t0) < 10000) {
      auto s = status();
      if (!s) break;
      if (s->activations_running() == 0 && pool(*s, "prewarm_python") >= static_cast<uint32_t>(opt.prewarm_python) &&
          !image_build_running(opt.stoked_pid))
        break;
      sleep_ms(5);
    }
    sleep_ms(extra_ms);
  }

  // The host pid of the function's zygote, waiting for it up to timeout_ms; 0 if none.
  pid_t zygote_pid(const std::string& function, double timeout_ms = 0) {
    auto t0 = Clock::now();
    for (;;) {
      if (auto s = status())
        for (const auto& z : s->zygotes())
          if (z.function() == function) return z.pid();
      if (ms_since(t0) >= timeout_ms) return 0;
      sleep_ms(10);
    }
  }
};

// The image(s) the agent's index names for `function` (images/index/<function>@<version>
// holds the sha256 of images/<sha256>.img; docs/checkpoint.md).
nlohmann::json function_images(const std::string& state_dir, const std::string& function) {
  nlohmann::json out = nlohmann::json::array();
  std::error_code ec;
  const std::string dir = state_dir + "/images";
  for (auto it = std::filesystem::directory_iterator(dir + "/index", ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(function + "@", 0) != 0) continue;
    std::ifstream f(it->path());
    std::string sha;
    std::getline(f, sha);
    struct stat st;
    const std::string path = dir + "/" + sha + ".img";
    if (sha.empty() || stat(path.c_str(), &st) != 0) continue;
    out.push_back({{"name", sha + ".img"},
                   {"function", name},
                   {"bytes", static_cast<uint64_t>(st.st_size)},
                   {"disk_bytes", static_cast<uint64_t>(st.st_blocks) * 512}});
  }
  return out;
}

// ---- restore needs an image ---------------------------------------------------------------

// What priming found: "" when a forced restore was answered by a restore.
struct Primed {
  std::string not_available, failed;
  bool ok() const { return not_available.empty() && failed.empty(); }
};

// A forced restore waits for the function's image to be built (the first
// one builds it; docs/checkpoint.md). Answered by a restore: ready. Refused
// (FAILED_PRECONDITION): not available, with the agent's words. Answered by
// another kind (no image could be made): tried again for a few seconds, then
// not available.
Primed prime_restore(Agent& a, const std::string& fn) {
  Primed p;
  auto t0 = Clock::now();
  for (;;) {
    Call c = invoke(a.client, fn, v1::RESTORE);
    if (c.ok && c.activation.start_kind() == v1::RESTORE) return Primed{};
    if (c.refused) {
      p.not_available = c.message;
      return p;
    }
    if (!c.ok) {
      p.failed = "restore: " + c.message;
      return p;
    }
    p.not_available = "restore requests were answered by " + kind_name(c.activation.start_kind()) +
                      " starts (no image could be made; the agent's log says why)";
    if (ms_since(t0) > 5000) return p;
    a.settle(100);
  }
}

// ---- the host's own python3, for the cold target ---------------------------------------

// posix_spawn -> waitpid of argv, stdio on /dev/null, PATH only: what
// `scripts/bench sandbox` calls a host run. -1 if it did not exit 0.
double time_host(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  char path_env[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  char* envp[] = {path_env, nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  for (int fd = 0; fd < 3; ++fd) posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", fd ? O_WRONLY : O_RDONLY, 0);
  pid_t pid;
  auto t0 = Clock::now();
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp);
  int status = 0;
  if (rc == 0) waitpid(pid, &status, 0);
  double ms = ms_since(t0);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? ms : -1;
}

const std::vector<std::string> kHostImports = {"/usr/bin/python3", "-c",
                                               "import json, re, decimal, email.parser, http.client"};
const std::vector<std::string> kHostBare = {"/usr/bin/python3", "-c", "pass"};

// ---- latency --------------------------------------------------------------------------

struct Series {
  std::string kind, pattern;  // pattern: "back-to-back", "paced", "" (one pattern only)
  double gap_ms = 0;
  std::string note;
  std::vector<double> client_ms, init_ms, duration_ms, wait_ms;
  std::map<std::string, int> fallbacks;  // answered by another start kind (not counted)
  std::string not_available, failed;
  nlohmann::json images;  // restore: the function's image, as primed

  nlohmann::json to_json() const {
    nlohmann::json j = {{"kind", kind}, {"pattern", pattern}, {"gap_ms", gap_ms}, {"n", client_ms.size()}};
    if (!images.is_null()) j["images"] = images;
    if (!note.empty()) j["note"] = note;
    if (!not_available.empty()) j["not_available"] = not_available;
    if (!failed.empty()) j["failed"] = failed;
    if (!fallbacks.empty()) j["fallbacks"] = fallbacks;
    if (!client_ms.empty()) {
      auto mean = std::accumulate(client_ms.begin(), client_ms.end(), 0.0) / static_cast<double>(client_ms.size());
      j["client_ms"] = {{"p50", percentile(client_ms, 0.5)},
                        {"p99", percentile(client_ms, 0.99)},
                        {"mean", mean},
                        {"min", *std::min_element(client_ms.begin(), client_ms.end())},
                        {"max", *std::max_element(client_ms.begin(), client_ms.end())}};
      if (kind != "host") {
        j["init_ms"] = {{"p50", percentile(init_ms, 0.5)}, {"p99", percentile(init_ms, 0.99)}};
        j["wait_ms"] = {{"p50", percentile(wait_ms, 0.5)}};
        j["duration_ms"] = {{"p50", percentile(duration_ms, 0.5)}};
      }
      j["samples_ms"] = client_ms;
    }
    return j;
  }
  bool stopped() const { return !not_available.empty() || !failed.empty(); }
};

class LatencyBench {
 public:
  LatencyBench(Agent& agent, const Options& opt) : a_(agent), opt_(opt) {}

  // `runs` split into opt.blocks blocks (the kinds take turns, so a noisy
  // minute hits all of them); each block starts with warm-up calls.
  std::vector<Series> run() {
    const bool cold = opt_.latency.count("cold"), zygote = opt_.latency.count("zygote"),
               restore = opt_.latency.count("restore"), warm = opt_.latency.count("warm"),
               prewarm = opt_.latency.count("prewarm");
    Series s_cold{"cold", ""}, s_warm{"warm", ""}, s_prewarm{"prewarm", ""};
    Series s_host{"host", "imports"}, s_bare{"host", "bare"};
    s_host.note = "/usr/bin/python3 -c 'import json, re, decimal, email.parser, http.client', posix_spawn -> exit, "
                  "no sandbox; one after each timed cold call";
    s_bare.note = "/usr/bin/python3 -c pass, likewise";
    host_ = &s_host;
    bare_ = &s_bare;
    Series s_zb{"zygote", "back-to-back"}, s_zp{"zygote", "paced", opt_.gap_ms};
    Series s_rb{"restore", "back-to-back"}, s_rp{"restore", "paced", opt_.gap_ms};
    s_zb.note = s_zp.note = opt_.zygote_mode;
    s_prewarm.note = "a new function's first call, taken by a prewarmed stem cell";
    s_warm.note = "default start after the first call; the same instance (its call count goes up by one)";
    if (cold) setup(s_cold, "rt-cold");
    if (zygote) setup(s_zb, "rt-zygote");
    if (restore) setup(s_rb, "rt-restore");
    if (warm) setup(s_warm, "rt-warm");
    if (restore && s_rb.stopped()) s_rp.not_available = s_rb.not_available, s_rp.failed = s_rb.failed;
    if (zygote && s_zb.stopped()) s_zp.not_available = s_zb.not_available, s_zp.failed = s_zb.failed;
    if (restore && !s_rb.stopped()) prime(s_rb, "rt-restore");
    if (restore && s_rb.stopped()) s_rp.not_available = s_rb.not_available, s_rp.failed = s_rb.failed;

    for (int b = 0; b < opt_.blocks; ++b) {
      const int n = share(opt_.runs, b), n_pw = share(opt_.prewarm_runs, b);
      std::fprintf(stderr, "  block %d/%d\n", b + 1, opt_.blocks);
      if (cold) block(s_cold, "rt-cold", v1::COLD, n, 0);
      if (prewarm) prewarm_block(s_prewarm, b, n_pw);
      if (zygote) {
        block(s_zb, "rt-zygote", v1::ZYGOTE, n, 0);
        block(s_zp, "rt-zygote", v1::ZYGOTE, n, opt_.gap_ms);
      }
      if (restore) {
        block(s_rb, "rt-restore", v1::RESTORE, n, 0);
        block(s_rp, "rt-restore", v1::RESTORE, n, opt_.gap_ms);
      }
      if (warm) block(s_warm, "rt-warm", v1::START_KIND_UNSPECIFIED, n, 0);
    }
    for (const char* fn : {"rt-cold", "rt-zygote", "rt-restore", "rt-warm"}) a_.remove(fn);
    std::vector<Series> out;
    if (cold) out.push_back(s_cold), out.push_back(s_host), out.push_back(s_bare);
    if (prewarm) out.push_back(s_prewarm);
    if (zygote) out.push_back(s_zb), out.push_back(s_zp);
    if (restore) out.push_back(s_rb), out.push_back(s_rp);
    if (warm) out.push_back(s_warm);
    return out;
  }

 private:
  int share(int total, int b) const { return total / opt_.blocks + (b < total % opt_.blocks ? 1 : 0); }

  void setup(Series& s, const std::string& fn) {
    if (std::string e = a_.create(fn, 1); !e.empty()) s.failed = e;
  }

  void prime(Series& s, const std::string& fn) {
    Primed p = prime_restore(a_, fn);
    s.not_available = p.not_available;
    s.failed = p.failed;
    if (p.ok()) s.images = function_images(opt_.state_dir, fn);
  }

  void prewarm_block(Series& s, int b, int n) {
    if (s.stopped()) return;
    const int warmup = b == 0 ? std::min(opt_.warmup, 2) : 0;
    for (int i = 0; i < warmup + n; ++i) {
      a_.settle();
      const std::string fn = "rt-pw-" + std::to_string(b) + "-" + std::to_string(i);
      if (std::string e = a_.create(fn, 1); !e.empty()) {
        s.failed = e;
        return;
      }
      Call c = invoke(a_.client, fn, v1::START_KIND_UNSPECIFIED);
      a_.remove(fn);  // its instance and zygote go (not timed)
      if (!c.ok) {
        (c.refused ? s.not_available : s.failed) = c.message;
        return;
      }
      if (c.activation.start_kind() != v1::PREWARM) {
        ++s.fallbacks[kind_name(c.activation.start_kind())];
        continue;
      }
      if (i < warmup) continue;
      record(s, c);
    }
  }

  // Warm-up calls, settle, n timed calls (gap_ms between them). Every forced
  // start leaves an idle instance; the agent keeps at most the function's
  // concurrency (1) of them, so each call also retires the previous one.
  void block(Series& s, const std::string& fn, v1::StartKind start, int n, double gap_ms) {
    if (s.stopped()) return;
    const v1::StartKind expect = start == v1::START_KIND_UNSPECIFIED ? v1::WARM : start;
    const bool warm = expect == v1::WARM;
    long last_calls = -1;
    auto one = [&](bool timed) -> bool {
      Call c = invoke(a_.client, fn, start);
      if (!c.ok) {
        (c.refused ? s.not_available : s.failed) = c.message;
        return false;
      }
      if (c.activation.start_kind() != expect) {
        if (timed) ++s.fallbacks[kind_name(c.activation.start_kind())];
        last_calls = -1;
        return true;
      }
      long calls = result_calls(c.activation);
      if (warm && timed && last_calls >= 0 && calls != last_calls + 1) {
        s.failed = "a warm call was not served by the same instance (call count " + std::to_string(calls) +
                   " after " + std::to_string(last_calls) + ")";
        return false;
      }
      last_calls = calls;
      if (timed) record(s, c);
      if (timed && expect == v1::COLD) {
        // The host's python3 with the same imports, interleaved with the cold
        // starts so that both see the same machine (the cold target's reference).
        for (Series* h : {host_, bare_}) {
          double ms = time_host(h == host_ ? kHostImports : kHostBare);
          if (ms < 0) h->failed = "exited with an error";
          else if (h->failed.empty()) h->client_ms.push_back(ms);
        }
      }
      return true;
    };
    // A first call makes what the kind needs (the function's zygote, the warm
    // instance); warm-up calls after it; then wait for the background work
    // those started (zygote forks ahead, prewarm refill) to finish.
    for (int i = 0; i < std::max(opt_.warmup, 1); ++i)
      if (!one(false)) return;
    a_.zygote_pid(fn, 5000);  // made after the first success, whatever the kind
    a_.settle(50);
    for (int i = 0; i < n; ++i) {
      if (i > 0) sleep_ms(gap_ms);
      if (!one(true)) return;
    }
  }

  static void record(Series& s, const Call& c) {
    s.client_ms.push_back(c.ms);
    s.init_ms.push_back(c.activation.init_ms());
    s.wait_ms.push_back(c.activation.wait_ms());
    s.duration_ms.push_back(c.activation.duration_ms());
  }

  Agent& a_;
  const Options& opt_;
  Series* host_ = nullptr;  // host references, timed in the cold blocks
  Series* bare_ = nullptr;
};

// ---- memory ---------------------------------------------------------------------------

// N calls at once, each on its own connection and thread, each sleeping
// kIdleSleepMs in the function so that every one needs an instance.
std::vector<Call> concurrent_calls(const Options& opt, const std::string& fn, v1::StartKind start, int n) {
  std::vector<Call> out(static_cast<size_t>(n));
  std::vector<std::optional<wire::Client>> clients(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    auto c = wire::Client::connect(opt.socket, "stoke-bench-runtimes");
    if (!c.ok()) {
      for (auto& o : out) o.message = "connect: " + c.error().message();
      return out;
    }
    clients[static_cast<size_t>(i)].emplace(std::move(c.value()));
  }
  std::mutex m;
  std::condition_variable cv;
  bool go = false;
  std::vector<std::thread> threads;
  const std::string params = "{\"sleep_ms\": " + std::to_string(kIdleSleepMs) + "}";
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      {
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return go; });
      }
      out[static_cast<size_t>(i)] = invoke(*clients[static_cast<size_t>(i)], fn, start, params);
    });
  {
    std::lock_guard lock(m);
    go = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  return out;
}

nlohmann::json memory_set(Agent& a, const Options& opt, const std::string& kind, const std::vector<int>& counts) {
  const v1::StartKind start = kind == "zygote" ? v1::ZYGOTE : kind == "restore" ? v1::RESTORE : v1::COLD;
  const std::string fn = "mem-" + kind;
  nlohmann::json j = {{"kind", kind}, {"points", nlohmann::json::array()}};
  if (kind == "zygote") j["zygote_mode"] = opt.zygote_mode;
  // Concurrency: the largest N, plus one for the instance restore's first
  // call leaves (the agent keeps at most that many idle).
  if (std::string e = a.create(fn, static_cast<uint32_t>(counts.back() + 1)); !e.empty()) {
    j["failed"] = e;
    return j;
  }
  if (kind == "restore") {
    Primed p = prime_restore(a, fn);
    if (!p.ok()) {
      if (!p.failed.empty()) j["failed"] = p.failed;
      else j["not_available"] = p.not_available;
      a.remove(fn);
      return j;
    }
    a.settle(100);
    j["images"] = function_images(opt.state_dir, fn);
  }
  pid_t zygote = 0;
  std::set<pid_t> baseline = instances(kind, opt.stoked_pid, zygote);
  int have = 0;
  for (int target : counts) {
    std::fprintf(stderr, "  %s: %d idle instance(s)\n", kind.c_str(), target);
    auto calls = concurrent_calls(opt, fn, start, target - have);
    std::map<std::string, int> kinds;
    for (const auto& c : calls) {
      if (!c.ok) {
        (c.refused ? j["not_available"] : j["failed"]) = c.message;
        a.remove(fn);
        return j;
      }
      ++kinds[kind_name(c.activation.start_kind())];
    }
    if (kinds.size() != 1 || kinds.begin()->first != kind) {
      j["failed"] = "not every call was a " + kind + " start: " + nlohmann::json(kinds).dump();
      a.remove(fn);
      return j;
    }
    have = target;
    a.settle(200);  // parked idle, teardown of anything else done
    if (kind == "zygote") {
      pid_t z = a.zygote_pid(fn);
      if (zygote && z != zygote) {
        j["failed"] = "the function's zygote changed during the measurement";
        a.remove(fn);
        return j;
      }
      zygote = z;
    }
    std::set<pid_t> now = instances(kind, opt.stoked_pid, zygote);
    std::vector<pid_t> mine;
    for (pid_t p : now)
      if (!baseline.count(p)) mine.push_back(p);
    nlohmann::json point = {{"instances", target}, {"found", mine.size()}, {"pids", mine}};
    Rollup sum;
    for (pid_t p : mine) {
      Rollup r = rollup(p);
      if (!r.ok) continue;
      sum.pss_kb += r.pss_kb;
      sum.uss_kb += r.uss_kb;
      sum.rss_kb += r.rss_kb;
    }
    point["pss_kb"] = sum.pss_kb;
    point["uss_kb"] = sum.uss_kb;
    point["rss_kb"] = sum.rss_kb;
    if (static_cast<int>(mine.size()) != target) {
      point["error"] = "expected " + std::to_string(target) + " instances, found " + std::to_string(mine.size());
    } else {
      point["pss_kb_per_instance"] = static_cast<double>(sum.pss_kb) / target;
      point["uss_kb_per_instance"] = static_cast<double>(sum.uss_kb) / target;
    }
    if (kind == "zygote" && zygote > 0) {
      Rollup z = rollup(zygote);
      point["function_zygote"] = {{"pid", zygote}, {"pss_kb", z.pss_kb}, {"uss_kb", z.uss_kb}};
    }
    j["points"].push_back(point);
  }
  a.remove(fn);
  a.settle(100);
  return j;
}

// Image files (*.img, any depth) under the state dir's images/: size and
// blocks on disk (images are sparse: zero pages are holes).
nlohmann::json images(const std::string& state_dir) {
  nlohmann::json out = nlohmann::json::array();
  std::error_code ec;
  const std::string dir = state_dir + "/images";
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (it->path().extension() != ".img" || stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    out.push_back({{"name", std::filesystem::relative(it->path(), dir).string()},
                   {"bytes", static_cast<uint64_t>(st.st_size)},
                   {"disk_bytes", static_cast<uint64_t>(st.st_blocks) * 512}});
  }
  return out;
}

std::set<std::string> split(const std::string& s) {
  std::set<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.insert(item);
  return out;
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: stoke-bench-runtimes --socket PATH --stoked-pid PID --state-dir DIR [--runs N] [--warmup N]\n"
               "         [--blocks N] [--gap-ms MS] [--prewarm-runs N] [--prewarm-python N] [--zygote-mode LABEL]\n"
               "         [--latency cold,prewarm,zygote,restore,warm] [--memory zygote,cold,restore] [--json PATH]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char* name) { return !std::strcmp(argv[i], name) && i + 1 < argc; };
    if (arg("--socket")) opt.socket = argv[++i];
    else if (arg("--stoked-pid")) opt.stoked_pid = std::atoi(argv[++i]);
    else if (arg("--state-dir")) opt.state_dir = argv[++i];
    else if (arg("--runs")) opt.runs = std::atoi(argv[++i]);
    else if (arg("--warmup")) opt.warmup = std::atoi(argv[++i]);
    else if (arg("--blocks")) opt.blocks = std::atoi(argv[++i]);
    else if (arg("--gap-ms")) opt.gap_ms = std::atof(argv[++i]);
    else if (arg("--prewarm-runs")) opt.prewarm_runs = std::atoi(argv[++i]);
    else if (arg("--prewarm-python")) opt.prewarm_python = std::atoi(argv[++i]);
    else if (arg("--zygote-mode")) opt.zygote_mode = argv[++i];
    else if (arg("--latency")) opt.latency = split(argv[++i]);
    else if (arg("--memory")) opt.memory = split(argv[++i]);
    else if (arg("--json")) opt.json_path = argv[++i];
    else usage();
  }
  if (opt.socket.empty() || opt.state_dir.empty() || opt.stoked_pid <= 0 || opt.runs < 1 || opt.blocks < 1 ||
      opt.warmup < 0 || opt.gap_ms < 0)
    usage();
  for (const auto& k : opt.latency)
    if (k != "cold" && k != "prewarm" && k != "zygote" && k != "restore" && k != "warm") usage();
  for (const auto& k : opt.memory)
    if (k != "cold" && k != "zygote" && k != "restore") usage();
  opt.blocks = std::min(opt.blocks, opt.runs);

  auto client = wire::Client::connect(opt.socket, "stoke-bench-runtimes");
  if (!client.ok()) {
    std::fprintf(stderr, "stoke-bench-runtimes: %s\n", client.error().message().c_str());
    return 1;
  }
  Agent agent{std::move(client.value()), opt};
  agent.settle(0);

  nlohmann::json j = {{"zygote_mode", opt.zygote_mode},
                      {"config", {{"runs", opt.runs}, {"warmup_per_block", opt.warmup}, {"blocks", opt.blocks},
                                  {"gap_ms", opt.gap_ms}, {"prewarm_runs", opt.prewarm_runs},
                                  {"function_memory_bytes", kFunctionMemory}, {"idle_sleep_ms", kIdleSleepMs}}},
                      {"latency", nlohmann::json::array()},
                      {"memory", nlohmann::json::array()}};
  // Memory first: the fewest other processes share the pages then.
  for (const char* kind : {"zygote", "cold", "restore"}) {
    if (!opt.memory.count(kind)) continue;
    std::vector<int> counts = std::string(kind) == "zygote" ? std::vector<int>{1, 16}
                              : std::string(kind) == "cold" ? std::vector<int>{16}
                                                            : std::vector<int>{1, 4, 16};
    j["memory"].push_back(memory_set(agent, opt, kind, counts));
  }
  if (!opt.latency.empty()) {
    std::fprintf(stderr, "  latency (%s): %d runs in %d blocks\n", opt.zygote_mode.c_str(), opt.runs, opt.blocks);
    LatencyBench lb(agent, opt);
    for (const auto& s : lb.run()) j["latency"].push_back(s.to_json());
  }
  j["images"] = images(opt.state_dir);
  if (!opt.json_path.empty()) std::ofstream(opt.json_path) << j.dump(1) << "\n";
  return 0;
}
