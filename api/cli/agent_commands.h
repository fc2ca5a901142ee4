// The agent verbs of the CLI (fn, invoke, activation, status): they talk to
// stoked over its socket with the wire client.
#pragma once

#include <string>
#include <vector>

namespace stoke::cli {

bool is_agent_verb(const std::string& verb);
const char* agent_usage();
// args = {verb, ...}; returns the process exit code: 0 ok, 1 the activation
// did not succeed, 2 usage error, 3 the agent was unreachable or refused.
int agent_command(const std::string& socket_path, const std::vector<std::string>& args);

}  // namespace stoke::cli
