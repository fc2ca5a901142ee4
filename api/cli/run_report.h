// The JSON report `stoke run --report PATH` writes at exit.
#pragma once

#include <string>

#include "sandbox/base/result.h"
#include "sandbox/spawner.h"

namespace stoke::cli {

// {"exitCode", "signal", "oom", "timedOut", "wallMs", "cpuUserMs", "cpuSystemMs", "memoryPeakBytes"}
std::string run_report_json(const ExitStatus& status);
Status write_run_report(const std::string& path, const ExitStatus& status);

}  // namespace stoke::cli
