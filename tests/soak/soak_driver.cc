#include "tests/soak/soak_driver.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <thread>

#include "api/wire/client.h"
#include "proto/stoke/v1/api.pb.h"

namespace stoke::soak {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kWarmCode = "def main(args):\n    return {\"n\": args.get(\"n\", 0) + 1}\n";
constexpr const char* kWarmNodeCode = "function main(args) { return {n: (args.n || 0) + 1}; }\n";
// Some init, so zygotes and images have something to skip; the mode picks a
// misbehaviour, each with the status the agent must record for it.
constexpr const char* kStartCode = R"(import json, os, time
TABLE = {str(i): i * i for i in range(2000)}
def main(args):
    mode = args.get("mode", "ok")
    if mode == "error":
        return {"error": "asked to fail"}
    if mode == "crash":
        os._exit(3)
    if mode == "sleep":
        time.sleep(30)
    if mode == "garbage":
        os.write(3, b"this is not json\n")
        time.sleep(30)
    return {"squares": len(TABLE)}
)";

struct Mix {
  const char* mode;
  v1::ActivationStatus expect;
};
// One failure of each kind in every 12 starts.
constexpr Mix kMix[] = {{"ok", v1::SUCCESS},       {"ok", v1::SUCCESS},   {"error", v1::APPLICATION_ERROR},
                        {"ok", v1::SUCCESS},       {"ok", v1::SUCCESS},   {"crash", v1::DEVELOPER_ERROR},
                        {"ok", v1::SUCCESS},       {"ok", v1::SUCCESS},   {"sleep", v1::TIMEOUT},
                        {"ok", v1::SUCCESS},       {"ok", v1::SUCCESS},   {"garbage", v1::DEVELOPER_ERROR}};
constexpr v1::StartKind kKinds[] = {v1::COLD, v1::ZYGOTE, v1::RESTORE, v1::PREWARM};

uint64_t read_rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  return 0;
}

