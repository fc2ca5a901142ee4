// `stoke run` command line → SandboxSpec (pure parsing; unit-tested).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "sandbox/base/result.h"
#include "sandbox/spec.h"

namespace stoke::cli {

struct RunOptions {
  SandboxSpec spec;
  std::optional<std::chrono::milliseconds> timeout;
  std::string report_path;
  bool help = false;
};

// Parses the arguments after "run". Host ids are left at 0 for the caller to pick.
Result<RunOptions> parse_run_options(const std::vector<std::string>& args);

// "SRC:DST[:rw]" / "SRC:DST:ro".
Result<BindMount> parse_bind(const std::string& text);

extern const char* const kRunUsage;

}  // namespace stoke::cli
