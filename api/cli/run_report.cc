#include "api/cli/run_report.h"

#include <nlohmann/json.hpp>

#include "sandbox/base/file_util.h"

namespace stoke::cli {

std::string run_report_json(const ExitStatus& s) {
  nlohmann::json j = {
      {"exitCode", s.shell_code()},
      {"signal", s.signal},
      {"oom", s.oom},
      {"timedOut", s.timed_out},
      {"wallMs", s.wall_ms},
      {"cpuUserMs", static_cast<double>(s.usage.cpu_user_ns) / 1e6},
      {"cpuSystemMs", static_cast<double>(s.usage.cpu_system_ns) / 1e6},
      {"memoryPeakBytes", s.usage.memory_peak_bytes},
      {"pidsPeak", s.usage.pids_peak},
  };
  return j.dump(2) + "\n";
}

Status write_run_report(const std::string& path, const ExitStatus& status) {
  return write_file_atomic(path, run_report_json(status));
}

}  // namespace stoke::cli