uint64_t count_fds(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(path.c_str());
  if (!d) return 0;
  uint64_t n = 0;
  while (auto* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n;
}

std::string describe_response(const v1::Response& r) {
  if (r.has_error()) return "error " + v1::Error::Code_Name(r.error().code()) + ": " + r.error().message();
  if (r.has_activation())
    return v1::ActivationStatus_Name(r.activation().status()) + " " + r.activation().result_json().substr(0, 200);
  return "unexpected response";
}

class Run {
 public:
  explicit Run(const SoakOptions& o) : o_(o) {}

  SoakResult go() {
    if (std::string e = setup(); !e.empty()) {
      result_.error = e;
      return result_;
    }
    total_ = o_.warm_invocations + o_.starts;
    sample();
    // Starts run on their own threads beside the warm load, as on a real node.
    std::vector<std::thread> starts;
    for (unsigned t = 0; t < std::max(1u, o_.start_threads); ++t) starts.emplace_back([this, t] { run_starts(t); });
    auto t0 = Clock::now();
    const double cpu0 = process_cpu_us(o_.agent_pid);
    std::vector<std::thread> warm;
    for (unsigned c = 0; c < o_.connections; ++c) warm.emplace_back([this, c] { run_warm(c); });
    std::thread sampler([this] {
      while (!finished_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        sample();
      }
    });
    for (auto& t : warm) t.join();
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const double cpu1 = process_cpu_us(o_.agent_pid);
    for (auto& t : starts) t.join();
    finished_ = true;
    sampler.join();
    sample();
    result_.warm_ok = warm_ok_;
    result_.starts_ok = starts_ok_;
    result_.expected_failures = expected_failures_;
    result_.warm_per_second = secs > 0 ? double(result_.warm_ok) / secs : 0;
    if (result_.warm_ok > 0) result_.agent_cpu_us_per_warm = (cpu1 - cpu0) / double(result_.warm_ok);
    if (!latencies_ms_.empty()) {
      std::sort(latencies_ms_.begin(), latencies_ms_.end());
      auto at = [&](double q) { return latencies_ms_[std::min(latencies_ms_.size() - 1, size_t(q * double(latencies_ms_.size())))]; };
      result_.warm_p50_ms = at(0.5);
      result_.warm_p99_ms = at(0.99);
    }
    summarize();
    return result_;
  }

 private:
  std::string setup() {
    auto c = wire::Client::connect(o_.socket, "stoke-soak");
    if (!c.ok()) return "connect: " + c.error().message();
    auto create = [&](const std::string& name, v1::Runtime runtime, const char* code, uint32_t concurrency,
                      uint64_t timeout_ms) {
      v1::Request r;
      auto* cf = r.mutable_create_function();
      cf->set_name(name);
      auto* cfg = cf->mutable_config();
      cfg->set_runtime(runtime);
      cfg->set_code(code);
      cfg->set_code_format(v1::SINGLE_FILE);
      cfg->set_code_file_name(runtime == v1::NODE ? "main.js" : "main.py");
      cfg->set_memory_bytes(64ull << 20);
      cfg->set_timeout_ms(timeout_ms);
      cfg->set_concurrency(concurrency);
      auto resp = c.value().call(r);
      if (!resp.ok()) return resp.error().message();
      if (resp.value().has_error() && resp.value().error().code() != v1::Error::OK)
        return resp.value().error().message();
      return std::string();
    };
    unsigned warm_concurrency = std::min(o_.connections * o_.in_flight, 8u);
    const bool node = o_.measured_runtime == MeasuredRuntime::kNode;
    if (auto e = create("soak-warm", node ? v1::NODE : v1::PYTHON, node ? kWarmNodeCode : kWarmCode,
                        warm_concurrency, 10000);
        !e.empty())
      return "create soak-warm: " + e;
    if (auto e = create("soak-start", v1::PYTHON, kStartCode, 4, 1500); !e.empty()) return "create soak-start: " + e;
    // First calls: the warm function gets its instances (as many as it may
    // run at once, so the measured calls are warm ones), the start function
    // its zygote and image (made after a first success).
    {
      v1::Request w;
      w.mutable_invoke()->set_function("soak-warm");
      w.mutable_invoke()->set_params_json("{\"n\": 1}");
      std::vector<uint64_t> ids;
      for (unsigned i = 0; i < warm_concurrency; ++i) {
        auto id = c.value().send(w);
        if (!id.ok()) return "warm-up of soak-warm: " + id.error().message();
        ids.push_back(id.value());
      }
      for (uint64_t id : ids) {
        auto resp = c.value().wait_for(id);
        if (!resp.ok()) return "warm-up of soak-warm: " + resp.error().message();
      }
      // Measured calls that each want a zygote fork or a restore: one such
      // call first, which waits until the zygote or the image is there.
      if (measured_start() != v1::START_KIND_UNSPECIFIED) {
        w.mutable_invoke()->set_start(measured_start());
        auto resp = c.value().call(w);
        if (!resp.ok()) return "warm-up of soak-warm: " + resp.error().message();
        if (!resp.value().has_activation() || resp.value().activation().status() != v1::SUCCESS)
          return "warm-up of soak-warm: " + describe_response(resp.value());
      }
    }
    v1::Request r;
    r.mutable_invoke()->set_function("soak-start");
    r.mutable_invoke()->set_params_json("{}");
    auto first = c.value().call(r);
    if (!first.ok() || !first.value().has_activation() || first.value().activation().status() != v1::SUCCESS)
      return "first call of soak-start: " + (first.ok() ? describe_response(first.value()) : first.error().message());
    return "";
  }

  void run_warm(unsigned index) {
    auto c = wire::Client::connect(o_.socket, "stoke-soak");
    if (!c.ok()) {
      unexplained("connect: " + c.error().message());
      return;
    }
    uint64_t share = o_.warm_invocations / o_.connections + (index < o_.warm_invocations % o_.connections ? 1 : 0);
    std::vector<uint64_t> ids;
    std::vector<Clock::time_point> sent_at;
    std::vector<double> latencies;
    latencies.reserve(share);
    uint64_t sent = 0;
    v1::Request r;
    r.mutable_invoke()->set_function("soak-warm");
    r.mutable_invoke()->set_params_json("{\"n\": 1}");
    r.mutable_invoke()->set_start(measured_start());
    while (sent < share || !ids.empty()) {
      while (sent < share && ids.size() < o_.in_flight) {
        auto id = c.value().send(r);
        if (!id.ok()) {
          unexplained("send: " + id.error().message());
          return;
        }
        ids.push_back(id.value());
        sent_at.push_back(Clock::now());
        ++sent;
      }
      auto resp = c.value().wait_for(ids.front());
      latencies.push_back(std::chrono::duration<double, std::milli>(Clock::now() - sent_at.front()).count());
      ids.erase(ids.begin());
      sent_at.erase(sent_at.begin());
      if (!resp.ok()) {
        unexplained("warm call: " + resp.error().message());
        return;
      }
      if (resp.value().has_activation() && resp.value().activation().status() == v1::SUCCESS) {
        ++warm_ok_;
        progress();
      } else {
        unexplained("warm call: " + describe_response(resp.value()));
      }
    }
    std::lock_guard lock(mu_);
    latencies_ms_.insert(latencies_ms_.end(), latencies.begin(), latencies.end());
  }

  // Thread `index` of start_threads makes starts index, index + n, ...
  void run_starts(unsigned index) {
    auto c = wire::Client::connect(o_.socket, "stoke-soak");
    if (!c.ok()) {
      unexplained("connect: " + c.error().message());
      return;
    }
    for (uint64_t i = index; i < o_.starts; i += std::max(1u, o_.start_threads)) {
      const Mix& m = kMix[i % std::size(kMix)];
      v1::Request r;
      r.mutable_invoke()->set_function("soak-start");
      r.mutable_invoke()->set_params_json(std::string("{\"mode\": \"") + m.mode + "\"}");
      r.mutable_invoke()->set_start(kKinds[(i / std::size(kMix) + i) % std::size(kKinds)]);
      auto resp = c.value().call(r);
      if (!resp.ok()) {
        unexplained("start call: " + resp.error().message());
        c = wire::Client::connect(o_.socket, "stoke-soak");
        if (!c.ok()) return;
        continue;
      }
      const auto& v = resp.value();
      if (v.has_activation() && v.activation().status() == m.expect) {
        if (m.expect == v1::SUCCESS) ++starts_ok_; else ++expected_failures_;
        progress();
      } else {
        unexplained(std::string("start (") + m.mode + ", " + v1::StartKind_Name(r.invoke().start()) +
                    "): " + describe_response(v));
      }
    }
  }

  v1::StartKind measured_start() const {
    switch (o_.measured_start) {
      case MeasuredStart::kZygote: return v1::ZYGOTE;
      case MeasuredStart::kRestore: return v1::RESTORE;
      case MeasuredStart::kWarm: break;
    }
    return v1::START_KIND_UNSPECIFIED;
  }

  void progress() {
    uint64_t done = ++done_;
    if (o_.progress && done % 20000 == 0) {
      char line[160];
      std::snprintf(line, sizeof line, "soak: %llu / %llu calls", static_cast<unsigned long long>(done),
                    static_cast<unsigned long long>(total_));
      o_.progress(line);
    }
  }

  void sample() {
    double at = total_ ? double(done_.load()) / double(total_) : 0;
    auto s = sample_process(o_.agent_pid, at);
    std::lock_guard lock(mu_);
    result_.samples.push_back(s);
  }

  void unexplained(const std::string& what) {
    std::lock_guard lock(mu_);
    ++result_.unexplained_count;
    if (result_.unexplained.size() < 10) result_.unexplained.push_back(what);
  }

  void summarize() {
    const ResourceSample* base = nullptr;
    for (auto& s : result_.samples)
      if (s.at_fraction >= o_.warmup_fraction) {
        base = &s;
        break;
      }
    if (!base || result_.samples.empty()) return;
    const auto& last = result_.samples.back();
    result_.baseline_rss_kib = base->rss_kib;
    result_.final_rss_kib = last.rss_kib;
    // Open fds move with what is alive at the instant (sandboxes starting,
    // forks in flight, pools refilling): one sample taken mid-load was seen
    // anywhere from 231 to 306 with the final count at 285 every time. The
    // baseline is the median of the samples after warm-up instead; a leak
    // still grows the last sample past it (by half of what leaked after
    // warm-up, for a steady leak).
    std::vector<uint64_t> fds;
    for (auto& s : result_.samples)
      if (s.at_fraction >= o_.warmup_fraction && &s != &last) fds.push_back(s.fds);
    if (fds.empty()) fds.push_back(base->fds);
    std::nth_element(fds.begin(), fds.begin() + static_cast<std::ptrdiff_t>(fds.size() / 2), fds.end());
    result_.baseline_fds = fds[fds.size() / 2];
    result_.final_fds = last.fds;
    result_.rss_growth = base->rss_kib ? double(last.rss_kib) / double(base->rss_kib) - 1 : 0;
    result_.fd_growth = result_.baseline_fds ? double(last.fds) / double(result_.baseline_fds) - 1 : 0;
  }

  const SoakOptions& o_;
  SoakResult result_;
  std::mutex mu_;
  std::atomic<uint64_t> done_{0}, warm_ok_{0}, starts_ok_{0}, expected_failures_{0};
  std::atomic<bool> finished_{false};
  uint64_t total_ = 0;
  std::vector<double> latencies_ms_;  // of warm calls, all connections (under mu_)
};

}  // namespace

