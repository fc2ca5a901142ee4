// One call to the agent that gives up after a deadline: an attack that stalls
// the agent must fail its test, not hang it.
#pragma once

#include <poll.h>

#include <chrono>
#include <exception>
#include <optional>

#include "tests/util/agent_fixture.h"

namespace stoke::test {

inline std::optional<v1::Response> call_within(const AgentProcess& agent, v1::Request request,
                                               std::chrono::milliseconds limit) {
  try {
    auto client = agent.connect();  // throws when the agent is gone
    auto id = client.send(std::move(request));
    if (!id.ok()) return std::nullopt;
    pollfd p{client.fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return std::nullopt;
    auto response = client.wait_for(id.value());
    if (!response.ok()) return std::nullopt;
    return response.value();
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The agent's peak resident memory (VmHWM), in KiB; 0 if unreadable.
size_t peak_rss_kib(pid_t pid);

// Whether a process whose command line contains `marker` exists on the host.
bool process_with_marker_exists(const std::string& marker);

}  // namespace stoke::test
