// `stoke run`: one command in a fresh sandbox, stdio passed through (as pipes
// where the caller's stdio is a terminal: see tty_relay.h).
#pragma once

#include <string>
#include <vector>

namespace stoke::cli {

// Returns the process exit code: the command's, 128+signal, or 125 when the
// sandbox could not be set up (with one sentence on stderr).
int run_command(const std::vector<std::string>& args);

}  // namespace stoke::cli