ResourceSample sample_process(pid_t pid, double at_fraction) {
  return ResourceSample{at_fraction, read_rss_kib(pid), count_fds(pid)};
}

double process_cpu_us(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces), from field 3 on;
  // utime and stime are fields 14 and 15, in clock ticks.
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return double(utime + stime) * 1e6 / double(::sysconf(_SC_CLK_TCK));
}

SoakResult run_soak(const SoakOptions& options) { return Run(options).go(); }

std::string describe(const SoakResult& r) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(2);
  s << "warm ok " << r.warm_ok << " (" << r.warm_per_second << "/s, p50 " << r.warm_p50_ms << " ms, p99 "
    << r.warm_p99_ms << " ms, agent CPU " << r.agent_cpu_us_per_warm << " us/call), starts ok " << r.starts_ok
    << ", expected failures " << r.expected_failures << ", unexplained " << r.unexplained_count << "; rss "
    << r.baseline_rss_kib << " KiB -> " << r.final_rss_kib << " KiB (" << (r.rss_growth >= 0 ? "+" : "")
    << r.rss_growth * 100 << "%), fds " << r.baseline_fds << " -> " << r.final_fds << " ("
    << (r.fd_growth >= 0 ? "+" : "") << r.fd_growth * 100 << "%)";
  for (auto& u : r.unexplained) s << "\n  unexplained: " << u;
  if (!r.error.empty()) s << "\n  setup failed: " << r.error;
  return s.str();
}

}  // namespace stoke::soak
