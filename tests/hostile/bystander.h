// The bystander of a hostile test: another tenant's warm function, invoked in a
// loop on its own connection while an attack runs, whose latency must stay
// what it was before the attack. "The agent survives" is not enough: an agent
// whose event loop a tenant can stall for seconds has failed too.
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/util/agent_fixture.h"

namespace stoke::test {

struct LatencySummary {
  size_t calls = 0;
  size_t failures = 0;  // calls that did not come back as a SUCCESS activation
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
};

LatencySummary summarize(std::vector<double> ms, size_t failures);

class Bystander {
 public:
  // Registers a trivial Python function `name` on `agent` (concurrency 1) and
  // warms it up with a few calls.
  Bystander(const AgentProcess& agent, std::string name = "bystander");
  ~Bystander();  // stops the loop if still running

  // `n` sequential warm invokes, now (no attack running): the reference.
  LatencySummary measure(size_t n = 200);
  // Starts invoking in a loop on a thread, `interval_ms` apart, until stop().
  void start(int interval_ms = 5);
  LatencySummary stop();

  // The attack-time figures against the reference: no failed call, and p99
  // within max(factor × reference p99, floor_ms). The floor absorbs the noise
  // of a shared 2-core machine; a stalled loop blows far past it.
  static void expect_kept_p99(const LatencySummary& reference, const LatencySummary& during,
                              double factor = 5.0, double floor_ms = 100.0);

 private:
  double one_call(wire::Client& c, bool* ok);

  const AgentProcess& agent_;
  std::string name_;
  std::atomic<bool> running_{false};
  std::thread thread_;
  std::vector<double> samples_;
  size_t failures_ = 0;
};

}  // namespace stoke::test
