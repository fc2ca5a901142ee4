#include "api/cli/run_report.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace stoke::cli {
namespace {

TEST(RunReport, HasEveryFieldWithShellExitCode) {
  ExitStatus s;
  s.signal = 9;
  s.oom = true;
  s.timed_out = false;
  s.wall_ms = 12.5;
  s.usage.cpu_user_ns = 3'000'000;
  s.usage.cpu_system_ns = 1'500'000;
  s.usage.memory_peak_bytes = 1 << 20;
  s.usage.pids_peak = 4;
  auto j = nlohmann::json::parse(run_report_json(s));
  EXPECT_EQ(j["exitCode"], 137);
  EXPECT_EQ(j["signal"], 9);
  EXPECT_EQ(j["oom"], true);
  EXPECT_EQ(j["timedOut"], false);
  EXPECT_DOUBLE_EQ(j["wallMs"].get<double>(), 12.5);
  EXPECT_DOUBLE_EQ(j["cpuUserMs"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(j["cpuSystemMs"].get<double>(), 1.5);
  EXPECT_EQ(j["memoryPeakBytes"], 1 << 20);
  EXPECT_EQ(j["pidsPeak"], 4);
}

TEST(RunReport, NormalExitKeepsItsCode) {
  ExitStatus s;
  s.exit_code = 7;
  EXPECT_EQ(nlohmann::json::parse(run_report_json(s))["exitCode"], 7);
}

}  // namespace
}  // namespace stoke::cli
