#include "tests/hostile/bystander.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>

#include <gtest/gtest.h>
#include "tests/util/sanitizers.h"

namespace stoke::test {

LatencySummary summarize(std::vector<double> ms, size_t failures) {
  LatencySummary s;
  s.calls = ms.size() + failures;
  s.failures = failures;
  if (ms.empty()) return s;
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, size_t(q * double(ms.size())))]; };
  s.p50_ms = at(0.50);
  s.p99_ms = at(0.99);
  s.max_ms = ms.back();
  return s;
}

Bystander::Bystander(const AgentProcess& agent, std::string name) : agent_(agent), name_(std::move(name)) {
  std::string path = std::filesystem::temp_directory_path() / ("stoke-bystander-" + std::to_string(getpid()) + ".py");
  std::ofstream(path) << "def main(args):\n    return {\"n\": args.get(\"n\", 0) + 1}\n";
  v1::Request r = create_request(name_, v1::PYTHON, path, "main.py", 0, 0, 1);
  std::filesystem::remove(path);
  auto c = agent_.connect().call(r);
  EXPECT_TRUE(c.ok() && !(c.value().has_error() && c.value().error().code() != v1::Error::OK))
      << "bystander create failed";
  auto conn = agent_.connect();
  bool ok = false;
  for (int i = 0; i < 5; ++i) one_call(conn, &ok);
  EXPECT_TRUE(ok) << "the bystander's warm-up call failed";
}

Bystander::~Bystander() {
  if (running_) stop();
}

double Bystander::one_call(wire::Client& c, bool* ok) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = c.call(invoke_request(name_, "{\"n\": 1}"));
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  *ok = r.ok() && r.value().has_activation() && r.value().activation().status() == v1::SUCCESS;
  return ms;
}

LatencySummary Bystander::measure(size_t n) {
  auto c = agent_.connect();
  std::vector<double> ms;
  size_t failures = 0;
  for (size_t i = 0; i < n; ++i) {
    bool ok = false;
    double t = one_call(c, &ok);
    if (ok) ms.push_back(t); else ++failures;
  }
  return summarize(std::move(ms), failures);
}

void Bystander::start(int interval_ms) {
  samples_.clear();
  failures_ = 0;
  running_ = true;
  thread_ = std::thread([this, interval_ms] {
    // A dead agent is a failure to count, not an exception that aborts the
    // whole test binary from this thread.
    std::optional<wire::Client> c;
    while (running_) {
      if (!c) {
        try {
          c.emplace(agent_.connect());
        } catch (const std::exception&) {
          ++failures_;
          std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
          continue;
        }
      }
      bool ok = false;
      double t = one_call(*c, &ok);
      if (ok) samples_.push_back(t); else ++failures_;
      if (!ok) c.reset();  // a broken connection is one failure, not all of them
      std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
    }
  });
}

LatencySummary Bystander::stop() {
  running_ = false;
  if (thread_.joinable()) thread_.join();
  return summarize(samples_, failures_);
}

void Bystander::expect_kept_p99(const LatencySummary& reference, const LatencySummary& during, double factor,
                                double floor_ms) {
  EXPECT_EQ(during.failures, 0u) << "the bystander's calls failed during the attack";
  EXPECT_GT(during.calls, 0u) << "the bystander made no call during the attack";
  double bound = std::max(factor * reference.p99_ms, floor_ms);
  if (!test::kUnderSanitizer) {  // an instrumented agent: figures printed, not held to the bound
    EXPECT_LE(during.p99_ms, bound) << "bystander p99 " << during.p99_ms << " ms during the attack (p50 "
                                  << during.p50_ms << ", max " << during.max_ms << ") against " << reference.p99_ms
                                  << " ms before (bound " << bound << " ms)";
  }
  std::printf("bystander: before p50 %.2f p99 %.2f ms; during %zu calls p50 %.2f p99 %.2f max %.2f ms\n",
              reference.p50_ms, reference.p99_ms, during.calls, during.p50_ms, during.p99_ms, during.max_ms);
}

}  // namespace stoke::test
